"""Exact leave-one-out privacy against brute force, the paper's variant, and group removal."""

from __future__ import annotations

import numpy as np
import pytest

from procvision.memory import (
    VisualMemory,
    brute_force_loo,
    exact_loo_flips,
    group_removal_effect,
    map_labels,
    predict,
    privacy_audit,
    vote_scores,
)

METHODS = ("weighted", "plurality", "rank")


def _circle(degrees):
    r = np.deg2rad(np.asarray(degrees, float))
    return np.stack([np.cos(r), np.sin(r)], 1)


def _abcc_memory():
    # neighbours of q=(1,0) in order: id100 A, id101 B, id102 C, id103 C
    mem = VisualMemory(2, engine="faiss")
    mem.add(_circle([0, 10, 20, 30]), [0, 1, 2, 2], ids=[100, 101, 102, 103])
    return mem


def test_hand_computed_plurality_loo():
    # k=3: A,B,C tie -> A. Remove 100: B,C,C -> C. Remove 101: A,C,C -> C. Remove 102: A,B,C -> A.
    r = privacy_audit(_abcc_memory(), _circle([0]), k=3, method="plurality")
    assert r["flip_sets"] == [[100, 101]]
    assert r["non_private_ids"] == [100, 101] and r["non_private_fraction"] == 0.5
    assert r["flip_counts"] == {"ids": [100, 101], "counts": [1, 1]}
    assert r["predictions"] == [0]


def test_paper_variant_misses_third_class_entries():
    # T=100 makes weights nearly equal but decreasing: A 1.01005 > B 1.00995 > C 1.00944 (> C 1.00870).
    # Exact: removing A or B lets C win. The paper's rule counts only the prediction's own class,
    # so with target C (pred A wrong, runner-up over top-(k+1) = C) its "bad" set is {100}.
    r = privacy_audit(
        _abcc_memory(), _circle([0]), query_labels=[2], k=3, method="weighted", T=100.0
    )
    assert r["flip_sets"] == [[100, 101]]
    pv = r["paper_variant"]
    assert pv["bad_ids"] == [100] and pv["bad_count"] == 1 and pv["n_bad_queries"] == 1
    assert pv["bad_fraction"] == 0.25 and pv["good_count"] == 0
    assert r["exact_on_paper_queries"] == {"count": 2, "fraction": 0.5}
    assert r["accuracy_top1"] == 0.0


def test_exact_loo_array_level():
    sims = np.array([[0.9, 0.8, 0.7]], np.float32)
    ids = np.array([[7, 8, 9]])
    labels = np.array([[1, 0, 0]])
    # k=2 plurality: base 1,0 tie -> 0. Remove 7: 0,0 -> 0. Remove 8: 1,0 -> 0.
    loo = exact_loo_flips(sims, ids, labels, 2, 2, "plurality")
    assert loo.base_pred.tolist() == [0] and loo.alt_pred.tolist() == [[0, 0]]
    assert loo.flip_sets() == [[]]
    # rank: base 1/2 (class 1) vs 1/3 -> 1. Remove 7: 0,0 -> 0 flip. Remove 8: 1/2 vs 1/3 -> 1.
    loo = exact_loo_flips(sims, ids, labels, 2, 2, "rank")
    assert loo.flip_sets() == [[7]]
    with pytest.raises(ValueError, match="k\\+1"):
        exact_loo_flips(sims[:, :2], ids[:, :2], labels[:, :2], 2, 2)


