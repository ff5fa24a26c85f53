"""An offline real-object segmentation benchmark, written in COCO format.

COCO and VOC cannot be downloaded here, so objects with exact masks come from Fashion-MNIST:

- mask of an item = its pixels above `threshold` (of 255) after resizing it to its pasted size
  (bilinear), holes filled (scipy.ndimage.binary_fill_holes);
- items are pasted at random positions and sizes onto crops of scikit-image's texture
  photographs (brick, grass, gravel: the ones shipped with scikit-image, tinted at random),
  several per image; later items occlude earlier ones;
- each item is one COCO instance (RLE of its visible pixels), category = Fashion-MNIST class + 1,
  background 0; everything is a pure function of the seed.

The output goes through `COCOSegmentation` like COCO val2017:
    OUT/annotations/instances_<split>.json, OUT/<split>/<id>.png
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
from PIL import Image

from procvision.atomic import atomic_write_path, write_json_atomic
from procvision.data.datasets.idx import FASHION_MNIST_CLASSES, FASHION_MNIST_ROOT, load_idx_split
from procvision.errors import UserError

TEXTURES = ("brick", "grass", "gravel")


class SegmentationDataError(UserError, ValueError):
    """A segmentation data spec or benchmark setting that cannot be used."""


DEFAULT_THRESHOLD = 32


def load_textures(names: tuple[str, ...] = TEXTURES) -> list[np.ndarray]:
    """scikit-image's texture photographs as float [H, W] in [0, 1] (no download)."""
    from skimage import data

    return [np.asarray(getattr(data, n)(), np.float64) / 255.0 for n in names]


def item_mask(item: np.ndarray, threshold: int = DEFAULT_THRESHOLD) -> np.ndarray:
    """Silhouette of a Fashion-MNIST item: pixels above `threshold`, holes filled.

    Args:
        item: uint8 (or float in 0..255) [h, w] grey item on black.
    Returns:
        bool [h, w].
    """
    from scipy.ndimage import binary_fill_holes

    return binary_fill_holes(np.asarray(item) > threshold)


@dataclass
class Placement:
    """One pasted item: Fashion-MNIST index and class, top-left (x, y) and side in pixels."""

    item: int
    category: int
    x: int
    y: int
    side: int


@dataclass
class BenchmarkImage:
    """A rendered image uint8 [S, S, 3], its semantic labels int64 [S, S] and its placements
    (paste order) with each one's visible mask bool [S, S]."""

    image: np.ndarray
    labels: np.ndarray
    placements: list[Placement] = field(default_factory=list)
    visible: list[np.ndarray] = field(default_factory=list)


