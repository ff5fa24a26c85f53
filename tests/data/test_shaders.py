"""Tests of the torch-native shader programs (procvision.data.shaders), all at 32 px or less."""

from __future__ import annotations

import json
import math

import pytest
import torch

from procvision.data.shaders import (
    FAMILY_NAMES,
    Program,
    ShaderSource,
    degenerate_mask,
    is_degenerate_image,
    program,
    programs,
    rejection_rate,
    render_ids,
    render_programs,
    valid_programs,
)
from procvision.data.shaders import filter as shader_filter
from procvision.data.shaders.core import family_of
from procvision.data.shaders.ops import atan2, hsv, value_noise

SIZE = 32


@pytest.fixture(autouse=True)
def _cache_dir_and_one_thread(tmp_path, monkeypatch):
    """Keep valid-id cache files out of the home folder; one thread (the CI machine is shared)."""
    monkeypatch.setenv("PROCVISION_CACHE_DIR", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_family_registry_has_the_ten_families():
    assert len(FAMILY_NAMES) >= 10
    for name in ("kaleido_fold", "fold_volume", "sdf_shapes", "sphere_trace", "noise", "voronoi",
                 "periodic", "escape_time", "tunnel", "particles"):  # fmt: skip
        assert name in FAMILY_NAMES


def test_render_is_independent_of_batch_size_and_order():
    src = ShaderSource(seed=3, pool_size=500, filter_degenerate=False)
    idx = torch.arange(24, dtype=torch.int64) * 7 + 11
    whole = src.render(idx, SIZE)
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    parts = torch.cat([src.render(idx[perm][i : i + 5], SIZE) for i in range(0, 24, 5)])
    back = torch.empty_like(parts)
    back[perm] = parts
    assert torch.equal(whole, back)
    assert torch.equal(src.render(idx[5:6], SIZE)[0], whole[5])


def test_shapes_dtype_range_and_finite():
    src = ShaderSource(seed=1, pool_size=300, filter_degenerate=False)
    for size in (SIZE, 19):
        x = src.render(torch.arange(20), size)
        assert x.shape == (20, 3, size, size) and x.dtype == torch.float32
        assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1


def test_raw_render_of_many_programs_has_no_nan():
    pids = torch.arange(120)
    t = torch.linspace(0.1, 10.0, 120)
    raw = render_ids(0, pids, t, 16, sanitize=False)
    assert torch.isfinite(raw).float().mean() > 0.999


def test_distinct_programs_give_distinct_images():
    pids = torch.arange(40)
    x = render_ids(5, pids, torch.full((40,), 2.5), SIZE).reshape(40, -1)
    d = torch.cdist(x, x) / math.sqrt(x.shape[1])
    off = d[~torch.eye(40, dtype=torch.bool)]
    assert off.min() > 0.01


def test_same_program_changes_with_time():
    t = torch.tensor([0.5, 3.0, 7.5])
    x = render_ids(0, torch.full((3,), 4), t, SIZE)
    assert (x[0] - x[1]).abs().mean() > 1e-3 or (x[1] - x[2]).abs().mean() > 1e-3


def test_filtered_source_images_are_almost_never_degenerate():
    src = ShaderSource(seed=0, pool_size=96, filter_degenerate=True)
    x = src.render(torch.arange(300), SIZE)
    bad = is_degenerate_image(x).float().mean().item()
    assert bad <= 0.01, bad
    assert 0.0 <= src.rejection_rate() < 0.3
    assert src.describe()["rejection_rate"] == pytest.approx(src.rejection_rate())
    assert set(src.program_ids(torch.arange(300)).tolist()) <= set(src.valid_programs().tolist())


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_each_family_renders_mostly_non_degenerate_images(family):
    pids = torch.arange(12)
    x = render_ids(2, pids, torch.linspace(0.5, 9.5, 12), SIZE, (family,))
    assert is_degenerate_image(x).float().mean() <= 0.25


def test_program_round_trips_through_json_and_renders_identically():
    seed, ids = 4, list(range(30))
    progs = programs(seed, ids)
    assert {p.family for p in progs} == set(FAMILY_NAMES)  # 30 ids cover every family here
    for p in progs:
        q = Program.from_dict(json.loads(json.dumps(p.to_dict())))
        assert q == p
    assert program(seed, 7) == progs[7]
    t = torch.linspace(0.3, 9.0, 30)
    direct = render_ids(seed, torch.tensor(ids), t, SIZE)
    from_view = render_programs([Program.from_dict(p.to_dict()) for p in progs], t, SIZE)
    assert torch.equal(direct, from_view)


def test_program_view_is_readable():
    p = program(0, 3)
    assert p.family in FAMILY_NAMES and p.seed == 0 and p.id == 3
    assert 0 <= len(p.warps) <= 3 and all("kind" in w for w in p.warps)
    assert "kind" in p.colour and "tone" in p.colour["post"]
    assert all(isinstance(v, (int, str)) for v in p.structure.values())


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="valid families: kaleido_fold"):
        ShaderSource(families=["kaleido_fold", "nope"])
    with pytest.raises(ValueError, match="unknown"):
        Program.from_dict(
            {"family": "nope", "structure": {}, "constants": {}, "warps": [], "colour": {}}
        )


