"""`procvision report` from fixture JSONs in the shapes the evaluations write, with missing entries."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from procvision.cli import main
from procvision.eval.paper_report import dataset_of_uri, entries_of, load_runs, normalise_family
from procvision.eval.stats import two_proportion_z_test

PNG = b"\x89PNG\r\n\x1a\n"


def knn_callback_json(
    top1_k20: float, best: float, best_k: int, ckpt: str | None, step: int = 10
) -> dict:
    """What KNNCallback._write stores (results of flatten_sweep)."""
    return {"results": {"weighted/k20/top1": top1_k20, "weighted/k20/top5": 99.0,
                        "weighted/k10/top1": best if best_k == 10 else top1_k20 - 1,
                        "weighted/best/top1": best, "weighted/best/k": float(best_k),
                        "info/memory": 60000.0},
            "table": "...", "ks": [10, 20], "methods": ["weighted"], "T": 0.07,
            "memory_uri": "fashion_mnist:train", "query_uri": "fashion_mnist:test",
            "epoch": 3, "global_step": step, "ckpt_path": ckpt}  # fmt: skip


def nights_json(score: float, fp: str) -> dict:
    return {"kind": "nights", "version": 1, "cls": "after_norm",
            "results": {"2afc": score, "stderr": math.sqrt(score * (1 - score) / 1720), "n": 1720.0,
                        "ties": 0.0, "psnr_2afc": 0.55, "psnr_stderr": 0.012, "ssim_2afc": 0.57,
                        "ssim_stderr": 0.012},
            "data": {"split": "val"}, "model": {"fingerprint": fp, "params": 5_000_000}}  # fmt: skip


def write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    ckpt = write(root / "kml_mixup_seed0" / "checkpoints" / "last.ckpt", "weights")
    a = root / "kml_mixup_seed0"
    write(a / "run.json", {"family": "S. KML Mixup", "seed": 0, "params": 5_000_000})
    write(
        a / "lightning_logs" / "version_0" / "knn_results.json",
        knn_callback_json(80.0, 81.5, 10, str(ckpt), 5),
    )
    write(
        a / "lightning_logs" / "version_1" / "knn_results.json",
        knn_callback_json(84.1, 85.0, 20, str(ckpt), 50),
    )
    write(a / "nights_results.json", nights_json(0.81, "fp-kml-mixup-0"))
    write(a / "linear.json", {"kind": "linear", "dataset": "fashion_mnist",
                              "results": {"top1": 88.25, "lr": 1.0},
                              "knn": {"weighted/k20/top1": 84.1, "weighted/best/top1": 85.0,
                                      "weighted/best/k": 20.0},
                              "model": {"fingerprint": "fp-kml-mixup-0"}})  # fmt: skip
    write(a / "privacy_results.json", {"results": {"non_private_fraction": 0.55, "non_private_count": 33.0,
                                                   "queries_with_flips": 40.0, "accuracy_top1": 84.0,
                                                   "paper_variant_fraction": 0.2},
                                       "k": 20, "method": "weighted", "T": 0.07,
                                       "memory_uri": "fashion_mnist:train", "query_uri": "fashion_mnist:test"})  # fmt: skip
    write(a / "medmnist" / "path.json", {"kind": "knn", "dataset": "medmnist/path",
                                         "results": {"weighted/best/top1": 90.5, "weighted/best/k": 5.0,
                                                     "weighted/k20/top1": 89.0},
                                         "model": {"fingerprint": "fp-kml-mixup-0"}})  # fmt: skip
    b = root / "kml_mixup_seed1"  # only k-NN: every other table has a gap for it
    write(b / "knn_results.json", knn_callback_json(82.1, 83.0, 20, None))
    c = root / "shaders_seed0"
    write(c / "run.json", {"params": 21_000_000, "fingerprint": "fp-shaders-0"})
    write(c / "knn_results.json", knn_callback_json(79.0, 79.5, 20, None))
    write(c / "nights.json", nights_json(0.83, "fp-shaders-0"))
    write(c / "segment.json", {"scores": {"model": {"model": 40.5, "rgb": 19.0, "images": 10.0},
                                          "random init": {"model": 30.0, "images": 10.0}},
                               "backbone": "/x", "grid": 112, "image_size": 448, "split": "val"})  # fmt: skip
    write(c / "gestalt.json", {"kind": "gestalt", "results": {"Closure": 30.0, "Proximity": 60.5}})
    write(c / "knn_seg.json", {"kind": "knn_segmentation", "dataset": "seg_benchmark",
                               "results": {"softmax_miou": 0.125, "topk_miou": 0.25,
                                           "softmax_fg_pixel_acc": 0.5, "softmax_pixel_acc": 0.9}})  # fmt: skip
    # a hidden folder (reproduce_small's done-markers) is bookkeeping even when it looks like a result
    write(c / ".done" / "knn.json", knn_callback_json(99.25, 99.5, 20, None))
    write(c / "notes.json", {"hello": "not a result"})
    write(c / "broken.json", "{not json")
    d = root / "random"
    write(d / "segment_knn.json", {"backbone": "random:x", "data": "benchmark:/b:val2017",
                                   "memory_images": 4, "query_images": 4, "k": 20, "T": 0.07,
                                   "model": {"memory_patches": 256, "softmax": {"miou": 0.2, "fg_pixel_acc": 0.1},
                                             "topk": {"miou": 0.3}},
                                   "random init": {"memory_patches": 256, "softmax": {"miou": 0.05}}})  # fmt: skip
    write(d / "audit.json", {"n_memory": 1000, "n_queries": 100, "non_private_fraction": 0.004,
                             "non_private_count": 4, "accuracy_top1": 20.0, "fingerprint": "fp-random"})  # fmt: skip
    return root


def test_entries_and_names() -> None:
    assert normalise_family("S. KML Mixup") == "kml_mixup" == normalise_family("kml-mixup")
    assert dataset_of_uri("medmnist:/d/pathmnist_224.npz:test") == "medmnist/path"
    assert dataset_of_uri("imagefolder:/data/imagenet:val") == "imagenet"
    assert dataset_of_uri("fashion_mnist:test") == "fashion_mnist"
    [(override, e)] = entries_of(knn_callback_json(84.1, 85.0, 20, None), Path("k.json"))
    assert override is None and e.kind == "knn" and e.values == {"k20_top1": 84.1, "k10_top1": 83.1, "best_top1": 85.0,
                                            "best_k": 20.0}  # fmt: skip
    assert entries_of({"hello": 1}, Path("x.json")) == []


def test_report_tables_links_gaps_and_plots(runs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    dirs = [str(p) for p in sorted(runs.iterdir())]
    assert main(["report", "--runs", *dirs, "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    # the latest of two k-NN evaluations (global_step 50), linked to its JSON
    assert "[85.00](../runs/kml_mixup_seed0/lightning_logs/version_1/knn_results.json)" in md
    assert "81.50" not in md
    # family mean ± sd over the two seeds: (85.0 + 83.0) / 2, sd sqrt(2)
    assert f"| S. KML Mixup | 84.00 ± {math.sqrt(2):.2f} (n=2: [s0](" in md
    # gaps, never zeros: seed 1 has no NIGHTS / linear / privacy; the MedMNIST row has 9 gaps
    nights = md.split("## NIGHTS")[1].split("\n## ")[0]
    assert "kml_mixup_seed1" not in nights and "| 0.8100" not in nights
    med = md.split("## MedMNIST")[1].split("\n## ")[0]
    row = next(line for line in med.splitlines() if line.startswith("| kml_mixup_seed0"))
    assert row.count("| –") == 9 and "[90.50](../runs/kml_mixup_seed0/medmnist/path.json)" in row
    assert "| Best from the MedMNIST paper | 91.1 | 76.8 |" in med
    assert "[0.00](" not in md and "[0.0](" not in md
    # k-NN vs linear (Table 6), R² with the random-init row from the segment JSON, Gestalt
    assert "[88.25](../runs/kml_mixup_seed0/linear.json)" in md
    r2 = md.split("## Zero-shot")[1].split("\n## ")[0]
    assert "[40.50](../runs/shaders_seed0/segment.json)" in r2 and "| random init |" in r2
    gestalt = md.split("## Gestalt")[1].split("\n## ")[0]
    assert "[60.5](../runs/shaders_seed0/gestalt.json)" in gestalt and "| –" in gestalt
    # NIGHTS z-test between the two models that have it
    t = two_proportion_z_test(0.81, 1720, 0.83, 1720)
    assert f"| kml_mixup_seed0 | shaders_seed0 | {t.z:.2f} | {t.p_value:.3g} | no |" in nights
    # privacy: the callback's percent and the command's fraction, both as percent
    priv = md.split("## Privacy")[1].split("\n## ")[0]
    assert "[0.55](../runs/kml_mixup_seed0/privacy_results.json)" in priv
    assert "[0.4](../runs/random/audit.json)" in priv
    # Fig. 14 has two sizes (5M, 21M); sources carry the fingerprints
    assert "| kml_mixup_seed0 | S. KML Mixup | 5,000,000 |" in md
    sources = md.split("## Sources")[1]
    assert "file-sha256:" in sources  # KNNCallback JSON: sha256 of the ckpt_path it names
    assert "fp-shaders-0" in sources and "notes.json" in sources and "broken.json" in sources
    # k-NN segmentation in percent; the hidden marker is neither read nor listed as ignored
    seg = md.split("## k-NN segmentation")[1].split("\n## ")[0]
    assert (
        "| shaders_seed0 | shaders | 0 | [12.50](../runs/shaders_seed0/knn_seg.json) | [25.00]("
        in seg
    )
    assert "99.50" not in md and "99.25" not in md and ".done" not in md
    # `procvision segment knn --json` as it is written, with its random-init block
    assert "| random | random | – | [20.00](../runs/random/segment_knn.json) | [30.00](" in seg
    assert (
        "| random init | random init | – | [5.00](../runs/random/segment_knn.json) | – | – |" in seg
    )
    for png in ("knn.png", "knn_vs_linear.png", "r2.png", "gestalt.png", "nights.png", "privacy.png",
                "model_size.png"):  # fmt: skip
        assert (out / png).read_bytes()[:8] == PNG and f"![{png}]({png})" in md
    summary = json.loads((out / "report.json").read_text())
    # paths are relative to the report's folder, so a committed report still resolves them
    sources = [e["source"] for r in summary["runs"] for e in r["results"]]
    assert sources and all(not Path(x).is_absolute() and (out / x).is_file() for x in sources)
    assert all((out / r["root"]).is_dir() for r in summary["runs"])
    assert [r["name"] for r in summary["runs"]][:2] == ["kml_mixup_seed0", "kml_mixup_seed1"]
    assert {r["name"] for r in summary["runs"]} >= {"random init", "shaders_seed0", "random"}


def test_report_with_one_model_size_has_a_gap(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main(["report", "--runs", str(runs / "kml_mixup_seed1"), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "needs k-NN results of runs of at least two model sizes" in md
    assert "no NIGHTS results found" in md and not (out / "nights.png").exists()
    assert not (out / "model_size.png").exists() and (out / "knn.png").exists()


def test_report_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["report", "--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", "--runs", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no evaluation JSON found" in err and err.count("\n") == 1


def test_load_runs_family_and_seed(runs: Path) -> None:
    got = {r.name: r for r in load_runs(sorted(runs.iterdir()))}
    assert (
        got["kml_mixup_seed0"].family == "S. KML Mixup"
        and got["kml_mixup_seed1"].family == "kml_mixup"
    )
    assert got["kml_mixup_seed1"].seed == 1 and got["random"].seed is None
    assert got["shaders_seed0"].params == 21_000_000


def test_report_reads_what_the_commands_write(tmp_path: Path, capsys) -> None:
    """The JSONs of `procvision linear`, `procvision medmnist` and `evaluate_nights`, end to end."""
    from procvision.eval.nights import evaluate_nights
    from tests.eval.test_nights import MeanColour
    from tests.fixtures_real import make_idx_root, make_medmnist_npz
    from tests.nights_fixture import EXPECTED_VAL, make_nights

    fm = make_idx_root(tmp_path / "fm", n_train=30, n_test=10)
    make_medmnist_npz(tmp_path / "med" / "bloodmnist.npz")
    run = tmp_path / "runs" / "pixels_seed0"
    assert main(["linear", "--train", f"fashion_mnist:{fm}:train", "--test", f"fashion_mnist:{fm}:test",
                 "--lrs", "[1.0]", "--epochs", "2", "--json", str(run / "linear.json")]) == 0  # fmt: skip
    assert main(["medmnist", "--root", str(tmp_path / "med"), "--backbone", "pixels",
                 "--out", str(run / "medmnist")]) == 0  # fmt: skip
    evaluate_nights(MeanColour(), make_nights(tmp_path / "nights"), image_size=8, progress=False,
                    json_path=run / "nights.json")  # fmt: skip
    out = tmp_path / "report"
    assert main(["report", "--runs", str(run), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    lin = json.loads((run / "linear.json").read_text())
    assert f"[{lin['results']['top1']:.2f}](../runs/pixels_seed0/linear.json)" in md
    blood = json.loads((run / "medmnist" / "blood.json").read_text())
    assert (
        f"[{blood['results']['weighted/best/top1']:.2f}](../runs/pixels_seed0/medmnist/blood.json)"
        in md
    )
    assert f"[{EXPECTED_VAL:.4f}](../runs/pixels_seed0/nights.json)" in md
    assert "Not evaluation results" not in md  # every file was understood


def test_check_claim_by_hand() -> None:
    from procvision.eval.paper_report import check_claim

    # means 80 and 78, sds sqrt(2) and sqrt(2) -> spread 2: a 2-point lead is inside the spread
    c = check_claim([79.0, 81.0], ">", [77.0, 79.0], ("A", "B"))
    assert c.diff == pytest.approx(2.0) and c.spread == pytest.approx(2.0)
    assert c.verdict == "inside the seed spread"
    assert check_claim([84.0, 86.0], ">", [77.0, 79.0], ("A", "B")).verdict == "held"
    assert check_claim([70.0, 72.0], ">", [77.0, 79.0], ("A", "B")).verdict == "did not hold"
    assert check_claim([79.0, 81.0], "≈", [77.0, 79.0], ("A", "B")).verdict == "held"
    assert check_claim([85.0], ">", [80.0], ("A", "B")).verdict == "held (1 seed: spread unknown)"
    # a seedless (exact) baseline such as raw pixels adds no spread: sqrt(sqrt(2)² + 0²)
    c = check_claim([79.0, 81.0], ">", [86.0], ("A", "raw"), exact=(False, True))
    assert c.spread == pytest.approx(math.sqrt(2)) and c.verdict == "did not hold"
    assert check_claim([79.0, 81.0], ">", [80.5], ("A", "raw"), exact=(False, True)).verdict == (
        "inside the seed spread"
    )
    assert (
        check_claim([85.0], "≈", [80.0], ("A", "B")).verdict
        == "not judged (1 seed: spread unknown)"
    )


def test_report_checks_the_papers_ordering(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    best = {"kml_mixup": (85.0, 86.0), "kml": (84.0, 85.0), "shaders_mixup": (84.5, 84.5),
            "shaders": (80.0, 81.0), "stylegan": (82.0, 83.0), "random_init": (70.0, 71.0)}  # fmt: skip
    for family, values in best.items():
        for seed, v in enumerate(values):
            write(
                root / f"{family}_seed{seed}" / "knn_results.json",
                knn_callback_json(v - 1, v, 20, None),
            )
    out = tmp_path / "report"
    assert main(["report", "--runs", *map(str, sorted(root.iterdir())), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    rows = {line.split(" | ")[1]: line for line in md.split("## The paper's ordering")[1].splitlines()
            if line.startswith("| fashion_mnist")}  # fmt: skip
    assert "inside the seed spread" in rows["kml_mixup >= kml"]  # 1.0 apart, spread 1.0
    assert rows["kml ≈ shaders_mixup"].endswith("| held |")  # 0.0 apart
    assert "| held |" in rows["shaders_mixup > shaders"]  # 4.0 apart
    assert "did not hold" in rows["shaders > stylegan"]  # StyleGAN is 2 points better here
    assert "| held |" in rows["stylegan > random_init"]
    summary = json.loads((out / "report.json").read_text())
    assert len(summary["ordering"]["fashion_mnist"]) == 4 + 5


def test_ztest_between_two_nights_jsons(runs: Path, capsys) -> None:
    a, b = runs / "kml_mixup_seed0" / "nights_results.json", runs / "shaders_seed0" / "nights.json"
    assert main(["report", "--ztest", str(a), str(b)]) == 0
    t = two_proportion_z_test(0.81, 1720, 0.83, 1720)
    out = capsys.readouterr().out
    assert f"z = {t.z:.3f}" in out and "not significantly different at the 5% level" in out
    assert main(["report", "--ztest", str(a)]) == 2
    assert "two NIGHTS JSON files" in capsys.readouterr().err
    assert main(["report"]) == 2
    assert "give --runs" in capsys.readouterr().err


def test_report_shows_the_fingerprint_the_callbacks_record(tmp_path: Path) -> None:
    """KNNCallback / PrivacyCallback JSONs of a (resumed) fit record the teacher's fingerprint,
    so the report's Sources table shows it, not `file-sha256:` of the checkpoint they name."""
    import lightning.pytorch as pl

    from procvision.eval.callbacks import KNNCallback, PrivacyCallback
    from procvision.models.module import DINOModule
    from tests.eval.test_callbacks import TINY, TwoCrops, _sets
    from tests.fixtures_real import make_idx_root

    fm = make_idx_root(tmp_path / "fm", n_train=20, n_test=8)
    run = tmp_path / "runs" / "shaders_seed0"
    kw = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, accelerator="cpu")  # fmt: skip
    model = DINOModule(**TINY)
    first = pl.Trainer(max_epochs=1, **kw)
    first.fit(model, datamodule=TwoCrops())
    ckpt = run / "checkpoints" / "last.ckpt"
    first.save_checkpoint(ckpt)
    callbacks = [KNNCallback(ks=[1, 5], results_path=str(run / "knn_results.json"), **_sets(fm)),
                 PrivacyCallback(k=5, results_path=str(run / "privacy_results.json"), **_sets(fm))]  # fmt: skip
    model = DINOModule(**TINY)
    pl.Trainer(max_epochs=2, callbacks=callbacks, **kw).fit(
        model, datamodule=TwoCrops(), ckpt_path=str(ckpt)
    )
    fp = model.teacher_backbone.fingerprint()
    knn = json.loads((run / "knn_results.json").read_text())
    priv = json.loads((run / "privacy_results.json").read_text())
    for rec, kind in ((knn, "knn"), (priv, "privacy")):
        assert rec["kind"] == kind and rec["ckpt_path"] == str(ckpt)
        assert rec["model"]["fingerprint"] == fp and rec["model"]["backbone"] is None
        assert rec["model"]["params"] == sum(p.numel() for p in model.teacher_backbone.parameters())
        assert rec["query_uri"] == f"fashion_mnist:{fm}:test"
    out = tmp_path / "report"
    assert main(["report", "--runs", str(run), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    sources = md[md.index("## Sources") :]
    assert fp[:24] in sources and "file-sha256" not in sources
    assert "Not evaluation results" not in md  # the privacy record is read too
    report = json.loads((out / "report.json").read_text())
    [r] = [r for r in report["runs"] if r["name"] == "shaders_seed0"]
    got = {(e["kind"], e["dataset"]): e["fingerprint"] for e in r["results"]}
    assert got == {("knn", "fashion_mnist"): fp, ("privacy", "fashion_mnist"): fp}
