"""The shipped valid-program list of the default pool agrees with the filter it stands for."""

import torch

from procvision.data.shaders.core import resolve_families
from procvision.data.shaders.filter import FILTER_SIZE, FILTER_VERSION, degenerate_mask
from procvision.data.shaders.shipped import shipped_valid


def test_shipped_default_pool_matches_a_fresh_filter_sample():
    torch.set_num_threads(1)
    fams = resolve_families(None)
    valid = shipped_valid(FILTER_VERSION, FILTER_SIZE, 0, 21083, fams)
    assert valid is not None, "regenerate: python -m procvision.data.shaders.shipped"
    assert 0.9 * 21083 < len(valid) < 21083  # the filter rejects a few percent
    shipped_ok = torch.zeros(21083, dtype=torch.bool)
    shipped_ok[valid] = True
    rejected = torch.nonzero(~shipped_ok).flatten()
    # every rejected id is checked on a sample of them, plus random ids: both must agree
    g = torch.Generator().manual_seed(0)
    sample = torch.cat(
        [
            rejected[torch.randperm(len(rejected), generator=g)[:48]],
            torch.randperm(21083, generator=g)[:48],
        ]
    )
    fresh_bad = degenerate_mask(0, sample, fams)
    assert torch.equal(fresh_bad, ~shipped_ok[sample])


def test_no_shipped_list_for_other_pools():
    assert shipped_valid(FILTER_VERSION, FILTER_SIZE, 1, 21083, resolve_families(None)) is None
    assert shipped_valid(FILTER_VERSION, FILTER_SIZE, 0, 500, resolve_families(None)) is None
