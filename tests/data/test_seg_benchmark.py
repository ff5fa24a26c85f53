"""The offline benchmark: deterministic, COCO-readable, masks = the pasted silhouettes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from procvision.data.datasets.coco import COCOSegmentation
from procvision.data.seg_benchmark import item_mask, read_info, write_benchmark
from tests.fixtures_real import make_idx_root


def _digest(root):
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def test_item_mask_thresholds_and_fills_holes():
    item = np.zeros((7, 7), np.uint8)
    item[1:6, 1:6] = 200
    item[3, 3] = 0  # a hole
    item[0, 0] = 20  # below the threshold
    m = item_mask(item, threshold=32)
    assert m.sum() == 25 and m[3, 3] and not m[0, 0]


def test_benchmark_is_deterministic_and_goes_through_the_coco_reader(tmp_path):
    src = make_idx_root(tmp_path / "fmnist")
    kw = dict(n_images=5, size=64, seed=3, source_root=src, objects=(2, 3))
    a = write_benchmark(tmp_path / "a", **kw)
    write_benchmark(tmp_path / "b", **kw)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    write_benchmark(tmp_path / "c", **{**kw, "seed": 4})
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    ds = COCOSegmentation(tmp_path / "a", size=64)
    assert len(ds) == 5 and read_info(tmp_path / "a")["seed"] == 3
    for i in range(5):
        image, labels, _ = ds[i]
        np.testing.assert_array_equal(labels.numpy(), a[i].labels)  # exact masks, via RLE
        np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), a[i].image / 255, atol=1e-6)


def test_masks_match_the_pasted_silhouettes(tmp_path):
    # Fixture items: class c = a bright band on rows 2c+2..2c+5 of noise below the threshold,
    # so each silhouette is a full-width band at a known height in its placement box.
    src = make_idx_root(tmp_path / "fmnist")
    rendered = write_benchmark(tmp_path / "a", n_images=6, size=112, seed=0, source_root=src,
                               scale=(0.5, 0.5))  # fmt: skip
    from procvision.data.datasets.idx import load_idx_split

    _, classes, _ = load_idx_split(src, "test")
    occluded = 0
    for r in rendered:
        covered = np.zeros_like(r.labels, bool)
        for p, vis in zip(reversed(r.placements), reversed(r.visible), strict=True):
            assert p.category == int(classes[p.item]) + 1
            c, side = p.category - 1, p.side
            band = np.zeros_like(vis)
            top = p.y + round((2 * c + 2) / 28 * side)
            bottom = p.y + round((2 * c + 6) / 28 * side)
            band[top:bottom, p.x : p.x + side] = True
            full = vis | (covered & band)
            # the silhouette is the band, up to one row of resampling at its two edges
            assert (full & ~band).sum() <= 2 * side and (band & ~full).sum() <= 2 * side
            assert not (vis & covered).any()  # visible pixels are not under a later item
            assert (r.labels[vis] == p.category).all()
            occluded += int((covered & band).any())
            covered |= band
        assert (r.labels > 0).sum() == sum(v.sum() for v in r.visible)
    assert occluded > 0  # some items are occluded


def test_benchmark_on_the_real_fashion_mnist(tmp_path):
    from pathlib import Path

    from procvision.data.datasets.idx import FASHION_MNIST_ROOT

    if not Path(FASHION_MNIST_ROOT).is_dir():  # pragma: no cover
        pytest.skip(f"{FASHION_MNIST_ROOT} is not installed")
    rendered = write_benchmark(tmp_path / "b", n_images=2, size=96, seed=0)
    ds = COCOSegmentation(tmp_path / "b", size=96)
    assert set(np.unique(ds[0][1].numpy())) <= set(range(11)) and rendered[0].image.shape == (
        96,
        96,
        3,
    )


def test_segmentation_data_specs(tmp_path):
    from procvision.data.seg_benchmark import segmentation_data
    from tests.fixtures_seg import write_tiny_coco

    d = segmentation_data(f"coco:{write_tiny_coco(tmp_path / 'coco')}", image_size=16)
    assert len(d.dataset) == 2 and d.num_classes == 8 and d.ignore_index is None
    g = segmentation_data("gestalt:closure,similarity", image_size=32, max_images=2)
    assert len(g.dataset) == 4 and g.dataset[2][2] == "similarity_0"
    with pytest.raises(ValueError, match="expected voc:DIR"):
        segmentation_data("ade20k:/x")
    from procvision.data.datasets.base import DatasetFormatError

    with pytest.raises(DatasetFormatError, match="val.txt"):
        segmentation_data(f"voc:{tmp_path}")
    with pytest.raises(DatasetFormatError, match="train.txt"):
        segmentation_data(f"voc:{tmp_path}:train")


def test_background_coloured_items_keep_the_layout(tmp_path):
    src = make_idx_root(tmp_path / "fmnist")
    kw = dict(n_images=3, size=48, seed=1, source_root=src)
    a = write_benchmark(tmp_path / "a", **kw)
    b = write_benchmark(tmp_path / "b", **kw, item_colour="background")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.labels, y.labels)  # same layout and masks
        assert not np.array_equal(x.image, y.image)
    assert read_info(tmp_path / "b")["item_colour"] == "background"
    with pytest.raises(ValueError, match="item_colour"):
        write_benchmark(tmp_path / "c", **kw, item_colour="rainbow")
