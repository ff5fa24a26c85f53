"""PatchMemory: streaming softmax vote = dense reference, top-k cosine vote, forgetting = never added."""

from __future__ import annotations

import math

import pytest
import torch

from procvision.memory.errors import VisualMemoryError
from procvision.memory.patch_memory import PatchMemory, streaming_softmax_vote, streaming_topk


def _toy(n=500, c=16, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, c, generator=g) * 3  # unnormalised, large logits
    labels = torch.randint(0, k, (n,), generator=g)
    return feats, labels


def test_streaming_softmax_vote_equals_dense_softmax():
    keys, labels = _toy()
    q = torch.randn(37, 16, generator=torch.Generator().manual_seed(1)) * 3
    dense = torch.softmax(q.double() @ keys.double().T / math.sqrt(16), 1)
    ref = dense @ torch.nn.functional.one_hot(labels, 5).double()
    for block in (64, 1000, 1 << 24):  # many chunks of queries and keys, and one block
        got = streaming_softmax_vote(q, keys, labels, 5, block=block)
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)


def test_streaming_topk_equals_full_topk():
    keys, _ = _toy(300)
    q = torch.randn(9, 16, generator=torch.Generator().manual_seed(2))
    s, i = streaming_topk(q, keys, 7, block=50)
    full = q @ keys.T
    ref_s, ref_i = full.topk(7, dim=1)
    torch.testing.assert_close(s, ref_s)
    assert torch.equal(i, ref_i)
    inv = 1 / keys.norm(dim=1)
    s, i = streaming_topk(q, keys, 7, block=50, key_scale=inv)
    ref_s, ref_i = (q @ (keys * inv[:, None]).T).topk(7, dim=1)
    torch.testing.assert_close(s, ref_s)
    assert torch.equal(i, ref_i)


def test_topk_vote_on_a_hand_case():
    mem = PatchMemory(2, 3)
    mem.add(torch.tensor([[1.0, 0], [10.0, 0.1], [0, 1], [0, 5]]), [1, 1, 2, 0], [0, 0, 1, 1])
    # Query along x: neighbours 0 and 1 (label 1) win with k = 2, whatever their norms.
    p = mem.topk_vote(torch.tensor([[3.0, 0.0]]), k=2, T=0.07)
    assert int(p.argmax()) == 1 and p[0, 1] == pytest.approx(1.0)
    # k = 3, T large: the vote is almost plurality, 2 of 3 for label 1.
    p = mem.topk_vote(torch.tensor([[1.0, 0.2]]), k=3, T=1e6)
    assert p[0, 1] == pytest.approx(2 / 3, abs=1e-4)


def test_softmax_vote_uses_unnormalised_tokens():
    mem = PatchMemory(2, 2)
    # Two patches in the same direction as the query; the long one dominates the raw dot product.
    mem.add(torch.tensor([[1.0, 0.0], [8.0, 0.0]]), [0, 1], [0, 1])
    p = mem.softmax_vote(torch.tensor([[2.0, 0.0]]))
    w = torch.softmax(torch.tensor([2.0, 16.0]).double() / math.sqrt(2), 0)
    torch.testing.assert_close(p[0], w)


def test_forgetting_an_image_equals_never_adding_it():
    feats, labels = _toy(60)
    groups = torch.arange(60) // 10  # 6 images of 10 patches
    full, never = PatchMemory(16, 5), PatchMemory(16, 5)
    full.reserve(60)  # capacity does not change the content
    for img in range(6):
        rows = groups == img
        full.add(feats[rows], labels[rows], img)
        if img != 2:
            never.add(feats[rows], labels[rows], img)
    q = torch.randn(4, 16)
    before = full.softmax_vote(q)
    assert full.forget([2]) == 10 and full.forget([2]) == 0
    assert len(full) == len(never) == 50
    assert full.content_hash() == never.content_hash()
    assert torch.equal(full.features, never.features) and torch.equal(full.groups, never.groups)
    assert torch.equal(full.softmax_vote(q), never.softmax_vote(q))
    assert torch.equal(full.topk_vote(q, k=3), never.topk_vote(q, k=3))
    assert not torch.equal(before, full.softmax_vote(q))
    assert full.group_ids.tolist() == [0, 1, 3, 4, 5]


def test_bad_inputs_are_refused():
    mem = PatchMemory(4, 3)
    with pytest.raises(VisualMemoryError, match="empty"):
        mem.softmax_vote(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"\[M, 4\]"):
        mem.add(torch.zeros(2, 5), [0, 0], 0)
    with pytest.raises(ValueError, match="labels must lie"):
        mem.add(torch.zeros(2, 4), [0, 3], 0)
    with pytest.raises(ValueError, match="one label and one group"):
        mem.add(torch.zeros(2, 4), [0, 1], [0, 1, 2])
    with pytest.raises(TypeError, match="integers"):
        mem.add(torch.zeros(1, 4), [0.5], 0)
