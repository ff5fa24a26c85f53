"""VisualMemory: add, remove, search; engines agree; removal equals never-added."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from procvision.memory import FingerprintMismatch, VisualMemory
from procvision.memory.index import canonical_sims, normalize_rows

from .conftest import make_memory


def test_add_normalises_and_assigns_ids():
    mem = VisualMemory(3, engine="torch", class_names=["a", "b"])
    ids = mem.add(
        torch.tensor([[3.0, 0, 4], [0, 2, 0]]), [0, 1], metadata=[{"source": "x.png"}, None]
    )
    assert ids.tolist() == [0, 1] and len(mem) == 2
    np.testing.assert_allclose(mem.embeddings, [[0.6, 0, 0.8], [0, 1, 0]], rtol=1e-7)
    assert mem.add(np.ones((1, 3)), [1]).tolist() == [2]  # continues from max + 1
    assert mem.add(np.ones((1, 3)), [0], ids=[10]).tolist() == [10]
    assert mem.add(np.ones((1, 3)), [0]).tolist() == [11]
    assert mem.labels_of([[10, -1], [1, 0]]).tolist() == [[0, -1], [1, 0]]
    assert mem.metadata_of([0, 1]) == [{"source": "x.png"}, {}]
    assert mem.num_classes == 2 and mem.class_names == ["a", "b"]


def test_add_rejects_bad_input():
    mem = VisualMemory(2)
    mem.add(np.eye(2), [0, 1], ids=[5, 6])
    with pytest.raises(ValueError, match="already in the memory"):
        mem.add(np.eye(2), [0, 1], ids=[6, 7])
    with pytest.raises(ValueError, match="duplicate ids"):
        mem.add(np.eye(2), [0, 1], ids=[8, 8])
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        mem.add(np.ones((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="all zeros"):
        mem.add(np.zeros((1, 2)), [0])
    with pytest.raises(ValueError, match="NaN"):
        mem.add(np.array([[np.nan, 1.0]]), [0])
    with pytest.raises(ValueError, match="labels"):
        mem.add(np.eye(2), [0])
    with pytest.raises(KeyError, match="not in the memory"):
        mem.labels_of([99])
    assert len(mem) == 2  # nothing half-added


@pytest.mark.parametrize("small_work", [0, 1 << 22])  # faiss kernels, numpy small-problem path
def test_faiss_and_torch_agree_bitwise(small_work):
    mf, x, y = make_memory(300, 16, seed=1, engine="faiss")
    mf._engine.small_work = small_work
    mt = VisualMemory(16, engine="torch")
    mt.add(x, y)
    q = np.random.default_rng(2).normal(size=(25, 16))
    sf, i_f = mf.search(q, 12)
    st, it = mt.search(q, 12)
    assert np.array_equal(i_f, it) and np.array_equal(sf.view(np.int32), st.view(np.int32))
    # and both equal a float64 brute-force reference up to float32 rounding
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    ref = qn @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T
    ref_ids = np.argsort(-ref, axis=1, kind="stable")[:, :12]
    assert np.array_equal(i_f, ref_ids)
    np.testing.assert_allclose(sf, np.take_along_axis(ref, ref_ids, 1), atol=1e-6)


@pytest.mark.parametrize("engine", ["faiss", "torch"])
def test_search_is_independent_of_batch_and_chunking(engine):
    mem, _, _ = make_memory(200, 8, seed=3, engine=engine)
    q = np.random.default_rng(4).normal(size=(30, 8))
    s, i = mem.search(q, 7)
    for j in (0, 17, 29):
        s1, i1 = mem.search(q[j], 7)
        assert np.array_equal(i1[0], i[j]) and np.array_equal(s1[0], s[j])
    mem.search_budget_bytes = 1  # one query per chunk
    s2, i2 = mem.search(q, 7)
    assert np.array_equal(i2, i) and np.array_equal(s2, s)


def test_canonical_sims_are_position_independent():
    x = normalize_rows(np.random.default_rng(5).normal(size=(50, 24)), 24)
    q = x[:3]
    rows = np.array([[0, 5, 9], [9, 5, -1], [2, 2, 2]])
    s = canonical_sims(q, rows, x)
    assert s[0, 2] == canonical_sims(q[:1], np.array([[9]]), x)[0, 0]
    assert s[1, 2] == -np.inf
    assert normalize_rows(x[7:8] * 3, 24)[0].tolist() == normalize_rows(x * 3, 24)[7].tolist()


def test_ties_break_by_id_with_duplicates():
    # 30 copies of one direction under shuffled ids, plus other points
    mem = VisualMemory(4, engine="faiss")
    rng = np.random.default_rng(6)
    ids = rng.permutation(1000)[:30] + 100
    mem.add(rng.normal(size=(50, 4)), np.ones(50, int), ids=np.arange(50))
    mem.add(np.tile([1.0, 2.0, 0.0, 0.5], (30, 1)), np.zeros(30, int), ids=ids)
    s, i = mem.search(np.array([[1.0, 2.0, 0.0, 0.5]]), 5)
    assert i[0].tolist() == sorted(ids)[:5]
    assert len(set(s[0].tolist())) == 1


def test_k_larger_than_memory_pads():
    mem = VisualMemory(2, engine="faiss")
    mem.add(np.eye(2), [0, 1])
    s, i = mem.search(np.array([[1.0, 0.1], [0.0, 1.0]]), 4)
    assert i.tolist() == [[0, 1, -1, -1], [1, 0, -1, -1]]
    assert np.isneginf(s[:, 2:]).all() and s.dtype == np.float32 and i.dtype == np.int64
    s0, i0 = VisualMemory(2).search(np.ones((3, 2)), 2)
    assert (i0 == -1).all() and np.isneginf(s0).all()


def test_removal_equals_never_added(tmp_path):
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(120, 8)), rng.integers(0, 4, 120)
    meta = [{"source": f"img{i}.png"} for i in range(120)]
    drop = rng.choice(120, 40, replace=False)
    full = VisualMemory(8, engine="faiss")
    full.add(x[:70], y[:70], metadata=meta[:70])
    full.add(x[70:], y[70:], ids=np.arange(70, 120), metadata=meta[70:])
    assert full.remove(drop) == 40 and full.remove([999]) == 0
    keep = np.setdiff1d(np.arange(120), drop)
    never = VisualMemory(8, engine="faiss")
    never.add(x[keep], y[keep], ids=keep, metadata=[meta[i] for i in keep])
    assert np.array_equal(full.embeddings, never.embeddings)
    assert np.array_equal(full.ids, never.ids) and np.array_equal(full.labels, never.labels)
    assert full.content_hash() == never.content_hash()
    q = rng.normal(size=(15, 8))
    for a, b in zip(full.search(q, 9), never.search(q, 9), strict=True):
        assert np.array_equal(a, b)
    # the freed capacity holds no removed row
    assert not full._emb[len(full) :].any()
    # and the saved directories are byte-identical, file by file
    # (all but the manifest, whose id counter remembers the retired ids: not part of the content)
    a, b = full.save(tmp_path / "a"), never.save(tmp_path / "b")
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in names if f != "manifest.json")
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    assert ma["next_id"] == 120 and mb["next_id"] == int(keep.max()) + 1
    for m in (ma, mb):
        del m["next_id"], m["manifest_sha256"]
    assert ma == mb


def test_remove_many_uses_masked_path():
    mem, x, y = make_memory(3000, 4, seed=8)
    drop = np.arange(0, 3000, 2)
    assert mem.remove(drop) == 1500
    ref = VisualMemory(4)
    ref.add(x[1::2], y[1::2], ids=np.arange(1, 3000, 2))
    assert (
        np.array_equal(mem.embeddings, ref.embeddings) and mem.content_hash() == ref.content_hash()
    )


def test_fingerprint_mismatch():
    mem = VisualMemory(2, fingerprint="vit_tiny:abc")
    mem.add(np.eye(2), [0, 1])
    mem.search(np.eye(2), 1, fingerprint="vit_tiny:abc")
    with pytest.raises(FingerprintMismatch, match="vit_small:def"):
        mem.search(np.eye(2), 1, fingerprint="vit_small:def")


def test_content_hash_ignores_insertion_order_but_not_content():
    a, b = VisualMemory(2), VisualMemory(2)
    a.add(np.eye(2), [0, 1], ids=[1, 2])
    b.add(np.eye(2)[::-1], [1, 0], ids=[2, 1])
    assert a.content_hash() == b.content_hash()
    c = VisualMemory(2)
    c.add(np.eye(2), [0, 1], ids=[1, 2], metadata=[{"source": "s"}, None])
    assert a.content_hash() != c.content_hash()


def test_ivf_engine_exhaustive_probe_equals_exact():
    mem, x, y = make_memory(400, 8, seed=9, engine="ivf")
    mem._engine.nlist, mem._engine.nprobe = 8, 8
    exact = VisualMemory(8)
    exact.add(x, y)
    q = np.random.default_rng(10).normal(size=(10, 8))
    assert np.array_equal(mem.search(q, 5)[1], exact.search(q, 5)[1])
    assert not mem.exact and mem.remove([int(mem.search(q, 1)[1][0, 0])]) == 1
    assert mem._engine.index.ntotal == 399
    exact2 = mem.copy()
    assert np.array_equal(exact2.search(q, 5)[1], mem.search(q, 5)[1])
