"""Every stored byte verified: the manifest, the audit chain, the id counter; optional HMAC."""

from __future__ import annotations

import json

import numpy as np
import pytest

from procvision.memory import (
    CorruptMemory,
    VisualMemory,
    VisualMemoryError,
    build_memory,
    forget,
    persist,
    read_audit,
    read_memory,
    verify_unlearned,
)


def _saved(path, n=60, **kw):
    x = np.random.default_rng(0).normal(size=(n, 6))
    meta = [{"source": f"/d/{i}.png"} for i in range(n)]
    mem = build_memory(x, np.arange(n) % 2, metadata=meta, engine="torch", fingerprint="fp",
                       class_names=["red", "green"])  # fmt: skip
    return mem, mem.save(path, **kw), x


def _edit_manifest(path, fn, fix_checksum=False):
    man = json.loads((path / "manifest.json").read_text())
    fn(man)
    if fix_checksum:  # what someone who knows the format would do
        body = {k: v for k, v in man.items() if k not in ("manifest_sha256", "hmac_sha256")}
        man["manifest_sha256"] = persist.manifest_checksum(body)
    (path / "manifest.json").write_text(json.dumps(man, indent=2))


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["class_names"].__setitem__(0, "blue"),
        lambda m: m.__setitem__("fingerprint", "other"),
        lambda m: m.__setitem__("engine", "ivf"),
        lambda m: m.__setitem__("next_id", 3),
        lambda m: m["recipe"].__setitem__("vote", {"k": 1}) if m["recipe"] else m.update(recipe={}),
    ],
    ids=["class_names", "fingerprint", "engine", "next_id", "recipe"],
)
def test_manifest_edit_is_detected_and_named(tmp_path, edit):
    _, path, _ = _saved(tmp_path / "mem")
    _edit_manifest(path, edit)
    with pytest.raises(CorruptMemory, match=r"manifest\.json: manifest_sha256 does not match"):
        read_memory(path)


def test_audit_log_edit_removal_and_truncation_are_detected(tmp_path):
    _, path, _ = _saved(tmp_path / "mem")
    for i in range(3):
        forget(path, ids=[i], reason=f"request {i}")
    good = (path / "audit.jsonl").read_bytes()
    lines = good.decode().splitlines(keepends=True)
    cases = {
        "edited": "".join([lines[0], lines[1].replace("request 1", "request X"), lines[2]]),
        "middle removed": "".join([lines[0], lines[2]]),
        "last removed": "".join(lines[:2]),
    }
    for _what, text in cases.items():
        (path / "audit.jsonl").write_text(text)
        with pytest.raises(CorruptMemory, match="audit.jsonl"):
            read_memory(path)
        with pytest.raises(CorruptMemory, match="audit.jsonl"):
            read_audit(path)
        # even with the manifest's checksum of the file updated, the chain or the head tells
        digest, size = persist._file_sha256(path / "audit.jsonl")
        saved = (path / "manifest.json").read_bytes()
        entry = {"sha256": digest, "bytes": size}
        _edit_manifest(path, lambda m, e=entry: m["files"].__setitem__("audit.jsonl", e), True)
        with pytest.raises(CorruptMemory, match="audit.jsonl: (record|does not end)"):
            read_memory(path)
        (path / "manifest.json").write_bytes(saved)
        (path / "audit.jsonl").write_bytes(good)
    assert len(read_audit(path)) == 3


def test_rewritten_checksums_pass_without_a_key_and_fail_with_hmac(tmp_path):
    key = b"k" * 32
    _, path, _ = _saved(tmp_path / "mem", hmac_key=key)
    assert read_memory(path, hmac_key=key).class_names == ["red", "green"]
    _edit_manifest(path, lambda m: m["class_names"].__setitem__(0, "blue"), fix_checksum=True)
    # a plain checksum stops accidents, not someone who recomputes it ...
    assert read_memory(path).class_names == ["blue", "green"]
    # ... the keyed HMAC does
    with pytest.raises(CorruptMemory, match="HMAC does not match"):
        read_memory(path, hmac_key=key)
    with pytest.raises(CorruptMemory, match="HMAC does not match"):
        read_memory(path, hmac_key=b"x" * 32)
    _, plain, _ = _saved(tmp_path / "plain")
    with pytest.raises(CorruptMemory, match="not signed"):
        read_memory(plain, hmac_key=key)


def test_signed_memory_needs_the_key_to_be_written(tmp_path):
    key = b"s" * 32
    _, path, _ = _saved(tmp_path / "mem", hmac_key=key)
    with pytest.raises(VisualMemoryError, match="signed with an HMAC key"):
        forget(path, ids=[0])
    forget(path, ids=[0], hmac_key=key)
    assert 0 not in read_memory(path, hmac_key=key).ids