def render_image(
    rng: np.random.Generator,
    items: np.ndarray,
    classes: np.ndarray,
    textures: list[np.ndarray],
    size: int = 224,
    objects: tuple[int, int] = (2, 4),
    scale: tuple[float, float] = (0.3, 0.6),
    threshold: int = DEFAULT_THRESHOLD,
    item_colour: str = "random",
) -> BenchmarkImage:
    """One benchmark image from the generator's state.

    Args:
        rng: numpy generator (its state fully decides the image).
        items: uint8 [N, 28, 28] Fashion-MNIST images; classes: int [N] their classes.
        textures: float [H, W] background photographs in [0, 1].
        size: image side S.
        objects: (min, max) items per image, inclusive.
        scale: (min, max) item side as a fraction of S.
        threshold: silhouette threshold (see `item_mask`).
        item_colour: "random" (each item its own tint) or "background" (the background's tint,
            so colour alone does not separate items from the ground).
    """
    if item_colour not in ("random", "background"):
        raise ValueError(f"item_colour: expected 'random' or 'background', got {item_colour!r}")
    tex = textures[int(rng.integers(len(textures)))]
    crop = int(rng.integers(min(tex.shape) // 2, min(tex.shape) + 1))
    y0 = int(rng.integers(0, tex.shape[0] - crop + 1))
    x0 = int(rng.integers(0, tex.shape[1] - crop + 1))
    patch = Image.fromarray((tex[y0 : y0 + crop, x0 : x0 + crop] * 255).astype(np.uint8))
    grey = np.asarray(patch.resize((size, size), Image.BILINEAR), np.float64) / 255.0
    tint = rng.uniform(0.45, 1.0, 3)
    canvas = grey[..., None] * tint  # [S, S, 3]
    labels = np.zeros((size, size), np.int64)
    out = BenchmarkImage(np.zeros(0), labels)
    masks = []
    for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
        idx = int(rng.integers(len(items)))
        side = max(8, int(round(rng.uniform(*scale) * size)))
        x, y = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
        colour = rng.uniform(0.1, 1.0, 3)  # drawn either way: the layout stream is the same
        if item_colour == "background":
            colour = tint
        small = Image.fromarray(items[idx]).resize((side, side), Image.BILINEAR)
        intensity = np.asarray(small, np.float64)
        m = item_mask(intensity, threshold)
        region = canvas[y : y + side, x : x + side]
        region[m] = colour * (0.35 + 0.65 * intensity[m, None] / 255.0)
        full = np.zeros((size, size), bool)
        full[y : y + side, x : x + side] = m
        for prev in masks:  # the new item occludes what it covers
            prev &= ~full
        masks.append(full)
        cat = int(classes[idx]) + 1
        labels[full] = cat
        out.placements.append(Placement(idx, cat, x, y, side))
    out.image = np.clip(np.round(canvas * 255), 0, 255).astype(np.uint8)
    out.visible = masks
    return out


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_benchmark(
    out: str | Path,
    n_images: int = 64,
    size: int = 224,
    seed: int = 0,
    split: str = "val2017",
    source_root: str | Path = FASHION_MNIST_ROOT,
    source_split: str = "test",
    objects: tuple[int, int] = (2, 4),
    scale: tuple[float, float] = (0.3, 0.6),
    threshold: int = DEFAULT_THRESHOLD,
    textures: tuple[str, ...] = TEXTURES,
    item_colour: str = "random",
) -> list[BenchmarkImage]:
    """Render `n_images` benchmark images and write them in the COCO layout under `out`.

    Returns the rendered images (for tests and previews). The JSON's "info" records every
    argument, so the benchmark says how it was made.
    """
    if n_images < 1:
        raise SegmentationDataError(f"n_images must be >= 1, got {n_images}")
    if not (1 <= objects[0] <= objects[1]) or not (0 < scale[0] <= scale[1] <= 1):
        raise SegmentationDataError(
            f"objects {objects} / scale {scale}: need 1 <= min <= max, 0 < scale <= 1"
        )
    items, classes, src = load_idx_split(source_root, source_split)
    tex = load_textures(textures)
    rng = np.random.default_rng(seed)
    out = Path(out)
    (out / split).mkdir(parents=True, exist_ok=True)
    images, anns, rendered = [], [], []
    for i in range(n_images):
        r = render_image(rng, items, classes, tex, size, objects, scale, threshold, item_colour)
        rendered.append(r)
        image_id = i + 1
        name = f"{image_id:012d}.png"
        pil = Image.fromarray(r.image)
        atomic_write_path(out / split / name, lambda tmp, pil=pil: pil.save(tmp, format="PNG"))
        images.append({"id": image_id, "file_name": name, "height": size, "width": size})
        for p, m in zip(r.placements, r.visible, strict=True):
            if not m.any():
                continue  # fully occluded: no pixel of the image shows it
            ys, xs = np.nonzero(m)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                    int(ys.max() - ys.min() + 1)]  # fmt: skip
            anns.append({
                "id": len(anns) + 1, "image_id": image_id, "category_id": p.category,
                "iscrowd": 0, "area": float(m.sum()), "bbox": bbox, "segmentation": _rle(m),
                "fashion_mnist_index": p.item,
            })  # fmt: skip
    info = {
        "description": "procvision offline segmentation benchmark: Fashion-MNIST items on "
        "scikit-image textures (procvision.data.seg_benchmark)",
        "seed": seed, "n_images": n_images, "size": size, "source": str(src),
        "source_split": source_split, "objects": list(objects), "scale": list(scale),
        "mask_threshold": threshold, "holes_filled": True, "textures": list(textures),
        "item_colour": item_colour,
    }  # fmt: skip
    cats = [{"id": c + 1, "name": n, "supercategory": "fashion"}
            for c, n in enumerate(FASHION_MNIST_CLASSES)]  # fmt: skip
    (out / "annotations").mkdir(exist_ok=True)
    write_json_atomic(
        out / "annotations" / f"instances_{split}.json",
        {"info": info, "images": images, "annotations": anns, "categories": cats},
    )
    return rendered


def benchmark_exists(out: str | Path, split: str = "val2017") -> bool:
    """Whether `out` already holds a benchmark's annotations file."""
    return (Path(out) / "annotations" / f"instances_{split}.json").is_file()


def read_info(out: str | Path, split: str = "val2017") -> dict:
    """The "info" record of a written benchmark."""
    return json.loads((Path(out) / "annotations" / f"instances_{split}.json").read_text())["info"]


@dataclass
class SegmentationData:
    """A segmentation dataset and what scoring it needs.

    dataset: items (image float [3, S, S] in [0, 1], labels int64 [H0, W0], name);
    ignore_index: the void label (VOC: 255) or None; num_classes: labels lie in [0, K);
    description: the spec it was made from.
    """

    dataset: object
    ignore_index: int | None
    num_classes: int
    description: str


def segmentation_data(
    spec: str, image_size: int = 448, max_images: int | None = None, benchmark_images: int = 64
) -> SegmentationData:
    """Open a segmentation dataset from a spec (one grammar for commands, configs, callbacks).

        voc:DIR[:SPLIT]          Pascal VOC2012 (default split val), void 255 ignored, 21 classes
        coco:DIR[:SPLIT]         COCO instances (default val2017), semantic maps of category ids
        benchmark:DIR[:SPLIT]    this module's benchmark (written there first if absent), COCO format
        gestalt[:P1,P2,...]      Gestalt stimuli (default: all principles, 8 each)

    Args:
        spec: as above.
        image_size: side images are resized to.
        max_images: the first N items (None: all); for gestalt, stimuli per principle.
        benchmark_images: images of a benchmark written by `benchmark:DIR`.
    """
    if max_images is not None and max_images < 1:
        raise SegmentationDataError(
            f"max_images (--max-images) must be >= 1 or None, got {max_images}"
        )
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    root, _, split = rest.rpartition(":") if rest.count(":") else (rest, "", "")
    if kind == "voc":
        from procvision.data.datasets.voc import VOC_IGNORE, VOCSegmentation

        ds = VOCSegmentation(root, split or "val", image_size, max_images)
        return SegmentationData(ds, VOC_IGNORE, 21, spec)
    if kind in ("coco", "benchmark"):
        from procvision.data.datasets.coco import COCOSegmentation

        split = split or "val2017"
        if not root:
            raise SegmentationDataError(f"segmentation data {spec!r}: expected {kind}:DIR[:SPLIT]")
        if kind == "benchmark" and not benchmark_exists(root, split):
            write_benchmark(root, benchmark_images, split=split)
        ds = COCOSegmentation(root, split, image_size, max_images)
        return SegmentationData(ds, None, max(ds.categories, default=0) + 1, spec)
    if kind == "gestalt":
        from procvision.data.gestalt import PRINCIPLES, GestaltDataset

        principles = tuple(p.strip() for p in rest.split(",") if p.strip()) or PRINCIPLES
        n = max_images or 8
        try:
            ds = GestaltDataset(principles, n, image_size)
        except ValueError as err:
            raise SegmentationDataError(f"segmentation data {spec!r}: {err}") from err
        return SegmentationData(ds, None, 4, spec)
    raise SegmentationDataError(
        f"segmentation data {spec!r}: expected voc:DIR[:SPLIT], coco:DIR[:SPLIT], "
        "benchmark:DIR[:SPLIT] or gestalt[:PRINCIPLES]"
    )


class _ImagesWithIndex:
    """(image float [3, S, S] in [0, 1], 0, dataset index) items of a segmentation dataset: what
    the evaluator's validation loop batches (label maps differ in size; the callback reads them
    from the dataset by index)."""

    def __init__(self, dataset: object) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple:
        return self.dataset[i][0], 0, i  # type: ignore[index]


class SegmentationDataModule(pl.LightningDataModule):
    """The validation data of `procvision validate --config configs/eval/segmentation_*.yaml`.

    Over `segmentation_data(data, ...)`; its validation loader yields (images [B, 3, S, S] in [0, 1],
    zeros, dataset indices), sharded by Lightning under DDP; `segmentation` is the opened
    `SegmentationData` (the `SegmentationCallback` scores it).

    Args:
        data: `voc:DIR[:SPLIT] | coco:DIR[:SPLIT] | benchmark:DIR[:SPLIT] | gestalt[:P,...]`.
        image_size: side images are resized to (None: the evaluated model's img_size).
        max_images: the first N images (gestalt: stimuli per principle); None: all.
        batch_size: images per forward pass and per batched PCA.
        benchmark_images: images written by `benchmark:DIR` when DIR holds no benchmark yet.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        data: str,
        image_size: int | None = None,
        max_images: int | None = None,
        batch_size: int = 8,
        benchmark_images: int = 64,
        num_workers: int = 0,
    ) -> None:
        if batch_size < 1:
            raise SegmentationDataError(f"batch_size must be >= 1, got {batch_size}")
        if image_size is not None and image_size < 1:
            raise SegmentationDataError(f"image_size must be >= 1 or None, got {image_size}")
        super().__init__()
        self.data, self.image_size, self.max_images = data, image_size, max_images
        self.batch_size, self.benchmark_images = batch_size, benchmark_images
        self.num_workers = num_workers
        self.segmentation: SegmentationData | None = None

    def size(self) -> int:
        """The image side: `image_size`, else the model's img_size, else 448."""
        if self.image_size:
            return int(self.image_size)
        model = getattr(self, "trainer", None) and self.trainer.lightning_module
        backbone = getattr(model, "teacher_backbone", None)
        return int(getattr(backbone, "config", {}).get("img_size", 448))

    def setup(self, stage: str | None = None) -> None:
        if self.segmentation is None:
            self.segmentation = segmentation_data(
                self.data, self.size(), self.max_images, self.benchmark_images
            )

    def val_dataloader(self):
        from torch.utils.data import DataLoader

        self.setup()
        ds = _ImagesWithIndex(self.segmentation.dataset)
        return DataLoader(ds, self.batch_size, shuffle=False, num_workers=self.num_workers)

    def test_dataloader(self):
        return self.val_dataloader()
