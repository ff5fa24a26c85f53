"""Search engines and the canonical similarity that makes every engine give identical results.

An engine only proposes *candidate* rows (fast, float32, engine-specific rounding). The memory then
re-scores the candidates with `canonical_sims`, a fixed-order float64 dot product rounded to float32,
so a similarity depends only on the two vectors: not on the engine, the BLAS library, the query
batch, or the row's position in the memory. That is what makes faiss == torch, removal ==
never-added, and the exact leave-one-out audit == brute force hold bit for bit.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Protocol

import numpy as np
import torch

from procvision.memory.errors import InvalidArgument, VisualMemoryError

ENGINES = ("auto", "faiss", "torch", "ivf")


def has_faiss() -> bool:
    """True when `faiss` can be imported."""
    return importlib.util.find_spec("faiss") is not None


def to_numpy(x: Any, name: str) -> np.ndarray:
    """A numpy view or copy of a torch tensor, numpy array or nested list."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    try:
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001 - re-raised with the input's name
        raise TypeError(f"{name}: expected a tensor or array, got {type(x).__name__}") from e


def _tree_sum(parts: np.ndarray) -> np.ndarray:
    """Sum over the last axis by a fixed pairwise tree of elementwise adds: [..., D] -> [...].

    Each add is one correctly rounded IEEE operation, so the result depends only on D and the
    values, never on numpy's reduction kernels, the array layout or the other rows. Overwrites
    `parts` (float64).
    """
    n = parts.shape[-1]
    if n == 0:
        return np.zeros(parts.shape[:-1], parts.dtype)
    while n > 1:
        h = n // 2
        parts[..., :h] += parts[..., h : 2 * h]
        if n % 2:
            parts[..., h] = parts[..., n - 1]
            n = h + 1
        else:
            n = h
    return parts[..., 0].copy()


