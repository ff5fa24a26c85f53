"""`PatchMemory`: one item per patch token with its label and its source image (spec §4.5).

Raw (unnormalised) features are kept, since the paper's vote is softmax(q·Kᵀ/√C) over ALL memory
patches on unnormalised tokens; `softmax_vote` computes it in memory chunks with a streaming
log-sum-exp, so queries x memory is never materialised, and `topk_vote` offers the image memory's
top-k cosine vote (weights exp(cos / T)). Every patch carries an int64 group (its source image), so
one image's patches are forgotten together, and forgetting compacts rows in insertion order: a
memory from which a group was forgotten holds exactly the arrays of one that never held it.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch
import torch.nn.functional as F

from procvision.constants import PAPER_K, PAPER_T
from procvision.memory.errors import VisualMemoryError

#: elements of one (query chunk x memory chunk) score block: 2**24 float32 = 64 MiB
BLOCK_ELEMENTS = 1 << 24


def _as_tensor(x: Any, dtype: torch.dtype, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if dtype == torch.int64 and (t.is_floating_point() or t.dtype == torch.bool):
        raise TypeError(f"{name}: expected integers, got dtype {t.dtype}")
    return t.to(dtype)


def _chunks(q: int, m: int, block: int) -> tuple[int, int]:
    """(query rows, memory rows) per block so that their product stays under `block`."""
    qc = max(1, min(q, block // max(1, min(m, 1 << 16))))
    mc = max(1, min(m, block // qc))
    return qc, mc


def streaming_softmax_vote(
    queries: torch.Tensor,
    keys: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    scale: float | None = None,
    block: int = BLOCK_ELEMENTS,
) -> torch.Tensor:
    """Class probabilities softmax(scale · q·Kᵀ) · onehot(labels), over all keys, in chunks.

    For each query chunk, keys are visited in chunks; a running maximum m and per-class sums
    acc_c = Σ exp(s - m) are rescaled when m grows (streaming log-sum-exp), so no [Q, N] matrix
    exists. Probabilities are acc / Σ_c acc_c.

    Args:
        queries: float [Q, C] query tokens (unnormalised).
        keys: float [N, C] memory tokens (unnormalised), N >= 1.
        labels: int64 [N] in [0, num_classes).
        num_classes: K.
        scale: multiplier of the dot products (paper: 1 / sqrt(C); default).
        block: maximum elements of one score block.
    Returns:
        float64 [Q, K], rows summing to 1.
    """
    if keys.shape[0] == 0:
        raise VisualMemoryError("the patch memory is empty: add labelled images first")
    c = keys.shape[1]
    scale = 1.0 / math.sqrt(c) if scale is None else float(scale)
    q_all = queries.to(keys.dtype)
    out = torch.empty(q_all.shape[0], num_classes, dtype=torch.float64, device=keys.device)
    qc, mc = _chunks(q_all.shape[0], keys.shape[0], block)
    for qs in range(0, q_all.shape[0], qc):
        q = q_all[qs : qs + qc] * scale
        m = torch.full((q.shape[0], 1), -math.inf, dtype=torch.float32, device=keys.device)
        acc = torch.zeros(q.shape[0], num_classes, dtype=torch.float64, device=keys.device)
        for ks in range(0, keys.shape[0], mc):
            s = (q @ keys[ks : ks + mc].T).float()  # [qc, mc]
            m_new = torch.maximum(m, s.amax(1, keepdim=True))
            acc *= torch.exp(m - m_new).double()
            onehot = F.one_hot(labels[ks : ks + mc], num_classes).float()  # [mc, K]
            acc += (torch.exp(s - m_new) @ onehot).double()  # terms in (0, 1]
            m = m_new
        out[qs : qs + qc] = acc / acc.sum(1, keepdim=True)
    return out


def streaming_topk(
    queries: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    block: int = BLOCK_ELEMENTS,
    key_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k dot products of each query over all keys, merged chunk by chunk.

    Args:
        queries: float [Q, C]; keys: float [N, C]; k: neighbours (min(k, N) are returned).
        key_scale: float [N] multiplier of each key's scores (e.g. its inverse norm, which
            makes the scores cosines without a normalised copy of the keys), or None.
    Returns:
        (scores float [Q, k'], rows int64 [Q, k']) by decreasing score, ties by lower row.
    """
    k = min(int(k), keys.shape[0])
    qc, mc = _chunks(queries.shape[0], keys.shape[0], block)
    scores, rows = [], []
    for qs in range(0, queries.shape[0], qc):
        q = queries[qs : qs + qc].to(keys.dtype)
        best_s = torch.empty(q.shape[0], 0, dtype=keys.dtype, device=keys.device)
        best_i = torch.empty(q.shape[0], 0, dtype=torch.int64, device=keys.device)
        for ks in range(0, keys.shape[0], mc):
            s = q @ keys[ks : ks + mc].T
            if key_scale is not None:
                s = s * key_scale[ks : ks + mc]
            kk = min(k, s.shape[1])
            top_s, top_i = s.topk(kk, dim=1)
            cand_s = torch.cat([best_s, top_s], 1)
            cand_i = torch.cat([best_i, top_i + ks], 1)
            # stable order: score desc, then row asc (rows of earlier chunks are lower)
            order = torch.argsort(cand_s, dim=1, descending=True, stable=True)[:, :k]
            best_s, best_i = cand_s.gather(1, order), cand_i.gather(1, order)
        scores.append(best_s)
        rows.append(best_i)
    return torch.cat(scores), torch.cat(rows)


