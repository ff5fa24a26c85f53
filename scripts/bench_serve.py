"""Benchmark `procvision serve` against the same work done in-process on `VisualMemory`.

For each memory size (default: Fashion-MNIST train embedded with a small random ViT = 60k real
items, and 1M random unit embeddings of the same width and fingerprint), a real `procvision serve`
process on 127.0.0.1 is classified by 1, 8 and 64 concurrent clients (one 28x28 PNG per request),
with and without micro-batching: latency p50/p99 and throughput. Beside it, in the same run, the
in-process chain (transform -> backbone -> `knn_predict`) on one image and on batches of 8 and 64,
so the service's overhead is a ratio. Then forget latency (one id) through the service and through
`procvision.memory.forget` on the directory (what `memory forget` does).

    python scripts/bench_serve.py [--sizes 60000 1000000] [--clients 1 8 64] [--seconds 3]
                                  [--forgets 2] [--work /tmp/procvision_bench_serve] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from procvision.cli import main as cli_main
from procvision.commands.serve import set_threads
from procvision.data.datasets import FashionMNIST
from procvision.eval.embed import embed_batch
from procvision.eval.recipe import memory_backbone, recipe_precision, transform_to_str
from procvision.memory import VisualMemory, forget, knn_predict

SPEC = "random:" + json.dumps(
    {"arch": "vit_tiny_patch16_224", "img_size": 28, "patch_size": 7, "depth": 2, "seed": 0},
    sort_keys=True,
    separators=(",", ":"),
)
TOKEN = "bench-token-0123456789abcdef"


def build_60k(work: Path) -> Path:
    out = work / "mem_60k"
    if not (out / "manifest.json").is_file():
        rc = cli_main(["memory", "build", "--backbone", SPEC, "--dataset", "fashion_mnist:train",
                       "--out", str(out), "--batch-size", "512", "--overwrite"])  # fmt: skip
        assert rc == 0
    return out


def build_random(work: Path, n: int, like: Path) -> Path:
    """n random unit rows with the fingerprint and recipe of the memory at `like`."""
    out = work / f"mem_{n}"
    if (out / "manifest.json").is_file():
        return out
    ref = VisualMemory.load(like)
    rng = np.random.default_rng(0)
    emb = np.empty((n, ref.dim), np.float32)
    for s in range(0, n, 1 << 17):
        emb[s : s + (1 << 17)] = rng.standard_normal((min(1 << 17, n - s), ref.dim), np.float32)
    labels = rng.integers(0, 10, n)
    last = ref.metadata_of([int(ref.ids.max())])[0]
    meta = [{"source": f"synthetic:{n}#{i}"} for i in range(n)]
    meta[-1] = {**meta[-1], "backbone": last["backbone"], "transform": last["transform"]}
    mem = VisualMemory(ref.dim, fingerprint=ref.fingerprint, class_names=ref.class_names)
    mem.add(emb, labels, metadata=meta)
    mem.save(out)
    return out


def query_pngs(count: int = 64) -> list[bytes]:
    ds = FashionMNIST(split="test")
    out = []
    for i in range(count):
        buf = io.BytesIO()
        Image.fromarray(ds.images[i]).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `procvision serve` subprocess on loopback."""

    def __init__(self, memory: Path, batching: bool, work: Path, threads: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        token = work / "token.txt"
        token.write_text(TOKEN)
        self.log = open(work / f"serve_{self.port}.log", "w")
        argv = [sys.executable, "-m", "procvision.cli", "serve", "--memory", str(memory),
                "--port", str(self.port), "--token-file", str(token), "--device", "cpu",
                "--batching", str(batching).lower(), "--access-log", "false",
                "--threads", str(threads), "--keep-alive", "300"]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        t0 = time.perf_counter()
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.perf_counter() - t0 > 600:
                raise RuntimeError(f"server did not start; see {self.log.name}")
            time.sleep(0.2)
        self.start_s = time.perf_counter() - t0

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


def classify_request(host: str, png: bytes) -> bytes:
    """A keep-alive HTTP/1.1 multipart POST /classify of one PNG, as raw bytes."""
    boundary = "procvisionbench"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"q.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
    head = (f"POST /classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; "
            f"boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    return head + body


async def _roundtrip(reader, writer, request: bytes) -> int:
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def load(url: str, clients: int, seconds: float, pngs: list[bytes]) -> dict:
    """`clients` concurrent keep-alive connections, each sending one-image classify requests
    back to back for `seconds` (a minimal raw HTTP/1.1 client, so that the client's own cost
    stays small beside the server's; connections are opened and warmed up before the clock)."""
    host = url.split("//", 1)[1]
    name, port = host.rsplit(":", 1)
    requests = [classify_request(host, p) for p in pngs]
    conns = [await asyncio.open_connection(name, int(port)) for _ in range(clients)]
    latencies: list[float] = []
    errors = 0
    try:
        await asyncio.gather(*(_roundtrip(r, w, requests[0]) for r, w in conns))
        stop = time.perf_counter() + seconds

        async def client(c: int) -> None:
            nonlocal errors
            reader, writer = conns[c]
            i = c
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    errors += await _roundtrip(reader, writer, requests[i % len(requests)]) != 200
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    reader, writer = await asyncio.open_connection(name, int(port))
                latencies.append(time.perf_counter() - t)
                i += clients

        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        wall = time.perf_counter() - t0
    finally:
        for _, w in conns:
            w.close()
    lat = np.asarray(latencies)
    return {
        "clients": clients,
        "requests": int(len(lat)),
        "errors": int(errors),
        "p50_ms": float(np.percentile(lat, 50) * 1000),
        "p99_ms": float(np.percentile(lat, 99) * 1000),
        "throughput_rps": float(len(lat) / wall),
    }


def in_process(memory: Path, pngs: list[bytes], batches: list[int], seconds: float) -> dict:
    """The same chain without HTTP: decode -> transform -> backbone -> knn_predict."""
    mem = VisualMemory.load(memory)
    backbone, _spec, transform = memory_backbone(mem, None, "cpu")
    fp = backbone.fingerprint()
    precision = recipe_precision(mem)  # embed as the service does: in the memory's recipe
    out = {}
    for b in batches:
        times = []
        stop = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < stop or not times:
            t = time.perf_counter()
            imgs = [
                Image.open(io.BytesIO(pngs[(i + j) % len(pngs)])).convert("RGB") for j in range(b)
            ]
            x = torch.stack([transform(im) for im in imgs])
            with torch.inference_mode():
                q = embed_batch(backbone, x, "cls", precision).numpy()
            knn_predict(mem, q, 20, "weighted", 0.07, fingerprint=fp)
            times.append(time.perf_counter() - t)
            i += b
        lat = np.asarray(times)
        out[b] = {"batch": b, "p50_ms": float(np.percentile(lat, 50) * 1000),
                  "images_per_s": float(b * len(lat) / lat.sum())}  # fmt: skip
    return out


def forget_latency(memory: Path, work: Path, count: int, threads: int) -> dict:
    """One-id forgets through the service (DELETE) and through `forget` on the directory."""
    server = Server(memory, True, work, threads)
    service = []
    try:
        with httpx.Client(
            base_url=server.url, timeout=900, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as c:
            for i in range(count):
                t = time.perf_counter()
                r = c.delete(f"/items/{10 + i}", params={"reason": "bench"})
                service.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
            t = time.perf_counter()
            r = c.post("/classify", files=[("files", ("q.png", query_pngs(1)[0], "image/png"))])
            first_read_after = time.perf_counter() - t
    finally:
        server.close()
    lib = []
    for i in range(count):
        t = time.perf_counter()
        forget(memory, ids=[100 + i], reason="bench")
        lib.append(time.perf_counter() - t)
    return {"service_s": service, "in_process_s": lib, "classify_after_forget_s": first_read_after,
            "server_start_s": server.start_s}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[60_000, 1_000_000])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--forgets", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("/tmp/procvision_bench_serve"))
    p.add_argument("--keep", action="store_true", help="keep the memories in --work")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument(
        "--threads", type=int, default=1, help="torch/faiss threads, service and in-process"
    )
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    set_threads(args.threads)
    pngs = query_pngs()
    t0 = time.perf_counter()
    base = build_60k(args.work)
    print(
        f"60k Fashion-MNIST memory ready ({time.perf_counter() - t0:.1f} s) with {SPEC}", flush=True
    )
    results: dict = {"spec": SPEC, "transform": transform_to_str(memory_backbone(
        VisualMemory.load(base), None, "cpu")[2]), "cpu_count": os.cpu_count(), "threads": args.threads, "sizes": {}}  # fmt: skip
    for n in args.sizes:
        memory = base if n == 60_000 else build_random(args.work, n, base)
        row: dict = {
            "service": {},
            "in_process": in_process(memory, pngs, sorted(set([1] + args.clients)), args.seconds),
        }
        for batching in (True, False):
            server = Server(memory, batching, args.work, args.threads)
            try:
                runs = [asyncio.run(load(server.url, c, args.seconds, pngs)) for c in args.clients]
                stats = httpx.get(server.url + "/health").json()["batching"]
            finally:
                server.close()
            row["service"]["batched" if batching else "unbatched"] = {
                "runs": runs,
                "server_start_s": server.start_s,
                "batcher": stats,
            }
            for r in runs:
                print(f"n={n} batching={batching} clients={r['clients']}: p50 {r['p50_ms']:.1f} ms, "
                      f"p99 {r['p99_ms']:.1f} ms, {r['throughput_rps']:.1f} req/s, errors {r['errors']}",
                      flush=True)  # fmt: skip
        if n == max(args.sizes) and args.forgets:
            work_copy = args.work / f"forget_{n}"
            shutil.rmtree(work_copy, ignore_errors=True)
            shutil.copytree(memory, work_copy)
            row["forget"] = forget_latency(work_copy, args.work, args.forgets, args.threads)
            shutil.rmtree(work_copy, ignore_errors=True)
            print(f"n={n} forget: service {row['forget']['service_s']} s, in-process "
                  f"{row['forget']['in_process_s']} s", flush=True)  # fmt: skip
        for b, r in row["in_process"].items():
            print(
                f"n={n} in-process batch {b}: p50 {r['p50_ms']:.1f} ms, {r['images_per_s']:.1f} images/s"
            )
        results["sizes"][n] = row
    results["total_s"] = time.perf_counter() - t0
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    return 0


def markdown(res: dict) -> str:
    lines = ["| items | clients | batching | p50 ms | p99 ms | req/s | in-process req/s (batch = clients) | ratio |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for n, row in res["sizes"].items():
        for mode, svc in row["service"].items():
            for r in svc["runs"]:
                ref = row["in_process"][r["clients"]]["images_per_s"]
                lines.append(f"| {int(n):,} | {r['clients']} | {mode} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                             f"{r['throughput_rps']:.1f} | {ref:.1f} | {r['throughput_rps'] / ref:.2f} |")  # fmt: skip
    for n, row in res["sizes"].items():
        if "forget" in row:
            f = row["forget"]
            lines.append(f"\nforget one id at {int(n):,} items: service {', '.join(f'{s:.1f}' for s in f['service_s'])} s; "
                         f"in-process `forget(directory)` {', '.join(f'{s:.1f}' for s in f['in_process_s'])} s")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
