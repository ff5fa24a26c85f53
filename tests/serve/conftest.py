"""A tiny memory (three colour classes, ImageFolder sources, a random exported backbone) per test."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="procvision serve needs the extra: pip install -e '.[serve]'")

from procvision.cli import main
from procvision.models import export_backbone, random_backbone
from tests.fixtures_real import CLASS_COLOURS, TINY_BACKBONE, coloured_image, make_image_folder

TOKEN = "test-token-0123456789abcdef"


def png_bytes(colour: tuple[int, int, int], seed: int, size: int = 20) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(coloured_image(colour, seed, size)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve_template")
    fold = make_image_folder(root / "fold", per_class=4, odd_modes=False)
    export = root / "export"
    export_backbone(random_backbone(seed=3, **TINY_BACKBONE), export)
    mem = root / "mem"
    rc = main(["memory", "build", "--backbone", str(export), "--dataset", f"imagefolder:{fold}",
               "--out", str(mem), "--batch-size", "16"])  # fmt: skip
    assert rc == 0
    token = root / "token.txt"
    token.write_text(TOKEN + "\n")
    return {"root": root, "fold": fold, "export": export, "mem": mem, "token": token}


@pytest.fixture
def memdir(template: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the template memory (writes do not leak between tests)."""
    dst = tmp_path / "mem"
    shutil.copytree(template["mem"], dst)
    return dst


def query_png(name: str = "red", seed: int = 7) -> bytes:
    return png_bytes(CLASS_COLOURS[name], seed)


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def rng_bytes(n: int) -> bytes:
    return np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.fixture
def make_client(memdir: Path):
    """make_client(**ServeConfig fields) -> a TestClient over a fresh MemoryState of `memdir`."""
    from fastapi.testclient import TestClient

    from procvision.serve import MemoryState, ServeConfig, create_app

    clients = []

    def make(directory: Path | None = None, **kwargs):
        kwargs.setdefault("token", TOKEN)
        state = MemoryState(directory or memdir)
        client = TestClient(create_app(state, ServeConfig(**kwargs)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def files(*items: tuple[str, bytes, str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", it) for it in items]
