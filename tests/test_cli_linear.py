"""`procvision linear`: CPU smoke run of the config on an IDX fixture, the JSON, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from procvision.cli import main
from tests.fixtures_real import TINY_BACKBONE, make_idx_root

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "eval" / "linear_fashion_mnist.yaml"


@pytest.mark.parametrize("backbone", ["pixels", "random:" + json.dumps(TINY_BACKBONE)])
def test_linear_config_runs(tmp_path: Path, backbone: str, capsys) -> None:
    root = make_idx_root(tmp_path / "fm", n_train=40, n_test=20)
    out = tmp_path / "linear.json"
    rc = main([
        "linear", "--config", str(CONFIG), "--backbone", backbone,
        "--train", f"fashion_mnist:{root}:train", "--test", f"fashion_mnist:{root}:test",
        "--lrs", "[0.01, 0.1]", "--epochs", "3", "--batch-size", "16", "--knn-ks", "[1, 20]",
        "--json", str(out),
    ])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "| fashion_mnist | k-NN k=20 | k-NN best k | linear |" in text
    record = json.loads(out.read_text())
    assert record["kind"] == "linear" and record["dataset"] == "fashion_mnist"
    lin = record["results"]
    assert lin["n_train"] == 40 and lin["n_val"] == 4 and lin["n_test"] == 20
    assert lin["lr"] in (0.01, 0.1) and set(lin["sweep"]) == {"0.01", "0.1"}
    assert 0.0 <= lin["top1"] <= 100.0 and "weighted/k20/top1" in record["knn"]
    assert record["model"]["fingerprint"] and record["recipe"]["epochs"] == 3
    if backbone == "pixels":  # the fixture's bright bands are linearly separable in pixel space
        assert lin["top1"] == 100.0 and record["knn"]["weighted/k1/top1"] == 100.0


def test_linear_errors_are_one_line(tmp_path: Path, capsys) -> None:
    rc = main(["linear", "--train", "nosuch:x", "--test", "nosuch:y"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "unknown dataset" in err
    rc = main(["linear", "--backbone", str(tmp_path / "missing.ckpt")])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.ckpt" in err and err.count("\n") == 1
    rc = main(["linear", "--val-fraction", "1.5"])
    assert rc == 2 and "val_fraction" in capsys.readouterr().err


def test_linear_on_a_lightning_checkpoint(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    from procvision.models import load_backbone
    from procvision.models.module import DINOModule
    from tests.eval.test_callbacks import TINY, TwoCrops

    model = DINOModule(**TINY)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")  # fmt: skip
    trainer.fit(model, datamodule=TwoCrops())
    ckpt = tmp_path / "tiny.ckpt"
    trainer.save_checkpoint(ckpt)
    root = make_idx_root(tmp_path / "fm", n_train=30, n_test=10)
    out = tmp_path / "linear.json"
    assert main(["linear", "--backbone", str(ckpt), "--train", f"fashion_mnist:{root}:train",
                 "--test", f"fashion_mnist:{root}:test", "--lrs", "[0.1]", "--epochs", "2",
                 "--json", str(out)]) == 0  # fmt: skip
    record = json.loads(out.read_text())
    teacher = load_backbone(ckpt)
    assert record["model"]["fingerprint"] == teacher.fingerprint()
    assert record["data"]["transform"]["size"] == teacher.config["img_size"]


def count_forwards(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Images through `Backbone.forward` (every embedding pass goes through it)."""
    from procvision.models.backbone import Backbone

    seen: list[int] = []
    real = Backbone.forward

    def counted(self, x):
        seen.append(len(x))
        return real(self, x)

    monkeypatch.setattr(Backbone, "forward", counted)
    return seen


def test_linear_second_run_with_a_cache_dir_embeds_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    root = make_idx_root(tmp_path / "fm", n_train=30, n_test=10)
    forwards = count_forwards(monkeypatch)
    cache = tmp_path / "cache"
    args = ["linear", "--backbone", "random:" + json.dumps(TINY_BACKBONE),
            "--train", f"fashion_mnist:{root}:train", "--test", f"fashion_mnist:{root}:test",
            "--max-train", "24", "--lrs", "[0.1]", "--epochs", "2", "--knn-ks", "[1, 5]",
            "--cache-dir", str(cache)]  # fmt: skip
    assert main([*args, "--json", str(tmp_path / "a.json")]) == 0
    assert sum(forwards) == 24 + 10
    first = json.loads((tmp_path / "a.json").read_text())
    assert first["features"]["sources"] == {"train": "embedded", "test": "embedded"}
    forwards.clear()
    assert main([*args, "--epochs", "3", "--json", str(tmp_path / "b.json")]) == 0
    assert forwards == []  # the second run with the same backbone does no embedding
    second = json.loads((tmp_path / "b.json").read_text())
    assert second["features"] == {"cache_dir": str(cache),
                                  "sources": {"train": "disk", "test": "disk"}}  # fmt: skip
    assert second["knn"] == first["knn"]  # the same features
    assert "embeddings (" in capsys.readouterr().out
    [folder] = cache.iterdir()
    assert folder.name == first["model"]["fingerprint"]
    # another subset is another entry: embedded, the test set still comes from the disk
    assert main([*args[:-2], "--max-train", "20", "--cache-dir", str(cache),
                 "--json", str(tmp_path / "c.json")]) == 0  # fmt: skip
    assert sum(forwards) == 20
    third = json.loads((tmp_path / "c.json").read_text())
    assert third["features"]["sources"] == {"train": "embedded", "test": "disk"}


def test_linear_precision_and_feature_are_settings_recorded_and_cached_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--precision / --feature reach the embedding (as validate's --model.precision/feature), land
    in the JSON, and key the disk cache: an fp32 entry is never served to a bf16 run."""
    from procvision.eval.embed import resolve_precision

    root = make_idx_root(tmp_path / "fm", n_train=20, n_test=10)
    forwards = count_forwards(monkeypatch)
    args = ["linear", "--backbone", "random:" + json.dumps(TINY_BACKBONE),
            "--train", f"fashion_mnist:{root}:train", "--test", f"fashion_mnist:{root}:test",
            "--lrs", "[0.1]", "--epochs", "1", "--knn-ks", "[1]", "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    records = {}
    for precision, feature in (
        ("fp32", "cls"),
        ("bf16", "cls"),
        ("fp32", "cls_prenorm"),
        ("auto", "cls"),
    ):
        forwards.clear()
        out = tmp_path / f"{precision}_{feature}.json"
        assert (
            main([*args, "--precision", precision, "--feature", feature, "--json", str(out)]) == 0
        )
        records[precision, feature] = rec = json.loads(out.read_text())
        assert rec["model"]["precision"] == resolve_precision(precision, "cpu")
        assert rec["model"]["feature"] == feature
        sources = set(rec["features"]["sources"].values())
        if precision == "auto":  # served from the entry of what it resolves to: no forward
            assert sources == {"disk"} and sum(forwards) == 0
        else:  # a new (precision, feature) is a new entry (cls_prenorm bypasses Backbone.forward)
            assert sources == {"embedded"} and sum(forwards) == (30 if feature == "cls" else 0)
    fp32, prenorm = records["fp32", "cls"], records["fp32", "cls_prenorm"]
    assert fp32["model"]["fingerprint"] == prenorm["model"]["fingerprint"]


def test_linear_rejects_an_unknown_precision(capsys) -> None:
    with pytest.raises(SystemExit) as info:  # the typed parser refuses it before anything runs
        main(["linear", "--precision", "fp8"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "precision" in err and "fp8" in err
