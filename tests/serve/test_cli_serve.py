"""`procvision serve`: one-line errors before binding, and a real server process on loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from procvision.cli import main
from procvision.models import export_backbone, random_backbone
from tests.fixtures_real import TINY_BACKBONE
from tests.serve.conftest import TOKEN, auth


def run(capsys, *argv: str) -> tuple[int, str]:
    rc = main(["serve", *argv])
    return rc, capsys.readouterr().err


def test_bad_inputs_are_one_line_errors(capsys, memdir, tmp_path: Path) -> None:
    rc, err = run(capsys, "--memory", str(tmp_path / "nope"))
    assert rc == 2 and err.count("\n") == 1 and "procvision serve: error:" in err and "nope" in err
    short = tmp_path / "short.txt"
    short.write_text("abc\n")
    rc, err = run(capsys, "--memory", str(memdir), "--token-file", str(short))
    assert rc == 2 and "at least 16 characters" in err
    rc, err = run(capsys, "--memory", str(memdir), "--token-file", str(tmp_path / "missing.txt"))
    assert rc == 2 and "missing.txt" in err
    rc, err = run(capsys, "--memory", str(memdir), "--privacy-dataset", "oops")
    assert rc == 2 and "NAME=URI" in err
    rc, err = run(capsys, "--memory", str(memdir), "--max-pixels", "0")
    assert rc == 2 and "--max-pixels" in err
    rc, err = run(capsys, "--memory", str(memdir), "--port", "70000")
    assert rc == 2 and "--port" in err


def test_another_backbone_is_refused(capsys, memdir, tmp_path: Path) -> None:
    other = tmp_path / "other"
    export_backbone(random_backbone(seed=99, **TINY_BACKBONE), other)
    rc, err = run(capsys, "--memory", str(memdir), "--backbone", str(other))
    assert rc == 2 and "fingerprint" in err and err.count("\n") == 1


@pytest.mark.parametrize("with_token", [True, False])
def test_serve_process_on_loopback(memdir, template, with_token: bool) -> None:
    argv = [sys.executable, "-m", "procvision.cli", "serve", "--memory", str(memdir), "--port", "0",
            "--device", "auto"]  # fmt: skip
    if with_token:
        argv += ["--token-file", str(template["token"])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        url, lines = None, []
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
            url = m.group(1) if m else None
        assert url, "".join(lines)
        assert "read-only" in lines[0] if not with_token else "bearer token" in lines[0]
        with httpx.Client(base_url=url, timeout=30) as c:
            h = c.get("/health").json()
            assert (
                h["count"] == 12
                and h["read_only"] is (not with_token)
                and h["device"] in ("cpu", "cuda")
            )
            r = c.delete("/items/0", headers=auth())
            assert r.status_code == (200 if with_token else 403)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert TOKEN not in "".join(lines)


def test_built_app_answers_loopback_hosts_only(memdir, template) -> None:
    from fastapi.testclient import TestClient

    from procvision.commands.serve import build_app, build_parser

    cfg = build_parser().parse_args(["--memory", str(memdir), "--token-file", str(template["token"]),
                                     "--device", "cpu", "--threads", "1"])  # fmt: skip
    app, state = build_app(cfg)
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/health").json()["count"] == 12
        assert c.get("/health", headers={"Host": "localhost:8000"}).status_code == 200
        r = c.get("/items", headers={"Host": "attacker.example"})
        assert r.status_code == 400 and "not served" in r.json()["detail"]
        assert c.delete("/items/3", headers=auth()).status_code == 200  # the token file works
    open_cfg = build_parser().parse_args(["--memory", str(memdir), "--allowed-hosts", "*"])
    with TestClient(build_app(open_cfg)[0]) as c:
        assert c.get("/health").json()["read_only"] is True
