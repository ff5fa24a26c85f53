"""DataModules for DINO training: procedural streaming and image folders.

Both yield small CPU batches (sample ids, or uint8 images) and do the expensive part on the training
device after transfer: `on_after_batch_transfer` renders (procedural) and applies the multi-crop
augmentation, returning {"crops": [g1, g2, l1..lN], "indices": LongTensor[B]}. A GPU run of the
procedural module never touches disk.

Sample order: `StreamSampler` deals each rank a disjoint slice of a seeded permutation of each
epoch, as a pure function of (seed, rank, world size, micro-batch counter). Procedural epochs see
distinct images: epoch e draws sample ids e * samples_per_epoch + [0, samples_per_epoch).
Augmentation randomness is seeded from (augment seed, first sample id of the batch). So runs are
reproducible, and a resumed run sees exactly the batches and crops of an uninterrupted one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from procvision.constants import SHADERS21K_POOL_SIZE
from procvision.data.augment import (
    AugmentSettings,
    DataConfigError,
    MultiCropAugment,
    make_generator,
)
from procvision.data.bank import BankSource
from procvision.data.datasets.base import IMAGE_EXTENSIONS, list_files, open_image
from procvision.data.folder import SourceFolderError
from procvision.data.rng import derive_seed
from procvision.data.source import Source


class StreamSampler(DistributedSampler):
    """The sample ids of one rank, as a pure function of (seed, rank, world size, batch counter).

    The stream is cut into epochs of `length` positions. Epoch e is a seeded permutation of
    [0, length) split disjointly over ranks (rank r takes every world-th position), cut to whole
    batches; its ids are `e * length + position`, so epochs never repeat an id (procedural data:
    always new images; datasets map an id back with `id % length`).

    Iteration starts at micro-batch `start()` (the trainer's count of completed batches, which
    checkpoints restore) and yields one epoch's worth of batches, so a resumed run sees exactly the
    batches of an uninterrupted one, whatever Lightning's epoch bookkeeping does on restart.
    Without `start` it begins at `epoch * batches_per_epoch` (`set_epoch`).

    Subclasses DistributedSampler so Lightning uses it as is under DDP; rank and world size are read
    from torch.distributed when iterating (one process when it is not initialised).

    Args:
        length: positions per epoch.
        batch_size: per-rank batch size.
        seed: permutation seed.
        start: callable returning the number of micro-batches already consumed.
        shuffle: permute positions (else in order).
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        seed: int = 0,
        start: Callable[[], int] | None = None,
        shuffle: bool = True,
    ) -> None:
        if batch_size < 1 or length < batch_size:
            raise ValueError(f"need 1 <= batch_size ({batch_size}) <= samples per epoch ({length})")
        self.length, self.batch_size, self.seed = int(length), int(batch_size), int(seed)
        self.start, self.shuffle = start, shuffle
        self.epoch = 0
        self._perm: tuple[int, torch.Tensor] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @staticmethod
    def world() -> tuple[int, int]:
        """(rank, world size) from torch.distributed, or (0, 1)."""
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def batches_per_epoch(self, world: int | None = None) -> int:
        world = self.world()[1] if world is None else world
        n = (self.length // world) // self.batch_size
        if n < 1:
            raise ValueError(
                f"{self.length} samples per epoch < {world} ranks x batch {self.batch_size}"
            )
        return n

    def epoch_ids(self, epoch: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """int64 ids of epoch `epoch` for `rank`, whole batches only."""
        if self._perm is None or self._perm[0] != epoch:
            if self.shuffle:
                g = make_generator(derive_seed(self.seed, epoch))
                self._perm = (epoch, torch.randperm(self.length, generator=g))
            else:
                self._perm = (epoch, torch.arange(self.length))
        n = self.batches_per_epoch(world) * self.batch_size
        return self._perm[1][rank::world][:n] + epoch * self.length

    def batch_ids(self, counter: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """The ids [batch_size] of micro-batch number `counter` on `rank`."""
        e, j = divmod(int(counter), self.batches_per_epoch(world))
        return self.epoch_ids(e, rank, world)[j * self.batch_size : (j + 1) * self.batch_size]

    def __iter__(self) -> Iterator[int]:
        rank, world = self.world()
        bpe = self.batches_per_epoch(world)
        c0 = int(self.start()) if self.start is not None else self.epoch * bpe
        for c in range(c0, c0 + bpe):
            yield from self.batch_ids(c, rank, world).tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch() * self.batch_size


class ResumableDataLoader(DataLoader):
    """A DataLoader over a `StreamSampler`, marked resumable for Lightning.

    The sampler restarts from the trainer's restored batch counter, so nothing needs restoring; the
    state dict is informational, and its presence tells Lightning that mid-epoch resumption is exact.
    """

    def state_dict(self) -> dict[str, int]:
        start = self.sampler.start
        return {"batches_completed": int(start()) if start is not None else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Nothing to restore: the position comes from the trainer's batch counter."""


def _loader(owner: Any, dataset: Dataset, length: int, **kw: Any) -> DataLoader:
    """Loader over `dataset` with a StreamSampler driven by `owner.trainer`'s batch counter."""

    def start() -> int:
        trainer = owner.trainer
        if trainer is None:
            return sampler.epoch * sampler.batches_per_epoch()
        return int(trainer.fit_loop.epoch_loop.batch_progress.total.completed)

    sampler = StreamSampler(length, owner.batch_size, seed=owner.seed, start=start)
    return ResumableDataLoader(
        dataset, sampler=sampler, batch_size=owner.batch_size, drop_last=True, **kw
    )


class _Identity(Dataset):
    """Map-style dataset whose item i is i (any id >= 0): the loader yields sample-id batches."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> int:
        return int(i)


class _MultiCropMixin:
    """Shared device-side multi-crop augmentation."""

    augment: MultiCropAugment
    aug_seed: int

    def _crops(self, images: torch.Tensor, indices: torch.Tensor, key: int) -> dict[str, Any]:
        """Augment with a generator seeded from (aug_seed, key); key identifies the batch."""
        g = make_generator(derive_seed(self.aug_seed, key & 0xFFFFFFFF, key >> 32))
        return {"crops": self.augment(images, g), "indices": indices}


def check_training_batch(batch_size: int, samples_per_epoch: int | None, what: str) -> None:
    """Refuse a batch size < 1, or larger than the images of an epoch, before any set-up."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise DataConfigError(
            f"data.batch_size must be a whole number >= 1 (images per device per step), "
            f"got {batch_size!r}: set e.g. --data.init_args.batch_size=64"
        )
    if samples_per_epoch is not None and samples_per_epoch < batch_size:
        raise DataConfigError(
            f"{what} ({samples_per_epoch}) is smaller than data.batch_size ({batch_size}): "
            "raise the one or lower the other"
        )


def make_augment(
    global_size: int,
    local_size: int,
    n_local_crops: int,
    global_scale: tuple[float, float],
    local_scale: tuple[float, float],
    augmentation: AugmentSettings | None,
) -> MultiCropAugment:
    """The DataModules' multi-crop augmentation; sizes and counts checked as user errors."""
    bad = {"global_size": global_size, "local_size": local_size}
    bad = {k: v for k, v in bad.items() if not isinstance(v, int) or v < 1}
    if bad or n_local_crops < 0:
        wrong = {**bad, **({"n_local_crops": n_local_crops} if n_local_crops < 0 else {})}
        raise DataConfigError(
            f"crop settings out of range: {wrong}; sizes are whole pixels >= 1, n_local_crops >= 0"
        )
    return MultiCropAugment.from_settings(
        global_size, local_size, n_local_crops, global_scale, local_scale, augmentation
    )


class ProceduralDataModule(_MultiCropMixin, pl.LightningDataModule):
    """Streams procedural images: id batches on the loader, rendering and multi-crop on device.

    Args:
        family: procedural family for `procvision.data.registry.make_source` (kml_mixup, kml,
            shaders, shaders_mixup, stylegan, dead_leaves, ...); ignored when `source` is given.
        source: a Source instance (in YAML: class_path + init_args); overrides `family`.
        seed: seed of the source (image i of a seed is fixed) and of the sample order.
        pool_size: number of shader programs of the family (Shaders21k: 21083).
        source_kwargs: extra keyword arguments for `make_source`.
        render_size: side of the rendered images, before cropping.
        samples_per_epoch: images per epoch (paper 1_300_000).
        batch_size: images per device per step (paper 64 x 8 GPUs).
        num_workers: loader workers (ids are cheap: 0 is right).
        global_size: side of the 2 global crops.
        local_size: side of the local crops.
        n_local_crops: number of local crops (linked to the model by the CLI).
        global_scale: area range of global crops.
        local_scale: area range of local crops.
        aug_seed: augmentation seed (default: `seed`).
        augmentation: every other setting of the multi-crop augmentation (flip, colour jitter,
            grayscale, blur, solarisation, aspect ratios; DINO's by default), e.g. in YAML
            `augmentation: {jitter: [0.4, 0.4, 0.2, 0.1], solarize_p: 0.2}`.
        num_unique: a finite dataset of this many distinct images: sample id i shows image
            i mod num_unique, rendered once and kept in memory (uint8, like the paper's static
            export), so later epochs only pay for augmentation. None (default): every sample is
            a new image. Crops still differ every epoch (their seed is the unreduced id).
    """

    def __init__(
        self,
        family: str = "kml_mixup",
        source: Source | None = None,
        seed: int = 0,
        pool_size: int = SHADERS21K_POOL_SIZE,
        source_kwargs: dict[str, Any] | None = None,
        render_size: int = 224,
        samples_per_epoch: int = 1_300_000,
        batch_size: int = 64,
        num_workers: int = 0,
        global_size: int = 224,
        local_size: int = 96,
        n_local_crops: int = 8,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        aug_seed: int | None = None,
        num_unique: int | None = None,
        augmentation: AugmentSettings | None = None,
    ) -> None:
        super().__init__()
        check_training_batch(batch_size, samples_per_epoch, "data.samples_per_epoch")
        if num_unique is not None and num_unique < 1:
            raise DataConfigError(f"data.num_unique must be >= 1 or null, got {num_unique}")
        self.num_unique = num_unique
        self._bank: BankSource | None = None  # over `source` when num_unique is set
        self.family, self._source, self.seed, self.pool_size = family, source, int(seed), pool_size
        self.source_kwargs = dict(source_kwargs or {})
        self.render_size, self.samples_per_epoch = render_size, samples_per_epoch
        self.batch_size, self.num_workers, self.n_local_crops = (
            batch_size,
            num_workers,
            n_local_crops,
        )
        self.aug_seed = self.seed if aug_seed is None else int(aug_seed)
        self.augment = make_augment(
            global_size, local_size, n_local_crops, global_scale, local_scale, augmentation
        )

    @property
    def source(self) -> Source:
        """The image source, built from `family` on first use."""
        if self._source is None:
            from procvision.data.registry import make_source

            self._source = make_source(
                self.family, seed=self.seed, pool_size=self.pool_size, **self.source_kwargs
            )
        return self._source

    def describe(self) -> dict[str, Any]:
        """JSON facts about the training data (recorded in exports)."""
        src = (
            self._source.describe()
            if self._source is not None
            else {"family": self.family, "seed": self.seed}
        )
        return {
            "kind": "procedural",
            **src,
            "pool_size": self.pool_size,
            "render_size": self.render_size,
            "samples_per_epoch": self.samples_per_epoch,
            "num_unique": self.num_unique,
        }

    @property
    def stream_source(self) -> Source:
        """What training draws from: `source`, or a bank of `num_unique` of its images."""
        if self.num_unique is None:
            return self.source
        if self._bank is None:
            self._bank = BankSource(self.source, self.num_unique)
        return self._bank

    def train_dataloader(self) -> DataLoader:
        return _loader(
            self,
            _Identity(self.samples_per_epoch),
            self.samples_per_epoch,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Id batch [B] -> {"crops", "indices"}, rendered and augmented on the batch's device;
        other batches (e.g. (images, labels) for validation) pass through."""
        if not (
            isinstance(batch, torch.Tensor) and batch.dtype == torch.int64 and batch.dim() == 1
        ):
            return batch
        with torch.no_grad():
            images = self.stream_source.render(batch, self.render_size, batch.device)
        return self._crops(images, batch, int(batch[0]))


class ImageFolder(Dataset):
    """All images under `root` (recursive, sorted; class folders are not needed), decoded to uint8
    [3, size, size]: shorter side resized to `size` (antialiased), then centre-cropped.

    Files are listed and read by the one image-folder reader (`datasets.base.list_files`,
    `open_image`), like folder sources and labelled ImageFolder trees."""

    def __init__(self, root: str | os.PathLike, size: int) -> None:
        self.root, self.size = Path(root), size
        if not self.root.is_dir():
            raise SourceFolderError(
                f"image folder {str(self.root)!r} does not exist or is not a folder: "
                "set data.init_args.root to a folder of images"
            )
        self.files = [self.root / f for f in list_files(self.root, IMAGE_EXTENSIONS)]
        if not self.files:
            raise SourceFolderError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {str(self.root)!r}: "
                "add images or set data.init_args.root to another folder"
            )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        from torchvision.transforms.v2.functional import center_crop, pil_to_tensor, resize

        img = pil_to_tensor(open_image(self.files[i], draft=self.size))
        img = resize(img, self.size, antialias=True)
        return center_crop(img, [self.size, self.size])


class _Indexed(Dataset):
    """Item i (a stream id) is {"images": base[keep[i % n]], "indices": i}; keep: subset or all."""

    def __init__(self, base: Dataset, keep: torch.Tensor) -> None:
        self.base, self.keep = base, keep

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"images": self.base[int(self.keep[i % len(self.keep)])], "indices": i}


class ImageFolderDataModule(_MultiCropMixin, pl.LightningDataModule):
    """Trains on a folder of images (a static procedural export, ImageNet, Places, ...).

    Workers decode and resize to `load_size` (uint8); multi-crop runs on the device after transfer.

    Args:
        root: the folder (searched recursively).
        load_size: side the images are resized and centre-cropped to before augmentation.
        samples_per_epoch: cap the dataset to a fixed seeded subset of this size (paper: 1.3M);
            None uses every image.
        batch_size: images per device per step.
        num_workers: decoding workers.
        seed: seed of the subset and of the sample order.
        global_size: side of the 2 global crops.
        local_size: side of the local crops.
        n_local_crops: number of local crops (linked to the model by the CLI).
        global_scale: area range of global crops.
        local_scale: area range of local crops.
        aug_seed: augmentation seed (default: `seed`).
        augmentation: every other setting of the multi-crop augmentation (as for
            `ProceduralDataModule`).
    """

    def __init__(
        self,
        root: str,
        load_size: int = 256,
        samples_per_epoch: int | None = None,
        batch_size: int = 64,
        num_workers: int = 4,
        seed: int = 0,
        global_size: int = 224,
        local_size: int = 96,
        n_local_crops: int = 8,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        aug_seed: int | None = None,
        augmentation: AugmentSettings | None = None,
    ) -> None:
        super().__init__()
        check_training_batch(batch_size, samples_per_epoch, "data.samples_per_epoch")
        self.root, self.load_size, self.samples_per_epoch = root, load_size, samples_per_epoch
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, int(seed)
        self.n_local_crops = n_local_crops
        self.aug_seed = self.seed if aug_seed is None else int(aug_seed)
        self.augment = make_augment(
            global_size, local_size, n_local_crops, global_scale, local_scale, augmentation
        )
        self.dataset: _Indexed | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        base = ImageFolder(self.root, self.load_size)
        if self.samples_per_epoch is not None and self.samples_per_epoch < len(base):
            keep = torch.randperm(len(base), generator=make_generator(self.seed))[
                : self.samples_per_epoch
            ]
        else:
            keep = torch.arange(len(base))
        check_training_batch(self.batch_size, len(keep), f"the images in {self.root}")
        self.dataset = _Indexed(base, keep)

    def describe(self) -> dict[str, Any]:
        n = None if self.dataset is None else len(self.dataset)
        return {
            "kind": "image_folder",
            "root": str(self.root),
            "load_size": self.load_size,
            "num_images": n,
        }

    def train_dataloader(self) -> DataLoader:
        self.setup()
        assert self.dataset is not None
        return _loader(
            self,
            self.dataset,
            len(self.dataset),
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """{"images": uint8 [B, 3, S, S], "indices": [B]} -> {"crops", "indices"}; other batches
        (e.g. (images, labels) for validation) pass through."""
        if not (isinstance(batch, dict) and "images" in batch and "crops" not in batch):
            return batch
        ids = batch["indices"]
        return self._crops(batch["images"].float().div_(255.0), ids, int(ids[0]))
