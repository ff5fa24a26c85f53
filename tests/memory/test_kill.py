"""A real `kill -9` of a writer at random points: the memory is exactly the old or the new state."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

from procvision.memory import build_memory, read_memory, update_memory

CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from procvision.memory import forget, update_memory

    path, log, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(seed)

    def note(kind, mem):
        with open(log, "a") as f:
            f.write(f"{kind} {mem.content_hash()}\\n")
            f.flush()
            os.fsync(f.fileno())

    def add(mem):
        mem.add(rng.normal(size=(200, 64)), rng.integers(0, 5, 200))
        note("intent", mem)

    def drop(mem):
        forget(mem, ids=rng.choice(mem.ids, 50, replace=False), reason="kill test")
        note("intent", mem)

    print("ready", flush=True)
    while True:
        mem = update_memory(path, add if rng.random() < 0.5 else drop, wait=30)
        with open(log, "a") as f:
            f.write("done\\n")
            f.flush()
            os.fsync(f.fileno())
    """
)


def _allowed(log_text: str, initial: str) -> set[str]:
    """The last committed hash and, if a save was under way, the one it was writing."""
    committed, intent = initial, None
    for line in log_text.splitlines():
        if line.startswith("intent "):
            intent = line.split()[1]
        elif line == "done":
            committed, intent = intent or committed, None
    return {committed} | ({intent} if intent else set())


def test_kill_9_during_add_and_forget(tmp_path):
    x = np.random.default_rng(0).normal(size=(20_000, 64))
    mem = build_memory(x, np.arange(20_000) % 5, engine="torch")
    path = mem.save(tmp_path / "mem")
    state = mem.content_hash()
    rng = random.Random(5)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    kills = 0
    for round_ in range(5):
        log = tmp_path / f"log{round_}"
        log.write_text("")
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(log), str(round_)],
            stdout=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 1.0))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        kills += child.returncode == -signal.SIGKILL
        allowed = _allowed(log.read_text(), state)
        back = read_memory(path)  # a reader, right after the kill: never repairs anything
        assert back.content_hash() in allowed, f"round {round_}: neither the old nor the new state"
        state = back.content_hash()
    assert kills == 5
    # the next writer puts back anything a kill left half-swapped and clears dead leftovers
    update_memory(path, lambda m: None)
    assert read_memory(path).content_hash() == state
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".mem")) == [".mem.lock"]
