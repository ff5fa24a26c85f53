"""The callbacks' JSON records say what they are and which model made them (validate mode)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl

from procvision.data.datasets import KNNDataModule
from procvision.eval.callbacks import KNNCallback, PrivacyCallback, UnlearningCallback
from procvision.eval.evaluator import BackboneEvaluator
from procvision.eval.paper_report import entries_of
from tests.fixtures_real import TINY_BACKBONE, make_idx_root


def test_validate_records_kind_model_and_uris(tmp_path: Path) -> None:
    root = make_idx_root(tmp_path / "fm", n_train=20, n_test=8)
    dm = KNNDataModule(memory=f"fashion_mnist:{root}", queries=f"fashion_mnist:{root}",
                       resize_policy="resize", batch_size=8)  # fmt: skip
    paths = {k: tmp_path / f"{k}.json" for k in ("knn", "privacy", "unlearning")}
    callbacks = [KNNCallback(ks=[1, 5], results_path=str(paths["knn"])),
                 PrivacyCallback(k=5, results_path=str(paths["privacy"])),
                 UnlearningCallback(k=5, forget_fraction=0.2, results_path=str(paths["unlearning"]))]  # fmt: skip
    evaluator = BackboneEvaluator("random:" + json.dumps(TINY_BACKBONE), precision="fp32")
    trainer = pl.Trainer(logger=False, callbacks=callbacks, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.validate(evaluator, datamodule=dm, verbose=False)
    fp = evaluator.backbone.fingerprint()
    params = sum(p.numel() for p in evaluator.backbone.parameters())
    for kind, path in paths.items():
        rec = json.loads(path.read_text())
        assert rec["kind"] == kind
        assert rec["model"]["fingerprint"] == fp and rec["model"]["params"] == params
        assert (
            rec["model"]["backbone"] == evaluator.spec
            and rec["model"]["arch"] == "vit_tiny_patch16_224"
        )
        assert rec["memory_uri"] == f"fashion_mnist:{root}:train"
        assert rec["query_uri"] == f"fashion_mnist:{root}:test"
        assert rec["produced_by"]["fingerprint"] == fp  # the evaluator's describe(), as before
    # the report reads the k-NN and privacy records with their dataset and fingerprint
    [(_, knn)] = entries_of(json.loads(paths["knn"].read_text()), paths["knn"])
    [(_, priv)] = entries_of(json.loads(paths["privacy"].read_text()), paths["privacy"])
    assert (knn.kind, knn.dataset, knn.fingerprint) == ("knn", "fashion_mnist", fp)
    assert (priv.kind, priv.dataset, priv.fingerprint) == ("privacy", "fashion_mnist", fp)
    assert priv.info["params"] == params
