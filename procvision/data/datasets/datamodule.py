"""Evaluation sets: `EvalSet` (the typed description of one set, shared by the evaluation callbacks
and DataModules) and `KNNDataModule` (the memory and query sets of a k-NN evaluation).

An evaluation set says which images (a dataset URI of `procvision.data.datasets.registry`), how
they are prepared (the `EvalTransform` settings; the side defaults to the backbone's `img_size`),
which subset (seeded, at most `max_items`) and how they are batched. `kind` names what an item
holds: "labels" (image, class label) today; segmentation adds label maps and NIGHTS image
triplets under new kinds. Its `key(size)` identifies the prepared images, so the embedding cache
(`procvision.eval.cache`) embeds one set once however many callbacks use it. In YAML:

    memory: {dataset: "fashion_mnist:train", resize_policy: resize, max_items: 5000}
    queries: {dataset: "fashion_mnist:test", resize_policy: resize, subset_seed: 1}

`KNNDataModule.val_dataloader()` returns `[memory_loader, query_loader]`; the evaluator
(`procvision.eval.evaluator.BackboneEvaluator`) embeds both in `validation_step` (loader 0 =
memory, loader 1 = queries, each rank its shard under DDP, gathered) and `KNNCallback` turns them
into k-NN accuracies.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Literal

import lightning as L
from torch.utils.data import DataLoader

from procvision.data.datasets.base import RealDataset, collate_skip, seeded_subset
from procvision.data.datasets.registry import open_dataset
from procvision.data.datasets.transforms import EvalTransform

SetKind = Literal["labels"]


@dataclass(frozen=True)
class EvalSet:
    """One evaluation set: dataset, transform, subset and batching.

    Args:
        dataset: dataset URI, e.g. "fashion_mnist:train", "imagefolder:/data/imagenet:val".
        split: split used when the URI names none ("train" for a memory, "test" for queries).
        image_size: side fed to the backbone; None = the backbone's `img_size` (224 without one).
        resize_policy: "crop" (paper: resize to image_size / crop_ratio, centre crop), "resize"
            (straight to image_size; for 28-px data) or "none".
        crop_ratio: image_size / resize length for "crop" (paper 224/256).
        interpolation: "bicubic" (paper), "bilinear" or "nearest".
        normalize: "imagenet" (paper) or "none".
        max_items: a seeded random subset of at most this many items (None: all).
        subset_seed: seed of that subset.
        batch_size: images per forward pass.
        num_workers: DataLoader workers.
        skip_corrupt: skip undecodable images (with a warning) instead of failing.
        kind: what an item holds ("labels": image and class label).
    """

    dataset: str
    split: str | None = None
    image_size: int | None = None
    resize_policy: Literal["crop", "resize", "none"] = "crop"
    crop_ratio: float = 0.875
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    normalize: Literal["imagenet", "none"] = "imagenet"
    max_items: int | None = None
    subset_seed: int = 0
    batch_size: int = 256
    num_workers: int = 0
    skip_corrupt: bool = False
    kind: SetKind = "labels"

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"EvalSet.dataset: expected a dataset URI, got {self.dataset!r}")
        if self.max_items is not None and self.max_items < 1:
            raise ValueError(f"EvalSet.max_items must be >= 1 or None, got {self.max_items}")
        if self.batch_size < 1:
            raise ValueError(f"EvalSet.batch_size must be >= 1, got {self.batch_size}")
        self.transform(self.image_size or 224)  # check the transform settings now

    def size_for(self, backbone_size: int | None) -> int:
        """The image side: `image_size`, else the backbone's `img_size`, else 224."""
        return int(self.image_size or backbone_size or 224)

    def transform(self, size: int) -> EvalTransform:
        """The `EvalTransform` of this set at side `size`."""
        return EvalTransform(
            size, self.resize_policy, self.crop_ratio, self.interpolation, self.normalize
        )

    def open(self, size: int) -> RealDataset:
        """The dataset (seeded subset applied) with images prepared at side `size`."""
        data = open_dataset(self.dataset, self.split, self.transform(size), self.skip_corrupt)
        return seeded_subset(data, self.max_items, self.subset_seed)

    def key(self, size: int) -> str:
        """Canonical JSON of what decides the prepared images (not batching): a cache key."""
        fields = asdict(self)
        for name in ("batch_size", "num_workers"):
            fields.pop(name)
        fields["image_size"] = int(size)
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    def describe(self) -> dict:
        """JSON-able record of the description (for results files)."""
        return asdict(self)


def knn_sets(
    memory: str,
    queries: str,
    image_size: int | None = None,
    resize_policy: Literal["crop", "resize", "none"] = "crop",
    crop_ratio: float = 0.875,
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic",
    normalize: Literal["imagenet", "none"] = "imagenet",
    max_memory: int | None = None,
    max_queries: int | None = None,
    subset_seed: int = 0,
    batch_size: int = 256,
    num_workers: int = 0,
    skip_corrupt: bool = False,
) -> tuple[EvalSet, EvalSet]:
    """The (memory, queries) pair of a k-NN evaluation from one set of shared settings: memory
    split "train" with subset seed `subset_seed`, queries split "test" with `subset_seed + 1`."""
    shared = dict(
        image_size=image_size, resize_policy=resize_policy, crop_ratio=crop_ratio,
        interpolation=interpolation, normalize=normalize, batch_size=batch_size,
        num_workers=num_workers, skip_corrupt=skip_corrupt,
    )  # fmt: skip
    mem = EvalSet(memory, "train", max_items=max_memory, subset_seed=subset_seed, **shared)
    qry = EvalSet(queries, "test", max_items=max_queries, subset_seed=subset_seed + 1, **shared)
    return mem, qry


