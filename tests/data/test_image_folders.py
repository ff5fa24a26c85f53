"""One image-folder reader: training folders, folder sources and labelled trees list the same
files (one IMAGE_EXTENSIONS, one listing) and decode them the same way (one reader)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import procvision.data.datamodule as datamodule
import procvision.data.datasets.folders as folders
import procvision.data.folder as folder
from procvision.data.datasets.base import IMAGE_EXTENSIONS, list_files, open_image


def _tree(root: Path) -> set[str]:
    """A class tree with every kind of file a reader may meet; returns the images' relative paths."""
    rng = np.random.default_rng(0)
    names = ["a/one.png", "a/two.JPG", "a/deep/three.gif", "b/four.ppm", "b/five.webp"]
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (9, 11, 3), dtype=np.uint8)).save(
            p, format={"jpg": "JPEG"}.get(p.suffix[1:].lower(), p.suffix[1:].upper())
        )
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "b" / ".hidden.png").write_bytes((root / "a" / "one.png").read_bytes())
    (root / "b" / ".cache").mkdir()
    (root / "b" / ".cache" / "x.png").write_bytes((root / "a" / "one.png").read_bytes())
    return set(names)


def test_every_reader_lists_the_same_images(tmp_path: Path) -> None:
    want = _tree(tmp_path)
    assert set(list_files(tmp_path)) == want
    source = folder.ImageFolderSource(tmp_path)
    assert {os.fsdecode(f) for f in source.files} == want
    training = datamodule.ImageFolder(tmp_path, size=8)
    assert {f.relative_to(tmp_path).as_posix() for f in training.files} == want
    paths, labels, classes = folders.list_image_folder(tmp_path)
    assert {Path(p).relative_to(tmp_path).as_posix() for p in paths} == want
    assert classes == ["a", "b"] and labels == [0, 0, 0, 1, 1]


def test_one_extension_list_and_reader() -> None:
    assert folder.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS is datamodule.IMAGE_EXTENSIONS
    assert folders.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS
    assert folder.open_image is open_image is datamodule.open_image


def test_training_folder_and_source_decode_alike(tmp_path: Path) -> None:
    img = np.random.default_rng(1).integers(0, 255, (12, 12, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    Image.fromarray(img[..., 0]).convert("P").save(tmp_path / "y.png")  # a palette image
    training = datamodule.ImageFolder(tmp_path, size=12)
    assert torch.equal(training[0], torch.from_numpy(img).permute(2, 0, 1))
    source = folder.ImageFolderSource(tmp_path)
    pos = [int(np.where(source.perm.numpy() == k)[0][0]) for k in range(2)]
    for k, p in enumerate(pos):
        want = training[k].float() / 255
        torch.testing.assert_close(source._load(p, 12), want)
