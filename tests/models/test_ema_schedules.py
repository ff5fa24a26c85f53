"""EMA update and step schedules."""

import math

import pytest
import torch

from procvision.models.ema import ema_update_
from procvision.models.schedules import cosine_schedule, linear_warmup, warmup_cosine


def _pair(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (5,), (2, 2, 2)]
    return [torch.randn(s, generator=g) for s in shapes], [
        torch.randn(s, generator=g) for s in shapes
    ]


def test_ema_momentum_one_keeps_teacher():
    t, s = _pair()
    before = [x.clone() for x in t]
    ema_update_(t, s, 1.0)
    for a, b in zip(t, before, strict=True):
        torch.testing.assert_close(a, b)


def test_ema_momentum_zero_copies_student():
    t, s = _pair()
    ema_update_(t, s, 0.0)
    for a, b in zip(t, s, strict=True):
        torch.testing.assert_close(a, b)


def test_ema_foreach_equals_loop():
    t, s = _pair(1)
    ref = [0.7 * a + 0.3 * b for a, b in zip(t, s, strict=True)]
    ema_update_(t, s, 0.7)
    for a, b in zip(t, ref, strict=True):
        torch.testing.assert_close(a, b)


def test_ema_on_parameters_and_errors():
    teacher, student = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    teacher.requires_grad_(False)
    ema_update_(teacher.parameters(), student.parameters(), 0.0)
    torch.testing.assert_close(teacher.weight, student.weight.detach())
    with pytest.raises(ValueError):
        ema_update_(list(teacher.parameters())[:1], student.parameters(), 0.5)
    with pytest.raises(ValueError):
        ema_update_(teacher.parameters(), student.parameters(), 1.5)


def test_cosine_endpoints_and_monotone():
    vals = [cosine_schedule(s, 100, 0.996, 1.0) for s in range(101)]
    assert vals[0] == pytest.approx(0.996) and vals[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in zip(vals, vals[1:], strict=False))
    assert cosine_schedule(50, 100, 0.0, 1.0) == pytest.approx(0.5)
    assert cosine_schedule(500, 100, 0.04, 0.4) == pytest.approx(0.4)  # clamped past the end
    assert cosine_schedule(3, 0, 1.0, 2.0) == 2.0


def test_warmup_cosine():
    total, warm, peak, final = 1000, 100, 1e-3, 1e-6
    vals = [warmup_cosine(s, total, warm, peak, final) for s in range(total + 1)]
    assert vals[0] == 0.0
    assert vals[50] == pytest.approx(peak / 2)
    assert vals[warm] == pytest.approx(peak)
    assert vals[total] == pytest.approx(final)
    assert all(b > a for a, b in zip(vals[:warm], vals[1 : warm + 1], strict=True))
    assert all(b <= a for a, b in zip(vals[warm:], vals[warm + 1 :], strict=False))
    # halfway through the cosine part: the mean of peak and final
    assert warmup_cosine(550, total, warm, peak, final) == pytest.approx((peak + final) / 2)
    # warm-up longer than the run: still defined, never above peak
    assert max(warmup_cosine(s, 10, 50, peak, final) for s in range(20)) <= peak
    assert not any(math.isnan(warmup_cosine(s, 10, 50, peak, final)) for s in range(20))


def test_teacher_temperature_warmup():
    assert linear_warmup(0, 30, 0.04, 0.07) == pytest.approx(0.04)
    assert linear_warmup(15, 30, 0.04, 0.07) == pytest.approx(0.055)
    assert linear_warmup(30, 30, 0.04, 0.07) == pytest.approx(0.07)
    assert linear_warmup(99, 30, 0.04, 0.07) == pytest.approx(0.07)
    assert linear_warmup(5, 0, 0.04, 0.04) == pytest.approx(0.04)
