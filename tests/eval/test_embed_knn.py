"""embed_dataset, pixel baseline, knn_evaluate (hand-computed and against scikit-learn), tables."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from procvision.data.datasets import EvalTransform, FashionMNIST, ImageFolder, seeded_subset
from procvision.eval.embed import Embedded, embed_dataset, pixel_embeddings
from procvision.eval.knn import knn_evaluate
from procvision.eval.report import fashion_mnist_knn_report, knn_table
from procvision.memory import VisualMemory
from tests.fixtures_real import make_idx_root, make_image_folder

SMALL = EvalTransform(8, "resize", normalize="none")


class MeanColour(nn.Module):
    """A hand-checkable 'backbone': per-channel mean of the image, plus one constant feature."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(2, 3)) * self.scale
        return torch.cat([m, torch.full_like(m[:, :1], 0.1)], dim=1)


def test_embed_dataset_values_order_and_modes(tmp_path: Path) -> None:
    ds = ImageFolder(make_image_folder(tmp_path / "f", odd_modes=False), transform=SMALL)
    model = MeanColour().train()
    emb, labels = embed_dataset(model, ds, batch_size=5, progress=False)
    assert model.training  # restored
    assert emb.dtype == torch.float32 and emb.shape == (12, 4)
    assert labels.tolist() == ds.labels.tolist()
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(12))
    x = ds[7][0]
    ref = torch.cat([x.mean(dim=(1, 2)), torch.tensor([0.1])])
    torch.testing.assert_close(emb[7], ref / ref.norm())
    emb2, _ = embed_dataset(model, ds, batch_size=12, progress=False)
    torch.testing.assert_close(emb, emb2)
    assert not emb.requires_grad


def test_embed_dataset_reports_skipped_corrupt(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "f", odd_modes=False, corrupt=True)
    ds = ImageFolder(root, transform=SMALL, skip_corrupt=True)
    bad = next(i for i, p in enumerate(ds.paths) if p.endswith("zz_corrupt.jpg"))
    with pytest.warns(UserWarning, match="zz_corrupt"):
        out = embed_dataset(MeanColour(), ds, batch_size=4, progress=False, return_indices=True)
    assert isinstance(out, Embedded) and out.skipped == [bad]
    assert out.indices.tolist() == [i for i in range(len(ds)) if i != bad]
    assert out.labels.tolist() == [int(ds.labels[i]) for i in out.indices]


def test_pixel_embeddings_use_raw_pixels(tmp_path: Path) -> None:
    ds = FashionMNIST(make_idx_root(tmp_path), transform=SMALL)
    emb, labels = pixel_embeddings(ds, progress=False)
    raw = torch.from_numpy(ds.images.reshape(24, -1).astype(np.float32))
    assert emb.shape == (24, 784)
    torch.testing.assert_close(emb, raw / raw.norm(dim=1, keepdim=True))
    assert labels.tolist() == ds.labels.tolist()
    folder = ImageFolder(make_image_folder(tmp_path / "f", odd_modes=False), transform=SMALL)
    assert pixel_embeddings(folder, progress=False)[0].shape == (12, 3 * 8 * 8)


def _unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_knn_evaluate_hand_computed() -> None:
    # memory: 0 deg (class 0), 30 and 90 deg (class 1), 180 deg (class 2)
    memory = torch.tensor([_unit(0), _unit(30), _unit(90), _unit(180)])
    memory_labels = torch.tensor([0, 1, 1, 2])
    # q1 at 10 deg (class 1): sims 0.985 (c0), 0.940 (c1), 0.174 (c1)
    # q2 at 174.3 deg (class 2): sims 0.995 (c2), 0.099 (c1), -0.812 (c1)
    queries = torch.tensor([_unit(10), [-1.0, 0.1]])
    res = knn_evaluate(memory, memory_labels, queries, torch.tensor([1, 2]), ks=(1, 2, 3),
                       methods=("weighted", "plurality", "rank"))  # fmt: skip
    expected_top1 = {
        # k=1: q1 -> c0 (wrong), q2 -> c2 (right)
        ("weighted", 1): 50.0, ("plurality", 1): 50.0, ("rank", 1): 50.0,
        # k=2: weighted exp(.985/.07) > exp(.940/.07): q1 wrong, q2 right; plurality ties go to the
        # lowest class: q1 -> c0, q2 -> c1, both wrong; rank 1/2 > 1/3: as weighted
        ("weighted", 2): 50.0, ("plurality", 2): 0.0, ("rank", 2): 50.0,
        # k=3: weighted exp(14.07) > exp(13.43) + exp(2.48): q1 wrong; q2 right.
        # plurality and rank (1/3 + 1/4 > 1/2): q1 right (c1), q2 wrong (c1)
        ("weighted", 3): 50.0, ("plurality", 3): 50.0, ("rank", 3): 50.0,
    }  # fmt: skip
    for (method, k), value in expected_top1.items():
        assert res[f"{method}/k{k}/top1"] == pytest.approx(value), (method, k)
    # top-5 = top-3 here (3 classes); a class with no votes is not "in the top 5"
    assert res["weighted/k1/top5"] == 50.0 and res["weighted/k2/top5"] == 100.0
    assert res["plurality/best/k"] == 1 and res["info/n_memory"] == 4


