"""Image-file datasets: ImageFolder trees and the official index files of CUB-200-2011, Food-101
and Oxford Flowers-102. Files are listed, not decoded, at construction; decoding happens per item."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from procvision.data.datasets.base import (
    IMAGE_EXTENSIONS,
    DatasetFormatError,
    FileDataset,
    Transform,
    list_files,
)


def _require_dir(path: Path, expected: str) -> None:
    if not path.is_dir():
        raise DatasetFormatError(f"{path}: folder not found; expected {expected}")


def _require_file(path: Path, expected: str) -> None:
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found; expected {expected}")


def list_image_folder(root: str | Path) -> tuple[list[str], list[int], list[str]]:
    """(paths, labels, class names) of `root/<class>/**/<image>`: classes sorted by name, files
    sorted by path; files whose extension is not an image's are ignored."""
    root = Path(root)
    _require_dir(root, "an ImageFolder tree root/<class>/<image>")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DatasetFormatError(f"{root}: no class folders; expected root/<class>/<image>.jpg")
    paths, labels = [], []
    for label, name in enumerate(classes):
        found = [os.path.join(root, name, f) for f in list_files(root / name, IMAGE_EXTENSIONS)]
        paths += found
        labels += [label] * len(found)
    if not paths:
        raise DatasetFormatError(
            f"{root}: class folders {classes[:5]} hold no image files ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return paths, labels, classes


class ImageFolder(FileDataset):
    """`root/<class>/<image>` or, with `split`, `root/<split>/<class>/<image>` (ImageNet, Food101,
    MedMNIST-as-folders layouts). With `split` given but no `root/<split>` folder, `root` itself is
    used when `split_optional` is set (a plain folder of classes)."""

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        transform: Transform | None = None,
        skip_corrupt: bool = False,
        split_optional: bool = False,
    ) -> None:
        root = Path(root)
        _require_dir(root, "an ImageFolder tree root/[<split>/]<class>/<image>")
        if split and (root / split).is_dir():
            root = root / split
        elif split and not split_optional:
            raise DatasetFormatError(
                f"{root / split}: split folder not found; expected root/{split}/<class>/<image>"
            )
        paths, labels, classes = list_image_folder(root)
        super().__init__(paths, labels, classes, transform, skip_corrupt)
        self.root = root


def _read_table(path: Path, columns: int) -> list[list[str]]:
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    bad = [i for i, r in enumerate(rows) if len(r) < columns]
    if bad:
        raise DatasetFormatError(f"{path}: line {bad[0] + 1} has fewer than {columns} fields")
    return rows


class CUB200(FileDataset):
    """CUB-200-2011 from its official files: `images.txt`, `image_class_labels.txt` (1-based),
    `train_test_split.txt`, `classes.txt` and `images/`. `root` is `CUB_200_2011` or its parent."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Transform | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        root = Path(root)
        if not (root / "images.txt").is_file() and (root / "CUB_200_2011" / "images.txt").is_file():
            root = root / "CUB_200_2011"
        expected = "CUB_200_2011/{images.txt, image_class_labels.txt, train_test_split.txt, classes.txt, images/}"
        for name in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"):
            _require_file(root / name, expected)
        if split not in ("train", "test"):
            raise DatasetFormatError(f"unknown CUB split {split!r}; valid splits: train, test")
        files = {r[0]: r[1] for r in _read_table(root / "images.txt", 2)}
        labels = {r[0]: int(r[1]) - 1 for r in _read_table(root / "image_class_labels.txt", 2)}
        is_train = {r[0]: r[1] == "1" for r in _read_table(root / "train_test_split.txt", 2)}
        classes = [r[1] for r in _read_table(root / "classes.txt", 2)]
        ids = [i for i in files if is_train.get(i) == (split == "train")]
        super().__init__(
            [root / "images" / files[i] for i in ids], [labels[i] for i in ids], classes,
            transform, skip_corrupt,
        )  # fmt: skip


class Food101(FileDataset):
    """Food-101 from its official files: `images/<class>/<id>.jpg`, `meta/{train,test}.txt`
    (lines `<class>/<id>`) and `meta/classes.txt`. `root` is `food-101` or its parent."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Transform | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        root = Path(root)
        if not (root / "meta").is_dir() and (root / "food-101" / "meta").is_dir():
            root = root / "food-101"
        if split not in ("train", "test"):
            raise DatasetFormatError(f"unknown Food-101 split {split!r}; valid splits: train, test")
        expected = (
            "food-101/{images/<class>/<id>.jpg, meta/train.txt, meta/test.txt, meta/classes.txt}"
        )
        for name in (f"meta/{split}.txt", "meta/classes.txt"):
            _require_file(root / name, expected)
        classes = [c for c in (root / "meta/classes.txt").read_text().split() if c]
        index = {c: i for i, c in enumerate(classes)}
        entries = [e for e in (root / f"meta/{split}.txt").read_text().split() if e]
        unknown = [e for e in entries if e.split("/")[0] not in index]
        if unknown:
            raise DatasetFormatError(
                f"{root}/meta/{split}.txt: class of {unknown[0]!r} not in classes.txt"
            )
        paths = [root / "images" / f"{e}.jpg" for e in entries]
        super().__init__(
            paths, [index[e.split("/")[0]] for e in entries], classes, transform, skip_corrupt
        )


class Flowers102(FileDataset):
    """Oxford Flowers-102 from its official files: `jpg/image_00001.jpg`, `imagelabels.mat`
    (labels 1..102) and `setid.mat` (trnid / valid / tstid). The paper's queries are `val`."""

    _SPLIT_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Transform | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        try:
            from scipy.io import loadmat
        except ImportError as err:  # scipy comes with scikit-learn (the dev extra)
            raise ImportError(
                "Flowers-102's .mat index files need scipy: pip install scipy"
            ) from err

        root = Path(root)
        if not (root / "setid.mat").is_file() and (root / "flowers-102" / "setid.mat").is_file():
            root = root / "flowers-102"
        if split not in self._SPLIT_KEYS:
            raise DatasetFormatError(
                f"unknown Flowers-102 split {split!r}; valid splits: {', '.join(self._SPLIT_KEYS)}"
            )
        expected = "flowers-102/{jpg/image_XXXXX.jpg, imagelabels.mat, setid.mat}"
        for name in ("imagelabels.mat", "setid.mat"):
            _require_file(root / name, expected)
        try:
            all_labels = np.asarray(loadmat(root / "imagelabels.mat")["labels"]).reshape(-1) - 1
            ids = np.asarray(loadmat(root / "setid.mat")[self._SPLIT_KEYS[split]]).reshape(-1)
        except (KeyError, ValueError) as err:
            raise DatasetFormatError(
                f"{root}: malformed imagelabels.mat or setid.mat ({err})"
            ) from err
        paths = [root / "jpg" / f"image_{int(i):05d}.jpg" for i in ids]
        classes = [str(c) for c in range(1, 103)]
        super().__init__(paths, all_labels[ids - 1], classes, transform, skip_corrupt)
