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
from procvision.eval.embed import embed_dataset
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
    ref, ref_labels = embed_dataset(backbone, torch.utils.data.Subset(ds, kept), progress=False)
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
