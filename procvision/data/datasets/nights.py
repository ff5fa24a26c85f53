"""NIGHTS 2AFC triplets from the DreamSim release layout (paper §3, App. B.1; spec §4.2).

    nights/
      data.csv            id,left_vote,right_vote,votes,ref_path,left_path,right_path,split,is_imagenet,...
      ref/000/002.png     the image folders data.csv names (paths relative to nights/)
      distort/000/002_0.png ...

A triplet (ref, left, right) carries the human votes for "left looks more like ref" and "right looks
more like ref". The protocol keeps rows with `votes >= 6` in the chosen split (val: 1,720 triplets).
The human-majority target is p = 1 when right won, 0 when left won, and 0.5 on a vote tie (which the
>= 6 filter of the release does not leave; a tie then earns every model 0.5). Images are resized
(bicubic) straight to 224 x 224 (no crop) and ImageNet-normalised.

`NightsImages(triplets, role)` is one image stream (ref, left or right) in triplet order whose label
is the triplet's row number, so the three embedding streams can be matched row by row even when a
corrupt image is skipped. `NightsDataModule.val_dataloader()` returns the three streams
[ref, left, right] for `procvision validate` with `procvision.eval.nights.NightsCallback`.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
from PIL import Image
from torch.utils.data import DataLoader

from procvision.data.datasets.base import (
    DatasetFormatError,
    RealDataset,
    Transform,
    collate_skip,
    file_sha256,
    open_image,
)
from procvision.data.datasets.transforms import EvalTransform

NIGHTS_REQUIRED_COLUMNS = (
    "ref_path",
    "left_path",
    "right_path",
    "left_vote",
    "right_vote",
    "votes",
    "split",
)
NIGHTS_SPLITS = ("train", "val", "test", "test_imagenet", "test_no_imagenet")
PAPER_MIN_VOTES = 6
PAPER_IMAGE_SIZE = 224
ROLES = ("ref", "left", "right")


class NightsFormatError(DatasetFormatError):
    """The NIGHTS folder or its data.csv is not in the DreamSim release layout."""


@dataclass(frozen=True)
class NightsTriplet:
    """One row of data.csv. Paths are relative to the NIGHTS root; votes as written in the file."""

    id: str
    ref: str
    left: str
    right: str
    left_vote: float
    right_vote: float
    votes: float

    @property
    def target(self) -> float:
        """Human-majority target: 1.0 right won, 0.0 left won, 0.5 a vote tie."""
        return majority_target(self.left_vote, self.right_vote)

    def path(self, role: str) -> str:
        return {"ref": self.ref, "left": self.left, "right": self.right}[role]


def majority_target(left_vote: float, right_vote: float) -> float:
    """p of the 2AFC score: 1.0 if more votes chose right, 0.0 if more chose left, 0.5 on a tie.

    The votes may be counts, fractions or 0/1 labels (the DreamSim file stores the majority side);
    only their order matters.
    """
    if right_vote > left_vote:
        return 1.0
    if left_vote > right_vote:
        return 0.0
    return 0.5


def nights_root(path: str | Path) -> Path:
    """The NIGHTS folder: `path` itself, or the folder of `path` when it names data.csv."""
    path = Path(path).expanduser()
    if path.is_file() and path.name == "data.csv":
        return path.parent
    if not path.is_dir():
        raise NightsFormatError(
            f"{path}: NIGHTS folder not found; expected the DreamSim release folder `nights/` with "
            "data.csv and the ref/ and distort/ image folders it names"
        )
    if not (path / "data.csv").is_file():
        raise NightsFormatError(
            f"{path}: no data.csv; expected the DreamSim release folder nights/"
        )
    return path


def _number(value: str, column: str, line: int, csv_path: Path) -> float:
    try:
        return float(value)
    except ValueError as err:
        raise NightsFormatError(
            f"{csv_path}:{line}: column {column!r} must be a number, got {value!r}"
        ) from err


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes", "t")


def read_nights_csv(
    root: str | Path,
    split: str = "val",
    min_votes: float = PAPER_MIN_VOTES,
    check_files: bool = True,
) -> list[NightsTriplet]:
    """The triplets of `split` with `votes >= min_votes`, in file order.

    Args:
        root: the NIGHTS folder (or its data.csv).
        split: "train", "val", "test", or "test_imagenet" / "test_no_imagenet" (the test rows whose
            `is_imagenet` column is true / false).
        min_votes: keep rows with at least this many votes (paper and DreamSim: 6).
        check_files: fail now, naming the first missing image, if an image the rows name is absent.
    Returns:
        list of NightsTriplet (may be empty when no row passes the filters).
    """
    if split not in NIGHTS_SPLITS:
        raise NightsFormatError(f"NIGHTS split must be one of {NIGHTS_SPLITS}, got {split!r}")
    root = nights_root(root)
    csv_path = root / "data.csv"
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in NIGHTS_REQUIRED_COLUMNS if c not in columns]
        if split.startswith("test_") and "is_imagenet" not in columns:
            missing.append("is_imagenet")
        if missing:
            raise NightsFormatError(
                f"{csv_path}: missing column(s) {missing}; the DreamSim data.csv has "
                + ", ".join(NIGHTS_REQUIRED_COLUMNS)
                + " (and id, is_imagenet, prompt)"
            )
        rows = []
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            base_split = "test" if split.startswith("test_") else split
            if row["split"] != base_split:
                continue
            if split == "test_imagenet" and not _truthy(row["is_imagenet"]):
                continue
            if split == "test_no_imagenet" and _truthy(row["is_imagenet"]):
                continue
            votes = _number(row["votes"], "votes", line, csv_path)
            if votes < min_votes:
                continue
            rows.append(
                NightsTriplet(
                    id=row.get("id") or str(line - 2),
                    ref=row["ref_path"],
                    left=row["left_path"],
                    right=row["right_path"],
                    left_vote=_number(row["left_vote"], "left_vote", line, csv_path),
                    right_vote=_number(row["right_vote"], "right_vote", line, csv_path),
                    votes=votes,
                )
            )
    if check_files:
        for t in rows:
            for role in ROLES:
                if not (root / t.path(role)).is_file():
                    raise NightsFormatError(
                        f"{root / t.path(role)}: image named by data.csv (triplet {t.id}, "
                        f"{role}_path) not found; is the release fully unpacked?"
                    )
    return rows


def nights_transform(
    size: int = PAPER_IMAGE_SIZE,
    interpolation: str = "bicubic",
    normalize: Literal["imagenet", "none"] = "imagenet",
) -> EvalTransform:
    """DreamSim's pre-processing: Resize((size, size), bicubic) -> tensor -> ImageNet normalise."""
    return EvalTransform(size, "resize", 1.0, interpolation, normalize)