def test_ids_are_never_reused_and_the_counter_is_not_content(tmp_path):
    mem, path, x = _saved(tmp_path / "mem")
    forget(path, ids=[58, 59])
    back = VisualMemory.load(path)
    assert back.next_id == 60
    assert back.add(np.ones((2, 6)), [0, 1]).tolist() == [60, 61]
    with pytest.raises(ValueError, match="retired and never reused"):
        back.add(np.ones((1, 6)), [0], ids=[59])
    # forgotten = never added: the counter is not part of the content hash
    fresh = build_memory(x[:58], np.arange(58) % 2, engine="torch", fingerprint="fp",
                         metadata=[{"source": f"/d/{i}.png"} for i in range(58)],
                         class_names=["red", "green"])  # fmt: skip
    after = VisualMemory.load(path)
    assert after.next_id == 60 and fresh.next_id == 58
    proof = verify_unlearned(
        after, fresh, np.random.default_rng(1).normal(size=(5, 6)), 7, [58, 59]
    )
    assert proof["ok"]
    # the counter survives emptying the memory
    forget(path, ids=np.arange(60))
    empty = VisualMemory.load(path)
    assert (
        len(empty) == 0 and empty.next_id == 60 and empty.add(np.ones((1, 6)), [0]).tolist() == [60]
    )


def test_recipe_is_kept_when_emptied(tmp_path):
    recipe = {"backbone": {"spec": "x", "fingerprint": "fp"}, "vote": {"k": 5}}
    mem = build_memory(np.eye(3), [0, 1, 2], recipe=recipe)
    path = mem.save(tmp_path / "mem")
    forget(path, ids=[0, 1, 2])
    assert VisualMemory.load(path).recipe == recipe


def test_overwrite_refuses_what_is_not_a_memory(tmp_path):
    mem = build_memory(np.eye(3), [0, 1, 2])
    data = tmp_path / "dataset"
    data.mkdir()
    (data / "img.png").write_bytes(b"not a memory")
    with pytest.raises(ValueError, match="not a procvision memory"):
        mem.save(data)
    assert (data / "img.png").read_bytes() == b"not a memory"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        mem.save(tmp_path / "file")
    with pytest.raises(ValueError, match="device"):
        mem.save("/dev/null")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert mem.save(empty) == empty and read_memory(empty).content_hash() == mem.content_hash()


def test_format_1_memory_loads_and_is_upgraded_on_its_next_write(tmp_path):
    mem, path, _ = _saved(tmp_path / "mem")
    legacy = _to_format_1(path, [{"action": "forget", "removed_ids": [], "count": 0}])
    assert legacy["format_version"] == 1
    back = read_memory(path)
    assert back.content_hash() == mem.content_hash() and back.next_id == 60
    assert read_audit(path) == [{"action": "forget", "removed_ids": [], "count": 0}]
    forget(path, ids=[3])
    man = json.loads((path / "manifest.json").read_text())
    assert man["format_version"] == 2 and man["next_id"] == 60 and "manifest_sha256" in man
    log = read_audit(path)  # the old record is now chained too
    assert len(log) == 2 and log[1]["prev"] == log[0]["hash"] and log[0]["count"] == 0


def _to_format_1(path, audit: list[dict]) -> dict:
    """Rewrite a saved memory as procvision's format 1 wrote it (no manifest checksum, no id
    counter, no recipe, an unchained and unlisted audit log)."""
    man = json.loads((path / "manifest.json").read_text())
    for key in ("manifest_sha256", "hmac_sha256", "next_id", "recipe", "audit"):
        man.pop(key, None)
    man["files"].pop("audit.jsonl", None)
    man["format_version"] = 1
    (path / "manifest.json").write_text(json.dumps(man, indent=2, sort_keys=True) + "\n")
    (path / "audit.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in audit))
    return man


def test_blobs_are_kept_checksummed_and_shredded_on_forget(tmp_path):
    from procvision.memory import read_blob

    mem = build_memory(np.eye(3), [0, 1, 2], engine="torch")
    a, b = mem.add_blob(b"uploaded image A" * 10), mem.add_blob(b"uploaded image B" * 10)
    mem.add(np.ones((2, 3)), [0, 1], metadata=[{"blob": a, "source": "upload:a"}, {"blob": b}])
    path = mem.save(tmp_path / "mem")
    assert read_blob(path, a) == b"uploaded image A" * 10
    assert sorted(p.name for p in (path / "blobs").iterdir()) == sorted([a, b])
    old_inode = (path / "blobs" / b).stat().st_ino
    forget(path, ids=[3])  # the item holding blob a
    assert sorted(p.name for p in (path / "blobs").iterdir()) == [b]
    assert (path / "blobs" / b).stat().st_ino == old_inode  # kept by link, not rewritten
    assert read_blob(path, b) == b"uploaded image B" * 10
    with pytest.raises(ValueError, match="not stored"):
        read_blob(path, a)
    (path / "blobs" / b).write_bytes(b"tampered")
    with pytest.raises(CorruptMemory, match="blobs"):
        read_memory(path)
    (path / "blobs" / b).write_bytes(b"uploaded image C" * 10)  # same size, other bytes
    with pytest.raises(CorruptMemory, match=b):
        read_blob(path, b)
    (path / "blobs" / ("0" * 64)).write_bytes(b"")
    with pytest.raises(CorruptMemory, match="holds other blobs"):
        read_memory(path)
