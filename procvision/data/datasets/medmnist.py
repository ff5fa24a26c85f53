"""MedMNIST 2D sets from their official `.npz` files (`{name}.npz` or `{name}_{size}.npz`).

Each file holds `train_images, train_labels, val_images, val_labels, test_images, test_labels`;
images are uint8 [N, H, W] (grey) or [N, H, W, 3], labels [N, 1]. Arrays stored uncompressed in the
zip are memory-mapped (the 224-px files are tens of GB); compressed ones are read into memory.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from procvision.data.datasets.base import ArrayDataset, DatasetFormatError, Transform

MEDMNIST_2D = (
    "blood",
    "breast",
    "derma",
    "oct",
    "organa",
    "organc",
    "organs",
    "path",
    "pneumonia",
    "tissue",
)  # fmt: skip  (the ten sets of the paper's Table 3)
MEDMNIST_SPLITS = ("train", "val", "test")


def npz_array(path: str | Path, key: str) -> np.ndarray:
    """Array `key` of an `.npz` file: memory-mapped if stored uncompressed, else loaded."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            member = key + ".npy"
            if member not in names:
                keys = sorted(n[:-4] for n in names if n.endswith(".npy"))
                raise DatasetFormatError(
                    f"{path}: no array {key!r} (has {keys}); expected a MedMNIST file with "
                    + ", ".join(f"{s}_images, {s}_labels" for s in MEDMNIST_SPLITS)
                )
            info = zf.getinfo(member)
            if info.compress_type == zipfile.ZIP_STORED:
                return _mmap_stored_npy(path, info)
            with zf.open(member) as f:
                return np.lib.format.read_array(f, allow_pickle=False)
    except zipfile.BadZipFile as err:
        raise DatasetFormatError(f"{path}: not an .npz (zip) file ({err})") from err


def _mmap_stored_npy(path: Path, info: zipfile.ZipInfo) -> np.ndarray:
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            raise DatasetFormatError(f"{path}: corrupt zip entry {info.filename}")
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    if dtype.hasobject:
        raise DatasetFormatError(
            f"{path}: {info.filename} holds Python objects, not an image array"
        )
    return np.memmap(
        path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
    )


def _labels(path: Path, split: str) -> np.ndarray:
    labels = np.asarray(npz_array(path, f"{split}_labels"))
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise DatasetFormatError(
            f"{path}: {split}_labels has shape {labels.shape}: multi-label sets (e.g. chestmnist) are "
            "not supported for k-NN classification"
        )
    return labels.reshape(-1).astype(np.int64)


class MedMNIST(ArrayDataset):
    """One split of a MedMNIST 2D `.npz` file. Class names are "0".."C-1" with C taken from the
    labels of all splits in the file (so memory and queries share one class table)."""

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        transform: Transform | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        path = Path(path)
        if split not in MEDMNIST_SPLITS:
            raise DatasetFormatError(
                f"unknown MedMNIST split {split!r} of {path}; valid splits: "
                + ", ".join(MEDMNIST_SPLITS)
            )
        if not path.is_file():
            raise DatasetFormatError(
                f"{path}: MedMNIST file not found; expected e.g. pathmnist.npz or pathmnist_224.npz "
                "(download it from zenodo.org/records/10519652 on a machine with internet)"
            )
        images = npz_array(path, f"{split}_images")
        labels = _labels(path, split)
        num_classes = 1 + max(
            int(_labels(path, s).max(initial=-1))
            for s in MEDMNIST_SPLITS
            if s == split or _has_key(path, f"{s}_labels")
        )
        if images.dtype != np.uint8:
            raise DatasetFormatError(f"{path}: {split}_images must be uint8, got {images.dtype}")
        names = [str(c) for c in range(num_classes)]
        origin = f"{path.absolute()}:{split}"
        super().__init__(images, labels, names, origin, transform, skip_corrupt)
        self.split = split


def _has_key(path: Path, key: str) -> bool:
    with zipfile.ZipFile(path) as zf:
        return key + ".npy" in zf.namelist()
