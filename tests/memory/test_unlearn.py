"""Forgetting: no trace left in the files, an audit record, and proof against a rebuilt memory."""

from __future__ import annotations

import numpy as np
import pytest

from procvision.memory import VisualMemory, forget, ids_matching, read_audit, verify_unlearned

BASE_ID = 7_770_000  # distinctive ids, so their decimal text cannot occur by chance


def _build(n=50, dim=6, seed=0, engine="faiss"):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, dim)), rng.integers(0, 3, n)
    meta = [
        {"source": f"/data/patient_{i % 7:02d}/scan_{i:03d}.png", "sha256": f"{i:064x}"}
        for i in range(n)
    ]
    mem = VisualMemory(dim, engine=engine, fingerprint="fp")
    mem.add(x, y, ids=BASE_ID + np.arange(n), metadata=meta)
    return mem, x, y, meta


def _all_bytes(directory):
    return {p.name: p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def test_forget_leaves_no_trace_on_disk(tmp_path):
    mem, x, y, meta = _build()
    path = mem.save(tmp_path / "mem")
    removed = ids_matching(mem, "/data/patient_03/*")
    assert len(removed) == 7
    rows = mem.rows_of(removed)
    removed_rows = [mem.embeddings[r].tobytes() for r in rows]
    removed_sources = [meta[int(i - BASE_ID)]["source"] for i in removed]
    rec = forget(
        path, ids=[BASE_ID + 1], source_pattern="/data/patient_03/*", reason="GDPR art. 17"
    )
    removed = np.union1d(removed, [BASE_ID + 1])
    removed_rows.append(mem.embeddings[1].tobytes())
    assert rec["count"] == 8 and rec["removed_ids"] == removed.tolist() and rec["n_after"] == 42
    files = _all_bytes(path)
    assert {
        "embeddings.npy",
        "ids.npy",
        "labels.npy",
        "metadata.jsonl",
        "manifest.json",
        "audit.jsonl",
    } == set(files)
    for name, data in files.items():
        for row in removed_rows:
            assert row not in data, name
        for src in removed_sources:
            assert src.encode() not in data, name
        for i in removed.tolist():
            assert np.int64(i).tobytes() not in data, name
            if name != "audit.jsonl":  # the audit record lists the removed ids by design
                assert str(i).encode() not in data, name
    # no old copy left behind (the lock file beside the memory holds no data)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mem.lock", "mem"]
    assert (tmp_path / ".mem.lock").read_bytes() == b""


def test_audit_record_written_and_appended(tmp_path):
    mem, *_ = _build()
    path = mem.save(tmp_path / "mem")
    h0 = mem.content_hash()
    r1 = forget(path, ids=[BASE_ID + 3, 123], reason="request 1")
    r2 = forget(path, source_pattern="/data/patient_05/*")
    log = read_audit(path)
    assert [{k: v for k, v in r.items() if k not in ("prev", "hash")} for r in log] == [r1, r2]
    assert log[0]["prev"] == "0" * 64 and log[1]["prev"] == log[0]["hash"]
    assert r1["content_hash_before"] == h0 and r1["not_found"] == [123] and r1["count"] == 1
    assert r1["content_hash_after"] == r2["content_hash_before"]
    assert r2["content_hash_after"] == VisualMemory.load(path).content_hash()
    assert r1["time_utc"].endswith("+00:00") and r2["source_pattern_sha256"] and r2["reason"] == ""


def test_forget_in_memory_and_external_log(tmp_path):
    mem, *_ = _build()
    rec = forget(mem, ids=[BASE_ID], audit_log=tmp_path / "log.jsonl")
    assert len(mem) == 49 and rec["count"] == 1
    assert (tmp_path / "log.jsonl").read_text().count("\n") == 1
    with pytest.raises(ValueError, match="give ids .*a source pattern"):
        forget(mem)


def test_verify_unlearned_against_rebuilt(tmp_path):
    mem, x, y, meta = _build(seed=1)
    drop = BASE_ID + np.array([0, 4, 9, 31])
    forget(mem, ids=drop)
    keep = np.setdiff1d(np.arange(50), drop - BASE_ID)

    def rebuild():
        m = VisualMemory(6, engine="torch", fingerprint="fp")
        m.add(x[keep], y[keep], ids=BASE_ID + keep, metadata=[meta[i] for i in keep])
        return m

    q = np.random.default_rng(2).normal(size=(20, 6))
    proof = verify_unlearned(mem, rebuild, q, k=10, removed_ids=drop)
    assert proof["ok"] and proof["removed_ids_in_results"] == 0
    assert all(v["identical_scores"] for v in proof["methods"].values())
    # a memory that still holds one removed item fails the proof
    leaky = VisualMemory(6, engine="torch", fingerprint="fp")
    both = np.union1d(keep, [4])
    leaky.add(x[both], y[both], ids=BASE_ID + both)
    bad = verify_unlearned(leaky, rebuild, q, k=10, removed_ids=drop)
    assert not bad["ok"] and bad["removed_ids_still_stored"] == 1


def test_forget_drops_ivf_quantiser_trained_on_memory():
    mem, *_ = _build(n=80, engine="ivf")
    mem._engine.nlist = 4
    mem.search(np.ones((1, 6)), 3)
    assert mem._engine.index is not None
    forget(mem, ids=[BASE_ID + 2])
    assert mem._engine.index is None  # retrained without the item on the next search
    assert mem.search(np.ones((1, 6)), 3)[1].shape == (1, 3)
