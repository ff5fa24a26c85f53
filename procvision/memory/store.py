"""`VisualMemory`: L2-normalised embeddings with int64 ids, integer labels and metadata, searched k-NN.

Rows are kept in insertion order and removal compacts them in order, so a memory from which items
were removed holds exactly the arrays of one that never held them. Search results are a pure function
of (query, memory content): engines propose candidates, `canonical_sims` scores them, and results are
ordered by (similarity desc, id asc). The memory knows no backbone, only its fingerprint string.

Ids are never reused: `next_id` is one more than the largest id the memory ever held (persisted,
checksummed, but not part of the content hash), and every new id must be at least `next_id`.
Persistence goes through `_to_state` / `_from_state` (a `state.MemoryState`); `persist` turns
states into files and does not import this module.
"""

from __future__ import annotations

import copy
import ctypes
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from procvision.memory import persist
from procvision.memory.errors import (
    CorruptMemory,
    FingerprintMismatch,
    InvalidArgument,
    UnknownIds,
)
from procvision.memory.index import (
    IVFEngine,
    TorchEngine,
    canonical_sims,
    has_faiss,
    make_engine,
    normalize_rows,
    to_numpy,
)
from procvision.memory.state import MemoryState, canonical_json, content_hash

_ID_PAD = np.iinfo(np.int64).max  # sorts padding after every real id


def as_int64(x: Any, name: str, n: int | None = None) -> np.ndarray:
    """Flatten to int64 [n], accepting integer arrays or floats that hold whole numbers."""
    a = to_numpy(x, name).reshape(-1)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise TypeError(f"{name}: expected integers, got dtype {a.dtype}")
    if not np.issubdtype(a.dtype, np.integer):
        if not (np.isfinite(a).all() and (a == np.round(a)).all()):
            raise TypeError(f"{name}: expected whole numbers, got non-integral values")
    a = a.astype(np.int64)
    if n is not None and a.shape[0] != n:
        raise InvalidArgument(f"{name}: expected {n} values (one per embedding), got {a.shape[0]}")
    return a


def _memmove_rows(buf: np.ndarray, dst: int, src: int, count: int) -> None:
    """Move `count` leading-axis rows of a C-contiguous buffer from src to dst (overlap-safe)."""
    if count > 0 and dst != src:
        row = buf.strides[0]
        base = buf.ctypes.data
        ctypes.memmove(base + dst * row, base + src * row, count * row)


def compact_rows(buf: np.ndarray, n: int, drop: np.ndarray) -> int:
    """Delete sorted row indices `drop` from buf[:n] in place, keeping order; zero the freed tail.

    Returns the new row count. Few drops move contiguous segments with memmove (no temporary);
    many drops use one masked copy.
    """
    m = len(drop)
    if m == 0:
        return n
    if not (buf.flags.c_contiguous and buf.flags.writeable):
        raise ValueError("compact_rows: buffer must be C-contiguous and writeable")
    new_n = n - m
    if m <= 1024:
        write = int(drop[0])
        bounds = np.append(drop, n)
        for i in range(m):
            start, stop = int(bounds[i]) + 1, int(bounds[i + 1])
            _memmove_rows(buf, write, start, stop - start)
            write += stop - start
    else:
        keep = np.ones(n, bool)
        keep[drop] = False
        first = int(drop[0])
        buf[first:new_n] = buf[first:n][keep[first:]]
    buf[new_n:n] = 0  # removed rows must not linger in the spare capacity
    return new_n


