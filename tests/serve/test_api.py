"""Every endpoint of `procvision serve` through FastAPI's test client, and every bad input."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from procvision.memory import VisualMemory, privacy_audit, read_blob
from procvision.serve import UploadLimits
from tests.serve.conftest import TOKEN, auth, files, png_bytes, query_png


def _png(data: bytes) -> tuple[str, bytes, str]:
    return ("q.png", data, "image/png")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(side: int = 100_000) -> bytes:
    """A few hundred bytes whose header announces side x side pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def assert_error(resp, status: int, *words: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == status and isinstance(body["detail"], str) and body["error"]
    for w in words:
        assert w in body["detail"], body["detail"]


# ---------------------------------------------------------------- reads
def test_health_reports_memory_backbone_and_hashes(make_client, memdir) -> None:
    c = make_client()
    h = c.get("/health").json()
    mem = VisualMemory.load(memdir)
    assert h["count"] == len(mem) == 12 and h["dim"] == mem.dim
    assert h["content_hash"] == mem.content_hash() and len(h["manifest_hash"]) == 64
    assert h["fingerprint"] == mem.fingerprint == h["backbone_fingerprint"]
    assert h["device"] == "cpu" and h["read_only"] is False
    assert h["vote_defaults"] == {"k": 20, "method": "weighted", "T": 0.07}
    assert h["lock_file"].endswith("/.mem.lock")
    assert h["precision"] == mem.recipe["features"]["precision"]  # what `build` recorded
    assert h["backbone"] == mem.recipe["backbone"]["spec"]


def test_page_static_and_openapi(make_client) -> None:
    c = make_client()
    page = c.get("/")
    assert (
        page.status_code == 200 and "memory explorer" in page.text and "/static/app.js" in page.text
    )
    assert c.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert c.get("/static/style.css").status_code == 200
    assert_error(c.get("/static/../state.py"), 404)
    assert_error(c.get("/static/secret.txt"), 404)
    paths = c.get("/openapi.json").json()["paths"]
    for p in ("/classify", "/items", "/items/forget", "/items/{item_id}", "/audit", "/health",
              "/privacy", "/jobs/{job_id}"):  # fmt: skip
        assert p in paths
    assert c.get("/docs").status_code == 200


def test_classify_one_and_many_with_explanations(make_client, template) -> None:
    c = make_client()
    r = c.post(
        "/classify?k=5",
        files=files(_png(query_png("red")), ("b.png", query_png("blue"), "image/png")),
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["k"] == 5 and out["method"] == "weighted" and out["count"] == 12
    red, blue = out["results"]
    assert red["prediction"] == "red" and blue["prediction"] == "blue"
    assert abs(sum(red["scores"].values()) - 1) < 1e-9
    nbs = red["neighbours"]
    assert [n["rank"] for n in nbs] == [1, 2, 3, 4, 5]
    sims = [n["similarity"] for n in nbs]
    assert sims == sorted(sims, reverse=True)
    assert all(n["source"].startswith(str(template["fold"])) for n in nbs)
    assert abs(sum(n["weight"] for n in nbs) - 1) < 1e-9
    # the same answer as the in-process chain on the same memory
    plural = c.post("/classify?k=3&method=plurality", files=files(_png(query_png("green")))).json()
    assert plural["method"] == "plurality" and plural["results"][0]["prediction"] == "green"


@pytest.mark.parametrize(
    ("query", "status", "word"),
    [("k=0", 400, "k must"), ("k=abc", 422, "k"), ("method=majority", 400, "method must"),
     ("T=-1", 400, "T must"), ("T=nan", 400, "T must")],
)  # fmt: skip
def test_classify_bad_parameters(make_client, query, status, word) -> None:
    c = make_client()
    assert_error(c.post(f"/classify?{query}", files=files(_png(query_png()))), status, word)


def test_classify_bad_uploads(make_client) -> None:
    c = make_client(limits=UploadLimits(max_bytes=2000, max_pixels=30 * 30, max_files=2),
                    max_request_bytes=200_000)  # fmt: skip
    assert_error(c.post("/classify"), 422, "files")
    assert_error(
        c.post("/classify", files=files(("q.txt", b"hello", "text/plain"))), 415, "content type"
    )
    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(jpeg, format="JPEG")
    assert_error(
        c.post("/classify", files=files(_png(jpeg.getvalue()))),
        415,
        "declared as PNG but the bytes are JPEG",
    )
    assert_error(c.post("/classify", files=files(_png(b""))), 400, "empty")
    assert_error(
        c.post("/classify", files=files(_png(query_png()[:60]))), 400, "not a decodable image"
    )
    flat = io.BytesIO()
    Image.new("RGB", (40, 40), (9, 9, 9)).save(flat, format="PNG")
    assert_error(c.post("/classify", files=files(_png(flat.getvalue()))), 413, "pixels")
    assert_error(c.post("/classify", files=files(_png(bomb_png()))), 413)
    noisy = np.random.default_rng(0).integers(0, 256, (28, 28, 3), np.uint8)
    big = io.BytesIO()
    Image.fromarray(noisy).save(big, format="PNG")
    assert len(big.getvalue()) > 2000
    assert_error(
        c.post("/classify", files=files(_png(big.getvalue()))),
        413,
        "exceeds the limit of 2000 bytes",
    )
    assert_error(c.post("/classify", files=files(*[_png(query_png())] * 3)), 413, "files exceeds")
    assert_error(
        c.post("/classify", files=files(("x.bin", b"\0" * 300_000, "image/png"))),
        413,
        "request body",
    )


def test_bomb_refused_by_default_limits(make_client) -> None:
    c = make_client()
    assert_error(
        c.post("/classify", files=files(_png(bomb_png(20_000)))), 413, "decompression bomb"
    )


# ---------------------------------------------------------------- security of writes
@pytest.mark.parametrize(
    ("kwargs", "headers", "status", "word"),
    [({"token": None}, auth(), 403, "read-only"), ({}, {}, 401, "Bearer"),
     ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, 403, "wrong token"),
     ({}, {"Authorization": f"Basic {TOKEN}"}, 401, "Bearer")],
)  # fmt: skip
def test_writes_need_the_token(make_client, memdir, kwargs, headers, status, word) -> None:
    c = make_client(**kwargs)
    before = (memdir / "manifest.json").read_bytes()
    assert_error(c.post("/items/forget", json={"ids": [1]}, headers=headers), status, word)
    assert_error(c.delete("/items/1", headers=headers), status, word)
    add = c.post(
        "/items", files=files(_png(query_png())), data={"labels": ["red"]}, headers=headers
    )
    assert_error(add, status, word)
    assert (memdir / "manifest.json").read_bytes() == before  # nothing was written
    assert c.get("/health").json()["count"] == 12


# ---------------------------------------------------------------- items
def test_items_list_paged_filtered_and_one_item(make_client) -> None:
    c = make_client()
    page = c.get("/items?offset=2&limit=4").json()
    assert page["total"] == 12 and [i["id"] for i in page["items"]] == [2, 3, 4, 5]
    assert all("image_b64" not in i["metadata"] for i in page["items"])
    reds = c.get("/items?label=red&limit=100").json()
    assert reds["total"] == 4 and {i["label"] for i in reds["items"]} == {"red"}
    pat = c.get("/items", params={"source": "*/green/0[01].png"}).json()
    assert [i["source"].rsplit("/", 2)[-2:] for i in pat["items"]] == [
        ["green", "00.png"],
        ["green", "01.png"],
    ]
    assert c.get("/items?label=purple").json()["total"] == 0
    assert_error(c.get("/items?limit=0"), 422)
    assert_error(c.get("/items?offset=-1"), 422)
    one = c.get("/items/8").json()
    assert one["id"] == 8 and one["label"] == "red" and one["sha256"]
    assert_error(c.get("/items/999"), 404, "999")
    assert_error(c.get("/items/abc"), 422)


def test_item_image_from_registered_source_only(make_client, template, memdir) -> None:
    c = make_client()
    r = c.get("/items/8/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["cache-control"] == "no-store"
    assert Image.open(io.BytesIO(r.content)).size == (20, 20)
    assert_error(c.get("/items/999/image"), 404)
    # a source whose bytes changed since indexing is not served
    src = c.get("/items/9").json()["source"]
    original = open(src, "rb").read()
    try:
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(src)
        assert_error(c.get("/items/9/image"), 409, "changed since")
    finally:
        open(src, "wb").write(original)
    assert c.get("/items/9/image").status_code == 200


def test_add_uploads_keeps_bytes_inside_the_memory(make_client, memdir) -> None:
    c = make_client()
    data = png_bytes((240, 240, 20), 11)
    r = c.post("/items", headers=auth(), files=files(("sun.png", data, "image/png"), _png(query_png("red", 99))),
               data={"labels": ["yellow", "red"], "sources": ["sun-photo", ""]})  # fmt: skip
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["ids"] == [12, 13] and out["new_classes"] == ["yellow"] and out["n_after"] == 14
    mem = VisualMemory.load(memdir)
    assert len(mem) == 14 and mem.class_names == ["blue", "green", "red", "yellow"]
    assert out["content_hash"] == mem.content_hash() == c.get("/health").json()["content_hash"]
    meta = mem.metadata_of([12])[0]
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    assert meta["sha256"] == sha == meta["blob"] and "image_b64" not in meta
    assert read_blob(memdir, sha) == data  # the bytes live in the memory's checksummed blobs/
    assert (memdir / "blobs" / sha).read_bytes() == data
    assert meta["source"] == "upload:sun-photo" and meta["media_type"] == "image/png"
    assert mem.metadata_of([13])[0]["source"].startswith("upload:")
    item = c.get("/items/12").json()
    assert item["uploaded"] and item["label"] == "yellow" and item["metadata"]["blob"] == sha
    thumb = c.get("/items/12/image")
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size == (20, 20)
    yellow = c.post("/classify?k=1", files=files(_png(png_bytes((240, 240, 20), 12)))).json()
    assert yellow["results"][0]["neighbours"][0]["id"] == 12
    assert yellow["results"][0]["neighbours"][0]["uploaded"] is True
    # forgetting it removes its bytes from every file of the memory, blobs/ included
    c.delete("/items/12?reason=test", headers=auth())
    assert not (memdir / "blobs" / sha).exists()
    stored = [p for p in memdir.rglob("*") if p.is_file()]
    mid = data[len(data) // 2 - 16 : len(data) // 2 + 16]  # inside the compressed pixels
    assert stored and not any(mid in p.read_bytes() for p in stored)
    assert_error(c.get("/items/12/image"), 404)


def test_forgetting_the_highest_id_then_adding_gives_a_new_id(make_client, memdir) -> None:
    c = make_client()
    assert max(i["id"] for i in c.get("/items").json()["items"]) == 11
    assert c.delete("/items/11?reason=top", headers=auth()).json()["removed_ids"] == [11]
    r = c.post("/items", headers=auth(), files=files(_png(query_png("red", 5))),
               data={"labels": ["red"]})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["ids"] == [12]  # id 11 is retired, never given again
    assert_error(c.get("/items/11"), 404)
    assert c.get("/items/12").json()["label"] == "red"
    assert VisualMemory.load(memdir).next_id == 13


def test_add_bad_input(make_client) -> None:
    c = make_client()
    one = files(_png(query_png()))
    assert_error(
        c.post("/items", headers=auth(), files=one, data={"labels": ["a", "b"]}), 400, "labels"
    )
    assert_error(c.post("/items", headers=auth(), files=one, data={"labels": [" "]}), 400, "empty")
    assert_error(
        c.post(
            "/items", headers=auth(), files=one, data={"labels": ["red"], "sources": ["a", "b"]}
        ),
        400,
    )
    assert_error(c.post("/items", headers=auth(), files=one), 422, "labels")
    bad = files(("q.gif", query_png(), "image/gif"))
    assert_error(c.post("/items", headers=auth(), files=bad, data={"labels": ["red"]}), 415)
    assert c.get("/health").json()["count"] == 12


# ---------------------------------------------------------------- forget and audit
def test_forget_by_ids_and_pattern_returns_the_audit_record(make_client, memdir) -> None:
    c = make_client()
    r = c.post(
        "/items/forget", headers=auth(), json={"ids": [0, 1, 77], "reason": "consent withdrawn"}
    )
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["removed_ids"] == [0, 1] and rec["count"] == 2 and rec["not_found"] == [77]
    assert rec["n_before"] == 12 and rec["n_after"] == 10 and rec["reason"] == "consent withdrawn"
    mem = VisualMemory.load(memdir)
    assert rec["content_hash_after"] == mem.content_hash() and not np.isin([0, 1], mem.ids).any()
    r = c.post(
        "/items/forget", headers=auth(), json={"source_pattern": "*/green/*", "reason": "pattern"}
    )
    assert r.json()["removed_ids"] == [4, 5, 6, 7]
    r = c.delete("/items/8?reason=one", headers=auth())
    assert r.json()["removed_ids"] == [8]
    audit = c.get("/audit").json()
    assert audit["total"] == 3 and [a["removed_ids"] for a in audit["records"]] == [
        [0, 1],
        [4, 5, 6, 7],
        [8],
    ]
    assert c.get("/audit?offset=1&limit=1").json()["records"][0]["reason"] == "pattern"
    assert c.get("/health").json()["count"] == len(VisualMemory.load(memdir)) == 5


def test_forget_bad_input(make_client) -> None:
    c = make_client()
    assert_error(
        c.post("/items/forget", headers=auth(), json={"ids": [500, 501]}), 404, "none of the ids"
    )
    assert_error(c.delete("/items/500", headers=auth()), 404)
    assert_error(c.post("/items/forget", headers=auth(), json={"reason": "x"}), 400, "ids")
    assert_error(c.post("/items/forget", headers=auth(), json={"ids": "one"}), 422, "ids")
    assert_error(
        c.post(
            "/items/forget",
            headers=auth(),
            content=b"{not json",
        ),
        422,
    )
    assert c.get("/audit").json()["total"] == 0


def test_forget_while_another_writer_holds_the_lock(make_client, memdir) -> None:
    from procvision.serve.state import writer_lock

    c = make_client()
    c.app.state.memory.write_wait = 0.2
    with writer_lock(memdir):
        assert_error(
            c.post("/items/forget", headers=auth(), json={"ids": [1]}), 409, "being written"
        )
    assert c.post("/items/forget", headers=auth(), json={"ids": [1]}).status_code == 200


# ---------------------------------------------------------------- privacy jobs
def _wait_job(c, job_id: str) -> dict:
    for _ in range(400):
        job = c.get(f"/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_privacy_job_on_uploads_matches_the_exact_audit(make_client, memdir) -> None:
    c = make_client()
    names = ["red", "blue", "green", "red"]
    qs = [query_png(n, 40 + i) for i, n in enumerate(names)]
    r = c.post("/privacy?k=3", files=files(*[_png(q) for q in qs]), data={"labels": names})
    assert r.status_code == 202, r.text
    job = _wait_job(c, r.json()["id"])
    assert job["status"] == "done", job
    res = job["result"]
    state = c.app.state.memory
    from procvision.serve.state import prepare

    q = state.embed(
        prepare(state.transform, [Image.open(io.BytesIO(b)).convert("RGB") for b in qs])
    )
    mem = VisualMemory.load(memdir)
    labels = np.asarray([mem.class_names.index(n) for n in names])
    ref = privacy_audit(mem, q, labels, 3, "weighted", 0.07, fingerprint=state.fingerprint)
    assert res["non_private_count"] == ref["non_private_count"]
    assert res["non_private_fraction"] == ref["non_private_fraction"] and res["n_queries"] == 4
    assert [i["id"] for i in res["influential"]] == ref["flip_counts"]["ids"][:20]
    assert res["memory_changed_since"] is False
    if res["influential"]:  # after a forget the job no longer names the forgotten item
        gone = res["influential"][0]["id"]
        c.delete(f"/items/{gone}", headers=auth())
        later = c.get(f"/jobs/{job['id']}").json()["result"]
        assert later["memory_changed_since"] and gone not in [i["id"] for i in later["influential"]]


def test_privacy_job_on_operator_dataset_and_bad_requests(make_client, template) -> None:
    c = make_client(privacy_datasets={"fold": f"imagefolder:{template['fold']}"})
    r = c.post("/privacy?k=3", data={"dataset": "fold"})
    assert r.status_code == 202, r.text
    job = _wait_job(c, r.json()["id"])
    assert job["status"] == "done" and job["result"]["n_queries"] == 12
    assert job["result"]["accuracy_top1"] == pytest.approx(100.0)
    assert_error(c.post("/privacy", data={"dataset": "/etc"}), 404, "unknown dataset")
    assert_error(c.post("/privacy", data={"dataset": f"imagefolder:{template['fold']}"}), 404)
    assert_error(c.post("/privacy"), 400, "either")
    assert_error(c.post("/privacy", files=files(_png(query_png()))), 400, "labels")
    assert_error(c.get("/jobs/nope"), 404)


def test_an_emptied_memory_is_a_valid_state(make_client) -> None:
    c = make_client()
    rec = c.post(
        "/items/forget", headers=auth(), json={"source_pattern": "*", "reason": "all"}
    ).json()
    assert rec["count"] == 12 and rec["n_after"] == 0
    out = c.post("/classify", files=files(_png(query_png()))).json()
    assert out["count"] == 0 and out["results"][0]["prediction"] is None
    assert out["results"][0]["neighbours"] == [] and out["results"][0]["scores"] == {}
    assert c.get("/items").json()["total"] == 0 and c.get("/health").json()["count"] == 0
    assert_error(
        c.post("/privacy", files=files(_png(query_png())), data={"labels": ["red"]}), 409, "empty"
    )
    add = c.post("/items", headers=auth(), files=files(_png(query_png())), data={"labels": ["red"]})
    assert add.status_code == 200 and add.json()["n_after"] == 1
    assert (
        c.post("/classify", files=files(_png(query_png()))).json()["results"][0]["prediction"]
        == "red"
    )
