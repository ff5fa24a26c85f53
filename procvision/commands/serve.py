"""`procvision serve`: the visual memory as an HTTP service with a web explorer.

    procvision serve --memory mem/                          # read-only, http://127.0.0.1:8000
    procvision serve --memory mem/ --token-file token.txt   # writes need 'Authorization: Bearer ...'
    procvision serve --memory mem/ --privacy-dataset fmnist=fashion_mnist:test

Binds to loopback unless --host says otherwise. The backbone defaults to the one the memory's
recipe records; one with another fingerprint is refused. OpenAPI docs at /docs, the explorer at /.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

from procvision.commands._common import PATH_ERRORS, fail, run_reporting

PROG = "procvision serve"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--memory", type=str, required=True, help="memory directory to serve")
    p.add_argument("--backbone", type=str | None, default=None,
                   help="default: the backbone the memory records (its fingerprint must match)")  # fmt: skip
    p.add_argument("--host", type=str, default="127.0.0.1", help="interface to bind (loopback)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token-file", type=str | None, default=None,
                   help="file holding the bearer token that writes need; without it: read-only")  # fmt: skip
    p.add_argument("--device", type=str, default="auto", help="auto (cuda if present), cpu, cuda:N")
    p.add_argument("--max-upload-bytes", type=int, default=8 << 20, help="per image file")
    p.add_argument("--max-pixels", type=int, default=16_000_000, help="per image (bombs refused)")
    p.add_argument("--max-files", type=int, default=64, help="images per request")
    p.add_argument("--max-request-bytes", type=int, default=64 << 20, help="whole request body")
    p.add_argument("--batching", type=bool, default=True, help="micro-batch concurrent classify")
    p.add_argument("--max-batch", type=int, default=64, help="images per backbone forward")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="longest wait for a batch")
    p.add_argument("--privacy-dataset", type=str, nargs="+", default=None,
                   help="NAME=URI query sets that POST /privacy may name (never a client's path)")  # fmt: skip
    p.add_argument("--max-privacy-queries", type=int, default=10_000)
    p.add_argument("--write-wait", type=float, default=30.0,
                   help="seconds a write waits for another writer's lock before answering 409")  # fmt: skip
    p.add_argument("--allowed-hosts", type=str, nargs="+", default=None,
                   help="Host headers to answer (default: localhost, 127.0.0.1, ::1 and --host; '*': any)")  # fmt: skip
    p.add_argument("--threads", type=int | None, default=None,
                   help="CPU threads for torch and faiss (default: their own choice)")  # fmt: skip
    p.add_argument("--keep-alive", type=float, default=5.0,
                   help="seconds an idle keep-alive connection stays open")  # fmt: skip
    p.add_argument("--log-level", type=str, default="info")
    p.add_argument("--access-log", type=bool, default=True, help="log every request")
    return p


def read_token(path: str) -> str:
    """The bearer token in `path` (surrounding whitespace dropped); ValueError when unusable."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--token-file {path}: no such file; write a random token into it")
    token = p.read_text(encoding="utf-8").strip()
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ValueError(
            f"--token-file {path}: the token must be one word of at least 16 characters, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE`"
        )
    return token


def parse_datasets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, uri = item.partition("=")
        if not sep or not name.strip() or not uri.strip():
            raise ValueError(
                f"--privacy-dataset {item!r}: expected NAME=URI, e.g. fmnist=fashion_mnist:test"
            )
        out[name.strip()] = uri.strip()
    return out


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, given: list[str] | None) -> tuple[str, ...]:
    """Host names the service answers to: loopback names and the bound host, or `given`."""
    if given:
        return tuple(given)
    names = {"localhost", "127.0.0.1", "::1", "[::1]"}
    if host not in ("0.0.0.0", "::"):
        names.add(host)
    return tuple(sorted(names))


def set_threads(n: int | None) -> None:
    """Bound torch's and faiss's CPU threads (oversubscribed threads make latency erratic)."""
    if n is None:
        return
    if n < 1:
        raise ValueError(f"--threads must be >= 1, got {n}")
    import torch

    torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass


def build_app(cfg: Namespace):
    """(app, state) from parsed flags; user errors surface before anything binds."""
    from procvision.serve import MemoryState, ServeConfig, UploadLimits, create_app

    for name in ("max_upload_bytes", "max_pixels", "max_files", "max_request_bytes", "max_batch"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.batch_wait_ms < 0:
        raise ValueError(f"--batch-wait-ms must be >= 0, got {cfg.batch_wait_ms}")
    set_threads(cfg.threads)
    token = read_token(cfg.token_file) if cfg.token_file else None
    datasets = parse_datasets(cfg.privacy_dataset or [])
    state = MemoryState(cfg.memory, cfg.backbone, resolve_device(cfg.device), cfg.write_wait)
    config = ServeConfig(
        token=token,
        limits=UploadLimits(cfg.max_upload_bytes, cfg.max_pixels, cfg.max_files),
        max_request_bytes=cfg.max_request_bytes,
        batching=cfg.batching,
        max_batch=cfg.max_batch,
        max_wait_ms=cfg.batch_wait_ms,
        privacy_datasets=datasets,
        max_privacy_queries=cfg.max_privacy_queries,
        allowed_hosts=allowed_hosts(cfg.host, cfg.allowed_hosts),
    )
    return create_app(state, config), state


def _run(cfg: Namespace) -> int:
    import uvicorn

    if not 0 <= cfg.port <= 65535:
        return fail(PROG, f"--port must be 0..65535, got {cfg.port}")
    app, state = build_app(cfg)
    snap = state.snapshot()
    mode = (
        "read-only (no --token-file)" if cfg.token_file is None else "writes need the bearer token"
    )
    print(f"serving {state.directory} ({len(snap.memory)} items, content {snap.content_hash[:16]}…) "
          f"on http://{cfg.host}:{cfg.port}/ with {state.spec} on {state.device}; {mode}",
          flush=True)  # fmt: skip
    if not is_loopback(cfg.host):
        print(f"{PROG}: warning: --host {cfg.host} is reachable from the network; the service has "
              "no TLS: put it behind a TLS proxy", file=sys.stderr)  # fmt: skip
    uvicorn.run(
        app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, access_log=cfg.access_log,
        timeout_keep_alive=cfg.keep_alive,
    )  # fmt: skip
    return 0


def run(cfg: Namespace) -> int:
    return run_reporting(PROG, _run, cfg, extra=(*PATH_ERRORS, ValueError, KeyError))
