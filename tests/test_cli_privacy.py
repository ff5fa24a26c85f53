"""`procvision privacy`: exact audit on a tiny memory, brute-force agreement, CSV and JSON outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import procvision.commands.privacy as privacy_cmd
from procvision.cli import main
from procvision.data.datasets import EvalTransform, ImageFolder
from procvision.eval.embed import embed_dataset
from procvision.memory import VisualMemory, brute_force_loo, privacy_audit
from procvision.models import random_backbone
from tests.fixtures_real import CLASS_COLOURS, coloured_image, make_image_folder
from tests.fixtures_real import TINY_BACKBONE as TINY


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli_privacy")
    fold = make_image_folder(root / "memory", per_class=6)
    for i in range(3):  # mislabelled items: red images filed as green make red queries fragile
        Image.fromarray(coloured_image(CLASS_COLOURS["red"], 900 + i)).save(
            fold / "green" / f"red_{i}.png"
        )
    queries = make_image_folder(root / "queries", per_class=4, odd_modes=False)
    mem = root / "mem"
    rc = main(["memory", "build", "--backbone", "random:" + json.dumps(TINY), "--dataset", f"imagefolder:{fold}",
               "--out", str(mem), "--precision", "bf16"])  # fmt: skip
    assert rc == 0
    return {"root": root, "memory": mem, "queries": queries}


def test_privacy_cli_matches_library_and_brute_force(world, capsys, tmp_path: Path) -> None:
    csv_path, json_path = tmp_path / "infl.csv", tmp_path / "audit.json"
    capsys.readouterr()
    rc = main(["privacy", "--memory", str(world["memory"]), "--queries", f"imagefolder:{world['queries']}", "--k", "3",
               "--brute-force-check", "--csv", str(csv_path), "--json", str(json_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert (
        rc == 0
        and "agrees exactly" in out
        and "non-private (exact leave-one-out)" in out
        and "paper's variant" in out
    )
    # reference: embed the queries by hand (in the recipe's precision, bf16 here) and run the
    # library's audit and brute force
    mem = VisualMemory.load(world["memory"])
    assert mem.recipe["features"]["precision"] == "bf16"
    ds = ImageFolder(world["queries"], transform=EvalTransform(16, "crop"))
    q, labels = embed_dataset(random_backbone(seed=0, **TINY), ds, progress=False, precision="bf16")
    audit = privacy_audit(mem, q.numpy(), labels.numpy(), k=3)
    brute = brute_force_loo(mem, q.numpy(), k=3)
    assert brute["flip_sets"] == audit["flip_sets"] and audit["non_private_count"] > 0
    saved = json.loads(json_path.read_text())
    assert saved["precision"] == "bf16"
    assert (
        saved["non_private_ids"] == audit["non_private_ids"]
        and saved["flip_sets"] == audit["flip_sets"]
    )
    assert f"{audit['non_private_count']} items" in out
    rows = list(csv.DictReader(csv_path.open()))
    assert [int(r["memory_id"]) for r in rows] == audit["flip_counts"]["ids"]
    assert [int(r["queries_flipped"]) for r in rows] == audit["flip_counts"]["counts"]
    for r in rows:  # every listed query really flips when that item is removed
        for qi in map(int, r["query_indices"].split()):
            assert int(r["memory_id"]) in audit["flip_sets"][qi]
        assert r["source"] == mem.metadata_of([int(r["memory_id"])])[0]["source"]


def test_privacy_cli_errors(world, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(privacy_cmd, "BRUTE_FORCE_LIMIT", 5)
    rc = main(
        [
            "privacy",
            "--memory",
            str(world["memory"]),
            "--queries",
            f"imagefolder:{world['queries']}",
            "--brute-force-check",
        ]
    )
    assert rc == 2 and "at most 5 items" in capsys.readouterr().err
    rc = main(
        ["privacy", "--memory", str(world["memory"]), "--queries", "imagefolder:/does/not/exist"]
    )
    assert rc == 2 and "/does/not/exist" in capsys.readouterr().err
    rc = main(
        [
            "privacy",
            "--memory",
            str(world["memory"]),
            "--queries",
            f"imagefolder:{world['queries']}",
            "--method",
            "vote",
        ]
    )
    assert rc == 2 and "--method" in capsys.readouterr().err


def test_query_labels_matched_by_class_name() -> None:
    class Q:
        class_names = ["red", "purple", "blue"]
        labels = np.array([0, 1, 2, 0])

    got = privacy_cmd._query_labels(["blue", "green", "red"], Q())
    assert got.tolist() == [
        2,
        -5,
        0,
        2,
    ]  # purple is not a memory class: never predicted, counts as wrong
