"""Bad data inputs are one-line user errors naming the input and the fix (issue 11, list 7)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from procvision.commands._common import run_reporting
from procvision.data.datasets import DatasetFormatError, FashionMNIST, MedMNIST, open_dataset
from procvision.data.datasets.base import MixedImageSizeError, collate_skip
from procvision.data.datasets.idx import read_idx
from procvision.errors import UserError
from tests.fixtures_real import make_idx_root, make_medmnist_npz, write_idx


def _one_line(err: BaseException, *needles: str) -> str:
    """The error is a UserError whose one-line report names every needle."""
    assert isinstance(err, UserError), type(err)
    msg = str(err)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


def _reported(fn, capsys) -> str:
    """What a command prints for `fn()` raising: one line, exit code 2."""
    assert run_reporting("procvision test", fn) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_gzip_idx_with_a_corrupt_block(tmp_path: Path, capsys) -> None:
    make_idx_root(tmp_path)
    img = tmp_path / "train-images-idx3-ubyte.gz"
    data = bytearray(img.read_bytes())
    data[10] = 0xFF  # the first deflate block (after the 10-byte gzip header): reserved type
    img.write_bytes(bytes(data))
    with pytest.raises(__import__("zlib").error):
        gzip.decompress(bytes(data))  # what read_idx meets
    with pytest.raises(DatasetFormatError) as info:
        FashionMNIST(tmp_path)
    _one_line(info.value, str(img), "corrupt")
    assert "corrupt" in _reported(lambda: FashionMNIST(tmp_path), capsys)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_truncated_in_its_header(tmp_path: Path, compress: bool) -> None:
    full = write_idx(tmp_path / "full-idx3-ubyte", np.zeros((2, 3, 4), np.uint8), compress=False)
    head = full.read_bytes()[:9]  # magic + 1 of the 3 dimensions + 1 byte
    path = tmp_path / ("cut-idx3-ubyte" + (".gz" if compress else ""))
    path.write_bytes(gzip.compress(head) if compress else head)
    with pytest.raises(DatasetFormatError) as info:
        read_idx(path)
    _one_line(info.value, str(path), "truncated in its header", "again")


def test_medmnist_split_typo_names_the_split_not_the_file(tmp_path: Path) -> None:
    npz = make_medmnist_npz(tmp_path / "pathmnist.npz")
    with pytest.raises(DatasetFormatError) as info:
        open_dataset(f"medmnist:{npz}:tset")
    msg = _one_line(info.value, "'tset'", "train, val, test")
    assert "not found" not in msg
    with pytest.raises(DatasetFormatError) as info:
        MedMNIST(npz, split="tset")
    _one_line(info.value, "'tset'", "train, val, test", str(npz))
    with pytest.raises(DatasetFormatError) as info:
        open_dataset(f"medmnist:{npz}:valid")  # a split of other kinds, not of MedMNIST
    _one_line(info.value, "'valid'", "train, val, test")
    assert len(open_dataset(f"medmnist:{npz}:val")) == 6


def test_fashion_mnist_split_typo(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError) as info:
        open_dataset("fashion_mnist:tset")
    _one_line(info.value, "'tset'", "train, test")
    with pytest.raises(DatasetFormatError) as info:
        FashionMNIST(make_idx_root(tmp_path), split="val")
    _one_line(info.value, "'val'", "train, test")


def test_mixed_image_sizes_in_one_batch(capsys) -> None:
    batch = [(torch.zeros(3, 28, 28), 0, 4), (torch.zeros(3, 32, 30), 1, 7)]
    with pytest.raises(MixedImageSizeError) as info:
        collate_skip(batch)
    _one_line(info.value, "items 4 and 7", "28x28", "32x30", "--resize-policy resize")
    assert "--resize-policy" in _reported(lambda: collate_skip(batch), capsys)
    x, y, idx = collate_skip([batch[0], None, batch[0]])
    assert x.shape == (2, 3, 28, 28) and idx.tolist() == [4, 4]


def test_mixed_sizes_through_the_loader(tmp_path: Path) -> None:
    from PIL import Image

    from procvision.data.datasets.transforms import EvalTransform
    from procvision.eval.embed import embed_dataset

    for cls, size in (("a", 20), ("b", 24)):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (size, size), (200, 10, 10)).save(tmp_path / cls / "x.png")
    ds = open_dataset(f"imagefolder:{tmp_path}", transform=EvalTransform(16, "none"))
    with pytest.raises(MixedImageSizeError, match="20x20 and 24x24"):
        embed_dataset(lambda x: x.flatten(1), ds, batch_size=2, progress=False)
