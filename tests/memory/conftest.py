"""Small shared builders for the memory tests."""

from __future__ import annotations

import numpy as np
import pytest

from procvision.memory import VisualMemory


def make_memory(n: int = 40, dim: int = 8, classes: int = 3, seed: int = 0, engine: str = "faiss"):
    """A memory of n random items with labels in range(classes); returns (memory, raw x, labels)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = rng.integers(0, classes, n)
    mem = VisualMemory(dim, engine=engine)
    mem.add(x, y)
    return mem, x, y


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
