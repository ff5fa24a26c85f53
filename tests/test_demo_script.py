"""`make demo` end to end, shrunk: previews, a one-step fit, and the k-NN table on a subset; and a
run cut short by the time limit, which the report states and which fails the demo."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
    "--model.backbone_kwargs={depth: 1, embed_dim: 32, num_heads: 2}",
    "--model.out_dim=64", "--model.hidden_dim=32", "--model.bottleneck_dim=16",
    "--data.init_args.render_size=32",
]  # fmt: skip


def _demo_module():
    spec = importlib.util.spec_from_file_location("demo", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_runs_end_to_end_on_a_tiny_budget(tmp_path, capsys):
    demo = _demo_module()
    out = tmp_path / "demo"
    code = demo.main(
        [
            "--out", str(out), "--preview-n", "4", "--preview-size", "32",
            "--max-memory", "200", "--max-queries", "50",
            "--seg-images", "3", "--seg-size", "48", "--seg-eval-size", "32",
            "--trainer.callbacks.every_n_epochs=1", "--trainer.callbacks.max_images=2",
            "--trainer.fast_dev_run=true", "--data.init_args.batch_size=2", *TINY,
        ]
    )  # fmt: skip
    assert code == 0  # fast_dev_run is shortened on purpose: exempt
    for family in demo.PREVIEW_FAMILIES:
        assert (out / "previews" / f"{family}.png").stat().st_size > 0
    report = json.loads((out / "knn_fashion_mnist.json").read_text())
    assert set(report["results"]) == {"model", "random init", "raw pixels"}
    assert report["config"]["memory"] == 200 and report["config"]["queries"] == 50
    assert report["training"]["steps_trained"] == 1 and report["training"]["fast_dev_run"]
    assert not report["training"]["cut_short"] and "CUT SHORT" not in report["heading"]
    assert report["config"]["precision"] in ("fp32", "bf16")
    assert (out / "memory" / "manifest.json").is_file()
    printed = capsys.readouterr().out
    assert "| model |" in printed and "| raw pixels |" in printed
    assert "model trained 1 of" in printed
    # segmentation: the benchmark written before fit, the callback's R² at the epoch end, the
    # R² table (model, random init, RGB) at the stated input size, recorded in the demo JSON
    assert (out / "seg_benchmark" / "annotations" / "instances_val2017.json").is_file()
    seg = json.loads((out / "segmentation_r2.json").read_text())
    assert set(seg["r2"]) == {"model", "random init", "RGB"} and seg["images"] == 3
    assert seg["image_size"] == 32 and seg["token_grid"] == 4 and seg["model_img_size"] == 32
    assert report["segmentation"]["r2"] == seg["r2"]
    cb = seg["callback"]
    assert cb is not None and cb["images"] == 2 and cb["seconds_last_epoch_end"] > 0
    assert "| random init |" in printed and "| RGB |" in printed
    assert (
        printed.rstrip()
        .splitlines()[-1]
        .startswith(f"serve the memory: procvision serve --memory {out / 'memory'}")
    )


def test_demo_cut_short_by_max_time_says_so_and_fails(tmp_path, capsys):
    demo = _demo_module()
    out = tmp_path / "demo"
    code = demo.main(
        [
            "--out", str(out), "--no-previews", "--max-memory", "40", "--max-queries", "20",
            "--seg-images", "2", "--seg-size", "32", "--seg-eval-size", "32",
            "--trainer.callbacks=[]",
            "--data.init_args.source=tests.models.stand_in.GradientSource",
            "--data.init_args.samples_per_epoch=8", "--data.init_args.batch_size=2",
            "--data.init_args.num_unique=null", "--trainer.max_epochs=500",
            "--trainer.max_time=00:00:00:02", *TINY,
        ]
    )  # fmt: skip
    assert code == demo.EXIT_CUT_SHORT
    report = json.loads((out / "knn_fashion_mnist.json").read_text())
    t = report["training"]
    assert t["steps_planned"] == 2000 and 0 < t["steps_trained"] < 0.9 * 2000 and t["cut_short"]
    assert "CUT SHORT" in report["heading"]
    captured = capsys.readouterr()
    assert f"{t['steps_trained']} of 2000 planned steps" in captured.out
    assert "below 90%" in captured.err
    # the record of the run is what --skip-train reports later
    assert (
        demo.previous_record(out, demo.latest_export(out / "train"))["steps_trained"]
        == t["steps_trained"]
    )
