"""`procvision generate preview|export` through the real command-line entry point."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

import procvision
from procvision.cli import main
from procvision.data.export import image_path
from procvision.data.registry import FAMILIES

FAST = ["--family", "shaders_mixup", "--options", '{"base": "dead_leaves", "n": 2, "n_shapes": 40}']


def test_preview_writes_a_png_grid(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["generate", "preview", *FAST, "--n", "4", "--size", "16", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        assert im.size == (2 + 2 * 18, 2 + 2 * 18)  # 2x2 tiles of 16 px, 2 px padding
    assert str(out) in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temporary left


def _export(out, n, seed=0):
    args = ["generate", "export", *FAST, "--n", str(n), "--size", "16", "--seed", str(seed)]
    return main([*args, "--batch-size", "3", "--out", str(out), "--progress", "false"])


def test_export_is_resumable_and_equals_a_fresh_export(tmp_path):
    out = tmp_path / "ds"
    assert _export(out, 5) == 0
    files = sorted((out / "train" / "0").iterdir())
    assert [f.name for f in files] == [f"{i:09d}.jpg" for i in range(5)]
    m = json.loads((out / "manifest.json").read_text())
    assert (m["family"], m["seed"], m["count"], m["size"]) == ("shaders_mixup", 0, 5, 16)
    assert m["version"] == procvision.__version__ and m["complete"] is True
    assert m["source"]["base"]["family"] == "dead_leaves"
    with Image.open(files[0]) as im:
        assert im.format == "JPEG" and im.size == (16, 16)
    before = {f.name: f.stat().st_mtime_ns for f in files}

    assert _export(out, 8) == 0  # resume with a larger count
    after = {f.name: f.stat().st_mtime_ns for f in (out / "train" / "0").iterdir()}
    assert len(after) == 8
    assert all(after[k] == v for k, v in before.items())  # existing files untouched
    assert json.loads((out / "manifest.json").read_text())["count"] == 8

    fresh = tmp_path / "fresh"
    assert _export(fresh, 8) == 0
    for i in range(8):
        assert image_path(out, i).read_bytes() == image_path(fresh, i).read_bytes()
    first = np.asarray(Image.open(image_path(out, 0)))
    assert first.std() > 1  # not blank


def test_resume_with_another_seed_is_refused(tmp_path, capsys):
    out = tmp_path / "ds"
    assert _export(out, 2) == 0
    assert _export(out, 2, seed=1) == 2
    err = capsys.readouterr().err
    assert "different seed" in err and str(out) in err


def test_unknown_family_lists_valid_ones(tmp_path, capsys):
    rc = main(["generate", "preview", "--family", "bogus", "--out", str(tmp_path / "g.png")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "bogus" in err and all(f in err for f in FAMILIES)
    assert "Traceback" not in err


def test_unwritable_output_folder_is_named(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    bad = blocker / "out"  # a folder cannot live inside a file, even for root
    assert _export(bad, 2) == 2
    err = capsys.readouterr().err
    assert "cannot write to output folder" in err and str(bad) in err


def test_resume_accepts_a_manifest_that_knew_less(tmp_path):
    # e.g. a shader pool's rejection rate appears in describe() once the filter has run
    out = tmp_path / "ds"
    assert _export(out, 2) == 0
    m = json.loads((out / "manifest.json").read_text())
    del m["source"]["base"]["n_shapes"]
    (out / "manifest.json").write_text(json.dumps(m))
    assert _export(out, 3) == 0
    assert len(list((out / "train" / "0").iterdir())) == 3
