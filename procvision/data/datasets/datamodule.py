"""`KNNDataModule`: the memory and query sets of a k-NN evaluation, for `procvision validate`.

`val_dataloader()` returns `[memory_loader, query_loader]`; the model's `validation_step` embeds both
(loader 0 = memory, loader 1 = queries) and `KNNCallback` turns them into k-NN accuracies.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
from torch.utils.data import DataLoader

from procvision.data.datasets.base import RealDataset, collate_skip, seeded_subset
from procvision.data.datasets.registry import open_dataset
from procvision.data.datasets.transforms import EvalTransform


class KNNDataModule(L.LightningDataModule):
    """Memory and query datasets named by URIs (`procvision.data.datasets.registry`).

    Args:
        memory: dataset URI of the memory, e.g. "fashion_mnist:train", "imagefolder:/data/imagenet:train".
        queries: dataset URI of the queries, e.g. "fashion_mnist:test".
        image_size: side length fed to the model; None = the model's `img_size` (read from the
            trainer's LightningModule at setup), else 224.
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
        n_local_crops: unused by k-NN. The CLI links `data.n_local_crops` to the model's, which only
            matters for training; None keeps the model's value.
    """

    def __init__(
        self,
        memory: str = "fashion_mnist:train",
        queries: str = "fashion_mnist:test",
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
        n_local_crops: int | None = None,
    ) -> None:
        super().__init__()
        # no save_hyperparameters(): keys such as batch_size would clash with the model's hparams
        self.memory, self.queries = memory, queries
        self.image_size = image_size
        self.transform_args = (resize_policy, crop_ratio, interpolation, normalize)
        EvalTransform(image_size or 224, *self.transform_args)  # validate the arguments now
        self.max_memory, self.max_queries, self.subset_seed = max_memory, max_queries, subset_seed
        self.batch_size, self.num_workers, self.skip_corrupt = batch_size, num_workers, skip_corrupt
        self.n_local_crops = n_local_crops
        self.transform: EvalTransform | None = None
        self.memory_set: RealDataset | None = None
        self.query_set: RealDataset | None = None

    def _model_image_size(self) -> int:
        model = self.trainer.lightning_module if self.trainer is not None else None
        backbone = getattr(model, "teacher_backbone", None)
        return int(getattr(backbone, "config", {}).get("img_size", 224))

    def setup(self, stage: str | None = None) -> None:
        if self.memory_set is not None:
            return
        size = self.image_size or self._model_image_size()
        self.transform = EvalTransform(size, *self.transform_args)
        memory = open_dataset(self.memory, "train", self.transform, self.skip_corrupt)
        queries = open_dataset(self.queries, "test", self.transform, self.skip_corrupt)
        self.memory_set = seeded_subset(memory, self.max_memory, self.subset_seed)
        self.query_set = seeded_subset(queries, self.max_queries, self.subset_seed + 1)

    @property
    def class_names(self) -> list[str]:
        self.setup()
        return self.memory_set.class_names

    def describe(self) -> dict:
        self.setup()
        return {"memory": self.memory_set.describe(), "queries": self.query_set.describe(),
                "transform": self.transform.describe()}  # fmt: skip

    def _loader(self, ds: RealDataset) -> DataLoader:
        return DataLoader(
            ds, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
            collate_fn=collate_skip, persistent_workers=False,
        )  # fmt: skip

    def val_dataloader(self) -> list[DataLoader]:
        self.setup()
        return [self._loader(self.memory_set), self._loader(self.query_set)]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()
