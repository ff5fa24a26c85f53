"""Real-dataset loaders on fixtures written in each dataset's official format."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from procvision.data.datasets import (
    CUB200,
    FASHION_MNIST_ROOT,
    CorruptImageError,
    DatasetFormatError,
    EvalTransform,
    FashionMNIST,
    Flowers102,
    Food101,
    ImageFolder,
    KNNDataModule,
    MedMNIST,
    npz_array,
    open_dataset,
    parse_dataset_uri,
    read_idx,
    seeded_subset,
    to_rgb,
)
from tests.fixtures_real import make_idx_root, make_image_folder, make_medmnist_npz, write_idx

SMALL = EvalTransform(16, "resize", normalize="none")


# ---------------------------------------------------------------- IDX / Fashion-MNIST
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "x-idx3-ubyte", arr, compress)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("layout", ["", "raw", "FashionMNIST/raw"])
def test_fashion_mnist_layouts(tmp_path: Path, layout: str) -> None:
    make_idx_root(tmp_path / layout if layout else tmp_path, compress=layout != "raw")
    train = FashionMNIST(tmp_path, "train", transform=SMALL)
    test = FashionMNIST(tmp_path, "test", transform=SMALL)
    assert (len(train), len(test)) == (24, 10)
    assert train.class_names[0] == "T-shirt/top" and len(train.class_names) == 10
    x, y, i = train[13]
    assert x.shape == (3, 16, 16) and (y, i) == (3, 13)
    # grey -> RGB: the three channels are equal
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert train.source(13).endswith(
        "train-images-idx3-ubyte" + ("" if layout == "raw" else ".gz") + "#13"
    )
    assert train.content_hash(13) == hashlib.sha256(train.images[13].tobytes()).hexdigest()
    assert train.raw_pixels().shape == (24, 784)


def test_fashion_mnist_missing_path_names_it(tmp_path: Path) -> None:
    with pytest.raises(
        DatasetFormatError, match=r"(?s)nowhere.*train-images-idx3-ubyte.*dataset-fashion-mnist"
    ):
        FashionMNIST(tmp_path / "nowhere")


def test_idx_truncated_and_bad_magic(tmp_path: Path) -> None:
    make_idx_root(tmp_path, compress=False)
    img = tmp_path / "train-images-idx3-ubyte"
    img.write_bytes(img.read_bytes()[:-5])
    with pytest.raises(DatasetFormatError, match="truncated"):
        FashionMNIST(tmp_path)
    img.write_bytes(b"PK\x03\x04junk")
    with pytest.raises(DatasetFormatError, match="not an IDX file"):
        FashionMNIST(tmp_path)


@pytest.mark.skipif(
    not os.path.isdir(FASHION_MNIST_ROOT), reason="Debian dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_package() -> None:
    train, test = FashionMNIST(split="train"), FashionMNIST(split="test")
    assert (len(train), len(test)) == (60000, 10000)
    assert np.bincount(test.labels).tolist() == [1000] * 10


# ---------------------------------------------------------------- MedMNIST npz
@pytest.mark.parametrize(("rgb", "compressed"), [(False, False), (True, False), (False, True)])
def test_medmnist_npz(tmp_path: Path, rgb: bool, compressed: bool) -> None:
    path = make_medmnist_npz(tmp_path / "pathmnist.npz", rgb=rgb, compressed=compressed)
    ref = np.load(path)
    for split, n in (("train", 12), ("val", 6), ("test", 6)):
        ds = MedMNIST(path, split, transform=SMALL)
        assert len(ds) == n and ds.class_names == ["0", "1", "2"]
        np.testing.assert_array_equal(ds.labels, ref[f"{split}_labels"].ravel())
        np.testing.assert_array_equal(np.asarray(ds.images), ref[f"{split}_images"])
        assert isinstance(ds.images, np.memmap) != compressed  # stored arrays are memory-mapped
        x, y, i = ds[5]
        assert x.shape == (3, 16, 16) and y == 5 % 3 and i == 5
        assert ds.source(5).endswith(f"pathmnist.npz:{split}#5")


def test_medmnist_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match=r"missing\.npz.*pathmnist_224\.npz"):
        MedMNIST(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DatasetFormatError, match=r"no array 'train_labels'.*train_images"):
        MedMNIST(tmp_path / "bad.npz")
    np.savez(
        tmp_path / "chest.npz",
        train_images=np.zeros((2, 4, 4), np.uint8),
        train_labels=np.zeros((2, 14), np.uint8),
    )
    with pytest.raises(DatasetFormatError, match="multi-label"):
        MedMNIST(tmp_path / "chest.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DatasetFormatError, match="not an .npz"):
        npz_array(tmp_path / "text.npz", "train_images")


# ---------------------------------------------------------------- ImageFolder and image modes
def test_image_folder_modes_and_listing(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "fold")
    ds = ImageFolder(root, transform=SMALL)
    assert ds.class_names == ["blue", "green", "red"]
    names = [Path(p).name for p in ds.paths]
    assert "notes.txt" not in names and len(ds) == 3 * 4 + 4
    assert np.bincount(ds.labels).tolist() == [5, 7, 4]
    for i in range(len(ds)):
        x, y, j = ds[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and j == i
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert ds.content_hash(0) == hashlib.sha256(Path(ds.paths[0]).read_bytes()).hexdigest()
    assert ds.source(0) == str((root / "blue" / "00.png").absolute())


def test_to_rgb_modes() -> None:
    rgb = Image.fromarray(np.full((4, 4, 3), (200, 10, 10), np.uint8))
    assert to_rgb(rgb.convert("P", palette=Image.Palette.ADAPTIVE)).getpixel((0, 0)) == (
        200,
        10,
        10,
    )
    assert to_rgb(rgb.convert("RGBA")).getpixel((0, 0)) == (200, 10, 10)
    grey = to_rgb(Image.fromarray(np.full((4, 4), 77, np.uint8)))
    assert grey.mode == "RGB" and grey.getpixel((1, 1)) == (77, 77, 77)
    deep = to_rgb(Image.fromarray(np.full((4, 4), 257 * 100, np.uint16)))
    assert deep.getpixel((0, 0)) == (100, 100, 100)  # scaled to 8 bits, not clipped to 255


def test_corrupt_image_fails_naming_file_or_is_skipped(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "fold", odd_modes=False, corrupt=True)
    ds = ImageFolder(root, transform=SMALL)
    bad = [i for i, p in enumerate(ds.paths) if p.endswith("zz_corrupt.jpg")][0]
    with pytest.raises(CorruptImageError, match=r"zz_corrupt\.jpg.*skip_corrupt=True"):
        ds[bad]
    skipping = ImageFolder(root, transform=SMALL, skip_corrupt=True)
    with pytest.warns(UserWarning, match="zz_corrupt"):
        assert skipping[bad] is None
    assert skipping[0] is not None


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match=r"nothing.*ImageFolder"):
        ImageFolder(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="no class folders"):
        ImageFolder(tmp_path / "empty")
    (tmp_path / "empty" / "cls").mkdir()
    with pytest.raises(DatasetFormatError, match="hold no image files"):
        ImageFolder(tmp_path / "empty")
    make_image_folder(tmp_path / "tree" / "train", odd_modes=False)
    assert len(ImageFolder(tmp_path / "tree", "train")) == 12
    with pytest.raises(DatasetFormatError, match=r"val.*split folder not found"):
        ImageFolder(tmp_path / "tree", "val")


# ---------------------------------------------------------------- transforms
def test_eval_transform_paper_policy_hand_computed() -> None:
    img = Image.fromarray(np.full((300, 400, 3), (255, 0, 128), np.uint8))
    x = EvalTransform()(img)  # resize short side to 256, centre crop 224, ImageNet normalise
    assert x.shape == (3, 224, 224)
    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    torch.testing.assert_close(x[:, 100, 100], torch.tensor(expected), atol=1e-5, rtol=0)
    assert EvalTransform(32, "resize")(img).shape == (3, 32, 32)
    assert EvalTransform(policy="none", normalize="none")(img).shape == (3, 300, 400)
    with pytest.raises(ValueError, match="resize policy"):
        EvalTransform(policy="squash")  # type: ignore[arg-type]


# ---------------------------------------------------------------- official index-file layouts
def _jpeg(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), colour, np.uint8)).save(path)


def test_cub_official_files(tmp_path: Path) -> None:
    root = tmp_path / "CUB_200_2011"
    files = ["001.Albatross/a.jpg", "001.Albatross/b.jpg", "002.Auklet/c.jpg"]
    for f in files:
        _jpeg(root / "images" / f, (10, 20, 30))
    (root / "images.txt").write_text("".join(f"{i + 1} {f}\n" for i, f in enumerate(files)))
    (root / "image_class_labels.txt").write_text("1 1\n2 1\n3 2\n")
    (root / "train_test_split.txt").write_text("1 1\n2 0\n3 1\n")
    (root / "classes.txt").write_text("1 001.Albatross\n2 002.Auklet\n")
    train, test = CUB200(tmp_path, "train", SMALL), CUB200(root, "test", SMALL)
    assert train.labels.tolist() == [0, 1] and test.labels.tolist() == [0]
    assert (
        train.class_names == ["001.Albatross", "002.Auklet"] and Path(test.paths[0]).name == "b.jpg"
    )
    with pytest.raises(DatasetFormatError, match="images.txt"):
        CUB200(tmp_path / "nope")


def test_food101_official_files(tmp_path: Path) -> None:
    root = tmp_path / "food-101"
    for e in ("apple_pie/1", "apple_pie/2", "sushi/3"):
        _jpeg(root / "images" / f"{e}.jpg", (1, 2, 3))
    (root / "meta").mkdir()
    (root / "meta/classes.txt").write_text("apple_pie\nsushi\n")
    (root / "meta/train.txt").write_text("apple_pie/1\nsushi/3\n")
    (root / "meta/test.txt").write_text("apple_pie/2\n")
    train = Food101(tmp_path, "train", SMALL)
    assert train.labels.tolist() == [0, 1] and train[1][0].shape == (3, 16, 16)
    assert Food101(root, "test", SMALL).labels.tolist() == [0]


def test_flowers102_official_files(tmp_path: Path) -> None:
    from scipy.io import savemat

    root = tmp_path / "flowers-102"
    for i in range(1, 5):
        _jpeg(root / "jpg" / f"image_{i:05d}.jpg", (i, i, i))
    savemat(root / "imagelabels.mat", {"labels": np.array([[1, 2, 102, 1]])})
    savemat(
        root / "setid.mat",
        {"trnid": np.array([[1, 3]]), "valid": np.array([[2]]), "tstid": np.array([[4]])},
    )
    train = Flowers102(tmp_path, "train", SMALL)
    assert train.labels.tolist() == [0, 101] and len(train.class_names) == 102
    assert Flowers102(root, "val", SMALL).labels.tolist() == [1]


# ---------------------------------------------------------------- URIs, subsets, datamodule
def test_parse_dataset_uri() -> None:
    assert str(parse_dataset_uri("fashion_mnist")) == "fashion_mnist"
    u = parse_dataset_uri("fashion_mnist:test")
    assert (u.path, u.split) == (None, "test")
    u = parse_dataset_uri("medmnist:/d/a:b/pathmnist_224.npz:val")
    assert (u.kind, u.path, u.split) == ("medmnist", "/d/a:b/pathmnist_224.npz", "val")
    u = parse_dataset_uri("imagefolder:/data/x")
    assert (u.path, u.split) == ("/data/x", None)
    with pytest.raises(ValueError, match="unknown dataset"):
        parse_dataset_uri("cifar:/x")
    with pytest.raises(ValueError, match="needs a path"):
        parse_dataset_uri("imagefolder")


def test_open_dataset_imagefolder_split_fallback(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "plain", odd_modes=False)
    assert (
        len(open_dataset(f"imagefolder:{tmp_path / 'plain'}", split="train", transform=SMALL)) == 12
    )
    with pytest.raises(DatasetFormatError, match="split folder not found"):
        open_dataset(f"imagefolder:{tmp_path / 'plain'}:train")


def test_seeded_subset(tmp_path: Path) -> None:
    ds = FashionMNIST(make_idx_root(tmp_path), transform=SMALL)
    a, b = seeded_subset(ds, 7, seed=3), seeded_subset(ds, 7, seed=3)
    assert len(a) == 7 and a.indices.tolist() == b.indices.tolist() == sorted(a.indices.tolist())
    assert seeded_subset(ds, 7, seed=4).indices.tolist() != a.indices.tolist()
    j = int(a.indices[2])
    assert a.labels[2] == ds.labels[j] and a.source(2) == ds.source(j) and a[2][2] == 2
    torch.testing.assert_close(a[2][0], ds[j][0])
    assert seeded_subset(ds, None) is ds and seeded_subset(ds, 1000) is ds


def test_knn_datamodule_loaders(tmp_path: Path) -> None:
    make_idx_root(tmp_path)
    dm = KNNDataModule(
        memory=f"fashion_mnist:{tmp_path}:train", queries=f"fashion_mnist:{tmp_path}:test",
        image_size=16, resize_policy="resize", max_memory=9, max_queries=4, batch_size=4,
    )  # fmt: skip
    memory_loader, query_loader = dm.val_dataloader()
    assert (len(memory_loader.dataset), len(query_loader.dataset)) == (9, 4)
    x, y, i = next(iter(query_loader))
    assert x.shape == (4, 3, 16, 16) and y.dtype == torch.int64 and i.tolist() == [0, 1, 2, 3]
    assert dm.class_names[9] == "Ankle boot"
