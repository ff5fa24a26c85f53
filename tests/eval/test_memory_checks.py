"""The evaluation checks that moved out of the callbacks into `procvision.memory`:
`forget_sample`, `unlearning_check` (unlearn.py) and `privacy_metrics` (privacy.py)."""

from __future__ import annotations

import numpy as np
import pytest

from procvision.memory import VisualMemory, build_memory
from procvision.memory.privacy import privacy_metrics
from procvision.memory.unlearn import forget_sample, unlearning_check


def _data(n: int = 40, q: int = 15, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, d))
    lab = rng.integers(0, 3, n)
    qlab = rng.integers(0, 3, q)
    emb = (centres[lab] + rng.normal(size=(n, d))).astype(np.float32)
    qry = (centres[qlab] + rng.normal(size=(q, d))).astype(np.float32)
    return emb, lab, qry, qlab


def _brute_predict(emb, lab, ids, q, k, T=0.07):
    """Weighted k-NN by hand over the rows `ids` (ties: lower id first, lower class wins)."""
    e = emb[ids] / np.linalg.norm(emb[ids], axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    out = []
    for s in qn @ e.T:
        order = sorted(range(len(ids)), key=lambda j: (-s[j], ids[j]))[:k]
        score = np.zeros(3)
        for j in order:
            score[lab[ids[j]]] += np.exp(s[j] / T)
        out.append(int(np.argmax(score)))
    return np.asarray(out)


def test_forget_sample() -> None:
    a = forget_sample(100, 0.05, seed=3)
    assert len(a) == 5 and np.all(np.diff(a) > 0) and a.max() < 100
    assert np.array_equal(a, forget_sample(100, 0.05, seed=3))
    assert len(forget_sample(10, 0.01)) == 1 and len(forget_sample(3, 0.99)) == 2
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="forget_fraction"):
            forget_sample(10, bad)
    with pytest.raises(ValueError, match="at least 2"):
        forget_sample(1, 0.5)


def test_unlearning_check_proves_removal_and_reports_accuracies() -> None:
    emb, lab, qry, qlab = _data()
    forgotten = forget_sample(len(lab), 0.25, seed=1)
    full = build_memory(emb, lab)
    out = unlearning_check(full, emb, lab, qry, qlab, forgotten, k=5)
    m, check = out["metrics"], out["check"]
    assert m["ok"] == 1.0 and check["ok"] and m["removed"] == 10.0
    assert check["removed_ids_in_results"] == 0 and check["removed_ids_still_stored"] == 0
    assert len(full) == 40  # the memory given is not edited
    keep = np.setdiff1d(np.arange(40), forgotten)
    before = _brute_predict(emb, lab, np.arange(40), qry, 5)
    after = _brute_predict(emb, lab, keep, qry, 5)
    assert m["accuracy_before"] == pytest.approx(100 * np.mean(before == qlab))
    assert m["accuracy_after"] == pytest.approx(100 * np.mean(after == qlab))
    assert m["predictions_changed"] == float(np.sum(before != after))


def test_unlearning_check_catches_a_memory_that_did_not_forget() -> None:
    emb, lab, qry, qlab = _data(seed=2)
    forgotten = forget_sample(len(lab), 0.25, seed=0)

    class Stubborn(VisualMemory):  # remove() keeps everything: the check must fail
        def copy(self):
            c = super().copy()
            c.remove = lambda ids: 0
            return c

    full = Stubborn(emb.shape[1])
    full.add(emb, lab)
    out = unlearning_check(full, emb, lab, qry, qlab, forgotten, k=5)
    assert out["metrics"]["ok"] == 0.0 and out["check"]["removed_ids_still_stored"] == 10


def test_privacy_metrics_from_an_audit() -> None:
    audit = {"non_private_fraction": 0.125, "non_private_count": 5, "queries_with_flips": 3}
    assert privacy_metrics(audit) == {
        "non_private_fraction": 12.5, "non_private_count": 5.0, "queries_with_flips": 3.0,
    }  # fmt: skip
    audit |= {"accuracy_top1": 80.0, "paper_variant": {"bad_fraction": 0.05, "bad_count": 2}}
    m = privacy_metrics(audit)
    assert (m["accuracy_top1"], m["paper_variant_fraction"], m["paper_variant_count"]) == (
        80.0, 5.0, 2.0,
    )  # fmt: skip
