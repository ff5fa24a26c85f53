"""MemoryState: snapshots, reloads after outside writes, reads during a write, the recipe."""

from __future__ import annotations

import threading
import time

import numpy as np
import torch

from procvision.eval.embed import embed_batch
from procvision.memory import VisualMemory
from procvision.serve.state import MemoryState, recipe_precision, vote_defaults


def test_reads_are_answered_from_the_old_snapshot_during_a_slow_write(memdir) -> None:
    state = MemoryState(memdir)
    started = threading.Event()

    def slow_remove(mem: VisualMemory) -> None:
        started.set()
        time.sleep(1.0)
        mem.remove([0])

    writer = threading.Thread(target=state._write, args=(slow_remove,))
    writer.start()
    assert started.wait(10)
    t = time.perf_counter()
    snap = state.snapshot()
    assert time.perf_counter() - t < 0.5 and 0 in snap.memory.ids  # not blocked, old state
    writer.join()
    after = state.snapshot()
    assert 0 not in after.memory.ids and len(after.memory) == 11
    assert state.reloads == 0  # the written memory was published, not read back from disk
    assert after.content_hash == VisualMemory.load(memdir).content_hash()


def test_an_outside_write_is_reloaded_before_the_next_answer(memdir) -> None:
    state = MemoryState(memdir)
    first = state.snapshot()
    assert state.snapshot() is first  # unchanged disk: the same snapshot, no reload
    mem = VisualMemory.load(memdir)
    mem.remove([5, 6])
    mem.save(memdir)
    snap = state.snapshot()
    assert snap is not first and state.reloads == 1
    assert not np.isin([5, 6], snap.memory.ids).any() and snap.manifest_hash != first.manifest_hash
    assert first.memory.ids.tolist() == list(range(12))  # a published snapshot never changes


def test_vote_backbone_and_precision_come_from_the_memory_recipe(memdir) -> None:
    mem = VisualMemory.load(memdir)
    assert vote_defaults(mem) == {"k": 20, "method": "weighted", "T": 0.07}
    recipe = dict(mem.recipe)
    recipe["vote"] = {"k": 5, "method": "rank", "T": 0.1}
    recipe["features"] = {"kind": "cls", "precision": "bf16"}
    mem.set_recipe(recipe)
    mem.remove(mem.ids.tolist())  # the recipe survives emptying the memory
    mem.save(memdir)
    emptied = VisualMemory.load(memdir)
    assert vote_defaults(emptied) == {"k": 5, "method": "rank", "T": 0.1}
    assert recipe_precision(emptied) == "bf16"
    state = MemoryState(memdir)  # an empty memory: the backbone comes from the recipe
    assert state.spec == recipe["backbone"]["spec"] and state.precision == "bf16"
    assert state.health()["precision"] == "bf16" and state.health()["count"] == 0
    x = torch.rand(
        2, 3, state.transform.size, state.transform.size, generator=torch.Generator().manual_seed(0)
    )
    q = state.embed(x)
    with torch.inference_mode():
        bf16 = embed_batch(state.backbone, x, "cls", "bf16").numpy()
        fp32 = embed_batch(state.backbone, x, "cls", "fp32").numpy()
    assert q.dtype == np.float32 and np.array_equal(q, bf16) and not np.array_equal(q, fp32)
