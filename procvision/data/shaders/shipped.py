"""Valid-program lists shipped with the package, so nobody waits for the default pool's filter.

Filtering the default pool (seed 0, 21,083 programs, every family) costs minutes of CPU; its
result is a fixed function of the rendering code, so it ships as the list of *rejected* ids (small)
in `shipped_valid.json`, keyed like the file cache. A test re-filters a random sample of programs
and checks it against this list; `python -m procvision.data.shaders.shipped` regenerates it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from procvision.atomic import write_text_atomic
from procvision.constants import SHADERS21K_POOL_SIZE

SHIPPED = Path(__file__).with_name("shipped_valid.json")


def _key(version: int, size: int, seed: int, pool_size: int, fams: tuple[str, ...]) -> str:
    return f"v{version}_s{size}_seed{seed}_pool{pool_size}_{','.join(fams)}"


def shipped_valid(
    version: int, size: int, seed: int, pool_size: int, fams: tuple[str, ...]
) -> torch.Tensor | None:
    """Sorted int64 valid ids for this exact filter key, or None if none ships."""
    try:
        table = json.loads(SHIPPED.read_text())
    except (OSError, ValueError):
        return None
    rejected = table.get(_key(version, size, seed, pool_size, fams))
    if rejected is None:
        return None
    keep = torch.ones(pool_size, dtype=torch.bool)
    keep[torch.as_tensor(rejected, dtype=torch.int64)] = False
    return torch.arange(pool_size, dtype=torch.int64)[keep]


def write_shipped(seed: int = 0, pool_size: int = SHADERS21K_POOL_SIZE) -> Path:
    """Recompute the default pool's valid set (no caches) and store it in `shipped_valid.json`."""
    from procvision.data.shaders.core import resolve_families
    from procvision.data.shaders.filter import FILTER_SIZE, FILTER_VERSION, valid_programs

    fams = resolve_families(None)
    valid = valid_programs(seed, pool_size, None, file_cache=False, shipped=False)
    keep = torch.zeros(pool_size, dtype=torch.bool)
    keep[valid] = True
    rejected = torch.arange(pool_size)[~keep].tolist()
    table = {_key(FILTER_VERSION, FILTER_SIZE, seed, pool_size, fams): rejected}
    return write_text_atomic(SHIPPED, json.dumps(table))


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(write_shipped())