def with_split(evalset: EvalSet, split: str) -> EvalSet:
    """`evalset` with a default split if it has none."""
    return evalset if evalset.split is not None else replace(evalset, split=split)


class KNNDataModule(L.LightningDataModule):
    """The memory and query sets of a k-NN evaluation, for `procvision validate`.

    `memory` and `queries` are dataset URIs, whose other settings are the shared arguments below
    (memory split "train", subset seed `subset_seed`; queries split "test", seed `subset_seed + 1`),
    or full `EvalSet` descriptions (then the shared arguments are not used for that set).

    Args:
        memory: the memory, e.g. "fashion_mnist:train", "imagefolder:/data/imagenet:train".
        queries: the queries, e.g. "fashion_mnist:test".
        image_size: side fed to the model; None = the model's `img_size` (read from the trainer's
            LightningModule at setup), else 224.
        resize_policy: "crop" (paper: resize to image_size / crop_ratio, centre crop), "resize"
            (straight to image_size; for 28-px data) or "none".
        crop_ratio: image_size / resize length for "crop" (paper: 224/256).
        interpolation: "bicubic" (paper), "bilinear" or "nearest".
        normalize: "imagenet" (paper) or "none".
        max_memory: keep a seeded random subset of at most this many memory items.
        max_queries: same for the queries.
        subset_seed: seed of those subsets (memory: subset_seed, queries: subset_seed + 1).
        batch_size: images per batch.
        num_workers: DataLoader worker processes.
        skip_corrupt: skip undecodable images (with a warning) instead of failing.
    """

    def __init__(
        self,
        memory: str | EvalSet = "fashion_mnist:train",
        queries: str | EvalSet = "fashion_mnist:test",
        image_size: int | None = None,
        resize_policy: Literal["crop", "resize", "none"] = "crop",
        crop_ratio: float = 0.875,
        interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic",
        normalize: Literal["imagenet", "none"] = "imagenet",
        max_memory: int | None = None,
        max_queries: int | None = None,
        subset_seed: int = 0,
        batch_size: int = 256,
        num_workers: int = 0,
        skip_corrupt: bool = False,
    ) -> None:
        super().__init__()
        # no save_hyperparameters(): keys such as batch_size would clash with the model's hparams
        mem, qry = knn_sets(
            memory if isinstance(memory, str) else memory.dataset,
            queries if isinstance(queries, str) else queries.dataset,
            image_size, resize_policy, crop_ratio, interpolation, normalize, max_memory,
            max_queries, subset_seed, batch_size, num_workers, skip_corrupt,
        )  # fmt: skip
        self.memory_spec = with_split(memory, "train") if isinstance(memory, EvalSet) else mem
        self.query_spec = with_split(queries, "test") if isinstance(queries, EvalSet) else qry
        self.memory, self.queries = self.memory_spec.dataset, self.query_spec.dataset
        self.batch_size = self.memory_spec.batch_size
        self.size: int | None = None
        self.memory_set: RealDataset | None = None
        self.query_set: RealDataset | None = None

    @property
    def specs(self) -> tuple[EvalSet, EvalSet]:
        """(memory, queries) descriptions."""
        return self.memory_spec, self.query_spec

    def _model_image_size(self) -> int | None:
        model = self.trainer.lightning_module if self.trainer is not None else None
        backbone = getattr(model, "teacher_backbone", None)
        size = getattr(backbone, "config", {}).get("img_size")
        return None if size is None else int(size)

    def setup(self, stage: str | None = None) -> None:
        if self.memory_set is not None:
            return
        model_size = self._model_image_size()
        self.size = self.memory_spec.size_for(model_size)
        self.memory_set = self.memory_spec.open(self.size)
        self.query_set = self.query_spec.open(self.query_spec.size_for(model_size))

    @property
    def transform(self) -> EvalTransform | None:
        return None if self.size is None else self.memory_spec.transform(self.size)

    @property
    def class_names(self) -> list[str]:
        self.setup()
        return self.memory_set.class_names

    def describe(self) -> dict:
        self.setup()
        return {"memory": self.memory_set.describe(), "queries": self.query_set.describe(),
                "transform": self.transform.describe(),
                "sets": [self.memory_spec.describe(), self.query_spec.describe()]}  # fmt: skip

    @staticmethod
    def _loader(ds: RealDataset, spec: EvalSet) -> DataLoader:
        return DataLoader(
            ds, batch_size=spec.batch_size, shuffle=False, num_workers=spec.num_workers,
            collate_fn=collate_skip, persistent_workers=False,
        )  # fmt: skip

    def val_dataloader(self) -> list[DataLoader]:
        self.setup()
        return [
            self._loader(self.memory_set, self.memory_spec),
            self._loader(self.query_set, self.query_spec),
        ]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()
