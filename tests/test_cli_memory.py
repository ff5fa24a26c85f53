"""`procvision memory build|add|remove|forget|info|classify` on a tiny ImageFolder fixture."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from procvision.cli import main
from procvision.data.datasets import EvalTransform, ImageFolder
from procvision.eval.embed import embed_batch, embed_dataset, resolve_precision
from procvision.memory import VisualMemory, read_audit
from procvision.models import export_backbone, load_backbone, random_backbone
from tests.fixtures_real import TINY_BACKBONE as TINY
from tests.fixtures_real import coloured_image, make_image_folder

RANDOM_SPEC = "random:" + json.dumps(TINY)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli_memory")
    fold = make_image_folder(root / "fold", corrupt=True)
    extra = root / "extra"
    make_image_folder(extra, per_class=2, odd_modes=False)
    for name in ("green", "red"):
        for p in (extra / name).iterdir():
            p.unlink()
        (extra / name).rmdir()
    (extra / "yellow").mkdir()
    from PIL import Image

    for i in range(2):
        Image.fromarray(coloured_image((230, 220, 20), 500 + i)).save(extra / "yellow" / f"{i}.png")
    export = root / "export"
    export_backbone(random_backbone(seed=3, **TINY), export)
    return {"root": root, "fold": fold, "extra": extra, "export": export}


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    rc = main(["memory", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_build_fails_on_corrupt_image_naming_it(world, capsys, tmp_path: Path) -> None:
    rc, _, err = run(capsys, "build", "--backbone", str(world["export"]), "--dataset", f"imagefolder:{world['fold']}",
                     "--out", str(tmp_path / "m"))  # fmt: skip
    assert rc == 2 and "zz_corrupt.jpg" in err and "--skip-corrupt" in err


def test_build_info_add_classify_remove_forget(world, capsys, tmp_path: Path) -> None:
    mem_dir = tmp_path / "mem"
    rc, out, _ = run(capsys, "build", "--backbone", str(world["export"]), "--dataset", f"imagefolder:{world['fold']}",
                     "--out", str(mem_dir), "--skip-corrupt", "--batch-size", "5")  # fmt: skip
    assert rc == 0 and "skipped 1 corrupt image(s)" in out and "zz_corrupt.jpg" in out
    backbone = load_backbone(world["export"])
    mem = VisualMemory.load(mem_dir, expect_fingerprint=backbone.fingerprint())
    ds = ImageFolder(world["fold"], transform=EvalTransform(16, "crop"))
    kept = [i for i, p in enumerate(ds.paths) if not p.endswith("zz_corrupt.jpg")]
    assert len(mem) == len(kept) == 16 and mem.class_names == ["blue", "green", "red"]
    meta = mem.metadata_of(mem.ids)
    assert [m["source"] for m in meta] == [ds.paths[i] for i in kept]
    assert meta[3]["sha256"] == hashlib.sha256(Path(ds.paths[kept[3]]).read_bytes()).hexdigest()
    assert (
        meta[0]["backbone"] == str(world["export"].absolute())
        and meta[0]["transform"] == "crop:16:0.875:bicubic:imagenet"
    )
    # the stored rows are the backbone's normalised CLS of the same images
    # (in the precision `--precision auto` resolved to, which the recipe records)
    precision = mem.recipe["features"]["precision"]
    assert precision == resolve_precision("auto", "cpu")
    ref, ref_labels = embed_dataset(
        backbone, torch.utils.data.Subset(ds, kept), progress=False, precision=precision
    )
    np.testing.assert_allclose(mem.embeddings, ref.numpy(), atol=1e-6)
    assert mem.labels.tolist() == ref_labels.tolist()

    rc, out, _ = run(capsys, "info", "--memory", str(mem_dir))
    assert (
        rc == 0
        and "count          16" in out
        and backbone.fingerprint() in out
        and "green (7)" in out
    )

    rc, out, _ = run(
        capsys, "add", "--memory", str(mem_dir), "--dataset", f"imagefolder:{world['extra']}"
    )
    assert rc == 0 and "added 4 items (ids 16..19)" in out and "new classes: yellow" in out
    mem = VisualMemory.load(mem_dir)
    assert mem.class_names == ["blue", "green", "red", "yellow"]
    assert mem.labels_of([16, 17, 18, 19]).tolist() == [
        0,
        0,
        3,
        3,
    ]  # extra's blue is the memory's blue

    query = world["fold"] / "green" / "palette.png"
    rc, out, _ = run(capsys, "classify", "--memory", str(mem_dir), str(query), "--k", "5", "--json")
    [res] = json.loads(out)
    assert rc == 0 and res["prediction"] == "green"
    nbs = res["neighbours"]
    assert [n["rank"] for n in nbs] == [1, 2, 3, 4, 5]
    assert all(a["similarity"] >= b["similarity"] for a, b in zip(nbs[:-1], nbs[1:], strict=True))
    assert nbs[0]["source"] == str(query.absolute()) and nbs[0]["similarity"] == pytest.approx(
        1.0, abs=1e-5
    )
    assert sum(n["weight"] for n in nbs) == pytest.approx(1.0)
    rc, out, _ = run(capsys, "classify", "--memory", str(mem_dir), str(query), "--k", "3")
    assert rc == 0 and "green (" in out and str(query.absolute()) in out and "similarity" in out

    rc, out, _ = run(capsys, "remove", "--memory", str(mem_dir), "--ids", "0", "1", "999")
    assert rc == 0 and "removed 2 item(s)" in out and "not in the memory: [999]" in out
    assert 0 not in VisualMemory.load(mem_dir).ids

    rc, out, _ = run(
        capsys, "forget", "--memory", str(mem_dir), "--source", "*/red/*", "--reason", "test"
    )
    assert rc == 0 and "forgot 4 item(s)" in out
    mem = VisualMemory.load(mem_dir)
    assert not any("/red/" in m["source"] for m in mem.metadata_of(mem.ids))
    assert "/red/" not in (mem_dir / "metadata.jsonl").read_text()
    removal, record = read_audit(mem_dir)  # `remove` is audited too
    assert removal["action"] == "remove" and removal["removed_ids"] == [0, 1]
    assert record["count"] == 4 and record["reason"] == "test" and record["prev"] == removal["hash"]


def test_random_backbone_recorded_and_fingerprint_checked(world, capsys, tmp_path: Path) -> None:
    mem_dir = tmp_path / "mem"
    rc, _, _ = run(capsys, "build", "--backbone", "random:vit_tiny_patch16_224", "--image-size", "16", "--patch-size", "8",
                   "--backbone-kwargs", '{"depth": 1, "embed_dim": 32, "num_heads": 2}',
                   "--dataset", f"imagefolder:{world['extra']}", "--out", str(mem_dir))  # fmt: skip
    assert rc == 0
    mem = VisualMemory.load(mem_dir)
    assert mem.fingerprint == random_backbone(seed=0, **TINY).fingerprint()
    query = str(world["extra"] / "yellow" / "0.png")
    rc, out, _ = run(
        capsys, "classify", "--memory", str(mem_dir), query, "--k", "1"
    )  # recorded backbone
    assert rc == 0 and "yellow" in out
    rc, _, err = run(
        capsys, "classify", "--memory", str(mem_dir), query, "--backbone", str(world["export"])
    )
    assert rc == 2 and "fingerprint" in err and "build a new memory" in err
    rc, _, err = run(capsys, "build", "--backbone", str(world["export"]), "--dataset", f"imagefolder:{world['extra']}",
                     "--out", str(mem_dir))  # fmt: skip
    assert rc == 2 and "--overwrite" in err


def test_user_errors_are_one_line(world, capsys, tmp_path: Path) -> None:
    rc, _, err = run(capsys, "build", "--backbone", str(world["export"]), "--dataset", f"imagefolder:{tmp_path / 'none'}",
                     "--out", str(tmp_path / "m"))  # fmt: skip
    assert rc == 2 and "none" in err and "ImageFolder" in err
    rc, _, err = run(
        capsys,
        "build",
        "--backbone",
        str(tmp_path / "nope"),
        "--dataset",
        "fashion_mnist",
        "--out",
        str(tmp_path / "m"),
    )
    assert rc == 2 and "nope" in err and "random:ARCH" in err
    rc, _, err = run(capsys, "info", "--memory", str(tmp_path / "no_memory"))
    assert rc == 2 and "no_memory" in err
    rc, _, err = run(capsys, "forget", "--memory", str(tmp_path / "no_memory"))
    assert rc == 2 and "--ids" in err


def test_classify_memory_without_recipe_needs_backbone(world, capsys, tmp_path: Path) -> None:
    backbone = load_backbone(world["export"])
    ds = ImageFolder(world["extra"], transform=EvalTransform(16, "resize"))
    emb, labels = embed_dataset(backbone, ds, progress=False)
    mem = VisualMemory(emb.shape[1], fingerprint=backbone.fingerprint(), class_names=ds.class_names)
    mem.add(emb, labels, metadata=[{"source": p} for p in ds.paths])
    mem.save(tmp_path / "lib_mem")
    query = str(world["extra"] / "yellow" / "1.png")
    rc, _, err = run(capsys, "classify", "--memory", str(tmp_path / "lib_mem"), query)
    assert rc == 2 and "pass --backbone" in err
    rc, out, _ = run(capsys, "classify", "--memory", str(tmp_path / "lib_mem"), query, "--backbone", str(world["export"]),
                     "--resize-policy", "resize", "--json")  # fmt: skip
    [res] = json.loads(out)
    assert (
        rc == 0
        and res["prediction"] == "yellow"
        and res["neighbours"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    )


# ---------------------------------------------------------------- issue 11: a database you can trust
def _small(world, capsys, path: Path, *extra: str) -> Path:
    rc, _, err = run(capsys, "build", "--backbone", str(world["export"]), "--dataset",
                     f"imagefolder:{world['extra']}", "--out", str(path), *extra)  # fmt: skip
    assert rc == 0, err
    return path


def test_recipe_recorded_and_a_different_one_refused(world, capsys, tmp_path: Path) -> None:
    mem_dir = _small(world, capsys, tmp_path / "mem", "--k", "3")
    recipe = VisualMemory.load(mem_dir).recipe
    assert recipe["transform"] == {"size": 16, "policy": "crop", "crop_ratio": 0.875,
                                   "interpolation": "bicubic", "normalize": "imagenet"}  # fmt: skip
    assert recipe["vote"] == {"k": 3, "method": "weighted", "T": 0.07}
    assert recipe["backbone"]["fingerprint"] == load_backbone(world["export"]).fingerprint()
    rc, _, err = run(capsys, "add", "--memory", str(mem_dir), "--dataset",
                     f"imagefolder:{world['extra']}", "--image-size", "32")  # fmt: skip
    assert rc == 2 and "transform.size: 16 -> 32" in err and "--recipe-override" in err
    assert err.count("\n") == 1
    query = str(world["extra"] / "yellow" / "0.png")
    rc, out, err = run(capsys, "classify", "--memory", str(mem_dir), query, "--json")
    assert rc == 0 and len(json.loads(out)[0]["neighbours"]) == 3  # the recipe's k
    rc, out, err = run(capsys, "classify", "--memory", str(mem_dir), query, "--image-size", "32")
    assert rc == 0 and "warning" in err and "override the memory's recipe" in err
    rc, out, err = run(capsys, "add", "--memory", str(mem_dir), "--dataset",
                       f"imagefolder:{world['extra']}", "--image-size", "32", "--recipe-override")  # fmt: skip
    assert rc == 0 and "re-embedded every item" in out, err
    mem = VisualMemory.load(mem_dir)
    assert mem.recipe["transform"]["size"] == 32 and len(mem) == 8
    assert {m["transform"] for m in mem.metadata_of(mem.ids)} == {"crop:32:0.875:bicubic:imagenet"}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_recipe_precision_is_honoured_by_build_add_and_classify(
    world, capsys, tmp_path: Path, precision: str
) -> None:
    other = {"fp32": "bf16", "bf16": "fp32"}[precision]
    mem_dir = _small(world, capsys, tmp_path / "mem", "--precision", precision)
    mem = VisualMemory.load(mem_dir)
    assert mem.recipe["features"] == {"kind": "cls", "precision": precision}
    backbone = load_backbone(world["export"])
    ds = ImageFolder(world["extra"], transform=EvalTransform(16, "crop"))
    want = embed_dataset(backbone, ds, progress=False, precision=precision)[0].numpy()
    np.testing.assert_allclose(mem.embeddings, want, atol=1e-6)
    unlike = embed_dataset(backbone, ds, progress=False, precision=other)[0].numpy()
    assert np.abs(mem.embeddings - unlike).max() > 1e-4  # the two precisions really differ
    # add embeds the new items in the recipe's precision (no recipe mismatch)
    rc, out, err = run(capsys, "add", "--memory", str(mem_dir), "--dataset",
                       f"imagefolder:{world['extra']}")  # fmt: skip
    assert rc == 0, err
    mem = VisualMemory.load(mem_dir)
    assert len(mem) == 2 * len(ds) and mem.recipe["features"]["precision"] == precision
    np.testing.assert_allclose(mem.embeddings[len(ds) :], want, atol=1e-6)
    # classify embeds the query in it: its similarities are those of the recipe's precision
    query = ds.paths[0]
    rc, out, err = run(capsys, "classify", "--memory", str(mem_dir), query, "--json", "--k", "8")
    assert rc == 0, err
    sims = {nb["id"]: nb["similarity"] for nb in json.loads(out)[0]["neighbours"]}
    with torch.inference_mode():
        x = ds[0][0][None]
        q = embed_batch(backbone, x, "cls", precision).numpy()[0]
        q_other = embed_batch(backbone, x, "cls", other).numpy()[0]
    for i, s in sims.items():
        row = mem.embeddings[int(np.flatnonzero(mem.ids == i)[0])]
        assert s == pytest.approx(float(row @ q), abs=1e-5)
    assert max(abs(s - float(mem.embeddings[int(np.flatnonzero(mem.ids == i)[0])] @ q_other))
               for i, s in sims.items()) > 1e-5  # fmt: skip


def test_build_precision_flag_is_checked(world, capsys, tmp_path: Path) -> None:
    rc, _, err = run(capsys, "build", "--backbone", str(world["export"]), "--dataset",
                     f"imagefolder:{world['extra']}", "--out", str(tmp_path / "m"),
                     "--precision", "fp16")  # fmt: skip
    assert rc == 2 and "--precision" in err and err.count("\n") == 1
    assert not (tmp_path / "m").exists()


def test_recipe_override_refuses_unreadable_sources(world, capsys, tmp_path: Path) -> None:
    import shutil

    src = tmp_path / "src"
    shutil.copytree(world["extra"], src)
    mem_dir = tmp_path / "mem"
    rc, _, _ = run(capsys, "build", "--backbone", str(world["export"]), "--dataset",
                   f"imagefolder:{src}", "--out", str(mem_dir))  # fmt: skip
    assert rc == 0
    (src / "yellow" / "0.png").unlink()
    rc, _, err = run(capsys, "add", "--memory", str(mem_dir), "--dataset",
                     f"imagefolder:{world['extra']}", "--image-size", "32", "--recipe-override")  # fmt: skip
    assert rc == 2 and "cannot be re-embedded" in err and "yellow/0.png" in err


def test_overwrite_only_replaces_a_memory(world, capsys, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(world["extra"], data)
    before = sorted(str(p) for p in data.rglob("*"))
    base = ["build", "--backbone", str(world["export"]), "--dataset", f"imagefolder:{data}"]
    rc, _, err = run(capsys, *base, "--out", str(data), "--overwrite")
    assert rc == 2 and "not a procvision memory" in err
    rc, _, err = run(capsys, *base, "--out", str(data / "mem"), "--overwrite")
    assert rc == 2 and "overlaps the dataset" in err
    assert sorted(str(p) for p in data.rglob("*")) == before
    (tmp_path / "file").write_text("x")
    for out, msg in ((tmp_path / "file", "is a file"), (".", "not a procvision memory"),
                     ("/dev/null", "device"), (tmp_path / "file" / "m", "is a file")):  # fmt: skip
        rc, _, err = run(capsys, *base, "--out", str(out), "--overwrite")
        assert rc == 2 and msg in err and err.count("\n") == 1, (out, err)
    mem_dir = _small(world, capsys, tmp_path / "mem")
    rc, _, err = run(capsys, *base, "--out", str(mem_dir))
    assert rc == 2 and "--overwrite" in err
    rc, _, err = run(capsys, *base, "--out", str(mem_dir), "--overwrite")
    assert rc == 0, err


def test_empty_memory_and_bad_values_are_one_line_errors(world, capsys, tmp_path: Path) -> None:
    mem_dir = _small(world, capsys, tmp_path / "mem")
    query = str(world["extra"] / "yellow" / "0.png")
    for k in ("0", "-1"):
        rc, _, err = run(capsys, "classify", "--memory", str(mem_dir), query, "--k", k)
        assert rc == 2 and "--k: expected a positive" in err
        rc = main(
            [
                "privacy",
                "--memory",
                str(mem_dir),
                "--queries",
                f"imagefolder:{world['extra']}",
                "--k",
                k,
            ]
        )
        err = capsys.readouterr().err
        assert rc == 2 and "--k: expected a positive" in err and err.count("\n") == 1
    rc = main(["privacy", "--memory", str(mem_dir), "--queries", f"imagefolder:{world['extra']}",
               "--csv", str(tmp_path)])  # fmt: skip
    assert rc == 2 and "is a directory" in capsys.readouterr().err
    rc, _, err = run(capsys, "forget", "--memory", str(mem_dir), "--ids", "0", "1", "2", "3")
    assert rc == 0
    rc, _, err = run(capsys, "classify", "--memory", str(mem_dir), query)
    assert rc == 2 and "is empty" in err and "memory add" in err
    rc = main(["privacy", "--memory", str(mem_dir), "--queries", f"imagefolder:{world['extra']}"])
    err = capsys.readouterr().err
    assert rc == 2 and "is empty" in err
    rc, out, _ = run(capsys, "info", "--memory", str(mem_dir))
    assert rc == 0 and "count          0" in out and "next_id        4" in out
    rc, out, _ = run(
        capsys, "add", "--memory", str(mem_dir), "--dataset", f"imagefolder:{world['extra']}"
    )
    assert rc == 0 and "ids 4..7" in out  # the recipe survived emptying; ids are not reused


def test_classify_corrupt_image(world, capsys, tmp_path: Path) -> None:
    mem_dir = _small(world, capsys, tmp_path / "mem")
    bad = str(world["fold"] / "red" / "zz_corrupt.jpg")
    good = str(world["extra"] / "yellow" / "0.png")
    rc, _, err = run(capsys, "classify", "--memory", str(mem_dir), bad, good)
    assert rc == 2 and "zz_corrupt.jpg" in err and "--skip-corrupt" in err
    rc, out, err = run(capsys, "classify", "--memory", str(mem_dir), bad, good, "--skip-corrupt")
    assert rc == 0 and "zz_corrupt.jpg: skipped" in out and "yellow" in out


def test_cli_writer_refused_while_locked(world, capsys, tmp_path: Path) -> None:
    import os
    import threading

    from procvision.memory import writer_lock

    mem_dir = _small(world, capsys, tmp_path / "mem")
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with writer_lock(mem_dir):
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(30)
    try:
        rc, _, err = run(capsys, "forget", "--memory", str(mem_dir), "--ids", "1")
        assert rc == 2 and f"is being written by pid {os.getpid()} since" in err
        assert "retry or pass --wait" in err and err.count("\n") == 1
        rc, out, _ = run(capsys, "info", "--memory", str(mem_dir))  # readers are not blocked
        assert rc == 0 and "count          4" in out
    finally:
        release.set()
        t.join()


def test_cli_race_add_then_forget(world, capsys, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    mem_dir = _small(world, capsys, tmp_path / "mem")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cli = [sys.executable, "-m", "procvision.cli", "memory"]
    add = subprocess.Popen(cli + ["add", "--memory", str(mem_dir), "--dataset", f"imagefolder:{world['extra']}",
                                  "--wait", "120"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    time.sleep(0.3)
    fgt = subprocess.run(cli + ["forget", "--memory", str(mem_dir), "--ids", "1", "2", "3", "--wait", "120"],
                         env=env, capture_output=True, timeout=300)  # fmt: skip
    out, err = add.communicate(timeout=300)
    assert add.returncode == 0 and fgt.returncode == 0, (err, fgt.stderr)
    mem = VisualMemory.load(mem_dir)
    assert not {1, 2, 3} & set(mem.ids.tolist())  # the forget holds whichever ran first
    assert {0, 4, 5, 6, 7} <= set(mem.ids.tolist()) and len(mem) == 5  # and the add is not lost
    [record] = read_audit(mem_dir)
    assert record["removed_ids"] == [1, 2, 3]


def test_format_1_memory_through_the_cli(world, capsys, tmp_path: Path) -> None:
    from tests.memory.test_integrity import _to_format_1

    mem_dir = _small(world, capsys, tmp_path / "mem")
    _to_format_1(mem_dir, [])
    (mem_dir / "audit.jsonl").unlink()
    query = str(world["extra"] / "yellow" / "0.png")
    rc, out, _ = run(capsys, "classify", "--memory", str(mem_dir), query, "--k", "1")
    assert rc == 0 and "yellow" in out  # the recipe comes from the items' records
    rc, out, err = run(
        capsys, "add", "--memory", str(mem_dir), "--dataset", f"imagefolder:{world['extra']}"
    )
    assert rc == 0, err
    man = json.loads((mem_dir / "manifest.json").read_text())
    assert man["format_version"] == 2 and man["recipe"]["transform"]["size"] == 16
    assert man["recipe"]["backbone"]["spec"] == str(world["export"].absolute())


def test_hmac_key_flag(world, capsys, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    mem_dir = _small(world, capsys, tmp_path / "mem", "--hmac-key", str(key))
    rc, out, _ = run(capsys, "info", "--memory", str(mem_dir), "--hmac-key", str(key))
    assert rc == 0 and "signed         True" in out
    rc, _, err = run(capsys, "forget", "--memory", str(mem_dir), "--ids", "0")
    assert rc == 2 and "pass --hmac-key" in err
    (tmp_path / "other").write_text("x" * 32)
    rc, _, err = run(
        capsys, "info", "--memory", str(mem_dir), "--hmac-key", str(tmp_path / "other")
    )
    assert rc == 2 and "HMAC does not match" in err
    rc, _, err = run(
        capsys, "info", "--memory", str(mem_dir), "--hmac-key", str(mem_dir / "ids.npy")
    )
    assert rc == 2 and "outside the memory" in err


def test_add_with_another_backbone(world, capsys, tmp_path: Path) -> None:
    mem_dir = _small(world, capsys, tmp_path / "mem")
    args = ["add", "--memory", str(mem_dir), "--dataset", f"imagefolder:{world['extra']}",
            "--backbone", RANDOM_SPEC]  # fmt: skip
    rc, _, err = run(capsys, *args)
    assert rc == 2 and "fingerprint" in err and "--recipe-override" in err
    rc, out, err = run(capsys, *args, "--recipe-override")
    assert rc == 0 and "backbone fingerprint" in out, err
    mem = VisualMemory.load(mem_dir)
    fp = random_backbone(seed=0, **TINY).fingerprint()
    assert mem.fingerprint == fp and mem.recipe["backbone"]["fingerprint"] == fp and len(mem) == 8
    query = str(world["extra"] / "yellow" / "0.png")
    rc, out, _ = run(capsys, "classify", "--memory", str(mem_dir), query, "--k", "1")
    assert rc == 0 and "yellow" in out


def test_classify_images_on_an_empty_memory(world) -> None:
    from procvision.eval.classify import classify_images

    backbone = load_backbone(world["export"])
    mem = VisualMemory(8)  # empty: nothing is searched
    query = str(world["extra"] / "yellow" / "0.png")
    [res] = classify_images(mem, backbone, EvalTransform(16), [query], 5, "weighted", 0.07, "cpu")
    assert res["prediction"] is None and res["neighbours"] == [] and res["label"] == -1


def test_memory_path_that_is_a_file(capsys, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    for cmd in (["info"], ["forget", "--ids", "1"], ["remove", "--ids", "1"]):
        rc, _, err = run(capsys, *cmd, "--memory", str(tmp_path / "f"))
        assert rc == 2 and "is a file, not a memory directory" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
