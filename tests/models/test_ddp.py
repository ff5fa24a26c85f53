"""2-process DDP on gloo (CPU) through `procvision fit`: one centre, disjoint images per rank."""

import json
import os
import subprocess
import sys

from tests.test_cli_fit import QUIET, ROOT, STAND_IN, TINY_MODEL


def test_ddp_two_processes_on_gloo(tmp_path):
    out = tmp_path / "ranks"
    out.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "procvision.cli",
        "fit",
        "--config",
        str(ROOT / "configs/demo.yaml"),
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        f"--trainer.default_root_dir={tmp_path}",
        *TINY_MODEL,
        *QUIET,
        *STAND_IN,
        "--data.init_args.batch_size=2",
        "--data.init_args.samples_per_epoch=8",
        "--data.init_args.render_size=32",
        "--trainer.max_epochs=1",
        "--trainer.callbacks+=tests.models.stand_in.RecordRanks",
        f"--trainer.callbacks.out_dir={out}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((out / "rank0.json").read_text())
    r1 = json.loads((out / "rank1.json").read_text())
    assert r0["world_size"] == r1["world_size"] == 2
    assert len(r0["indices"]) == len(r1["indices"]) == 2  # 8 samples / (2 ranks x 2)
    ids0 = {i for step in r0["indices"] for i in step}
    ids1 = {i for step in r1["indices"] for i in step}
    assert len(ids0) == len(ids1) == 4 and not ids0 & ids1  # each rank its own images
    assert r0["center"] == r1["center"] and any(c != 0 for c in r0["center"])  # all-reduced centre
    assert r0["teacher_sum"] == r1["teacher_sum"]
