"""The DINO loss against a reference written from the equations, and the centre update."""

import math

import pytest
import torch

from procvision.models.loss import batch_center, dino_loss, update_center


def reference_loss(student, teacher, center, student_temp, teacher_temp):
    """Loop over pairs (q, v != q) of mean_b sum_k -p_t[q] log p_s[v], in float64, from scratch."""
    total, pairs = 0.0, 0
    for q in range(teacher.shape[0]):
        z = (teacher[q].double() - center.double()) / teacher_temp
        p = torch.exp(z - z.max(dim=-1, keepdim=True).values)
        p = p / p.sum(dim=-1, keepdim=True)
        for v in range(student.shape[0]):
            if v == q:
                continue
            s = student[v].double() / student_temp
            m = s.max(dim=-1, keepdim=True).values
            log_q = s - m - torch.log(torch.exp(s - m).sum(dim=-1, keepdim=True))
            total = total + (-(p * log_q).sum(dim=-1)).mean()
            pairs += 1
    return total / pairs


@pytest.mark.parametrize("batch", [1, 3, 8])
@pytest.mark.parametrize("n_local", [0, 1, 4])
@pytest.mark.parametrize("temps", [(0.1, 0.04), (0.2, 0.07), (1.0, 1.0)])
def test_matches_reference(batch, n_local, temps):
    g = torch.Generator().manual_seed(batch * 100 + n_local)
    k = 17
    student = torch.randn(2 + n_local, batch, k, generator=g) * 3
    teacher = torch.randn(2, batch, k, generator=g) * 3
    center = torch.randn(1, k, generator=g)
    got = dino_loss(student, teacher, center, *temps)
    want = reference_loss(student, teacher, center, *temps)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    # a list of views is the same
    got_list = dino_loss(list(student), list(teacher), center, *temps)
    torch.testing.assert_close(got_list, got)


def test_hand_computed():
    # softmax([log 3, 0]) = [3/4, 1/4]; softmax([0, 0]) = [1/2, 1/2]; temperatures 1, no centre
    s = torch.tensor([[[0.0, 0.0]], [[math.log(3), 0.0]]])
    t = s.clone()
    pair_01 = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))  # teacher 0 vs student 1
    pair_10 = -(0.75 * math.log(0.5) + 0.25 * math.log(0.5))  # teacher 1 vs student 0
    got = dino_loss(s, t, torch.zeros(1, 2), 1.0, 1.0)
    assert got.item() == pytest.approx((pair_01 + pair_10) / 2, rel=1e-6)


def test_bf16_inputs_are_computed_in_fp32():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 2, 9, generator=g), torch.randn(2, 2, 9, generator=g)
    c = torch.zeros(1, 9)
    got = dino_loss(s.bfloat16(), t.bfloat16(), c, 0.1, 0.04)
    want = reference_loss(s.bfloat16().float(), t.bfloat16().float(), c, 0.1, 0.04)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_gradient_flows_to_student_only():
    s = torch.randn(3, 2, 5, requires_grad=True)
    t = torch.randn(2, 2, 5, requires_grad=True)
    dino_loss(s, t, torch.zeros(1, 5)).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_raises_on_fewer_than_two_views():
    with pytest.raises(ValueError, match="at least 2"):
        dino_loss(torch.randn(1, 2, 5), torch.randn(1, 2, 5), torch.zeros(1, 5))
    with pytest.raises(ValueError):
        dino_loss(torch.randn(2, 2, 5), torch.randn(3, 2, 5), torch.zeros(1, 5))


def test_center_update():
    t = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])  # [V=2, B=2, K=2]
    mean = batch_center(t)
    torch.testing.assert_close(mean, torch.tensor([[4.0, 5.0]]))
    c = update_center(torch.tensor([[0.0, 10.0]]), mean, 0.9)
    torch.testing.assert_close(c, torch.tensor([[0.4, 9.5]]))
