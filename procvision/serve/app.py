"""The FastAPI app of `procvision serve`: classify, explain, add, forget, audit, privacy, explorer.

Every answer comes from the snapshot that `MemoryState.snapshot()` returns (reloaded when the
memory changed on disk). Writes need `Authorization: Bearer TOKEN` with the token of
`--token-file`; without a token file the service is read-only. Errors are JSON
`{"error": KIND, "detail": MESSAGE, "status": CODE}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from procvision.errors import UserError
from procvision.memory import METHODS, FingerprintMismatch
from procvision.serve.batching import Job, MicroBatcher
from procvision.serve.classify import run_jobs
from procvision.serve.images import (
    ImageRejected,
    UploadLimits,
    decode_upload,
    item_image,
    thumbnail_png,
)
from procvision.serve.jobs import PrivacyJobs, QuerySet
from procvision.serve.state import MemoryLocked, MemoryState, prepare, vote_defaults


@dataclass
class ServeConfig:
    """Service settings (the `procvision serve` flags)."""

    token: str | None = None
    limits: UploadLimits = field(default_factory=UploadLimits)
    max_request_bytes: int = 64 << 20
    batching: bool = True
    max_batch: int = 64
    max_wait_ms: float = 5.0
    privacy_datasets: dict[str, str] = field(default_factory=dict)
    max_privacy_queries: int = 10_000
    max_page: int = 1000
    allowed_hosts: tuple[str, ...] | None = None  # Host headers served (None: any), DNS rebinding


# ---------------------------------------------------------------- request / response models
class ForgetRequest(BaseModel):
    ids: list[int] | None = Field(None, description="item ids to forget")
    source_pattern: str | None = Field(None, description="shell pattern on the item source")
    reason: str = Field("", max_length=2000, description="recorded in the audit log")


class Neighbour(BaseModel):
    rank: int
    id: int
    label: str
    source: str
    similarity: float
    weight: float
    uploaded: bool


class ImageResult(BaseModel):
    filename: str
    prediction: str | None
    label_index: int
    scores: dict[str, float]
    neighbours: list[Neighbour]


class ClassifyResponse(BaseModel):
    k: int
    method: str
    T: float
    count: int
    content_hash: str
    results: list[ImageResult]


class AddResponse(BaseModel):
    ids: list[int]
    new_classes: list[str]
    n_after: int
    content_hash: str


class Item(BaseModel):
    id: int
    label: str
    label_index: int
    source: str
    sha256: str | None
    uploaded: bool
    metadata: dict[str, Any]


class ItemsPage(BaseModel):
    total: int
    offset: int
    limit: int
    content_hash: str
    items: list[Item]


class AuditPage(BaseModel):
    total: int
    offset: int
    limit: int
    records: list[dict[str, Any]]


class JobStarted(BaseModel):
    id: str
    status: str
    status_url: str


# ---------------------------------------------------------------- the request-size limit
class _TooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: refuse a Host header outside `allowed_hosts` (400: a web page that
    rebinds its DNS name to 127.0.0.1 cannot read the service) and request bodies over
    `max_bytes` (413), declared or streamed."""

    def __init__(self, app: Any, max_bytes: int, allowed_hosts: tuple[str, ...] | None) -> None:
        self.app, self.max_bytes = app, int(max_bytes)
        self.allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.allowed is not None and "*" not in self.allowed:
            host = headers.get(b"host", b"").decode("latin-1").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.allowed and host not in self.allowed:
                return await self._send(
                    send,
                    _error(
                        400,
                        f"Host {host!r} is not served; allowed: "
                        f"{', '.join(sorted(self.allowed))} (--allowed-hosts)",
                    ),
                )
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return msg

        async def tracking_send(msg: dict) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        await self._send(send, _error(413, f"request body exceeds {self.max_bytes} bytes"))

    @staticmethod
    async def _send(send: Any, resp: JSONResponse) -> None:
        await send({"type": "http.response.start", "status": resp.status_code,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": resp.body})


def _error(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    kinds = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
             409: "conflict", 413: "too_large", 415: "unsupported_media_type",
             422: "invalid_request", 429: "busy", 500: "internal_error"}  # fmt: skip
    return JSONResponse(
        {"error": kinds.get(status, "error"), "detail": detail, "status": status},
        status_code=status,
        headers=headers,
    )


# ---------------------------------------------------------------- the app
def create_app(state: MemoryState, config: ServeConfig | None = None) -> FastAPI:
    """The service for one memory; the batcher thread starts here and stops on app shutdown."""
    cfg = config or ServeConfig()
    batcher = (
        MicroBatcher(
            lambda jobs: run_jobs(state, jobs, cfg.limits), cfg.max_batch, cfg.max_wait_ms / 1000
        )
        if cfg.batching
        else None
    )
    jobs = PrivacyJobs(state, cfg.privacy_datasets)
    app = FastAPI(
        title="procvision serve",
        description="A visual memory (k-NN over DINO embeddings) as a service: classify with "
        "explanations, add and forget items with an audit log, exact privacy audits.",
        version="1",
        lifespan=_lifespan(batcher),
    )
    app.state.memory = state
    app.state.config = cfg
    app.state.batcher = batcher
    app.add_middleware(Guard, max_bytes=cfg.max_request_bytes, allowed_hosts=cfg.allowed_hosts)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        parts = []
        for e in err.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{where}: {e.get('msg')}")
        return _error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(ImageRejected)
    async def _image(_: Request, err: ImageRejected) -> JSONResponse:
        return _error(err.status, err.message)

    @app.exception_handler(MemoryLocked)
    async def _locked(_: Request, err: MemoryLocked) -> JSONResponse:
        return _error(409, str(err), {"Retry-After": "1"})

    @app.exception_handler(FingerprintMismatch)
    async def _fp(_: Request, err: FingerprintMismatch) -> JSONResponse:
        return _error(409, str(err))

    @app.exception_handler(UserError)
    async def _user(_: Request, err: UserError) -> JSONResponse:
        return _error(400, str(err))

    # ------------------------------------------------------------ helpers
    def writer(request: Request) -> None:
        """Dependency of every write: the bearer token of --token-file."""
        if cfg.token is None:
            raise HTTPException(
                403, "the service is read-only: start it with --token-file FILE to allow writes"
            )
        auth = request.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(401, "this endpoint needs 'Authorization: Bearer TOKEN'",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        if not hmac.compare_digest(given.strip().encode(), cfg.token.encode()):
            raise HTTPException(403, "wrong token")

    def vote_params(k: int | None, method: str | None, T: float | None) -> tuple[int, str, float]:
        d = vote_defaults(state.snapshot().memory)
        k = d["k"] if k is None else k
        method = d["method"] if method is None else method
        T = d["T"] if T is None else T
        if not 1 <= k <= 1000:
            raise HTTPException(400, f"k must be between 1 and 1000, got {k}")
        if method not in METHODS:
            raise HTTPException(400, f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if not (math.isfinite(T) and T > 0):
            raise HTTPException(400, f"T must be a positive number, got {T}")
        return k, method, T

    async def read_uploads(files: list[UploadFile]) -> list[tuple[bytes, str, str]]:
        """(bytes, content type, file name) of each upload; count and size checked, not decoded."""
        if not files:
            raise HTTPException(
                400, "no image: send one or more files in the multipart field 'files'"
            )
        if len(files) > cfg.limits.max_files:
            raise HTTPException(
                413, f"{len(files)} files exceeds the limit of {cfg.limits.max_files} per request"
            )
        out = []
        for i, f in enumerate(files):
            data = await f.read(cfg.limits.max_bytes + 1)
            ctype = (f.content_type or "").split(";")[0].strip().lower()
            out.append((data, ctype, f.filename or f"image{i}"))
        return out

    def decode_all(uploads: list[tuple[bytes, str, str]]) -> list:
        return [decode_upload(data, ctype, name, cfg.limits) for data, ctype, name in uploads]

    async def read_images(
        files: list[UploadFile],
    ) -> tuple[list, list[bytes], list[str], list[str]]:
        """Checked and decoded uploads: (images, bytes, file names, content types)."""
        uploads = await read_uploads(files)
        images = await run_in_threadpool(decode_all, uploads)
        blobs, types, names = ([u[i] for u in uploads] for i in range(3))
        return images, blobs, names, types

    # ------------------------------------------------------------ endpoints
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(_static("index.html"))

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        types = {"app.js": "text/javascript", "style.css": "text/css"}
        if name not in types:
            raise HTTPException(404, f"no static file {name!r}")
        return Response(_static(name), media_type=types[name])

    @app.get("/health", summary="memory size, hashes, backbone, device")
    def health() -> dict[str, Any]:
        h = state.health()
        h["read_only"] = cfg.token is None
        h["batching"] = batcher.stats() if batcher else None
        return h

    @app.post("/classify", response_model=ClassifyResponse, summary="classify images, explained")
    async def classify(
        files: Annotated[list[UploadFile], File(description="one or more images")],
        k: Annotated[
            int | None, Query(description="neighbours (default: the memory's recipe)")
        ] = None,
        method: Annotated[str | None, Query(description="weighted, plurality or rank")] = None,
        T: Annotated[float | None, Query(description="temperature of the weighted vote")] = None,
    ) -> JSONResponse:
        k, method, T = vote_params(k, method, T)
        job = Job(await read_uploads(files), k, method, T)
        if batcher is not None:
            answer = await asyncio.wrap_future(batcher.submit(job))
        else:
            answer = (await run_in_threadpool(run_jobs, state, [job], cfg.limits))[0]
            if isinstance(answer, ImageRejected):
                raise answer
        return JSONResponse(answer)  # already the documented shape: skip re-validating it

    @app.post("/items", response_model=AddResponse, dependencies=[Depends(writer)],
              summary="add uploaded images with labels")  # fmt: skip
    async def add_items(
        files: Annotated[list[UploadFile], File(description="images to add")],
        labels: Annotated[list[str], Form(description="one class name per image")],
        sources: Annotated[
            list[str] | None, Form(description="optional source name per image")
        ] = None,
    ) -> dict[str, Any]:
        if len(labels) != len(files):
            raise HTTPException(
                400,
                f"{len(files)} images but {len(labels)} labels: send one 'labels' field per image",
            )
        if sources is not None and len(sources) != len(files):
            raise HTTPException(400, f"{len(files)} images but {len(sources)} sources")
        if any(not lab.strip() for lab in labels):
            raise HTTPException(400, "labels: a class name must not be empty")
        images, blobs, names, types = await read_images(files)
        x = await run_in_threadpool(prepare, state.transform, images)
        emb = await run_in_threadpool(state.embed, x)
        metas = []
        for i, (data, name, ctype) in enumerate(zip(blobs, names, types, strict=True)):
            meta = state.upload_metadata(data, name, ctype)
            if sources is not None and sources[i].strip():
                meta["source"] = "upload:" + sources[i].strip()[:200]
            metas.append(meta)
        try:
            return await run_in_threadpool(
                state.add_uploads, emb, [s.strip() for s in labels], metas, blobs
            )
        except ValueError as err:  # e.g. a memory without a class-name table
            raise HTTPException(400, str(err)) from err

    def do_forget(ids: list[int] | None, pattern: str | None, reason: str) -> dict[str, Any]:
        if not ids and not pattern:
            raise HTTPException(400, "give 'ids' and/or 'source_pattern'")
        snap = state.snapshot()
        mem = snap.memory
        if ids and not pattern and (mem.rows_of(np.asarray(ids, np.int64)) < 0).all():
            raise HTTPException(404, f"none of the ids {sorted(set(ids))[:10]} is in the memory")
        return state.forget(ids, pattern, reason)

    @app.post("/items/forget", dependencies=[Depends(writer)],
              summary="forget items by ids or source pattern; returns the audit record")  # fmt: skip
    def forget_items(req: ForgetRequest) -> dict[str, Any]:
        return do_forget(req.ids, req.source_pattern, req.reason)

    @app.delete("/items/{item_id}", dependencies=[Depends(writer)], summary="forget one item")
    def delete_item(
        item_id: int, reason: Annotated[str, Query(max_length=2000)] = ""
    ) -> dict[str, Any]:
        return do_forget([item_id], None, reason)

    @app.get("/items", response_model=ItemsPage, summary="list items, paged (id order)")
    def list_items(
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1)] = 50,
        label: str | None = None,
        source: Annotated[str | None, Query(description="shell pattern on the source")] = None,
    ) -> dict[str, Any]:
        return state.list_items(offset, min(limit, cfg.max_page), label, source)

    @app.get("/items/{item_id}", response_model=Item, summary="one item")
    def get_item(item_id: int) -> dict[str, Any]:
        item = state.snapshot().item(item_id)
        if item is None:
            raise HTTPException(404, f"item {item_id} is not in the memory")
        return item

    @app.get("/items/{item_id}/image", summary="PNG thumbnail from the item's registered source",
             responses={200: {"content": {"image/png": {}}}})  # fmt: skip
    def item_thumbnail(item_id: int) -> Response:
        item = state.snapshot().item(item_id, with_bytes=True)
        if item is None:
            raise HTTPException(404, f"item {item_id} is not in the memory")
        png = thumbnail_png(item_image(item, cfg.limits.max_pixels))
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/audit", response_model=AuditPage, summary="the audit log, paged (oldest first)")
    def audit(
        offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1)] = 100
    ) -> dict[str, Any]:
        records = state.audit()
        limit = min(limit, cfg.max_page)
        return {"total": len(records), "offset": offset, "limit": limit,
                "records": records[offset : offset + limit]}  # fmt: skip

    @app.post("/privacy", status_code=202, response_model=JobStarted,
              summary="start an exact leave-one-out privacy audit as a job")  # fmt: skip
    async def privacy(
        files: Annotated[list[UploadFile] | None, File(description="query images")] = None,
        labels: Annotated[list[str] | None, Form(description="class name per query image")] = None,
        dataset: Annotated[str | None, Form(description="a dataset named by the operator")] = None,
        max_queries: Annotated[int | None, Form(ge=1)] = None,
        k: Annotated[int | None, Query()] = None,
        method: Annotated[str | None, Query()] = None,
        T: Annotated[float | None, Query()] = None,
    ) -> dict[str, Any]:
        k, method, T = vote_params(k, method, T)
        if len(state.snapshot().memory) == 0:
            raise HTTPException(409, "the memory is empty: there is nothing to audit")
        if (files is None) == (dataset is None):
            raise HTTPException(
                400, "send either query images ('files' with 'labels') or 'dataset'"
            )
        if dataset is not None:
            if dataset not in cfg.privacy_datasets:
                named = (
                    ", ".join(sorted(cfg.privacy_datasets))
                    or "none (start with --privacy-dataset NAME=URI)"
                )
                raise HTTPException(
                    404, f"unknown dataset {dataset!r}; the operator configured: {named}"
                )
            n = min(max_queries or cfg.max_privacy_queries, cfg.max_privacy_queries)
            queries = QuerySet(
                dataset=dataset, max_queries=n, description=f"dataset {dataset} (<= {n})"
            )
        else:
            if labels is None or len(labels) != len(files or []):
                raise HTTPException(400, "send one 'labels' field (class name) per query image")
            images, _, _, _ = await read_images(files or [])
            x = await run_in_threadpool(prepare, state.transform, images)
            queries = QuerySet(x=x, labels=labels, description=f"{len(images)} uploaded images")
        job = jobs.start(queries, k, method, T)
        if job is None:
            raise HTTPException(429, "a privacy audit is already running; retry when it finished",
                                headers={"Retry-After": "5"})  # fmt: skip
        return {"id": job["id"], "status": job["status"], "status_url": f"/jobs/{job['id']}"}

    @app.get("/jobs/{job_id}", summary="a privacy job's status and result")
    def get_job(job_id: str) -> dict[str, Any]:
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r} (jobs live in the service's RAM only)")
        return job

    return app


def _lifespan(batcher: MicroBatcher | None):
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        if batcher is not None:
            batcher.close()

    return lifespan


def _static(name: str) -> bytes:
    return resources.files("procvision.serve").joinpath("static", name).read_bytes()