def _adversarial(seed: int, n: int, n_dirs: int | None = None):
    """Few distinct integer directions (so exact similarity ties), shuffled sparse ids, 3 classes."""
    rng = np.random.default_rng(seed)
    base = rng.integers(-2, 3, size=(n_dirs or max(2, n // 3), 3)).astype(float)
    base[np.abs(base).sum(1) == 0] = [1.0, 0.0, 0.0]
    x = base[rng.integers(0, len(base), n)]
    mem = VisualMemory(3, engine="faiss")
    mem.add(x, rng.integers(0, 3, n) * 5 + 1, ids=rng.permutation(10 * n)[:n])
    q = rng.integers(-2, 3, size=(6, 3)).astype(float)
    q[np.abs(q).sum(1) == 0] = [0.0, 1.0, 0.0]
    return mem, q


@pytest.mark.parametrize("seed,n,dirs", [(0, 9, 3), (1, 10, 3), (2, 11, 3), (3, 12, 4), (4, 40, 2)])
def test_exact_equals_brute_force_adversarial(seed, n, dirs):
    # n=40 in 2 directions: tied blocks wider than the over-fetch, so search must re-fetch
    mem, q = _adversarial(seed, n, dirs)
    for k in (1, 2, 4, n - 1, n, n + 2):
        for method, T in (
            ("weighted", 0.07),
            ("weighted", 5.0),
            ("plurality", 0.07),
            ("rank", 0.07),
        ):
            fast = privacy_audit(mem, q, k=k, method=method, T=T)
            slow = brute_force_loo(mem, q, k=k, method=method, T=T)
            assert fast["flip_sets"] == slow["flip_sets"], (k, method, T)
            assert fast["non_private_ids"] == slow["non_private_ids"]


def test_exact_equals_brute_force_random():
    rng = np.random.default_rng(11)
    mem = VisualMemory(5, engine="torch")
    mem.add(rng.normal(size=(40, 5)), rng.integers(0, 4, 40))
    q = rng.normal(size=(15, 5))
    for method in METHODS:
        fast = privacy_audit(mem, q, k=5, method=method)
        assert fast["flip_sets"] == brute_force_loo(mem, q, k=5, method=method)["flip_sets"]
        assert fast["non_private_count"] > 0


def test_brute_force_candidate_subset():
    mem, q = _adversarial(3, 12)
    cands = mem.ids[:4]
    full = privacy_audit(mem, q, k=3, method="plurality")["flip_sets"]
    part = brute_force_loo(mem, q, k=3, method="plurality", candidate_ids=cands)["flip_sets"]
    assert part == [[x for x in fs if x in set(cands.tolist())] for fs in full]


def _group_reference(mem, q, group, k, method):
    classes = mem.classes
    reduced = mem.copy()
    reduced.remove(group)
    s, i = reduced.search(q, k)
    return predict(vote_scores(s, map_labels(mem.labels_of(i), classes), len(classes), method))


@pytest.mark.parametrize("overfetch", [1, 64])
def test_group_removal_equals_brute_force(overfetch):
    rng = np.random.default_rng(12)
    mem = VisualMemory(4, engine="faiss")
    mem.add(rng.normal(size=(60, 4)), rng.integers(0, 3, 60) + 10)
    q = rng.normal(size=(20, 4))
    for size in (1, 5, 55, 60):
        group = rng.choice(mem.ids, size, replace=False)
        for method in METHODS:
            r = group_removal_effect(mem, q, group, k=4, method=method, overfetch=overfetch)
            ref = _group_reference(mem, q, group, 4, method)
            ref_labels = np.where(ref >= 0, mem.classes[np.maximum(ref, 0)], -1)
            assert r["pred_after"] == ref_labels.tolist(), (size, method)
            touched = {qi for qi in range(20) if np.isin(mem.search(q[qi], 4)[1], group).any()}
            assert set(r["affected_queries"]) == touched
            if overfetch == 1 and size >= 5:
                assert r["n_researched"] > 0


def test_audit_refuses_approximate_engine():
    mem = VisualMemory(2, engine="ivf", ivf_nlist=1)
    mem.add(np.eye(2), [0, 1])
    with pytest.raises(ValueError, match="exact search"):
        privacy_audit(mem, np.eye(2), k=1)


def test_empty_memory_has_a_clear_answer():
    """A new memory, and one whose items were all forgotten: nothing predicted, nothing leaks."""
    fresh = VisualMemory(4, engine="torch")
    emptied = VisualMemory(4, engine="torch")
    emptied.add(np.eye(4), [0, 1, 2, 3])
    emptied.remove([0, 1, 2, 3])
    for mem in (fresh, emptied):
        audit = privacy_audit(mem, np.ones((3, 4)), [0, 1, 2], 5)
        assert audit["n_memory"] == 0 and audit["non_private_count"] == 0
        assert audit["predictions"] == [-1, -1, -1] and audit["accuracy_top1"] == 0.0
        assert audit["paper_variant"]["bad_count"] == 0
        assert mem.labels_of([[-1, -1]]).tolist() == [[-1, -1]]
