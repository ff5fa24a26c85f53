"""`make demo` end to end, shrunk: previews, a one-step fit, and the k-NN table on a subset."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
            "--trainer.fast_dev_run=true", "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            "--model.backbone_kwargs={depth: 1, embed_dim: 32, num_heads: 2}",
            "--model.out_dim=64", "--model.hidden_dim=32", "--model.bottleneck_dim=16",
            "--data.init_args.batch_size=2", "--data.init_args.render_size=32",
        ]
    )  # fmt: skip
    assert code == 0
    for family in demo.PREVIEW_FAMILIES:
        assert (out / "previews" / f"{family}.png").stat().st_size > 0
    report = json.loads((out / "knn_fashion_mnist.json").read_text())
    assert set(report["results"]) == {"model", "random init", "raw pixels"}
    assert report["config"]["memory"] == 200 and report["config"]["queries"] == 50
    assert (out / "memory" / "manifest.json").is_file()
    printed = capsys.readouterr().out
    assert "| model |" in printed and "| raw pixels |" in printed