def test_bad_arguments():
    with pytest.raises(ValueError):
        ShaderSource(pool_size=0)
    with pytest.raises(ValueError):
        ShaderSource(supersample=0)
    with pytest.raises(ValueError):
        ShaderSource(pool_size=10).program(10)


def test_family_subset_and_supersample():
    src = ShaderSource(
        seed=0, pool_size=50, families=["periodic"], filter_degenerate=False, supersample=2
    )
    x = src.render(torch.arange(6), 16)
    assert x.shape == (6, 3, 16, 16) and x.min() >= 0 and x.max() <= 1
    assert all(p.family == "periodic" for p in programs(0, range(10), ["periodic"]))
    assert (family_of(0, torch.arange(100), ("noise", "voronoi")) < 2).all()


def test_times_and_program_ids_are_pure_and_in_range():
    src = ShaderSource(seed=9, pool_size=77, filter_degenerate=False)
    idx = torch.arange(1000)
    t = src.times(idx)
    assert t.min() >= 0.1 and t.max() < 10.0 and t.std() > 2.0
    p = src.program_ids(idx)
    assert p.min() >= 0 and p.max() < 77 and len(p.unique()) > 60
    assert torch.equal(p[10:20], src.program_ids(idx[10:20]))


def test_is_degenerate_image_criteria():
    g = torch.Generator().manual_seed(0)
    const = torch.full((1, 3, 16, 16), 0.4)
    nan = torch.rand(1, 3, 16, 16, generator=g)
    nan[0, 1, 3, 4] = float("nan")
    two = torch.zeros(1, 3, 16, 16)
    two[..., :8] = 1.0  # std 0.5 but only two colours
    noise = torch.rand(1, 3, 16, 16, generator=g)
    ramp = torch.linspace(0, 1, 16).expand(1, 3, 16, 16).clone()
    ramp[:, 0] = ramp[:, 0].flip(-1)
    out = is_degenerate_image(torch.cat([const, nan, two, noise, ramp]))
    assert out.tolist() == [True, True, True, False, False]
    with pytest.raises(ValueError):
        is_degenerate_image(torch.zeros(2, 16, 16))


def test_degenerate_mask_matches_all_eight_renders():
    pids = torch.arange(16)
    fast = degenerate_mask(1, pids)
    t = 0.1 + 9.9 * shader_filter.rng.uniform(1, pids, shader_filter.STREAM_FILTER_T, 8)
    raw = render_ids(
        1, pids.repeat_interleave(8), t.reshape(-1), shader_filter.FILTER_SIZE, sanitize=False
    )
    slow = is_degenerate_image(raw).reshape(16, 8).sum(1) > 4
    assert torch.equal(fast, slow)


def test_valid_set_is_cached_in_a_file(tmp_path):
    fams = ["tunnel", "periodic"]
    v = valid_programs(2, 40, fams)
    files = list((tmp_path / "cache").glob("shaders_valid_*.pt"))
    assert len(files) == 1
    shader_filter._VALID.clear()
    assert torch.equal(valid_programs(2, 40, fams), v)
    assert rejection_rate(2, 40, fams) == pytest.approx(1 - len(v) / 40)
    assert torch.equal(v, torch.arange(40)[~degenerate_mask(2, torch.arange(40), fams)])


def test_ops_against_hand_values():
    h = torch.tensor([[[0.0]], [[1 / 3]], [[2 / 3]]])
    rgb = hsv(h, torch.ones_like(h), torch.ones_like(h)).reshape(3, 3)
    assert torch.allclose(rgb, torch.eye(3), atol=1e-6)  # red, green, blue
    y, x = torch.randn(1000), torch.randn(1000)
    assert torch.allclose(atan2(y, x), torch.atan2(y, x), atol=1e-5)
    assert atan2(torch.tensor([0.0]), torch.tensor([-1.0])).item() == pytest.approx(math.pi)
    xs = torch.tensor([[[0.0, 1.0, 2.0]]])
    corner = value_noise(xs, torch.zeros_like(xs), 5)  # at lattice points: the hash itself
    assert ((corner >= 0) & (corner < 1)).all() and len(corner.unique()) == 3
    mid = value_noise(torch.tensor([[[0.5]]]), torch.tensor([[[0.0]]]), 5)
    assert mid.item() == pytest.approx(0.5 * (corner[0, 0, 0] + corner[0, 0, 1]).item(), abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_up_to_rounding():
    # Chaotic families (folds, escape time) amplify rounding differences, so compare loosely.
    src = ShaderSource(seed=0, pool_size=200, filter_degenerate=False)
    idx = torch.arange(40)
    a = src.render(idx, SIZE)
    b = src.render(idx.cuda(), SIZE)
    assert b.device.type == "cuda"
    close = ((a - b.cpu()).abs().reshape(40, -1).mean(1) < 0.05).float().mean()
    assert close >= 0.8
