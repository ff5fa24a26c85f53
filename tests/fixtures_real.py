"""Tiny real-dataset fixtures written in the official on-disk formats (shared by data, eval and CLI tests)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write an IDX file by hand: 2 zero bytes, dtype code 0x08 (uint8), ndim, big-endian dims, data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_idx_root(root: Path, n_train: int = 24, n_test: int = 10, compress: bool = True) -> Path:
    """Fashion-MNIST-style IDX files; image i of class c = noise + a bright band at rows 2c+2..2c+6."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 20, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c + 2 : 2 * c + 6] += 200
        write_idx(root / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return root


def make_medmnist_npz(
    path: Path, rgb: bool = False, compressed: bool = False, size: int = 28
) -> Path:
    """A MedMNIST-style npz: {train,val,test}_{images,labels}, labels [N, 1], 3 classes."""
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", 12), ("val", 6), ("test", 6)):
        shape = (n, size, size, 3) if rgb else (n, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 3).reshape(n, 1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


CLASS_COLOURS = {"blue": (20, 40, 230), "green": (30, 200, 40), "red": (230, 30, 30)}


def coloured_image(colour: tuple[int, int, int], seed: int, size: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(-20, 21, (size, size, 3))
    return np.clip(np.array(colour)[None, None] + noise, 0, 255).astype(np.uint8)


def make_image_folder(
    root: Path, per_class: int = 4, odd_modes: bool = True, corrupt: bool = False
) -> Path:
    """root/<class>/<img>: three colour classes; optionally grey, palette, RGBA and 16-bit images and a
    corrupt JPEG (valid header, truncated body) in class 'red'; a .txt file that must be ignored."""
    for c, (name, colour) in enumerate(CLASS_COLOURS.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(coloured_image(colour, 100 * c + i)).save(folder / f"{i:02d}.png")
    if odd_modes:
        rgb = Image.fromarray(coloured_image(CLASS_COLOURS["green"], 999))
        rgb.convert("L").save(root / "green" / "gray.png")
        rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(
            root / "green" / "palette.png"
        )
        rgb.convert("RGBA").save(root / "green" / "rgba.png")
        deep = (np.arange(400, dtype=np.uint16).reshape(20, 20) * 150).astype(np.uint16)
        Image.fromarray(deep).save(root / "blue" / "deep16.png")
    (root / "red" / "notes.txt").write_text("not an image")
    if corrupt:
        buf = root / "red" / "zz_corrupt.jpg"
        Image.fromarray(coloured_image(CLASS_COLOURS["red"], 7, size=64)).save(buf, quality=90)
        buf.write_bytes(buf.read_bytes()[:200])
    return root


# a random backbone small enough for CLI tests (`random:` + json.dumps(TINY_BACKBONE))
TINY_BACKBONE = {
    "arch": "vit_tiny_patch16_224",
    "img_size": 16,
    "patch_size": 8,
    "depth": 1,
    "embed_dim": 32,
    "num_heads": 2,
}
