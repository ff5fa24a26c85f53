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
    assert "cannot write to output folder" in err and str(bad) in err and "is a file" in err


def test_resume_accepts_a_manifest_that_knew_less(tmp_path):
    # e.g. a shader pool's rejection rate appears in describe() once the filter has run
    out = tmp_path / "ds"
    assert _export(out, 2) == 0
    m = json.loads((out / "manifest.json").read_text())
    del m["source"]["base"]["n_shapes"]
    (out / "manifest.json").write_text(json.dumps(m))
    assert _export(out, 3) == 0
    assert len(list((out / "train" / "0").iterdir())) == 3


def _no_rendering(monkeypatch):
    """Make any rendering fail loudly: the output checks must come first."""
    import procvision.data.export as export_mod
    from procvision.data.source import Source

    def boom(*a, **k):
        raise AssertionError("rendered before checking --out")

    monkeypatch.setattr(Source, "render", boom)
    monkeypatch.setattr(export_mod, "preview_grid", boom)


def _preview(out):
    return main(["generate", "preview", *FAST, "--n", "2", "--size", "8", "--out", str(out)])


def test_preview_never_replaces_a_special_file_and_checks_before_rendering(
    tmp_path, capsys, monkeypatch
):
    import os
    import stat

    _no_rendering(monkeypatch)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # a special file like /dev/full, safe to use in a test
    assert _preview(fifo) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(fifo) in err and "not a regular file" in err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still the FIFO


def test_preview_out_that_names_a_folder_is_refused(tmp_path, capsys, monkeypatch):
    _no_rendering(monkeypatch)
    folder, afile = tmp_path / "dir", tmp_path / "afile"
    folder.mkdir()
    afile.write_text("keep me")
    monkeypatch.chdir(tmp_path)
    cases = {
        ".": "names a folder",
        str(folder): "is a directory",
        f"{afile}/": "names a folder",  # a trailing slash: a folder was meant, not the file
        str(afile / "grid.png"): "is a file",
        str(afile / "sub" / "grid.png"): "is a file",
    }
    for out, expected in cases.items():
        assert _preview(out) == 2, out
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, (out, err)
        assert "Traceback" not in err
    assert afile.read_text() == "keep me" and list(folder.iterdir()) == []


def test_export_out_that_is_not_a_folder_is_refused(tmp_path, capsys, monkeypatch):
    _no_rendering(monkeypatch)
    afile, full = tmp_path / "afile", tmp_path / "full"
    afile.write_text("keep me")
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    cases = {
        str(afile): "is a file",
        str(afile / "sub"): "is a file",
        str(full): "not empty and holds no export",
    }
    for out, expected in cases.items():
        assert _export(out, 2) == 2, out
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err
    assert afile.read_text() == "keep me" and [p.name for p in full.iterdir()] == ["notes.txt"]


def test_export_into_an_empty_existing_folder_works(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert _export(out, 2) == 0
    assert len(list((out / "train" / "0").iterdir())) == 2


def test_glsl_folder_where_no_shader_compiles_is_one_line(tmp_path, capsys):
    import shutil
    from pathlib import Path

    import pytest

    pytest.importorskip("moderngl")
    shaders = tmp_path / "shaders"
    shaders.mkdir()
    shutil.copy(Path(__file__).parent / "data" / "glsl" / "broken.frag", shaders)
    args = ["generate", "preview", "--family", "glsl", "--root", str(shaders), "--n", "2"]
    rc = main([*args, "--size", "8", "--out", str(tmp_path / "g.png")])
    err = capsys.readouterr().err.strip()
    if "headless OpenGL" in err:
        pytest.skip(err)  # no EGL on this machine
    assert rc == 2 and len(err.splitlines()) == 1
    assert "no shader in" in err and str(shaders) in err and "broken.frag" in err
    assert not (tmp_path / "g.png").exists()


def test_missing_source_folder_is_one_line(tmp_path, capsys):
    args = ["generate", "preview", "--family", "folder", "--root", str(tmp_path / "nowhere")]
    assert main([*args, "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere" in err