class NightsImages(RealDataset):
    """One image stream (`role` = "ref", "left" or "right") of the triplets; label = row number.

    `source(i)` is the image's absolute path and `content_hash(i)` its file sha256.
    """

    def __init__(
        self,
        root: str | Path,
        triplets: Sequence[NightsTriplet],
        role: str,
        transform: Transform | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        super().__init__(transform if transform is not None else nights_transform(), skip_corrupt)
        self.root = nights_root(root)
        self.role = role
        self.paths = [str((self.root / t.path(role)).absolute()) for t in triplets]
        self.labels = np.arange(len(triplets), dtype=np.int64)
        self.class_names = []

    def load_image(self, index: int) -> Image.Image:
        return open_image(self.paths[index])

    def source(self, index: int) -> str:
        return self.paths[index]

    def content_hash(self, index: int) -> str:
        return file_sha256(self.paths[index])

    def describe(self) -> dict:
        return {
            "kind": "NightsImages",
            "role": self.role,
            "size": len(self),
            "root": str(self.root),
        }


def csv_sha256(root: str | Path) -> str:
    """sha256 of the NIGHTS data.csv (recorded in results, so a score names the file it used)."""
    return hashlib.sha256((nights_root(root) / "data.csv").read_bytes()).hexdigest()


class NightsDataModule(L.LightningDataModule):
    """The NIGHTS triplets of one split as three loaders [ref, left, right], for `procvision validate`.

    Args:
        root: the NIGHTS folder of the DreamSim release (with data.csv).
        split: "val" (paper, 1,720 triplets), "train", "test", "test_imagenet", "test_no_imagenet".
        min_votes: keep rows with at least this many votes (paper: 6).
        image_size: side of the bicubic resize (paper: 224); None = the model's img_size.
        interpolation: "bicubic" (paper), "bilinear" or "nearest".
        normalize: "imagenet" (paper) or "none".
        max_triplets: keep only the first N triplets (quick looks; the JSON records it).
        batch_size: images per batch.
        num_workers: DataLoader workers.
        skip_corrupt: skip undecodable images (their triplets are then left out of the score).
        n_local_crops: unused; the CLI links data.n_local_crops to the model's (None keeps it).
    """

    def __init__(
        self,
        root: str = "nights",
        split: str = "val",
        min_votes: float = PAPER_MIN_VOTES,
        image_size: int | None = PAPER_IMAGE_SIZE,
        interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic",
        normalize: Literal["imagenet", "none"] = "imagenet",
        max_triplets: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        skip_corrupt: bool = False,
        n_local_crops: int | None = None,
    ) -> None:
        super().__init__()
        if split not in NIGHTS_SPLITS:
            raise NightsFormatError(f"NIGHTS split must be one of {NIGHTS_SPLITS}, got {split!r}")
        self.root, self.split, self.min_votes = root, split, min_votes
        self.image_size, self.interpolation, self.normalize = image_size, interpolation, normalize
        self.max_triplets = max_triplets
        self.batch_size, self.num_workers, self.skip_corrupt = batch_size, num_workers, skip_corrupt
        self.n_local_crops = n_local_crops
        self.triplets: list[NightsTriplet] | None = None
        self.streams: list[NightsImages] | None = None
        self.transform: EvalTransform | None = None

    def _model_image_size(self) -> int:
        model = self.trainer.lightning_module if self.trainer is not None else None
        backbone = getattr(model, "teacher_backbone", None)
        return int(getattr(backbone, "config", {}).get("img_size", PAPER_IMAGE_SIZE))

    def setup(self, stage: str | None = None) -> None:
        if self.streams is not None:
            return
        triplets = read_nights_csv(self.root, self.split, self.min_votes)
        if self.max_triplets is not None:
            triplets = triplets[: self.max_triplets]
        if not triplets:
            raise NightsFormatError(
                f"{self.root}: no triplet of split {self.split!r} has votes >= {self.min_votes}"
            )
        size = self.image_size or self._model_image_size()
        self.transform = nights_transform(size, self.interpolation, self.normalize)
        self.triplets = triplets
        self.streams = [
            NightsImages(self.root, triplets, r, self.transform, self.skip_corrupt) for r in ROLES
        ]

    def describe(self) -> dict:
        self.setup()
        return {
            "root": str(nights_root(self.root).absolute()),
            "csv_sha256": csv_sha256(self.root),
            "split": self.split,
            "min_votes": self.min_votes,
            "max_triplets": self.max_triplets,
            "triplets": len(self.triplets or []),
            "transform": self.transform.describe() if self.transform else None,
        }

    def val_dataloader(self) -> list[DataLoader]:
        self.setup()
        return [
            DataLoader(s, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                       collate_fn=collate_skip)
            for s in self.streams or []
        ]  # fmt: skip

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()
