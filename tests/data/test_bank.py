"""BankSource: a fixed bank of base images under the compositions (the paper's pre-rendered form)."""

from __future__ import annotations

import pytest
import torch

from procvision.data import compose
from procvision.data.bank import BankSource
from procvision.data.compose import (
    _S_KML_INDEX,
    KMLMixupSource,
    KMLSource,
    MixupSource,
    draw_indices,
    kml_mask,
)
from procvision.data.registry import make_source
from procvision.data.source import Source
from tests.data.test_compose import GradientSource

Q = 0.5 / 255 + 1e-6  # uint8 quantisation error


def test_bank_image_is_the_quantised_base_image_mod_bank_size():
    base = GradientSource()
    bank = BankSource(base, 10)
    got = bank.render(torch.tensor([3, 13, 27]), 16)
    want = base.render(torch.tensor([3, 3, 7]), 16)
    assert (got - want).abs().max() <= Q
    assert torch.equal(got[0], got[1])
    assert torch.equal(got * 255, (got * 255).round())  # exact multiples of 1/255


def test_bank_renders_each_entry_once_and_is_batch_independent():
    base = GradientSource()
    bank = BankSource(base, 8)
    a = bank.render(torch.tensor([0, 1, 2]), 16)
    assert base.calls == [3] and bank.filled(16) == 3
    b = bank.render(torch.tensor([2, 9, 10, 11]), 16)  # 9, 10, 11 -> 1, 2, 3: only 3 is new
    assert base.calls == [3, 1]
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    bank.fill(16, progress=False)
    assert bank.filled(16) == 8 and sum(base.calls) == 8
    whole = BankSource(GradientSource(), 8).render(torch.arange(8), 16)
    assert torch.equal(whole, bank.render(torch.arange(8), 16))
    bank.render(torch.arange(8), 32)  # another size is another bank
    assert bank.filled(32) == 8


def test_bank_size_must_be_positive():
    with pytest.raises(ValueError, match="bank_size"):
        BankSource(GradientSource(), 0)


def test_derived_values_are_computed_once_per_entry():
    bank = BankSource(GradientSource(), 6)
    calls = []

    def mean_grey(x):
        calls.append(x.shape[0])
        return x.mean(1, keepdim=True)

    d1 = bank.derived("grey", torch.tensor([0, 1, 7]), 8, mean_grey)
    d2 = bank.derived("grey", torch.tensor([1, 6, 2]), 8, mean_grey)  # 7 == 1, 6 == 0 mod 6
    assert calls == [2, 1]  # {0, 1}, then {2}
    assert torch.equal(d1[1], d2[0]) and torch.equal(d1[0], d2[1])
    want = bank.render(torch.tensor([0, 1, 1]), 8).mean(1, keepdim=True)
    assert (d1 - want).abs().max() <= Q


def test_kml_over_a_bank_uses_the_cached_mask_of_s1(monkeypatch):
    bank = BankSource(GradientSource(), 16)
    kml = KMLSource(bank, seed=3, mask_size=16)
    idx = torch.arange(20)
    masked = []
    real_mask = compose.kml_mask
    monkeypatch.setattr(compose, "kml_mask", lambda x, w: masked.append(len(x)) or real_mask(x, w))
    out = kml.render(idx, 16)
    again = kml.render(idx + 1000, 16)  # other composites, mostly the same s1 entries
    assert sum(masked) <= 16 and len(masked) <= 2 and not torch.equal(out, again)
    src = draw_indices(3, idx, _S_KML_INDEX, 3)
    s = bank.render(src.reshape(-1), 16).view(20, 3, 3, 16, 16)
    m = kml_mask(s[:, 0], 16)
    want = m * s[:, 1] + (1 - m) * s[:, 2]
    assert (out - want).abs().max() <= 2 * Q  # the mask is stored as uint8 too


def test_banked_compositions_are_independent_of_batch_and_fill_order():
    def make():
        return KMLMixupSource(BankSource(GradientSource(), 24), seed=1, mask_size=16)

    idx = torch.arange(60)
    whole = make().render(idx, 16)
    other, perm = make(), torch.randperm(60, generator=torch.Generator().manual_seed(0))
    parts = torch.empty_like(whole)
    for chunk in perm.split(7):  # another order and batch size fills banks and masks differently
        parts[chunk] = other.render(idx[chunk], 16)
    assert torch.equal(whole, parts)


class NaNSource(Source):
    """A broken base: NaN, inf and out-of-range values in every image."""

    name = "nan"

    def _render(self, indices, size, device):
        x = torch.full((len(indices), 3, size, size), float("nan"), device=device)
        x[..., 0, :] = float("inf")
        x[..., 1, :] = -5.0
        return x


def test_compositions_of_a_broken_base_stay_finite():
    """Compositions skip the NaN scan: they rely on their base's render having sanitised it."""
    base = NaNSource()
    for src in (
        MixupSource(base, n=3, seed=0),
        KMLSource(base, seed=0, mask_size=8),
        KMLMixupSource(BankSource(base, 4), seed=0, mask_size=8),
    ):
        out = src.render(torch.arange(5), 8)
        assert out.isfinite().all() and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("alpha", [0.0, 1e-320, float("inf"), float("nan"), -1.0])
def test_mixup_rejects_alphas_that_would_give_nan_weights(alpha):
    with pytest.raises(ValueError, match="alpha"):
        MixupSource(GradientSource(), n=3, alpha=alpha)


def test_compositions_over_a_bank_make_new_images_without_new_renders():
    base = GradientSource()
    src = KMLMixupSource(BankSource(base, 32), seed=0, mask_size=16)
    src.kml.base.fill(16, progress=False)
    n_renders = sum(base.calls)
    a = src.render(torch.arange(64), 16)
    b = src.render(torch.arange(64, 128), 16)
    assert sum(base.calls) == n_renders == 32  # every composite came from the bank
    assert not torch.equal(a, b)
    flat = torch.cat([a, b]).flatten(1)
    assert torch.unique(flat, dim=0).shape[0] > 120  # far more composites than bank images
    mix = MixupSource(BankSource(base, 4), n=6, seed=0).render(torch.arange(8), 16)
    assert mix.shape == (8, 3, 16, 16) and mix.isfinite().all()


def test_registry_bank_size_wraps_the_base():
    kml = make_source("kml_mixup", bank_size=64, mask_size=16)
    assert isinstance(kml.kml.base, BankSource) and kml.kml.base.bank_size == 64
    assert kml.describe()["kml"]["base"]["family"] == "bank"
    fixed = make_source("dead_leaves", bank_size=5)
    assert isinstance(fixed, BankSource)
    assert torch.equal(fixed.render(torch.tensor([1]), 16), fixed.render(torch.tensor([6]), 16))
