"""MemoryState: snapshots, reloads after outside writes, reads during a write, the recipe."""

from __future__ import annotations

import threading
import time

import numpy as np

from procvision.memory import VisualMemory
from procvision.serve.state import MemoryState, recipe_backbone_spec, vote_defaults


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


def test_recipe_fields_and_defaults() -> None:
    assert vote_defaults({}) == {"k": 20, "method": "weighted", "T": 0.07}
    assert vote_defaults({"recipe": {"vote": {"k": 5, "method": "rank", "T": 0.1}}}) == {
        "k": 5, "method": "rank", "T": 0.1}  # fmt: skip
    assert vote_defaults({"recipe": {"k": 0, "method": "nope", "T": -1}})["k"] == 20
    assert (
        recipe_backbone_spec({"recipe": {"backbone": {"path": "/m/export", "fingerprint": "ab"}}})
        == "/m/export"
    )
    assert recipe_backbone_spec({"recipe": {"backbone": "random:vit"}}) == "random:vit"
    assert recipe_backbone_spec({}) is None
