"""Datasets named by a short URI, shared by the configs and the `procvision memory` command.

    fashion_mnist[:DIR][:SPLIT]      IDX files (default DIR /usr/share/datasets/fashion-mnist)
    mnist:DIR[:SPLIT]                IDX files
    imagefolder:DIR[:SPLIT]          DIR/SPLIT/<class>/<img> if that folder exists, else DIR/<class>/<img>
    medmnist:FILE.npz[:SPLIT]        official MedMNIST npz (train, val, test)
    cub:DIR[:SPLIT]                  CUB-200-2011 official files (train, test)
    food101:DIR[:SPLIT]              Food-101 official files (train, test)
    flowers102:DIR[:SPLIT]           Flowers-102 official files (train, val, test)

A split written in the URI wins over the `split` argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from procvision.data.datasets.base import DatasetFormatError, RealDataset, Transform
from procvision.data.datasets.folders import CUB200, Flowers102, Food101, ImageFolder
from procvision.data.datasets.idx import MNIST, FashionMNIST
from procvision.data.datasets.medmnist import MedMNIST

KINDS = ("fashion_mnist", "mnist", "imagefolder", "medmnist", "cub", "food101", "flowers102")
SPLITS = ("train", "val", "test", "valid", "validation")
# the splits each kind has (an image folder's are whatever sub-folders it holds)
KIND_SPLITS = {
    "fashion_mnist": ("train", "test"),
    "mnist": ("train", "test"),
    "imagefolder": SPLITS,
    "medmnist": ("train", "val", "test"),
    "cub": ("train", "test"),
    "food101": ("train", "test"),
    "flowers102": ("train", "val", "test"),
}


@dataclass(frozen=True)
class DatasetURI:
    kind: str
    path: str | None
    split: str | None

    def __str__(self) -> str:
        return ":".join(p for p in (self.kind, self.path, self.split) if p)


def _exists(path: str) -> bool:
    return Path(path).expanduser().exists()


def _split_typo(uri: str, kind: str, split: str) -> DatasetFormatError:
    return DatasetFormatError(
        f"dataset {uri!r}: unknown split {split!r} of {kind}; valid splits: "
        + ", ".join(KIND_SPLITS[kind])
    )


def parse_dataset_uri(uri: str) -> DatasetURI:
    """`kind[:path][:split]` -> DatasetURI (the path may itself contain ':').

    A last `:WORD` that is no split, after a path that exists while the whole does not, is a
    split typo (`medmnist:pathmnist.npz:tset`): refused with the kind's valid splits.
    """
    kind, _, rest = str(uri).partition(":")
    kind = kind.strip().lower().replace("-", "_")
    if kind not in KINDS:
        raise DatasetFormatError(
            f"unknown dataset {uri!r}: expected one of {', '.join(KINDS)} (e.g. imagefolder:DIR)"
        )
    path, split = rest or None, None
    if rest in SPLITS:
        path, split = None, rest
    elif rest and ":" in rest and rest.rsplit(":", 1)[1] in SPLITS:
        path, split = rest.rsplit(":", 1)
    elif rest and ":" in rest and not _exists(rest):
        head, word = rest.rsplit(":", 1)
        if _exists(head) and word and "/" not in word:
            raise _split_typo(uri, kind, word)
    elif rest and kind == "fashion_mnist" and "/" not in rest and not _exists(rest):
        raise DatasetFormatError(
            f"dataset {uri!r}: {rest!r} is neither a split of fashion_mnist "
            f"({', '.join(KIND_SPLITS[kind])}) nor an existing folder of IDX files"
        )
    if path is None and kind not in ("fashion_mnist",):
        raise DatasetFormatError(f"dataset {uri!r} needs a path: {kind}:PATH[:split]")
    if split is not None and split not in KIND_SPLITS[kind]:
        raise _split_typo(uri, kind, split)
    return DatasetURI(kind, path, split)


def open_dataset(
    uri: str,
    split: str | None = None,
    transform: Transform | None = None,
    skip_corrupt: bool = False,
) -> RealDataset:
    """Open the dataset named by `uri` (see the module docstring) with `transform`."""
    spec = parse_dataset_uri(uri)
    split = spec.split or split
    path = str(Path(spec.path).expanduser()) if spec.path else None
    kw = {"transform": transform, "skip_corrupt": skip_corrupt}
    if spec.kind in ("fashion_mnist", "mnist"):
        cls = FashionMNIST if spec.kind == "fashion_mnist" else MNIST
        return cls(path, split or "train", **kw)
    if spec.kind == "imagefolder":
        return ImageFolder(path, split, split_optional=spec.split is None, **kw)
    if spec.kind == "medmnist":
        return MedMNIST(path, split or "train", **kw)
    if spec.kind == "cub":
        return CUB200(path, split or "train", **kw)
    if spec.kind == "food101":
        return Food101(path, split or "train", **kw)
    return Flowers102(path, split or "train", **kw)