def normalize_rows(x: Any, dim: int, name: str = "embeddings") -> np.ndarray:
    """L2-normalise rows deterministically.

    Args:
        x: [N, dim] (or [dim]) tensor or array, finite, no zero rows.
        dim: expected width.
        name: used in error messages.
    Returns:
        float32 C-contiguous [N, dim]: row / ||row|| computed in float64 (per-row, order-fixed).
    """
    a = to_numpy(x, name)
    if a.ndim == 1 and a.shape[0] == dim:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != dim:
        raise ValueError(f"{name}: expected shape [N, {dim}], got {list(a.shape)}")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise TypeError(f"{name}: expected real numbers, got dtype {a.dtype}")
    out = np.empty(a.shape, np.float32)
    step = max(1, (4 << 20) // (8 * max(dim, 1)))  # ~4 MiB float64 blocks: cache-sized temporaries
    for s in range(0, a.shape[0], step):
        a64 = a[s : s + step].astype(np.float64)
        norms = np.sqrt(_tree_sum(a64 * a64))  # NaN/inf anywhere in a row make its norm non-finite
        bad = ~np.isfinite(norms) | (norms == 0)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            what = (
                "is all zeros and cannot be L2-normalised"
                if norms[r] == 0
                else "contains NaN or inf (or values too large to normalise)"
            )
            raise ValueError(f"{name}: row {s + r} {what}; embed that item again")
        a64 /= norms[:, None]
        out[s : s + step] = a64
    return out


def canonical_sims(queries: np.ndarray, rows: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """Exact-order cosine similarities of each query with its candidate rows.

    Args:
        queries: float32 [Q, D], unit rows.
        rows: int64 [Q, K] row indices into emb; -1 = no candidate.
        emb: float32 [N, D], unit rows.
    Returns:
        float32 [Q, K]: float64 products (exact for float32 inputs) summed by a fixed pairwise
        tree, rounded once to float32; -inf where rows == -1.
    """
    q, k = rows.shape
    out = np.empty((q, k), np.float32)
    step = max(1, (2 << 20) // max(1, k * emb.shape[1] * 8))  # ~2 MiB blocks stay in cache
    for s in range(0, q, step):
        prod = emb[np.maximum(rows[s : s + step], 0)].astype(np.float64)  # [B, K, D]
        prod *= queries[s : s + step].astype(np.float64)[:, None, :]
        out[s : s + step] = _tree_sum(prod)
    out[rows < 0] = -np.inf
    return out


def approx_error_bound(dim: int, tf32: bool = False) -> float:
    """Bound on |engine float32 similarity - canonical similarity| for unit vectors of width dim.

    Recursive or blocked float32 summation errs by at most dim * 2^-24 * sum|x_i y_i| <= dim * 2^-24
    (Cauchy-Schwarz); we double it for slack and for the float32 rounding of both sides. TF32
    matmuls (CUDA with reduced precision allowed) round inputs to 10 mantissa bits: about 2^-9.
    """
    bound = (dim + 4) * 2.0**-23
    return bound + (2.0**-8 if tf32 else 0.0)


class Engine(Protocol):
    """Proposes candidate rows; the memory re-scores them canonically."""

    name: str
    exact: bool

    def candidates(
        self, emb: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by the engine's own similarity: (rows int64 [Q, k], -1 = none; sims float32)."""
        ...

    def error_bound(self, dim: int) -> float:
        """Max |engine sim - canonical sim|."""
        ...

    def on_add(self, emb_new: np.ndarray, ids_new: np.ndarray) -> None: ...

    def on_remove(self, ids_removed: np.ndarray) -> None: ...

    def invalidate(self) -> None: ...


def numpy_topk(queries: np.ndarray, emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows by float32 matmul: (rows int64 [Q, k], sims float32 [Q, k]), sims descending."""
    sims = queries @ emb.T
    if k < sims.shape[1]:
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(sims.shape[1]), sims.shape).copy()
    vals = np.take_along_axis(sims, part, 1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, 1).astype(np.int64), np.take_along_axis(vals, order, 1)


class FaissFlatEngine:
    """Exact brute-force inner product with faiss BLAS kernels (`faiss.knn`) over the memory's rows.

    Equivalent to `IndexIDMap2(IndexFlatIP)`: the memory's own arrays hold the external ids, so no
    second copy of the embeddings is kept and removal is the memory's ordered compaction.
    """

    name = "faiss"
    exact = True
    # Below this many multiply-adds a numpy matmul is used: faiss' OpenMP start-up costs ~10 ms per
    # call on a busy 2-core machine, and candidates are re-scored canonically either way.
    small_work: int = 1 << 22

    def candidates(
        self, emb: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if queries.shape[0] * emb.shape[0] * emb.shape[1] < self.small_work:
            return numpy_topk(queries, emb, k)
        import faiss

        sims, rows = faiss.knn(queries, emb, k, metric=faiss.METRIC_INNER_PRODUCT)
        return rows.astype(np.int64, copy=False), sims

    def error_bound(self, dim: int) -> float:
        return approx_error_bound(dim)

    def on_add(self, emb_new: np.ndarray, ids_new: np.ndarray) -> None:
        pass

    def on_remove(self, ids_removed: np.ndarray) -> None:
        pass

    def invalidate(self) -> None:
        pass


class TorchEngine:
    """Exact matmul + topk in torch, on CPU (zero-copy view of the rows) or on a device."""

    name = "torch"
    exact = True

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device or "cpu")
        self._cache: tuple[int, torch.Tensor] | None = None  # (id of source buffer state, tensor)
        self._stamp = 0

    def _bank(self, emb: np.ndarray) -> torch.Tensor:
        if self.device.type == "cpu":
            return torch.from_numpy(emb)
        if self._cache is None or self._cache[0] != self._stamp:
            self._cache = (self._stamp, torch.from_numpy(emb).to(self.device))
        return self._cache[1]

    def candidates(
        self, emb: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        bank = self._bank(emb)
        q = torch.from_numpy(queries).to(self.device)
        vals, rows = torch.topk(q @ bank.T, k, dim=1, largest=True, sorted=True)
        return rows.cpu().numpy().astype(np.int64), vals.float().cpu().numpy()

    def error_bound(self, dim: int) -> float:
        tf32 = self.device.type == "cuda" and (
            torch.backends.cuda.matmul.allow_tf32
            or torch.get_float32_matmul_precision() != "highest"
        )
        return approx_error_bound(dim, tf32=tf32)

    def on_add(self, emb_new: np.ndarray, ids_new: np.ndarray) -> None:
        self.invalidate()

    def on_remove(self, ids_removed: np.ndarray) -> None:
        self.invalidate()

    def invalidate(self) -> None:
        self._stamp += 1
        self._cache = None


class IVFEngine:
    """Approximate search: faiss `IndexIVFFlat` (inner product) with a Hashtable direct map.

    Ids are the memory's external ids (`add_with_ids`, never wrapped in IndexIDMap: faiss issues
    #1643, #4535). Removal is O(1) per id. The coarse quantiser is trained lazily on the memory's
    own rows (`quantizer_source = "memory"`) unless `train` was given outside data (e.g. procedural
    embeddings, `"external"`), which leaves no trace of real items in the centroids.
    """

    name = "ivf"
    exact = False

    def __init__(self, dim: int, nlist: int | None = None, nprobe: int = 16) -> None:
        self.dim = dim
        self.nlist = nlist
        self.nprobe = nprobe
        self.index: Any = None
        self.quantizer_source: str | None = None

    def train(self, x: np.ndarray, source: str) -> None:
        """(Re)build an empty trained index from unit rows x [M, D]."""
        import faiss

        nlist = self.nlist or max(1, int(4 * np.sqrt(len(x))))
        if len(x) < nlist:
            raise ValueError(
                f"ivf: need at least nlist={nlist} training rows, got {len(x)}; "
                "lower ivf_nlist or add more items before searching"
            )
        index = faiss.IndexIVFFlat(
            faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.seed = 1234
        index.train(x)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        self.index, self.nlist, self.quantizer_source = index, nlist, source

    def ensure(self, emb: np.ndarray, ids: np.ndarray) -> None:
        """Train on the memory's rows and fill the index if none exists yet."""
        if self.index is None:
            self.train(emb, "memory")
            self.index.add_with_ids(emb, ids)

    def candidates(
        self, emb: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        self.ensure(emb, ids)
        self.index.nprobe = min(self.nprobe, self.index.nlist)
        sims, found = self.index.search(queries, k)
        return found.astype(np.int64), sims  # external ids; the memory maps them to rows

    def error_bound(self, dim: int) -> float:
        return approx_error_bound(dim)

    def on_add(self, emb_new: np.ndarray, ids_new: np.ndarray) -> None:
        if self.index is not None:
            self.index.add_with_ids(emb_new, ids_new)

    def on_remove(self, ids_removed: np.ndarray) -> None:
        import faiss

        if self.index is not None and len(ids_removed):
            self.index.remove_ids(
                faiss.IDSelectorArray(np.ascontiguousarray(ids_removed, np.int64))
            )

    def invalidate(self) -> None:
        """Drop the index (and its centroids); it is retrained on the next search."""
        self.index, self.quantizer_source = None, None


def make_engine(
    name: str, dim: int, ivf_nlist: int | None = None, device: str | None = None
) -> FaissFlatEngine | TorchEngine | IVFEngine:
    """Build an engine by name; "auto" is faiss when importable, else torch."""
    if name not in ENGINES:
        raise InvalidArgument(f"--engine: expected one of {', '.join(ENGINES)}, got {name!r}")
    if name == "auto":
        name = "faiss" if has_faiss() and device in (None, "cpu") else "torch"
    if name in ("faiss", "ivf") and not has_faiss():
        raise VisualMemoryError(
            f"engine={name!r} needs faiss: pip install faiss-cpu, or use --engine torch"
        )
    if name == "faiss":
        return FaissFlatEngine()
    if name == "torch":
        return TorchEngine(device)
    return IVFEngine(dim, ivf_nlist)