def test_knn_evaluate_matches_sklearn_weighted() -> None:
    from sklearn.neighbors import KNeighborsClassifier

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g)
    mem_lab = torch.randint(0, 4, (300,), generator=g)
    q_lab = torch.randint(0, 4, (80,), generator=g)
    mem = centres[mem_lab] + 1.5 * torch.randn(300, 16, generator=g)
    qry = centres[q_lab] + 1.5 * torch.randn(80, 16, generator=g)
    mem_n, qry_n = nn.functional.normalize(mem, dim=1), nn.functional.normalize(qry, dim=1)
    res = knn_evaluate(
        mem, mem_lab * 10 + 3, qry, q_lab * 10 + 3, ks=(5, 20), methods=("weighted",)
    )
    for k in (5, 20):
        clf = KNeighborsClassifier(
            k, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1 - d) / 0.07)
        )
        clf.fit(mem_n.numpy(), mem_lab.numpy())
        acc = 100.0 * (clf.predict(qry_n.numpy()) == q_lab.numpy()).mean()
        assert res[f"weighted/k{k}/top1"] == pytest.approx(acc)


def test_knn_table_formats() -> None:
    one = {"weighted/k1/top1": 50.0, "weighted/k1/top5": 100.0, "weighted/k20/top1": 61.25}
    text = knn_table(one)
    assert text.splitlines()[0] == "| k | weighted top-1 | weighted top-5 |"
    assert "| 20 | 61.25 | - |" in text
    many = knn_table(
        {"model": one, "raw pixels": {"weighted/k20/top1": 84.59, "weighted/k20/top5": 99.0}}
    )
    assert "| raw pixels | - | 84.59 |" in many


def test_fashion_mnist_report_on_fixture(tmp_path: Path) -> None:
    from procvision.models import random_backbone

    root = make_idx_root(tmp_path, n_train=30, n_test=12)
    backbone = random_backbone("vit_tiny_patch16_224", img_size=16, patch_size=8, seed=1,
                               depth=1, embed_dim=32, num_heads=2)  # fmt: skip
    report = fashion_mnist_knn_report(
        backbone, k=3, root=str(root), max_memory=20, progress=False, memory_dir=tmp_path / "mem"
    )
    assert set(report["results"]) == {"model", "random init", "raw pixels"}
    assert report["config"]["memory"] == 20 and report["config"]["queries"] == 12
    # the fixture's classes are constant grey levels: raw pixels separate them perfectly
    assert report["results"]["raw pixels"]["weighted/k3/top1"] == 100.0
    # same seed, same architecture: "random init" is the model itself here
    assert report["results"]["random init"] == report["results"]["model"]
    assert "| raw pixels |" in knn_table(report["results"])
    mem = VisualMemory.load(tmp_path / "mem", expect_fingerprint=backbone.fingerprint())
    [meta] = mem.metadata_of([5])
    assert len(mem) == 20 and mem.class_names[9] == "Ankle boot"
    assert meta["transform"] == "resize:16:0.875:bicubic:imagenet" and "backbone" not in meta
    subset = seeded_subset(FashionMNIST(root, "train", SMALL), 20, seed=0)
    assert meta["source"] == subset.source(5) and meta["sha256"] == subset.content_hash(5)