class VisualMemory:
    """A k-NN database of unit embeddings with ids, labels, metadata and a backbone fingerprint.

    Args:
        dim: embedding width D.
        engine: "faiss" (exact, faiss BLAS kernels), "torch" (exact, matmul + topk; identical
            results), "ivf" (approximate faiss IVF-Flat, Hashtable direct map), or "auto" (faiss
            if importable, else torch).
        fingerprint: string naming the backbone that made the embeddings; queries carrying another
            fingerprint are refused.
        class_names: optional names; labels must then index into it.
        ivf_nlist: IVF list count (default 4 * sqrt(N) at training time).
        device: torch engine device (e.g. "cuda"); candidates are re-scored on CPU either way.
        ivf_nprobe: IVF lists probed per query.
        recipe: how the items are embedded and the default vote (`memory.recipe.make_recipe`);
            kept when the memory is emptied, stored in the manifest.
    """

    search_budget_bytes: int = 256 << 20

    def __init__(
        self,
        dim: int,
        engine: str = "auto",
        fingerprint: str | None = None,
        class_names: list[str] | None = None,
        ivf_nlist: int | None = None,
        device: str | None = None,
        ivf_nprobe: int = 16,
        recipe: dict | None = None,
    ) -> None:
        if int(dim) < 1:
            raise InvalidArgument(f"dim: expected a positive embedding width, got {dim}")
        self._dim = int(dim)
        self._engine = make_engine(engine, self._dim, ivf_nlist, device)
        if isinstance(self._engine, IVFEngine):
            self._engine.nprobe = int(ivf_nprobe)
        self._device = device
        self._fingerprint = fingerprint
        self._class_names = None if class_names is None else [str(c) for c in class_names]
        self._emb = np.zeros((0, self._dim), np.float32)
        self._ids = np.zeros(0, np.int64)
        self._labels = np.zeros(0, np.int64)
        self._meta: list[str] = []  # each item's metadata in its stored form: canonical JSON
        self._n = 0
        self._version = 0
        self._lookup: tuple[int, np.ndarray, np.ndarray] | None = None
        self._next_id = 0
        self._recipe = None if recipe is None else json.loads(canonical_json(recipe))
        self._pending_audit: list[dict] = []
        self._origin: tuple[str, str] | None = None  # (directory, manifest hash) last loaded/saved
        self._hash_cache: tuple[int, str] | None = None  # (version, content hash)
        self._new_blobs: dict[str, bytes] = {}

    # ---------------------------------------------------------------- properties
    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return (
            f"VisualMemory(n={self._n}, dim={self._dim}, engine={self.engine!r}, "
            f"classes={self.num_classes}, fingerprint={self._fingerprint!r})"
        )

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def engine(self) -> str:
        """Resolved engine name: "faiss", "torch" or "ivf"."""
        return self._engine.name

    @property
    def exact(self) -> bool:
        """True for exact engines (faiss, torch); exact audits need this."""
        return self._engine.exact

    @property
    def fingerprint(self) -> str | None:
        return self._fingerprint

    @property
    def class_names(self) -> list[str] | None:
        return None if self._class_names is None else list(self._class_names)

    @property
    def next_id(self) -> int:
        """The id counter: every id this memory ever held is below it; new ids start here."""
        return self._next_id

    @property
    def recipe(self) -> dict | None:
        """How the items were embedded and the default vote (a copy), or None if not recorded."""
        return None if self._recipe is None else copy.deepcopy(self._recipe)

    def set_recipe(self, recipe: dict | None) -> None:
        """Record the memory's recipe (see `memory.recipe`); `save` stores it in the manifest."""
        self._recipe = None if recipe is None else json.loads(canonical_json(recipe))

    def extend_class_names(self, names: list[str]) -> None:
        """Grow the class-name table (label i is named names[i]); existing names keep their
        indices, so labels already stored keep their meaning. `save` writes the new table."""
        old = self._class_names or []
        if list(names[: len(old)]) != list(old):
            raise InvalidArgument(
                f"class names can only be appended to: the memory has {old}, got {list(names)}"
            )
        self._class_names = [str(n) for n in names]

    @property
    def classes(self) -> np.ndarray:
        """Sorted distinct labels present, int64 [C]; votes use their positions as class indices."""
        return np.unique(self.labels)

    @property
    def num_classes(self) -> int:
        """len(class_names) if given, else the number of distinct labels present."""
        if self._class_names is not None:
            return len(self._class_names)
        return int(len(self.classes))

    def _view(self, a: np.ndarray) -> np.ndarray:
        v = a[: self._n]
        v.flags.writeable = False
        return v

    @property
    def ids(self) -> np.ndarray:
        """int64 [N] in row (insertion) order; a read-only view valid until the next change."""
        return self._view(self._ids)

    @property
    def labels(self) -> np.ndarray:
        """int64 [N] in row order; read-only view."""
        return self._view(self._labels)

    @property
    def embeddings(self) -> np.ndarray:
        """float32 [N, D] unit rows in row order; read-only view."""
        return self._view(self._emb)

    # ---------------------------------------------------------------- fingerprint
    def check_fingerprint(self, fingerprint: str | None) -> None:
        """Raise FingerprintMismatch if both this memory and `fingerprint` are set and differ."""
        if fingerprint is not None and self._fingerprint is not None:
            if fingerprint != self._fingerprint:
                raise FingerprintMismatch(
                    f"backbone fingerprint {fingerprint!r} does not match the memory's "
                    f"{self._fingerprint!r}: embed the queries with the memory's backbone, "
                    "or rebuild the memory with this one"
                )

    # ---------------------------------------------------------------- add / remove
    def _reserve(self, extra: int) -> None:
        need = self._n + extra
        if need <= self._emb.shape[0]:
            return
        cap = max(need, self._emb.shape[0] + self._emb.shape[0] // 2)
        for name in ("_emb", "_ids", "_labels"):
            old = getattr(self, name)
            new = np.zeros((cap,) + old.shape[1:], old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, name, new)

    def add(
        self,
        embeddings: Any,
        labels: Any,
        ids: Any = None,
        metadata: list[dict | None] | None = None,
    ) -> np.ndarray:
        """Add items; embeddings are L2-normalised here.

        Args:
            embeddings: [N, D] tensor or array.
            labels: [N] non-negative integers (indices into class_names when it is set).
            ids: [N] unique int64 ids, each at least `next_id` (ids of removed items are retired,
                never reused); default: next_id, next_id + 1, ...
            metadata: N JSON-serialisable dicts (e.g. {"source": path, "sha256": hex}) or None.
        Returns:
            int64 [N] ids of the added items.
        """
        x = normalize_rows(embeddings, self._dim, "embeddings")
        m = x.shape[0]
        lab = as_int64(labels, "labels", m)
        if m and lab.min() < 0:
            raise InvalidArgument("labels: must be >= 0 (-1 marks padding in search results)")
        if self._class_names is not None and m and lab.max() >= len(self._class_names):
            raise InvalidArgument(
                f"labels: {int(lab.max())} is out of range for {len(self._class_names)} class_names"
            )
        if ids is None:
            new_ids = np.arange(self._next_id, self._next_id + m, dtype=np.int64)
        else:
            new_ids = as_int64(ids, "ids", m)
            if m and new_ids.min() < 0:
                raise InvalidArgument("ids: must be >= 0 (-1 marks padding in search results)")
            if len(np.unique(new_ids)) != m:
                raise InvalidArgument(
                    "ids: duplicate ids within the batch; every item needs its own id"
                )
            dup = self._ids[: self._n][np.isin(self._ids[: self._n], new_ids)]
            if len(dup):
                raise InvalidArgument(
                    f"ids: {dup[:5].tolist()} already in the memory; remove them first or use new ids"
                )
            if m and new_ids.min() < self._next_id:
                low = np.sort(new_ids[new_ids < self._next_id])[:5].tolist()
                raise InvalidArgument(
                    f"ids: {low} are below the memory's id counter {self._next_id}: ids of removed "
                    f"items are retired and never reused; use ids >= {self._next_id} or let the "
                    "memory assign them"
                )
        meta = self._check_metadata(metadata, m)
        n = self._n
        if n == 0 and m > self._emb.shape[0]:
            # first fill: adopt the fresh arrays instead of copying them (x is owned by us)
            self._emb, self._ids, self._labels = x, new_ids.copy(), lab.copy()
        else:
            self._reserve(m)
            self._emb[n : n + m] = x
            self._ids[n : n + m] = new_ids
            self._labels[n : n + m] = lab
        self._meta.extend(meta)
        self._n += m
        if m:
            self._next_id = max(self._next_id, int(new_ids.max()) + 1)
        self._version += 1
        self._engine.on_add(x, new_ids)
        return new_ids.copy()

    @staticmethod
    def _check_metadata(metadata: list[dict | None] | None, m: int) -> list[str]:
        """Each entry as the canonical JSON line it is stored (and hashed) as; "{}" for none."""
        if metadata is None:
            return ["{}"] * m
        if len(metadata) != m:
            raise InvalidArgument(
                f"metadata: expected {m} entries (one per embedding), got {len(metadata)}"
            )
        out: list[str] = []
        for i, d in enumerate(metadata):
            if d is None or d == {}:
                out.append("{}")
                continue
            if not isinstance(d, dict):
                raise TypeError(f"metadata[{i}]: expected a dict or None, got {type(d).__name__}")
            try:  # stored exactly as it will reload
                out.append(canonical_json(json.loads(canonical_json(d))))
            except (TypeError, ValueError) as e:
                raise TypeError(f"metadata[{i}]: not JSON-serialisable ({e})") from e
        return out

    def remove(self, ids: Any) -> int:
        """Physically delete the items with these ids (unknown ids are ignored).

        Rows after each removed row move up in order and the freed rows are zeroed, so the memory
        is then identical to one that never held the items. Returns the number removed.
        """
        rm = np.unique(as_int64(ids, "ids"))
        if self._n == 0 or len(rm) == 0:
            return 0
        rows = np.flatnonzero(np.isin(self._ids[: self._n], rm))
        if len(rows) == 0:
            return 0
        removed_ids = self._ids[rows].copy()
        n = self._n
        compact_rows(self._emb, n, rows)
        compact_rows(self._ids, n, rows)
        compact_rows(self._labels, n, rows)
        if len(rows) < 64:
            for r in rows[::-1]:
                del self._meta[int(r)]
        else:
            gone = set(rows.tolist())
            self._meta = [d for i, d in enumerate(self._meta) if i not in gone]
        self._n = n - len(rows)
        self._version += 1
        self._engine.on_remove(removed_ids)
        return int(len(rows))

    def add_blob(self, data: bytes) -> str:
        """Stage bytes (e.g. an uploaded image) to keep inside the memory directory; returns its
        sha256, which an item references with metadata {"blob": sha256}. The next save writes
        it to blobs/ (checksummed; dropped, and shredded on forget, once no item references it);
        read it back with `persist.read_blob(directory, sha256)`."""
        name = hashlib.sha256(bytes(data)).hexdigest()
        self._new_blobs[name] = bytes(data)
        return name

    def replace_embeddings(
        self, embeddings: Any, metadata: list[dict | None], fingerprint: str | None = None
    ) -> None:
        """Re-embed every item in place: new rows [N, D] (L2-normalised here), metadata and, if
        given, the new backbone's fingerprint; same ids, labels and order (a recipe change
        re-embeds the items from their sources)."""
        x = normalize_rows(embeddings, self._dim, "embeddings")
        if x.shape[0] != self._n:
            raise InvalidArgument(
                f"embeddings: expected {self._n} rows (one per item), got {x.shape[0]}"
            )
        meta = self._check_metadata(metadata, self._n)
        ids = self.ids.copy()
        self._engine.on_remove(ids)
        self._emb[: self._n] = x
        self._meta = meta
        if fingerprint is not None:
            self._fingerprint = fingerprint
        self._version += 1
        self._engine.on_add(x, ids)

    # ---------------------------------------------------------------- lookups
    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """(row order by id, ids in that order), cached until the next change."""
        if self._lookup is None or self._lookup[0] != self._version:
            order = np.argsort(self._ids[: self._n], kind="stable")
            self._lookup = (self._version, order, self._ids[: self._n][order])
        return self._lookup[1], self._lookup[2]

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row index of each id (any shape); -1 where the id is absent (or is -1)."""
        ids = np.asarray(ids, np.int64)
        order, sids = self._sorted()
        if self._n == 0:
            return np.full(ids.shape, -1, np.int64)
        pos = np.clip(np.searchsorted(sids, ids), 0, self._n - 1)
        found = sids[pos] == ids
        return np.where(found, order[pos], -1)

    def _rows_strict(self, ids: Any, name: str = "ids") -> tuple[np.ndarray, np.ndarray]:
        a = to_numpy(ids, name).astype(np.int64)
        rows = self.rows_of(a)
        missing = (rows < 0) & (a != -1)
        if missing.any():
            raise UnknownIds(f"{name}: {np.unique(a[missing])[:5].tolist()} not in the memory")
        return a, rows

    def labels_of(self, ids: Any) -> np.ndarray:
        """Labels of ids (any shape, int64); -1 for the padding id -1; KeyError for unknown ids."""
        a, rows = self._rows_strict(ids)
        if not a.size or self._n == 0:
            return rows  # all -1 for an empty memory (only padding can be asked for)
        return np.where(rows >= 0, self._labels[np.maximum(rows, 0)], -1)

    def metadata_of(self, ids: Any) -> list[dict]:
        """Metadata dicts (copies) of a flat list of ids; {} for items added without metadata."""
        a, rows = self._rows_strict(np.asarray(to_numpy(ids, "ids")).reshape(-1))
        if (a == -1).any():
            raise UnknownIds("ids: -1 is padding, not an item")
        return [json.loads(self._meta[int(r)]) for r in rows]

    # ---------------------------------------------------------------- search
    def search(
        self, queries: Any, k: int, fingerprint: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact (or, for "ivf", approximate) top-k by cosine similarity.

        Args:
            queries: [Q, D] tensor or array (L2-normalised here).
            k: neighbours per query; beyond the memory size results are padded.
            fingerprint: if given, must match the memory's (FingerprintMismatch otherwise).
        Returns:
            sims float32 [Q, k] and ids int64 [Q, k], ordered by (similarity desc, id asc);
            padding has sim -inf and id -1.
        """
        self.check_fingerprint(fingerprint)
        if int(k) < 1:
            raise InvalidArgument(f"k: expected a positive neighbour count, got {k}")
        k = int(k)
        q = normalize_rows(queries, self._dim, "queries")
        sims = np.full((q.shape[0], k), -np.inf, np.float32)
        ids = np.full((q.shape[0], k), -1, np.int64)
        if self._n == 0 or q.shape[0] == 0:
            return sims, ids
        kk = min(k, self._n)
        rows, s = self._search_rows(q, kk)
        sims[:, :kk] = s
        ids[:, :kk] = np.where(rows >= 0, self._ids[np.maximum(rows, 0)], -1)
        return sims, ids

    def _query_chunk(self, kf: int) -> int:
        """Queries per engine call. The torch engine holds a [chunk, N] similarity block; faiss
        tiles internally and is slow on small query batches, so only its results bound it."""
        torch_block = self._n * 8 if isinstance(self._engine, TorchEngine) else 0
        return int(np.clip(self.search_budget_bytes // (kf * 32 + torch_block), 1, 1 << 16))

    def _search_rows(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows and canonical sims, k <= N; over-fetches until the top-k is certain."""
        n = self._n
        emb, ids = self._emb[:n], self._ids[:n]
        bound = self._engine.error_bound(self._dim)
        out_rows = np.full((len(q), k), -1, np.int64)
        out_sims = np.full((len(q), k), -np.inf, np.float32)
        todo = np.arange(len(q))
        kf = min(n, k + max(8, k // 4))
        while len(todo):
            step = self._query_chunk(kf)
            later = []
            for s in range(0, len(todo), step):
                part = todo[s : s + step]
                cand, approx = self._engine.candidates(emb, ids, q[part], kf)
                if isinstance(self._engine, IVFEngine):
                    cand = self.rows_of(cand)
                cs = canonical_sims(q[part], cand, emb)
                key = np.where(cand >= 0, ids[np.maximum(cand, 0)], _ID_PAD)
                order = np.lexsort((key, -cs), axis=1)
                cand = np.take_along_axis(cand, order, 1)
                cs = np.take_along_axis(cs, order, 1)
                # Any unfetched row has engine sim <= the last fetched one, so canonical sim at most
                # that + bound: if the k-th is above it, nothing unfetched can enter or tie.
                done = (kf >= n) | (cand[:, -1] < 0) | (cs[:, k - 1] > approx[:, -1] + bound)
                if not self._engine.exact:
                    done[:] = True  # approximate: a wider fetch would only search the same lists
                out_rows[part[done]] = cand[done, :k]
                out_sims[part[done]] = cs[done, :k]
                later.append(part[~done])
            todo = np.concatenate(later) if later else todo[:0]
            kf = min(n, kf * 4)
        return out_rows, out_sims

    # ---------------------------------------------------------------- hashing, copies
    def content_hash(self) -> str:
        """sha256 hex over dim, count, ids, labels, embeddings, metadata in id order
        (`state.content_hash`); the id counter, recipe and class names are not part of it."""
        cached = self._hash_cache
        if cached is not None and cached[0] == self._version:
            return cached[1]
        n = self._n
        h = content_hash(self._dim, self._ids[:n], self._labels[:n], self._emb[:n], self._meta)
        self._hash_cache = (self._version, h)
        return h

    def copy(self) -> VisualMemory:
        """An independent deep copy (same engine type, arrays, metadata, trained IVF index)."""
        new = VisualMemory.__new__(VisualMemory)
        new.__dict__.update(self.__dict__)
        n = self._n
        new._emb, new._ids, new._labels = (
            self._emb[:n].copy(),
            self._ids[:n].copy(),
            self._labels[:n].copy(),
        )
        new._meta = list(self._meta)
        new._lookup = None
        new._class_names = self.class_names
        new._recipe = self.recipe
        new._pending_audit = copy.deepcopy(self._pending_audit)
        new._new_blobs = dict(self._new_blobs)
        if isinstance(self._engine, IVFEngine):
            eng = IVFEngine(self._dim, self._engine.nlist, self._engine.nprobe)
            if self._engine.index is not None:
                import faiss

                eng.index = faiss.clone_index(self._engine.index)
                eng.quantizer_source = self._engine.quantizer_source
            new._engine = eng
        else:
            new._engine = make_engine(self._engine.name, self._dim, device=self._device)
        return new

    def train_quantizer(self, embeddings: Any) -> None:
        """IVF only: train the coarse quantiser on outside data (e.g. procedural embeddings).

        Centroids then carry no trace of the memory's real items, so removal leaves none.
        """
        if not isinstance(self._engine, IVFEngine):
            raise InvalidArgument(
                f"train_quantizer: engine {self.engine!r} has no quantiser; use engine='ivf'"
            )
        self._engine.train(normalize_rows(embeddings, self._dim, "embeddings"), "external")
        if self._n:
            self._engine.index.add_with_ids(self._emb[: self._n], self._ids[: self._n])

    # ---------------------------------------------------------------- private state API
    def _to_state(self) -> MemoryState:
        """The memory as a `MemoryState` (views of the arrays, not copies) for `persist`."""
        ivf, blob = None, None
        if isinstance(self._engine, IVFEngine):
            eng = self._engine
            ivf = {"nlist": eng.nlist, "nprobe": eng.nprobe, "quantizer_source": None}
            if eng.index is not None:
                import faiss

                blob = faiss.serialize_index(eng.index).tobytes()
                ivf["quantizer_source"] = eng.quantizer_source
        return MemoryState(
            dim=self._dim,
            embeddings=self.embeddings,
            ids=self.ids,
            labels=self.labels,
            metadata=self._meta,
            fingerprint=self._fingerprint,
            class_names=self.class_names,
            engine=self.engine,
            next_id=self._next_id,
            recipe=self.recipe,
            ivf=ivf,
            ivf_index=blob,
            pending_audit=list(self._pending_audit),
            content_hash=self.content_hash(),
            new_blobs=dict(self._new_blobs),
        )

    @classmethod
    def _from_state(
        cls, state: MemoryState, engine: str | None = None, device: str | None = None
    ) -> VisualMemory:
        """A memory holding exactly `state`'s arrays (adopted, not re-normalised: stored unit
        rows keep their last bits). `engine` overrides the state's engine name."""
        name = engine or state.engine
        if name == "faiss" and not has_faiss():
            name = "torch"
        ivf = state.ivf or {}
        mem = cls(
            state.dim,
            engine=name,
            fingerprint=state.fingerprint,
            class_names=state.class_names,
            ivf_nlist=ivf.get("nlist"),
            device=device,
            ivf_nprobe=ivf.get("nprobe") or 16,
            recipe=state.recipe,
        )
        n = len(state.ids)
        mem._emb = np.ascontiguousarray(state.embeddings, np.float32).reshape(n, state.dim)
        mem._ids = np.ascontiguousarray(state.ids, np.int64)
        mem._labels = np.ascontiguousarray(state.labels, np.int64)
        mem._meta = [s if isinstance(s, str) else canonical_json(s or {}) for s in state.metadata]
        mem._n = n
        mem._next_id = max(int(state.next_id), int(mem._ids.max()) + 1 if n else 0)
        mem._pending_audit = list(state.pending_audit)
        mem._version += 1
        if state.content_hash is not None:  # verified against the arrays by `persist`
            mem._hash_cache = (mem._version, state.content_hash)
        if isinstance(mem._engine, IVFEngine) and state.ivf_index is not None:
            import faiss

            index = faiss.deserialize_index(np.frombuffer(state.ivf_index, dtype=np.uint8))
            if index.ntotal != n:
                raise CorruptMemory(
                    f"index.faiss: holds {index.ntotal} vectors, expected {n}; rebuild the memory"
                )
            mem._engine.index, mem._engine.quantizer_source = index, ivf.get("quantizer_source")
        return mem

    def _queue_audit(self, record: dict) -> None:
        """Queue an audit record (e.g. of a forget); the next save appends it to the log."""
        self._pending_audit.append(json.loads(canonical_json(record)))

    def _queued_removed_ids(self) -> np.ndarray:
        """int64 ids that the queued audit records say were removed."""
        ids = [i for r in self._pending_audit for i in r.get("removed_ids", [])]
        return np.asarray(ids, np.int64)

    def _audit_saved(self) -> None:
        """The queued audit records were written by a save."""
        self._pending_audit = []

    def _drop_memory_quantizer(self) -> bool:
        """IVF only: forget a quantiser trained on the memory's own rows (it may encode removed
        items); it is retrained on the next search. Returns True if one was dropped."""
        eng = self._engine
        if (
            isinstance(eng, IVFEngine)
            and eng.quantizer_source == "memory"
            and eng.index is not None
        ):
            eng.invalidate()
            return True
        return False

    # ---------------------------------------------------------------- persistence
    def save(
        self,
        directory: str | Path,
        shred_old: bool = False,
        hmac_key: bytes | None = None,
        wait: float | None = None,
    ) -> Path:
        """Write the memory to `directory` atomically, under its writer lock (see `persist`)."""
        return save_memory(self, directory, shred_old=shred_old, hmac_key=hmac_key, wait=wait)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        expect_fingerprint: str | None = None,
        engine: str | None = None,
        hmac_key: bytes | None = None,
    ) -> VisualMemory:
        """Read a saved memory (a consistent snapshot), verifying every checksum and the fingerprint."""
        return load_memory(
            directory, expect_fingerprint=expect_fingerprint, engine=engine, hmac_key=hmac_key
        )


def load_memory(
    directory: str | Path,
    expect_fingerprint: str | None = None,
    engine: str | None = None,
    hmac_key: bytes | None = None,
    device: str | None = None,
    retry_seconds: float = persist.READ_RETRY_SECONDS,
) -> VisualMemory:
    """Load and verify a saved memory: a consistent snapshot, never changing anything on disk.

    Every file's size and sha256 must match the manifest, the manifest its own checksum (and the
    HMAC with `hmac_key`), the audit log its hash chain, and the recomputed content hash the
    manifest's. With `expect_fingerprint`, a memory made by another backbone raises
    FingerprintMismatch. `engine` overrides the stored engine name ("faiss" falls back to the
    identical "torch" when faiss is missing). A read that overlaps a writer's swap is retried for
    up to `retry_seconds`.
    """
    state, mhash = persist.read_state(
        directory, expect_fingerprint=expect_fingerprint, hmac_key=hmac_key,
        retry_seconds=retry_seconds,
    )  # fmt: skip
    mem = VisualMemory._from_state(state, engine=engine, device=device)
    mem._origin = (os.path.abspath(directory), mhash)
    return mem


def save_memory(
    mem: VisualMemory,
    directory: str | Path,
    shred_old: bool = False,
    audit_record: dict | None = None,
    hmac_key: bytes | None = None,
    wait: float | None = None,
) -> Path:
    """Write `mem` to `directory` crash-safely under its writer lock; queued audit records and
    `audit_record` are appended to the hash-chained audit log in the same atomic swap.

    Refused (MemoryChanged) when `mem` was loaded from `directory` and the memory there changed
    since: saving would silently undo that change (use `lock.update_memory`)."""
    records = list(mem._pending_audit) + ([audit_record] if audit_record is not None else [])
    path, mhash = persist.write_state(
        mem._to_state(), directory, shred_old=shred_old, audit_records=records,
        hmac_key=hmac_key, wait=wait, origin=mem._origin,
    )  # fmt: skip
    mem._audit_saved()
    mem._new_blobs = {}
    mem._origin = (os.path.abspath(directory), mhash)
    return path
