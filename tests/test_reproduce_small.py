"""`make reproduce-small` (scripts/reproduce_small.py) on a budget of a few training steps and tiny
evaluation subsets: every step runs, writes the JSON the report reads, a second invocation does no
work, and the report and README are produced."""

import importlib.util
import json
from pathlib import Path

import pytest

from procvision.eval.paper_report import load_runs

ROOT = Path(__file__).resolve().parents[1]
TINY_FIT = [
    "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
    "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
    "--data.init_args.samples_per_epoch=8", "--data.init_args.batch_size=4",
    "--data.init_args.num_unique=8",
    "--model.backbone_kwargs={depth: 1, embed_dim: 32, num_heads: 2}",
    "--model.out_dim=64", "--model.hidden_dim=32", "--model.bottleneck_dim=16",
]  # fmt: skip
TINY_EVAL = ["--max-memory", "200", "--max-queries", "50", "--linear-train", "100",
             "--linear-epochs", "2", "--seg-images", "4", "--seg-size", "32",
             "--gestalt-n", "1"]  # fmt: skip


def _script():
    spec = importlib.util.spec_from_file_location(
        "reproduce_small", ROOT / "scripts" / "reproduce_small.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _argv(out: Path, *extra: str) -> list[str]:
    return ["--out", str(out), *TINY_EVAL, *[f"--fit-arg={a}" for a in TINY_FIT], *extra]


def test_small_configs_differ_only_in_the_family():
    import yaml

    rs = _script()
    demo = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    budgets = set()
    for family in rs.TRAINED:
        cfg = yaml.safe_load((ROOT / "configs" / "small" / f"{family}.yaml").read_text())
        assert cfg["data"]["init_args"].pop("family") == family
        d = json.loads(json.dumps(demo))
        d["data"]["init_args"].pop("family")
        if family not in ("kml", "kml_mixup"):  # KML's mask grid is the only family-own option
            d["data"]["init_args"].pop("source_kwargs")
        assert cfg["model"] == d["model"] and cfg["data"] == d["data"]
        t = dict(cfg["trainer"])
        budgets.add((t.pop("max_epochs"), t.pop("default_root_dir")[:11]))
        dt = dict(d["trainer"])
        dt.pop("max_epochs"), dt.pop("default_root_dir")
        # the demo's epoch-end SegmentationCallback only monitors (no effect on training); the
        # small runs evaluate segmentation after training instead
        dt.pop("callbacks", None)
        assert t == dt
    assert budgets == {(demo["trainer"]["max_epochs"], "runs/small/")}  # identical: the demo's


def test_reproduce_small_runs_every_step_resumes_and_reports(tmp_path, capsys):
    rs = _script()
    out = tmp_path / "small"
    # part 1: one seed, two families and both baselines
    assert rs.main(_argv(out, "--seeds", "0", "--families", "kml_mixup", "stylegan",
                         "random_init", "raw_pixels")) == 0  # fmt: skip
    runs = out / "runs"
    assert sorted(p.name for p in runs.iterdir()) == [
        "kml_mixup_seed0", "random_init_seed0", "raw_pixels", "stylegan_seed0"]  # fmt: skip
    for name in ("kml_mixup_seed0", "stylegan_seed0"):
        t = json.loads((runs / name / ".done" / "train.json").read_text())
        assert t["steps_trained"] == 2 and t["config"] == f"configs/small/{name[:-6]}.yaml"
    for d in runs.iterdir():
        for step in rs.EVAL_STEPS:
            assert (d / ".done" / f"{step}.json").is_file(), (d.name, step)
        meta = json.loads((d / "run.json").read_text())
        assert meta["name"] == d.name and meta["fingerprint"]
        knn = json.loads((d / "eval" / "knn_fashion_mnist.json").read_text())
        assert knn["n_memory"] == 200 and knn["n_queries"] == 50
        assert 0 <= knn["results"]["weighted/best/top1"] <= 100
        assert not (out / "scratch" / d.name / "features").exists()  # dropped once used
    # every JSON is read by the report as the kind it is
    loaded = {r.name: r for r in load_runs(sorted(runs.iterdir()))}
    kinds = {(k, ds) for k, ds in loaded["kml_mixup_seed0"].entries}
    assert kinds == {("knn", "fashion_mnist"), ("linear", "fashion_mnist"),
                     ("privacy", "fashion_mnist"), ("r2", "seg_benchmark"), ("gestalt", "gestalt"),
                     ("knn_seg", "seg_benchmark")}  # fmt: skip
    assert ("r2", "seg_benchmark") in loaded["raw_pixels"].entries
    from procvision.eval.paper_report import GESTALT_PRINCIPLES

    for run in loaded.values():  # every principle of Table 4 has a number (no gap)
        assert set(run.entries[("gestalt", "gestalt")].values) == set(GESTALT_PRINCIPLES)
    assert loaded["random_init_seed0"].family == "random_init"
    report = (out / "report" / "report.md").read_text()
    assert "kml_mixup_seed0" in report and "stylegan_seed0" in report
    assert (out / "report" / "report.json").is_file() and (out / "report" / "knn.png").is_file()
    readme = (out / "README.md").read_text()
    assert "kml_mixup >= stylegan" not in readme  # the claims are the paper's, per family
    assert "| Shaders KML Mixup | 1 |" in readme and "| raw pixels | 1 |" in readme
    assert "1 seed" in readme

    # the same invocation again: nothing to do
    capsys.readouterr()
    marks = {p: p.stat().st_mtime_ns for p in runs.rglob(".done/*.json")}
    assert rs.main(_argv(out, "--seeds", "0", "--families", "kml_mixup", "stylegan",
                         "random_init", "raw_pixels")) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "0 steps run, 26 skipped" in printed
    assert {p: p.stat().st_mtime_ns for p in runs.rglob(".done/*.json")} == marks

    # an interrupted evaluation: its marker is missing, so only that step runs again
    (runs / "stylegan_seed0" / ".done" / "gestalt.json").unlink()
    assert rs.main(_argv(out, "--seeds", "0", "--families", "stylegan", "--only", "eval")) == 0
    assert "1 steps run, 5 skipped" in capsys.readouterr().out

    # part 2 adds a seed; only its steps run, and the report gains spreads
    assert rs.main(_argv(out, "--seeds", "1", "--families", "kml_mixup", "random_init")) == 0
    assert "13 steps run, 0 skipped" in capsys.readouterr().out
    readme = (out / "README.md").read_text()
    assert "| Shaders KML Mixup | 2 |" in readme and "| random init | 2 |" in readme
    assert "kml_mixup > random_init" in readme


def test_only_report_reads_what_exists(tmp_path, capsys):
    rs = _script()
    out = tmp_path / "small"
    assert rs.main(_argv(out, "--seeds", "0", "--families", "raw_pixels", "--only", "report")) == 0
    assert "no evaluated run yet" in capsys.readouterr().out
    assert not (out / "README.md").exists()


@pytest.mark.parametrize(
    "name,seed,expected", [("kml", 1, "kml_seed1"), ("raw_pixels", None, "raw_pixels")]
)
def test_run_names(name, seed, expected):
    assert _script().run_name(name, seed) == expected
