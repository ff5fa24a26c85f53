"""`procvision medmnist`: all sets of a folder of official .npz files, JSON per set, gaps, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from procvision.cli import main
from procvision.commands.medmnist import medmnist_file
from procvision.data.datasets import EvalTransform, MedMNIST
from procvision.eval.embed import pixel_embeddings
from procvision.eval.knn import knn_evaluate
from tests.fixtures_real import TINY_BACKBONE, make_medmnist_npz


def test_medmnist_file_choice(tmp_path: Path) -> None:
    make_medmnist_npz(tmp_path / "pathmnist.npz")
    assert medmnist_file(tmp_path, "path") == tmp_path / "pathmnist.npz"
    make_medmnist_npz(tmp_path / "pathmnist_224.npz", rgb=True, size=32)
    assert medmnist_file(tmp_path, "path") == tmp_path / "pathmnist_224.npz"
    assert medmnist_file(tmp_path, "path", "28") == tmp_path / "pathmnist.npz"
    assert medmnist_file(tmp_path, "derma") is None


def test_medmnist_all_sets_with_gaps(tmp_path: Path, capsys) -> None:
    root = tmp_path / "med"
    make_medmnist_npz(root / "pathmnist_224.npz", rgb=True, size=32)  # "224" file (small here)
    make_medmnist_npz(root / "bloodmnist.npz")  # 28-px grey, compressed arrays too
    make_medmnist_npz(root / "octmnist.npz", compressed=True)
    out = tmp_path / "out"
    rc = main(["medmnist", "--root", str(root), "--backbone", "pixels", "--out", str(out),
               "--ks", "[1, 3, 20]"])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "derma: no dermamnist file" in text
    table = (out / "medmnist_table.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert list(rows) == ["path", "derma", "oct", "pneumonia", "breast", "blood", "tissue",
                          "organa", "organc", "organs"]  # fmt: skip
    assert "| derma | missing | – | – | – | – | – | 76.8 | 81.36 |" in rows["derma"]
    assert " 91.1 | 98.60 |" in rows["path"] and "pathmnist_224.npz" in rows["path"]
    assert sorted(p.name for p in out.glob("*.json")) == ["blood.json", "oct.json", "path.json"]
    rec = json.loads((out / "path.json").read_text())
    assert rec["kind"] == "knn" and rec["dataset"] == "medmnist/path"
    assert rec["memory"]["size"] == 12 and rec["queries"]["size"] == 6 and rec["ks"] == [1, 3, 20]
    assert rec["query_uri"].endswith("pathmnist_224.npz:test")
    # reference: raw-pixel k-NN of train -> test computed directly
    tf = EvalTransform(224, "resize")
    path = root / "pathmnist_224.npz"
    ref = knn_evaluate(*pixel_embeddings(MedMNIST(path, "train", tf), progress=False),
                       *pixel_embeddings(MedMNIST(path, "test", tf), progress=False), ks=(1, 3, 20))  # fmt: skip
    for key in ("weighted/k1/top1", "weighted/k20/top1", "weighted/best/top1", "weighted/best/k"):
        assert rec["results"][key] == pytest.approx(ref[key])


def test_medmnist_with_a_backbone(tmp_path: Path) -> None:
    root = tmp_path / "med"
    make_medmnist_npz(root / "breastmnist.npz")
    out = tmp_path / "out"
    rc = main(["medmnist", "--root", str(root), "--backbone", "random:" + json.dumps(TINY_BACKBONE),
               "--sets", "[breast]", "--out", str(out), "--ks", "[1, 20]"])  # fmt: skip
    assert rc == 0
    rec = json.loads((out / "breast.json").read_text())
    assert rec["transform"]["size"] == 16 and len(rec["model"]["fingerprint"]) == 64


def test_medmnist_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["medmnist", "--root", str(tmp_path / "none"), "--backbone", "pixels"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["medmnist", "--root", str(tmp_path), "--backbone", "pixels"]) == 2
    assert "none of the files found" in capsys.readouterr().err
    assert (
        main(["medmnist", "--root", str(tmp_path), "--backbone", "pixels", "--sets", "[chest]"])
        == 2
    )
    err = capsys.readouterr().err
    assert "unknown set" in err and err.count("\n") == 1


def test_pixel_baseline_refuses_224_px_files(tmp_path: Path, capsys) -> None:
    make_medmnist_npz(tmp_path / "tissuemnist_224.npz", size=160)
    assert (
        main(["medmnist", "--root", str(tmp_path), "--backbone", "pixels", "--sets", "[tissue]"])
        == 2
    )
    assert "use the 28-px files for the pixel baseline" in capsys.readouterr().err


def test_medmnist_from_a_config_listing_the_sets(tmp_path: Path) -> None:
    root = tmp_path / "med"
    for name in ("blood", "derma"):
        make_medmnist_npz(root / f"{name}mnist.npz")
    config = tmp_path / "medmnist.yaml"
    config.write_text(f"root: {root}\nbackbone: pixels\nsets: [derma, blood]\nks: [1, 5]\n"
                      f"out: {tmp_path / 'out'}\n")  # fmt: skip
    assert main(["medmnist", "--config", str(config)]) == 0
    table = (tmp_path / "out" / "medmnist_table.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in table[2:]] == ["| derma", "| blood"]


def test_medmnist_second_run_with_a_cache_dir_embeds_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_cli_linear import count_forwards

    root = tmp_path / "med"
    make_medmnist_npz(root / "breastmnist.npz")
    make_medmnist_npz(root / "bloodmnist.npz", rgb=True)
    forwards = count_forwards(monkeypatch)
    args = ["medmnist", "--root", str(root), "--backbone", "random:" + json.dumps(TINY_BACKBONE),
            "--sets", "[breast, blood]", "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a"), "--ks", "[1, 20]"]) == 0
    first = {s: json.loads((tmp_path / "a" / f"{s}.json").read_text()) for s in ("breast", "blood")}
    n = sum(r["memory"]["size"] + r["queries"]["size"] for r in first.values())
    assert sum(forwards) == n
    assert first["blood"]["features"]["sources"] == {"blood/train": "embedded",
                                                     "blood/test": "embedded"}  # fmt: skip
    forwards.clear()
    assert main([*args, "--out", str(tmp_path / "b"), "--ks", "[1, 3, 20]"]) == 0
    assert forwards == []  # another k grid, the same backbone: no embedding
    second = {
        s: json.loads((tmp_path / "b" / f"{s}.json").read_text()) for s in ("breast", "blood")
    }
    for s in first:
        assert second[s]["features"]["sources"] == {f"{s}/train": "disk", f"{s}/test": "disk"}
        for key in ("weighted/k1/top1", "weighted/k20/top1"):
            assert second[s]["results"][key] == first[s]["results"][key]
    [folder] = (tmp_path / "cache").iterdir()
    assert folder.name == first["breast"]["model"]["fingerprint"]
    assert len(list(folder.glob("*.json"))) == 4  # two sets x (memory, queries)


def test_medmnist_precision_is_a_setting_recorded_in_each_json(tmp_path: Path) -> None:
    root = tmp_path / "med"
    make_medmnist_npz(root / "breastmnist.npz")
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        rc = main(["medmnist", "--root", str(root), "--backbone", "random:" + json.dumps(TINY_BACKBONE),
                   "--sets", "[breast]", "--out", str(out), "--ks", "[1]", "--precision", precision,
                   "--feature", "cls_prenorm"])  # fmt: skip
        assert rc == 0
        rec = json.loads((out / "breast.json").read_text())
        assert rec["model"]["precision"] == precision and rec["model"]["feature"] == "cls_prenorm"
