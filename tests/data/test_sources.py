"""Image folders, StyleGAN-random, dead leaves and the family registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from procvision.data import dead_leaves as dl
from procvision.data.compose import KMLMixupSource, KMLSource, MixupSource
from procvision.data.dead_leaves import DeadLeavesSource, convex_inside, sample_radius
from procvision.data.folder import ImageFolderSource
from procvision.data.registry import FAMILIES, make_source
from procvision.data.rng import uniform
from procvision.data.stylegan import StyleGANRandomSource, wavelets


def _check_images(x: torch.Tensor, b: int, size: int) -> None:
    assert x.shape == (b, 3, size, size) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1


# --- image folders -------------------------------------------------------------------------


@pytest.fixture
def image_dir(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "a_rgb.png")
    Image.fromarray(np.full((16, 16), 77, np.uint8), mode="L").save(tmp_path / "b_gray.png")
    pal = Image.new("P", (16, 16))
    pal.putpalette([10, 20, 30, 250, 240, 230] + [0] * 762)
    pal.paste(1, (8, 0, 16, 16))  # right half uses palette entry 1
    pal.save(tmp_path / "c_palette.png")
    Image.fromarray(np.full((16, 16), 65535, np.uint16)).save(tmp_path / "d_16bit.png")
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :10, 2] = wide[:, 30:, 2] = 255  # blue sides, cropped away
    wide[:, 10:30, 1] = 255  # green centre square
    (tmp_path / "sub").mkdir()
    Image.fromarray(wide).save(tmp_path / "sub" / "e_wide.jpg", quality=95)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "z_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return tmp_path


def _by_name(src: ImageFolderSource, size: int) -> dict[str, torch.Tensor]:
    """Image at each permutation position, keyed by the file name there."""
    return {src.path(pos).name: src.render([pos], size)[0] for pos in range(len(src))}


def test_folder_source_decodes_every_mode(image_dir):
    src = ImageFolderSource(image_dir, seed=3)
    assert len(src) == 6  # .txt ignored, corrupt .png listed
    imgs = _by_name(src, 16)
    torch.testing.assert_close(imgs["a_rgb.png"][0], torch.full((16, 16), 200 / 255))
    gray = imgs["b_gray.png"]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    torch.testing.assert_close(gray[0], torch.full((16, 16), 77 / 255))
    pal = imgs["c_palette.png"]
    torch.testing.assert_close(pal[:, 0, 0], torch.tensor([10, 20, 30]) / 255)
    torch.testing.assert_close(pal[:, 0, 15], torch.tensor([250, 240, 230]) / 255)
    torch.testing.assert_close(imgs["d_16bit.png"], torch.ones(3, 16, 16))
    wide = imgs["e_wide.jpg"]  # centre crop keeps only the green square
    inner = wide[:, :, 2:-2]  # JPEG chroma subsampling blurs the crop edges
    assert inner[1].min() > 0.9 and inner[2].max() < 0.1
    # the corrupt file is skipped (next file of the permutation), recorded, and never fatal
    assert imgs["z_corrupt.png"].shape == (3, 16, 16)
    assert list(src.failures) == [str(image_dir / "z_corrupt.png")]


def test_folder_source_permutation_and_determinism(image_dir):
    src = ImageFolderSource(image_dir, seed=1)
    names = {src.path(i).name for i in range(len(src))}
    assert len(names) == 6  # positions 0..N-1 visit every file once
    x = src.render(torch.arange(14), 8)
    _check_images(x, 14, 8)
    assert torch.equal(x[:6], x[6:12])  # image i is file perm[i mod N]
    assert torch.equal(
        x, torch.cat([src.render(torch.arange(5), 8), src.render(torch.arange(5, 14), 8)])
    )
    other = ImageFolderSource(image_dir, seed=2)
    assert [other.path(i).name for i in range(6)] != [src.path(i).name for i in range(6)]


def test_folder_source_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolderSource(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        ImageFolderSource(tmp_path / "empty")


# --- StyleGAN-random -----------------------------------------------------------------------


def test_wavelets_bank():
    w = wavelets()
    assert w.shape == (40, 3, 3)
    torch.testing.assert_close(w[20:], -w[:20])
    torch.testing.assert_close(w[:16].sum((1, 2)), torch.zeros(16), atol=1e-6, rtol=0)
    edge0 = torch.tensor([[1.0, 0, -1], [1, 0, -1], [1, 0, -1]])  # unrotated edge
    torch.testing.assert_close(w[0], edge0)
    assert len({tuple(f.flatten().tolist()) for f in w}) == 40


def test_stylegan_images_and_determinism():
    src = StyleGANRandomSource(seed=0)
    x = src.render(torch.arange(6), 24)
    _check_images(x, 6, 24)
    y = torch.cat([src.render(torch.arange(0, 3), 24), src.render(torch.arange(3, 6), 24)])
    torch.testing.assert_close(x, y, atol=1e-6, rtol=0)
    assert (x[0] - x[2]).abs().mean() > 0.02


def test_stylegan_network_changes_every_block():
    src = StyleGANRandomSource(seed=0, block=400)
    ids = src.network_ids(torch.tensor([0, 1, 399, 400, 799, 800]))
    assert ids.tolist() == [0, 0, 0, 1, 1, 2]
    n0, n0b, n1 = (
        src.network(0, 16),
        StyleGANRandomSource(seed=0).network(0, 16),
        src.network(1, 16),
    )
    torch.testing.assert_close(n0["const"], n0b["const"])  # a network is fixed by (seed, block)
    torch.testing.assert_close(n0["affine"][2], n0b["affine"][2])
    assert not torch.allclose(n0["const"], n1["const"])
    # images are made by their block's network: handing out other networks changes them
    a = src.render(torch.tensor([5, 405]), 16)
    shifted = StyleGANRandomSource(seed=0, block=400)
    shifted.network = lambda nid, size: src.network(nid + 1, size)  # type: ignore[method-assign]
    b = shifted.render(torch.tensor([5, 405]), 16)
    assert not torch.allclose(a[0], b[0])  # network swapped -> image changes


def test_stylegan_colour_statistics():
    x = StyleGANRandomSource(seed=1).render(torch.arange(48), 16)
    means = x.mean((2, 3)).mean(0)
    torch.testing.assert_close(means, torch.tensor([0.483, 0.455, 0.401]), atol=0.07, rtol=0)


# --- dead leaves ---------------------------------------------------------------------------


def test_radius_inverse_cdf():
    u = torch.tensor([0.0, 0.5, 1.0 - 1e-7])
    r = sample_radius(u, 0.03, 1.0, 3.0)
    median = (0.5 * (0.03**-2 + 1.0)) ** -0.5  # F(r) = (rmin^-2 - r^-2) / (rmin^-2 - rmax^-2)
    torch.testing.assert_close(r, torch.tensor([0.03, median, 1.0]), atol=1e-4, rtol=0)
    rr = sample_radius(torch.rand(20000, generator=torch.Generator().manual_seed(0)), 0.03, 1, 3)
    frac = (rr < 0.06).float().mean().item()
    expected = (0.03**-2 - 0.06**-2) / (0.03**-2 - 1.0)
    assert abs(frac - expected) < 0.01


def test_convex_inside_unit_square():
    vx = torch.tensor([[[1.0, -1.0, -1.0, 1.0]]])  # [1, K=1, 4] counter-clockwise
    vy = torch.tensor([[[1.0, 1.0, -1.0, -1.0]]])
    px = torch.tensor([[0.0], [0.9], [1.1], [-0.5]])[:, None]  # [4, 1, 1]
    py = torch.tensor([[0.0], [-0.9], [0.0], [1.5]])[:, None]
    assert convex_inside(px, py, vx, vy)[:, 0, 0].tolist() == [True, True, False, False]


def test_dead_leaves_cover_canvas_and_use_every_shape():
    src = DeadLeavesSource(seed=0)
    idx = torch.arange(4)
    x = src.render(idx, 32)
    _check_images(x, 4, 32)
    bg = uniform(0, idx, dl._S_BACKGROUND, 3)[:, :, None, None]
    assert not (x == bg).all(1).any()  # no pixel kept the background: canvas covered
    assert torch.equal(x, torch.cat([src.render(idx[:1], 32), src.render(idx[1:], 32)]))
    kinds = src.shapes(torch.arange(2), 0, 200)["kind"]
    assert set(kinds.flatten().tolist()) == set(range(6))
    few = DeadLeavesSource(seed=0, n_shapes=3).render(idx, 32)
    assert (few == bg).all(1).any()  # with 3 shapes the background shows


# --- registry ------------------------------------------------------------------------------


def test_registry_unknown_family_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        make_source("nope")
    for f in FAMILIES:
        assert f in str(e.value)


def test_registry_builds_compositions_on_any_base(tmp_path):
    Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(tmp_path / "x.png")
    src = make_source("kml_mixup", seed=2, base="folder", root=str(tmp_path), mask_size=32)
    assert isinstance(src, KMLMixupSource) and isinstance(src.kml.base, ImageFolderSource)
    mix = make_source("shaders_mixup", base="dead_leaves", n=3, alpha=0.5, n_shapes=50)
    assert isinstance(mix, MixupSource) and (mix.n, mix.alpha, mix.base.n_shapes) == (3, 0.5, 50)
    assert isinstance(make_source("kml", base="stylegan"), KMLSource)
    _check_images(mix.render(torch.arange(2), 8), 2, 8)
    with pytest.raises(ValueError, match="root"):
        make_source("folder")
    with pytest.raises(ValueError, match="bogus"):
        make_source("stylegan", bogus=1)
    with pytest.raises(ValueError, match="valid bases"):
        make_source("kml", base="nope")


def test_registry_default_base_is_shaders():
    from procvision.data.shaders import ShaderSource

    src = make_source("kml_mixup", seed=1, pool_size=50)
    assert isinstance(src.kml.base, ShaderSource)
    assert isinstance(make_source("shaders", pool_size=50), ShaderSource)
    assert math.isclose(src.kml.base.seed, 1)
