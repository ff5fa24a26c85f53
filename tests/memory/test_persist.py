"""Saving and loading: round trip, crash safety, tamper and truncation detection, fingerprints."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from procvision.memory import (
    CorruptMemory,
    FingerprintMismatch,
    VisualMemory,
    build_memory,
    persist,
)

from .conftest import make_memory


def _saved(tmp_path, n=30, seed=0):
    _, x, y = make_memory(n, 6, seed=seed)
    meta = [{"source": f"/data/img{i}.png"} for i in range(n)]
    mem = build_memory(x, y, metadata=meta, engine="faiss", fingerprint="fp-1")
    path = mem.save(tmp_path / "mem")
    return mem, path


def test_round_trip(tmp_path):
    mem, path = _saved(tmp_path)
    assert sorted(p.name for p in path.iterdir()) == [
        "embeddings.npy",
        "ids.npy",
        "labels.npy",
        "manifest.json",
        "metadata.jsonl",
    ]
    man = json.loads((path / "manifest.json").read_text())
    assert man["count"] == 30 and man["dim"] == 6 and man["fingerprint"] == "fp-1"
    assert man["format_version"] == 2 and set(man["files"]) == {
        "embeddings.npy",
        "ids.npy",
        "labels.npy",
        "metadata.jsonl",
    }
    back = VisualMemory.load(path, expect_fingerprint="fp-1")
    assert back.content_hash() == mem.content_hash() and back.fingerprint == "fp-1"
    assert np.array_equal(back.embeddings, mem.embeddings)
    assert back.metadata_of([3]) == [{"source": "/data/img3.png"}]
    q = np.random.default_rng(1).normal(size=(5, 6))
    assert all(
        np.array_equal(a, b) for a, b in zip(back.search(q, 4), mem.search(q, 4), strict=True)
    )
    # saving the same content twice gives byte-identical files
    mem.save(tmp_path / "again")
    for name in man["files"]:
        assert (path / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_crash_while_writing_keeps_previous(tmp_path, monkeypatch):
    mem, path = _saved(tmp_path)
    before = mem.content_hash()
    mem.remove([0, 1, 2])
    calls = {"n": 0}
    real = persist._write_file

    def flaky(directory, name, write):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        return real(directory, name, write)

    monkeypatch.setattr(persist, "_write_file", flaky)
    with pytest.raises(OSError, match="simulated"):
        mem.save(path)
    assert VisualMemory.load(path).content_hash() == before
    assert not list(tmp_path.glob(".mem.tmp-*"))


def test_crash_between_renames_is_recovered(tmp_path, monkeypatch):
    mem, path = _saved(tmp_path)
    before = mem.content_hash()
    mem.remove([5])
    real_rename = os.rename
    calls = {"n": 0}

    def crash_second(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("power cut (simulated)")
        return real_rename(src, dst)

    monkeypatch.setattr(persist.os, "rename", crash_second)
    with pytest.raises(OSError, match="power cut"):
        mem.save(path)
    monkeypatch.setattr(persist.os, "rename", real_rename)
    assert not path.exists()
    listing = sorted(p.name for p in tmp_path.iterdir())
    # a reader reads the previous memory where it lies and changes nothing on disk
    with pytest.warns(UserWarning, match="interrupted save left the previous memory"):
        assert VisualMemory.load(path).content_hash() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing
    with pytest.warns(UserWarning, match="restored the previous memory"):
        mem.save(path)  # the next writer puts it back, then saves over it
    assert VisualMemory.load(path).content_hash() == mem.content_hash()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mem.lock", "mem"]


@pytest.mark.parametrize("name", ["embeddings.npy", "ids.npy", "labels.npy", "metadata.jsonl"])
def test_tampered_file_is_named(tmp_path, name):
    _, path = _saved(tmp_path)
    data = bytearray((path / name).read_bytes())
    data[-3] ^= 0x01
    (path / name).write_bytes(bytes(data))
    with pytest.raises(CorruptMemory, match=name):
        VisualMemory.load(path)


@pytest.mark.parametrize("name", ["embeddings.npy", "metadata.jsonl"])
def test_truncated_file_is_named(tmp_path, name):
    _, path = _saved(tmp_path)
    data = (path / name).read_bytes()
    (path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptMemory, match=f"{name}: truncated"):
        VisualMemory.load(path)


def test_missing_or_broken_manifest(tmp_path):
    _, path = _saved(tmp_path)
    (path / "ids.npy").unlink()
    with pytest.raises(CorruptMemory, match="ids.npy: missing"):
        VisualMemory.load(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptMemory, match="manifest.json"):
        VisualMemory.load(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VisualMemory.load(tmp_path / "nowhere")
    assert not (tmp_path / ".nowhere.lock").exists()  # readers create nothing


def test_consistent_tamper_is_caught_by_content_hash(tmp_path):
    # rewrite a file AND its manifest checksum: the content hash still disagrees
    _, path = _saved(tmp_path)
    labels = np.load(path / "labels.npy")
    labels[0] = (labels[0] + 1) % 3
    np.save(path / "labels.npy", labels)
    man = json.loads((path / "manifest.json").read_text())
    digest, size = persist._file_sha256(path / "labels.npy")
    man["files"]["labels.npy"] = {"sha256": digest, "bytes": size}
    body = {k: v for k, v in man.items() if k != "manifest_sha256"}
    man["manifest_sha256"] = persist.manifest_checksum(body)
    (path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(CorruptMemory, match="content hash"):
        VisualMemory.load(path)


def test_fingerprint_checked_on_load(tmp_path):
    _, path = _saved(tmp_path)
    with pytest.raises(FingerprintMismatch, match="fp-2"):
        VisualMemory.load(path, expect_fingerprint="fp-2")


def test_ivf_round_trip(tmp_path):
    _, x, y = make_memory(300, 8, seed=2)
    mem = VisualMemory(8, engine="ivf", ivf_nlist=6)
    mem.add(x, y)
    q = np.random.default_rng(3).normal(size=(8, 8))
    res = mem.search(q, 5)  # trains the index
    path = mem.save(tmp_path / "ivf")
    assert (path / "index.faiss").is_file()
    back = VisualMemory.load(path)
    assert back.engine == "ivf" and back._engine.quantizer_source == "memory"
    assert all(np.array_equal(a, b) for a, b in zip(back.search(q, 5), res, strict=True))
    assert back.remove([int(res[1][0, 0])]) == 1 and back._engine.index.ntotal == 299
