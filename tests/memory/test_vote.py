"""Votes and the k sweep against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from procvision.memory import (
    VisualMemory,
    knn_sweep,
    map_labels,
    predict,
    topk_classes,
    vote_scores,
)

SIMS = np.array([[0.9, 0.8, 0.7]], np.float32)
LABELS = np.array([[0, 1, 1]])


def test_weighted_hand_computed():
    # exp(0.9/0.1) = e^9, exp(0.8/0.1) + exp(0.7/0.1) = e^8 + e^7 (values from a calculator)
    s = vote_scores(np.array([[0.9, 0.8, 0.7]]), LABELS, 2, "weighted", T=0.1)  # float64 input
    assert s.dtype == np.float64 and s.shape == (1, 2)
    np.testing.assert_allclose(
        s[0], [8103.083927575384, 2980.957987041728 + 1096.6331584284585], rtol=1e-12
    )
    assert predict(s).tolist() == [0]


def test_plurality_hand_computed():
    s = vote_scores(SIMS, LABELS, 2, "plurality")
    assert s.tolist() == [[1.0, 2.0]]
    assert predict(s).tolist() == [1]


def test_rank_hand_computed():
    # ranks 0, 1, 2 weigh 1/2, 1/3, 1/4 (Geirhos et al., offset 2)
    s = vote_scores(SIMS, LABELS, 2, "rank")
    np.testing.assert_allclose(s[0], [0.5, 1 / 3 + 1 / 4], rtol=0, atol=1e-15)
    assert predict(s).tolist() == [1]


def test_weighted_default_temperature_is_dino():
    s = vote_scores(np.array([[0.7]], np.float32), np.array([[0]]), 1, "weighted")
    np.testing.assert_allclose(s[0, 0], np.exp(np.float64(np.float32(0.7)) / 0.07), rtol=1e-15)


def test_padding_is_ignored_and_no_votes_predict_minus_one():
    sims = np.array([[0.5, -np.inf, -np.inf], [-np.inf, -np.inf, -np.inf]], np.float32)
    labels = np.array([[2, -1, -1], [-1, -1, -1]])
    for method in ("weighted", "plurality", "rank"):
        s = vote_scores(sims, labels, 3, method)
        assert (s[0, :2] == 0).all() and s[0, 2] > 0 and (s[1] == 0).all()
        assert predict(s).tolist() == [2, -1]


def test_ties_lowest_class_wins():
    assert predict(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])).tolist() == [1, 0]
    assert topk_classes(np.array([[1.0, 3.0, 3.0, 1.0]]), 4).tolist() == [[1, 2, 0, 3]]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="method"):
        vote_scores(SIMS, LABELS, 2, "softmax")
    with pytest.raises(ValueError, match="num_classes"):
        vote_scores(SIMS, LABELS, 1)
    with pytest.raises(ValueError, match="labels"):
        map_labels([5], np.array([1, 2]))
    assert map_labels([[10, -1, 30]], np.array([10, 30])).tolist() == [[0, -1, 1]]
    assert map_labels([99], np.array([10, 30]), unknown=-2).tolist() == [-2]


def _angle(deg: float) -> list[float]:
    r = np.deg2rad(deg)
    return [np.cos(r), np.sin(r)]


def test_knn_sweep_hand_computed():
    # Memory on the unit circle, labels non-contiguous (10, 30), 2 classes (< 5), 2 queries (< k).
    mem = VisualMemory(2, engine="faiss")
    mem.add(np.array([_angle(0), _angle(10), _angle(20), _angle(90)]), [10, 30, 30, 10])
    q = np.array([_angle(0), _angle(12)])
    r = knn_sweep(mem, q, [10, 30], ks=(1, 3, 4, 200), T=0.07)
    # q0 neighbours: 0deg(10) 10deg(30) 20deg(30) 90deg(10); q1: 10deg(30) 20deg(30) 0deg(10) 90deg(10)
    # k=1: both right.  k=3: every method says 30 for q0 (plurality 1:2; rank 1/2 : 1/3+1/4;
    # weighted e^14.29=1.60e6 : e^14.07+e^13.42=1.96e6) -> 50%.  k=4 plurality: 2:2 ties -> class 10,
    # right for q0, wrong for q1 -> 50%; rank: q0 1/2+1/5 > 1/3+1/4, q1 30 -> 100%; weighted: 50%.
    assert r["plurality"]["1"]["top1"] == 100.0
    for m in ("weighted", "plurality", "rank"):
        assert r[m]["3"]["top1"] == 50.0
        assert r[m]["3"]["top5"] == 100.0  # top-5 means top-2 here
    assert r["plurality"]["4"]["top1"] == 50.0
    assert r["rank"]["4"]["top1"] == 100.0
    assert r["weighted"]["4"]["top1"] == 50.0
    assert r["rank"]["200"] == r["rank"]["4"]  # k above the memory size is capped
    assert r["rank"]["best"] == {"k": 1, "top1": 100.0, "top5": 100.0}
    assert (
        r["info"]["num_classes"] == 2 and r["info"]["top5_n"] == 2 and r["info"]["k_searched"] == 4
    )


def test_knn_sweep_unknown_query_class_counts_wrong():
    mem = VisualMemory(2, engine="torch")
    mem.add(np.array([_angle(0), _angle(90)]), [3, 7])
    r = knn_sweep(mem, np.array([_angle(1), _angle(89)]), [3, 99], ks=(1,), methods=("plurality",))
    assert r["plurality"]["1"] == {"top1": 50.0, "top5": 50.0}


def test_knn_predict_hand_case_and_empty_memory():
    from procvision.memory import VisualMemory, knn_predict

    mem = VisualMemory(4)
    empty = knn_predict(mem, np.ones((2, 4), np.float32), 3)
    assert empty.labels.tolist() == [-1, -1] and (empty.ids == -1).all()
    mem.add(np.eye(4, dtype=np.float32)[:3], np.array([5, 7, 7]))
    out = knn_predict(mem, np.eye(4, dtype=np.float32), 2, method="plurality")
    # e0 -> ids (0, then 1 by id among the tied zeros): one vote each, lowest class (5) wins the tie
    assert out.ids[0].tolist() == [0, 1] and out.labels[0] == 5
    assert out.labels[1] == 5  # (7 at sim 1, 5 at sim 0): a tie under plurality -> class 5
    weighted = knn_predict(mem, np.eye(4, dtype=np.float32), 2)
    assert weighted.labels[:3].tolist() == [5, 7, 7]  # exp(1/T) outweighs exp(0/T)
    assert out.classes.tolist() == [5, 7] and out.scores.shape == (4, 2)
