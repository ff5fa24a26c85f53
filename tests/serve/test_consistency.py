"""What the service answers after forgets and after writes by other processes."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from procvision.data.datasets import open_image
from procvision.memory import VisualMemory, knn_predict
from procvision.serve.state import prepare
from tests.serve.conftest import auth, files, query_png

QUERIES = [("red", 51), ("blue", 52), ("green", 53), ("red", 54)]


def _query_files() -> list:
    return files(*[(f"{n}{s}.png", query_png(n, s), "image/png") for n, s in QUERIES])


def _rebuilt_without(original: VisualMemory, removed: list[int], state) -> VisualMemory:
    """The memory built again, from its images, without `removed`: every item re-embedded from its
    source in one batch, as `memory build` did (the recipe's transform and precision), and added
    with its original id."""
    meta = original.metadata_of(original.ids)
    x = prepare(state.transform, [open_image(m["source"]) for m in meta])
    emb = state.embed(x)
    keep = ~np.isin(original.ids, removed)
    mem = VisualMemory(original.dim, engine=original.engine, fingerprint=original.fingerprint,
                       class_names=original.class_names)  # fmt: skip
    ids = original.ids[keep]
    mem.add(emb[keep], original.labels[keep], ids=ids, metadata=original.metadata_of(ids))
    return mem


def test_forget_then_classify_equals_a_memory_rebuilt_without_the_items(
    make_client, memdir
) -> None:
    original = VisualMemory.load(memdir)
    c = make_client()
    k = len(original)  # every item is a neighbour: a forgotten one would show
    before = c.post(f"/classify?k={k}", files=_query_files()).json()
    removed = [r["neighbours"][0]["id"] for r in before["results"][:2]] + [3]
    rec = c.post("/items/forget", headers=auth(), json={"ids": removed, "reason": "test"}).json()
    assert sorted(rec["removed_ids"]) == sorted(set(removed))
    after = c.post(f"/classify?k={k}", files=_query_files()).json()
    state = c.app.state.memory
    rebuilt = _rebuilt_without(original, removed, state)
    imgs = [Image.open(io.BytesIO(query_png(n, s))).convert("RGB") for n, s in QUERIES]
    ref = knn_predict(rebuilt, state.embed(prepare(state.transform, imgs)), k, "weighted", 0.07)
    assert after["content_hash"] == rebuilt.content_hash() == rec["content_hash_after"]
    for r, res in enumerate(after["results"]):
        ids = [n["id"] for n in res["neighbours"]]
        assert not set(ids) & set(removed)
        assert ids == ref.ids[r][ref.ids[r] >= 0].tolist()
        assert [n["similarity"] for n in res["neighbours"]] == ref.sims[r][ref.ids[r] >= 0].tolist()
        names = rebuilt.class_names
        assert res["prediction"] == names[int(ref.labels[r])]
        total = ref.scores[r].sum()
        want = {names[int(ref.classes[c])]: ref.scores[r, c] / total for c in range(len(ref.classes))
                if ref.scores[r, c] > 0}  # fmt: skip
        assert res["scores"] == want
    for i in removed:
        assert c.get(f"/items/{i}").status_code == 404
        assert c.get(f"/items/{i}/image").status_code == 404
    assert not set(removed) & {i["id"] for i in c.get("/items?limit=1000").json()["items"]}


def test_cli_forget_while_the_service_runs_is_never_served_from_ram(make_client, memdir) -> None:
    c = make_client()
    k = 12
    first = c.post(f"/classify?k={k}", files=_query_files()).json()
    target = first["results"][0]["neighbours"][0]["id"]
    h0 = c.get("/health").json()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cli = subprocess.run(
        [sys.executable, "-m", "procvision.cli", "memory", "forget", "--memory", str(memdir),
         "--ids", str(target), "--reason", "cli"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    after = c.post(f"/classify?k={k}", files=_query_files()).json()
    assert after["count"] == 11
    for res in after["results"]:
        assert target not in [n["id"] for n in res["neighbours"]]
    h1 = c.get("/health").json()
    assert h1["count"] == 11 and h1["manifest_hash"] != h0["manifest_hash"]
    assert h1["reloads"] == h0["reloads"] + 1
    assert h1["content_hash"] == VisualMemory.load(memdir).content_hash()
    assert c.get(f"/items/{target}").status_code == 404
    assert c.get("/audit").json()["records"][-1]["removed_ids"] == [target]


def test_an_outside_write_before_a_service_write_is_kept(make_client, memdir) -> None:
    """The service writes on what is on disk, not on its possibly older snapshot."""
    c = make_client()
    assert c.get("/health").json()["count"] == 12
    outside = VisualMemory.load(memdir)
    outside.remove([0])
    outside.save(memdir)  # another process removed id 0; the service has not answered since
    rec = c.delete("/items/1", headers=auth()).json()
    assert rec["n_before"] == 11 and rec["n_after"] == 10
    mem = VisualMemory.load(memdir)
    assert not np.isin([0, 1], mem.ids).any() and len(mem) == 10
    assert c.get("/health").json()["content_hash"] == mem.content_hash()