class PatchMemory:
    """Patch tokens with labels and int64 groups (source images), voted over for segmentation.

    Args:
        dim: token width C.
        num_classes: K, labels lie in [0, K) (Pascal VOC: 21 with background 0).
        device: where tokens are kept and votes computed.
        dtype: storage dtype of the tokens (float32; float16 halves memory).
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if int(dim) < 1 or int(num_classes) < 1:
            raise ValueError(f"dim and num_classes must be >= 1, got {dim}, {num_classes}")
        self.dim, self.num_classes = int(dim), int(num_classes)
        self.device, self.dtype = torch.device(device), dtype
        self._feat = torch.zeros(0, self.dim, dtype=dtype, device=self.device)
        self._labels = torch.zeros(0, dtype=torch.int64, device=self.device)
        self._groups = torch.zeros(0, dtype=torch.int64, device=self.device)
        self._n = 0
        self._inv_norm: torch.Tensor | None = None  # [N] 1 / |k|, for the cosine vote

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"PatchMemory({self._n} patches, {len(self.group_ids)} groups, dim={self.dim})"

    @property
    def features(self) -> torch.Tensor:
        """float [N, C] raw tokens in insertion order (a view; do not modify)."""
        return self._feat[: self._n]

    @property
    def labels(self) -> torch.Tensor:
        """int64 [N] labels."""
        return self._labels[: self._n]

    @property
    def groups(self) -> torch.Tensor:
        """int64 [N] group (source image) of each patch."""
        return self._groups[: self._n]

    @property
    def group_ids(self) -> torch.Tensor:
        """Sorted distinct groups present, int64 [G]."""
        return torch.unique(self.groups)

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored rows (tokens, labels, groups)."""
        return self._n * (self.dim * self._feat.element_size() + 16)

    def reserve(self, total: int) -> None:
        """Allocate room for `total` patches at once (no doubling beyond it while adding)."""
        self._grow(int(total))

    def _reserve(self, extra: int) -> None:
        need = self._n + extra
        if need > self._feat.shape[0]:
            self._grow(max(need, 2 * self._feat.shape[0], 1024))

    def _grow(self, cap: int) -> None:
        if cap <= self._feat.shape[0]:
            return
        for name in ("_feat", "_labels", "_groups"):
            old = getattr(self, name)
            new = torch.zeros((cap, *old.shape[1:]), dtype=old.dtype, device=self.device)
            new[: self._n] = old[: self._n]
            setattr(self, name, new)

    def add(self, features: Any, labels: Any, groups: Any) -> None:
        """Append patches.

        Args:
            features: float [M, C] raw tokens.
            labels: int [M] in [0, num_classes).
            groups: int [M] source image of each patch, or one int for all of them.
        """
        f = _as_tensor(features, self.dtype, "features").to(self.device)
        if f.dim() != 2 or f.shape[1] != self.dim:
            raise ValueError(f"features: expected [M, {self.dim}], got {tuple(f.shape)}")
        m = f.shape[0]
        lab = _as_tensor(labels, torch.int64, "labels").reshape(-1).to(self.device)
        grp = _as_tensor(groups, torch.int64, "groups").reshape(-1).to(self.device)
        if grp.numel() == 1:
            grp = grp.expand(m)
        if lab.shape[0] != m or grp.shape[0] != m:
            raise ValueError(
                f"expected one label and one group per patch ({m}), got {lab.shape[0]} labels "
                f"and {grp.shape[0]} groups"
            )
        if m and (int(lab.min()) < 0 or int(lab.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got {lab.unique()}")
        if not torch.isfinite(f).all():
            raise ValueError("features: NaN or infinite values")
        self._reserve(m)
        self._feat[self._n : self._n + m] = f
        self._labels[self._n : self._n + m] = lab
        self._groups[self._n : self._n + m] = grp
        self._n += m
        self._inv_norm = None

    def forget(self, groups: Any) -> int:
        """Remove every patch of the given groups (source images); returns the patches removed.

        The remaining rows keep their order and the freed tail is zeroed, so the memory equals
        one to which these groups were never added.
        """
        drop = _as_tensor(groups, torch.int64, "groups").reshape(-1).to(self.device)
        keep = ~torch.isin(self.groups, drop)
        kept = int(keep.sum())
        removed = self._n - kept
        if removed:
            for name in ("_feat", "_labels", "_groups"):
                buf = getattr(self, name)
                rows = buf[: self._n][keep].clone()
                buf[:kept] = rows
                buf[kept : self._n] = 0
            self._n = kept
            self._inv_norm = None
        return removed

    def content_hash(self) -> str:
        """sha256 of the stored rows (tokens, labels, groups): equal iff bit-identical content."""
        h = hashlib.sha256(f"{self.dim}|{self.num_classes}|{self.dtype}|{self._n}".encode())
        for t in (self.features, self.labels, self.groups):
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def softmax_vote(
        self, queries: Any, scale: float | None = None, block: int = BLOCK_ELEMENTS
    ) -> torch.Tensor:
        """The paper's vote: softmax(q·Kᵀ · scale) over all patches, summed per label (spec §4.5).

        Args:
            queries: float [Q, C] raw query tokens.
            scale: default 1 / sqrt(C).
        Returns:
            float64 [Q, K] class probabilities.
        """
        q = _as_tensor(queries, self.dtype, "queries").to(self.device)
        return streaming_softmax_vote(q, self.features, self.labels, self.num_classes, scale, block)

    def topk_vote(
        self, queries: Any, k: int = PAPER_K, T: float = PAPER_T, block: int = BLOCK_ELEMENTS
    ) -> torch.Tensor:
        """Top-k cosine vote: weights exp(cos / T) of the k most similar patches, per label.

        Args:
            queries: float [Q, C] raw query tokens (normalised here).
            k: neighbours; T: temperature (paper's image k-NN: 20 and 0.07).
        Returns:
            float64 [Q, K] class scores normalised to sum 1.
        """
        if self._n == 0:
            raise VisualMemoryError("the patch memory is empty: add labelled images first")
        if self._inv_norm is None:
            norms = torch.cat([self.features[s : s + 65536].float().norm(dim=1)
                               for s in range(0, self._n, 65536)])  # fmt: skip
            self._inv_norm = 1.0 / norms.clamp_min(1e-12)
        q = _as_tensor(queries, torch.float32, "queries").to(self.device)
        q = (q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)).to(self.dtype)
        sims, rows = streaming_topk(q, self.features, k, block, self._inv_norm)
        w = torch.exp((sims.double() - sims.double()[:, :1]) / T)  # shift: ratios unchanged
        scores = torch.zeros(q.shape[0], self.num_classes, dtype=torch.float64, device=self.device)
        scores.scatter_add_(1, self.labels[rows], w)
        return scores / scores.sum(1, keepdim=True)
