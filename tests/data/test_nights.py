"""The NIGHTS reader: DreamSim layout, vote filter, splits, majority targets, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from procvision.data.datasets.nights import (
    NightsDataModule,
    NightsFormatError,
    NightsImages,
    majority_target,
    read_nights_csv,
)
from tests.nights_fixture import make_nights


def test_vote_filter_and_split(tmp_path: Path) -> None:
    root = make_nights(tmp_path / "nights")
    val = read_nights_csv(root, "val")
    assert [t.id for t in val] == ["0", "1", "2", "3"]  # row 4 has 5 votes, row 5 is train
    assert [t.target for t in val] == [0.0, 1.0, 1.0, 0.0]
    assert [t.id for t in read_nights_csv(root, "val", min_votes=5)] == ["0", "1", "2", "3", "4"]
    assert [t.id for t in read_nights_csv(root, "train")] == ["5"]
    assert [t.id for t in read_nights_csv(root, "test")] == ["6", "7"]
    assert [t.id for t in read_nights_csv(root, "test_imagenet")] == ["6"]
    assert [t.id for t in read_nights_csv(root, "test_no_imagenet")] == ["7"]
    assert read_nights_csv(root / "data.csv", "val")[0].ref == "ref/000/0.png"


def test_majority_target() -> None:
    assert majority_target(1, 0) == 0.0 and majority_target(0, 1) == 1.0
    assert majority_target(2, 5) == 1.0 and majority_target(0.7, 0.3) == 0.0
    assert majority_target(3, 3) == 0.5


def test_images_stream_and_datamodule(tmp_path: Path) -> None:
    root = make_nights(tmp_path / "nights")
    triplets = read_nights_csv(root, "val")
    right = NightsImages(root, triplets, "right")
    x, row, index = right[1]
    assert x.shape == (3, 224, 224) and row == 1 and index == 1
    assert right.source(0).endswith("distort/000/0_1.png")
    dm = NightsDataModule(str(root), "val", image_size=16, batch_size=3)
    loaders = dm.val_dataloader()
    assert len(loaders) == 3 and [len(s) for s in dm.streams] == [4, 4, 4]
    batch = next(iter(loaders[0]))
    assert batch[0].shape == (3, 3, 16, 16) and torch.equal(batch[1], torch.arange(3))
    assert dm.describe()["triplets"] == 4 and len(dm.describe()["csv_sha256"]) == 64


def test_errors_name_the_input(tmp_path: Path) -> None:
    with pytest.raises(NightsFormatError, match="NIGHTS folder not found"):
        read_nights_csv(tmp_path / "nope")
    root = make_nights(tmp_path / "nights")
    (root / "distort" / "000" / "1_1.png").unlink()
    with pytest.raises(NightsFormatError, match=r"1_1.png: image named by data.csv"):
        read_nights_csv(root, "val")
    (root / "data.csv").write_text("id,ref_path,left_path\n0,a,b\n")
    with pytest.raises(NightsFormatError, match="missing column"):
        read_nights_csv(root, "val")
    with pytest.raises(NightsFormatError, match="split must be one of"):
        read_nights_csv(root, "validation")
