"""The memory callbacks in a tiny fit (own sets, one shared embedding pass) and a tiny validate."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from procvision.data.datasets import EvalTransform, FashionMNIST, KNNDataModule
from procvision.data.datasets.datamodule import EvalSet
from procvision.eval.callbacks import (
    KNNCallback,
    PrivacyCallback,
    UnlearningCallback,
    run_on_rank_zero,
)
from procvision.eval.embed import embed_dataset
from procvision.eval.knn import knn_evaluate
from procvision.memory import build_memory, privacy_audit
from procvision.memory.privacy import privacy_metrics
from procvision.models.module import DINOModule
from tests.fixtures_real import make_idx_root

TINY = dict(
    arch="vit_tiny_patch16_224", img_size=16, patch_size=8,
    backbone_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2},
    out_dim=32, hidden_dim=32, bottleneck_dim=16, n_local_crops=0, warmup_epochs=0,
    batch_size=4, log_crops=False, drop_path_rate=0.0,
)  # fmt: skip


class TwoCrops(pl.LightningDataModule):
    """Random 16-px images as DINO batches {"crops": [g1, g2]} (2 steps per epoch)."""

    batch_size = 4

    def train_dataloader(self) -> DataLoader:
        images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        return DataLoader(
            images,
            batch_size=4,
            collate_fn=lambda b: {"crops": [torch.stack(b), torch.stack(b).flip(-1)]},
        )


def _sets(root: Path, **kw) -> dict:
    """memory/queries EvalSets of a fixture root, fp32 (so hand references match exactly)."""
    return dict(
        memory=EvalSet(f"fashion_mnist:{root}:train", resize_policy="resize", batch_size=16, **kw),
        queries=EvalSet(f"fashion_mnist:{root}:test", resize_policy="resize", batch_size=16, **kw),
        precision="fp32",
        progress=False,
    )


def _tb_tags(log_dir: str) -> dict[str, list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir, size_guidance={"images": 0, "histograms": 0})
    acc.Reload()
    return acc.Tags()


def test_callbacks_during_fit(tmp_path: Path) -> None:
    root = make_idx_root(tmp_path / "fm", n_train=30, n_test=12)
    common = _sets(root)
    knn = KNNCallback(
        ks=[1, 3],
        methods=["weighted", "plurality"],
        n_image_queries=3,
        n_image_neighbours=2,
        **common,
    )
    priv = PrivacyCallback(k=3, **common)
    logger = TensorBoardLogger(tmp_path, name="logs")
    trainer = pl.Trainer(
        max_epochs=1, logger=logger, callbacks=[knn, priv], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    model = DINOModule(**TINY)
    trainer.fit(model, datamodule=TwoCrops())
    metrics = trainer.callback_metrics
    for key in (
        "knn/weighted/k1/top1",
        "knn/weighted/k3/top5",
        "knn/plurality/k3/top1",
        "knn/weighted/best/top1",
    ):
        assert key in metrics, key
    for key in (
        "privacy/non_private_fraction",
        "privacy/accuracy_top1",
        "privacy/paper_variant_fraction",
    ):
        assert key in metrics, key
    assert model.training and not model.teacher.training  # train mode restored, teacher stays eval
    # the callback's numbers are those of the same teacher embedded by hand
    transform = EvalTransform(16, "resize")
    mem = FashionMNIST(root, "train", transform)
    qry = FashionMNIST(root, "test", transform)
    m, q = (
        embed_dataset(model.teacher_backbone, mem, progress=False),
        embed_dataset(model.teacher_backbone, qry, progress=False),
    )
    ref = knn_evaluate(*m, *q, ks=(1, 3), methods=("weighted", "plurality"))
    assert float(metrics["knn/weighted/k3/top1"]) == pytest.approx(ref["weighted/k3/top1"])
    audit = privacy_audit(build_memory(*m), q[0].numpy(), q[1].numpy(), k=3)
    assert float(metrics["privacy/non_private_fraction"]) == pytest.approx(
        privacy_metrics(audit)["non_private_fraction"]
    )
    tags = _tb_tags(logger.log_dir)
    assert "knn/neighbours" in tags["images"] and "privacy/flip_counts" in tags["histograms"]


def test_knn_callback_in_validate_writes_json(tmp_path: Path) -> None:
    root = make_idx_root(tmp_path / "fm", n_train=30, n_test=12)
    dm = KNNDataModule(
        memory=f"fashion_mnist:{root}:train", queries=f"fashion_mnist:{root}:test",
        image_size=16, resize_policy="resize", max_memory=20, batch_size=8,
    )  # fmt: skip
    out = tmp_path / "res" / "knn.json"
    knn = KNNCallback(ks=[1, 5, 20], results_path=str(out))
    trainer = pl.Trainer(
        logger=TensorBoardLogger(tmp_path, name="v"), callbacks=[knn], enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    model = DINOModule(**TINY)
    results = trainer.validate(model, datamodule=dm, verbose=False)
    metrics = results[0]
    record = json.loads(out.read_text())
    assert record["results"]["weighted/k5/top1"] == pytest.approx(metrics["knn/weighted/k5/top1"])
    assert record["memory"]["size"] == 20 and record["queries"]["size"] == 12
    assert "| k | weighted top-1 | weighted top-5 |" in knn.summary  # printed by the CLI
    m = embed_dataset(model.teacher_backbone, dm.memory_set, progress=False)
    q = embed_dataset(model.teacher_backbone, dm.query_set, progress=False)
    ref = knn_evaluate(*m, *q, ks=(1, 5, 20))
    for key in ("weighted/k1/top1", "weighted/k20/top5"):
        assert record["results"][key] == pytest.approx(ref[key])


def test_callback_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="both"):
        KNNCallback(memory=EvalSet("fashion_mnist:train"))
    with pytest.raises(ValueError, match="precision"):
        KNNCallback(precision="fp16")
    with pytest.raises(ValueError, match="every_n_epochs"):
        PrivacyCallback(every_n_epochs=0)


def test_unlearning_callback_during_fit(tmp_path: Path) -> None:
    root = make_idx_root(tmp_path / "fm", n_train=40, n_test=12)
    cb = UnlearningCallback(forget_fraction=0.25, k=5, **_sets(root))
    trainer = pl.Trainer(
        max_epochs=1, logger=False, callbacks=[cb], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(DINOModule(**TINY), datamodule=TwoCrops())
    res = cb.last_results
    assert res["ok"] == 1.0 and res["removed"] == 10.0
    assert res["check"]["identical_neighbours"] and res["check"]["removed_ids_in_results"] == 0
    assert "unlearning/ok" in trainer.callback_metrics
    with pytest.raises(ValueError, match="forget_fraction"):
        UnlearningCallback(forget_fraction=1.5)


def test_segmentation_callback_during_fit(tmp_path: Path) -> None:
    from procvision.data.datasets.voc import VOCSegmentation
    from procvision.eval.segmentation import segmentation_r2
    from procvision.eval.segmentation_callback import SegmentationCallback
    from tests.test_cli_segment import _voc

    root = _voc(tmp_path / "VOC")
    seg = SegmentationCallback(str(root), max_images=2, grid=16, n_images=2)
    logger = TensorBoardLogger(tmp_path, name="logs")
    trainer = pl.Trainer(
        max_epochs=1, logger=logger, callbacks=[seg], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    model = DINOModule(**TINY)
    trainer.fit(model, datamodule=TwoCrops())
    voc = VOCSegmentation(root, "val", 16)  # the model's img_size
    ref = segmentation_r2(model.teacher_backbone, [voc[0], voc[1]], grid=16, progress=False)
    assert float(trainer.callback_metrics["seg/r2"]) == pytest.approx(ref["model"], rel=1e-5)
    assert float(trainer.callback_metrics["seg/r2_rgb"]) == pytest.approx(ref["rgb"], rel=1e-5)
    assert "seg/pca" in _tb_tags(logger.log_dir)["images"]
    with pytest.raises(ValueError, match="every_n_epochs"):
        SegmentationCallback(str(root), every_n_epochs=0)


def test_three_callbacks_embed_each_set_once_per_epoch_end(tmp_path: Path) -> None:
    root = make_idx_root(tmp_path / "fm", n_train=30, n_test=12)
    sets = _sets(root)
    callbacks = [
        KNNCallback(ks=[1, 3], log_images=False, **sets),
        PrivacyCallback(k=3, **sets),
        UnlearningCallback(k=3, forget_fraction=0.2, **sets),
    ]
    model = DINOModule(**TINY)
    seen: list[int] = []  # images per teacher forward outside training (inference mode)

    def count(_module, args, _out) -> None:
        if torch.is_inference_mode_enabled():
            seen.append(int(args[0].shape[0]))

    model.teacher_backbone.register_forward_hook(count)
    trainer = pl.Trainer(
        max_epochs=2, logger=False, callbacks=callbacks, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(model, datamodule=TwoCrops())
    # 2 epoch ends x (30 memory + 12 query images), once each, for the three callbacks together
    assert sum(seen) == 2 * (30 + 12)
    assert all(cb.last_results is not None for cb in callbacks)
    assert callbacks[2].last_results["ok"] == 1.0
    # the numbers are those of the final teacher embedded by hand
    tf = EvalTransform(16, "resize")
    m = embed_dataset(model.teacher_backbone, FashionMNIST(root, "train", tf), progress=False)
    q = embed_dataset(model.teacher_backbone, FashionMNIST(root, "test", tf), progress=False)
    ref = knn_evaluate(*m, *q, ks=(1, 3))
    assert callbacks[0].last_results["weighted/k3/top1"] == pytest.approx(ref["weighted/k3/top1"])


class _FakeStrategy:
    def __init__(self, rank0_failed: bool) -> None:
        self.rank0_failed, self.calls = rank0_failed, 0

    def broadcast(self, obj, src: int = 0):
        self.calls += 1
        return self.rank0_failed  # what rank 0 sent


class _FakeTrainer:
    def __init__(self, rank: int, rank0_failed: bool = False) -> None:
        self.is_global_zero = rank == 0
        self.strategy = _FakeStrategy(rank0_failed)


def test_rank_zero_failure_reaches_the_collective_and_stops_every_rank() -> None:
    def boom() -> None:
        raise RuntimeError("exact unlearning check failed")

    t0 = _FakeTrainer(0, rank0_failed=True)
    with pytest.raises(RuntimeError, match="exact unlearning"):
        run_on_rank_zero(t0, boom, "UnlearningCallback")
    assert t0.strategy.calls == 1  # rank 0 reached the collective before raising
    t1 = _FakeTrainer(1, rank0_failed=True)
    with pytest.raises(RuntimeError, match="failed on global rank 0"):
        run_on_rank_zero(t1, boom, "UnlearningCallback")  # boom runs on rank 0 only
    assert t1.strategy.calls == 1
    ran: list[int] = []
    t2 = _FakeTrainer(1)
    run_on_rank_zero(t2, lambda: ran.append(1), "KNNCallback")
    assert ran == [] and t2.strategy.calls == 1
