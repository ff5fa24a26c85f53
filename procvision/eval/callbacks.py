"""Lightning callbacks that evaluate the current teacher through the visual memory.

`KNNCallback` (k-NN accuracy, paper §4.1) and `PrivacyCallback` (non-private fraction, paper §6,
Fig. 12) each work in two ways:
- during `fit`, every `every_n_epochs` at the end of a training epoch, if `memory` and `queries`
  dataset URIs are given: they embed those sets with `pl_module.teacher_backbone` (eval mode,
  no grad, bounded memory) and evaluate;
- at the end of a validation epoch (`procvision validate` with `KNNDataModule`): they use what the
  model's `validation_step` collected, `pl_module.collected[0]` (memory) and `[1]` (queries).
Metrics are logged with `pl_module.log_dict(..., rank_zero_only=True)` on global rank 0: they go to
the loggers, but under DDP they must not be used as a checkpoint or early-stopping monitor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from procvision.atomic import write_json_atomic
from procvision.data.datasets import EvalTransform, RealDataset, open_dataset, seeded_subset
from procvision.eval.embed import embed_dataset
from procvision.eval.knn import DEFAULT_KS, DEFAULT_T, build_memory, flatten_sweep
from procvision.eval.report import knn_table
from procvision.eval.visualise import neighbour_panel
from procvision.memory import knn_sweep, privacy_audit

Pair = tuple[torch.Tensor, torch.Tensor]


class _MemoryEvalCallback(pl.Callback):
    """Shared plumbing: datasets, embedding with the teacher, reading `collected`, logging."""

    prefix = "eval"

    def __init__(
        self,
        memory: str | None = None,
        queries: str | None = None,
        every_n_epochs: int = 1,
        image_size: int | None = None,
        resize_policy: Literal["crop", "resize", "none"] = "crop",
        crop_ratio: float = 0.875,
        interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic",
        normalize: Literal["imagenet", "none"] = "imagenet",
        max_memory: int | None = None,
        max_queries: int | None = None,
        subset_seed: int = 0,
        batch_size: int = 256,
        num_workers: int = 0,
        skip_corrupt: bool = False,
        results_path: str | None = None,
    ) -> None:
        if (memory is None) != (queries is None):
            raise ValueError("give both `memory` and `queries` dataset URIs, or neither")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.memory_uri, self.query_uri = memory, queries
        self.every_n_epochs = every_n_epochs
        self.image_size = image_size
        self.transform_args = (resize_policy, crop_ratio, interpolation, normalize)
        self.max_memory, self.max_queries, self.subset_seed = max_memory, max_queries, subset_seed
        self.batch_size, self.num_workers, self.skip_corrupt = batch_size, num_workers, skip_corrupt
        self.results_path = results_path
        self.memory_set: RealDataset | None = None
        self.query_set: RealDataset | None = None
        self.last_results: dict[str, Any] | None = None

    # ----- datasets and embeddings --------------------------------------------------------------
    def _datasets(self, pl_module: pl.LightningModule) -> tuple[RealDataset, RealDataset]:
        if self.memory_set is None:
            size = self.image_size or int(pl_module.teacher_backbone.config.get("img_size", 224))
            transform = EvalTransform(size, *self.transform_args)
            memory = open_dataset(self.memory_uri, "train", transform, self.skip_corrupt)
            queries = open_dataset(self.query_uri, "test", transform, self.skip_corrupt)
            self.memory_set = seeded_subset(memory, self.max_memory, self.subset_seed)
            self.query_set = seeded_subset(queries, self.max_queries, self.subset_seed + 1)
        return self.memory_set, self.query_set

    def _embed_own(self, pl_module: pl.LightningModule) -> tuple[Pair, Pair]:
        memory, queries = self._datasets(pl_module)
        model = pl_module.teacher_backbone
        kw = {
            "batch_size": self.batch_size,
            "device": pl_module.device,
            "num_workers": self.num_workers,
        }
        return (
            embed_dataset(model, memory, desc=f"{self.prefix} memory", **kw),
            embed_dataset(model, queries, desc=f"{self.prefix} queries", **kw),
        )

    @staticmethod
    def _collected(pl_module: pl.LightningModule) -> tuple[Pair, Pair] | None:
        got = getattr(pl_module, "collected", None) or {}
        if 0 not in got or 1 not in got:
            return None
        pairs = []
        for i in (0, 1):
            emb, lab = got[i]["embeddings"], got[i]["labels"]
            if not emb:
                return None
            pairs.append((torch.cat(emb).float(), torch.cat(lab).long()))
        return pairs[0], pairs[1]

    def _due(self, trainer: pl.Trainer) -> bool:
        return (
            self.memory_uri is not None and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    # ----- hooks --------------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._due(trainer):
            return
        if trainer.is_global_zero:
            memory, queries = self._embed_own(pl_module)
            self._evaluate(trainer, pl_module, memory, queries, self._datasets(pl_module))
        # the other ranks wait here rather than inside their next collective, where a long
        # evaluation on rank 0 could run past the process-group timeout
        trainer.strategy.barrier("procvision-eval")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        got = self._collected(pl_module)
        if got is None:
            return
        if trainer.world_size > 1:  # raised on every rank, so none waits for the others
            raise RuntimeError(
                f"{type(self).__name__} evaluates what validation_step collected, which under "
                "distributed validation is one shard per process: validate on one device "
                "(--trainer.devices 1), or give the callback memory/queries to embed itself"
            )
        dm = trainer.datamodule
        sets = (getattr(dm, "memory_set", None), getattr(dm, "query_set", None))
        sets = sets if all(isinstance(s, RealDataset) for s in sets) else None
        if sets is not None and (len(sets[0]), len(sets[1])) != (len(got[0][1]), len(got[1][1])):
            sets = None  # corrupt items were skipped: rows no longer match dataset indices
        self._evaluate(trainer, pl_module, got[0], got[1], sets, validating=True)

    # ----- to implement -------------------------------------------------------------------------
    def _evaluate(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        memory: Pair,
        queries: Pair,
        sets: tuple[RealDataset, RealDataset] | None,
        validating: bool = False,
    ) -> None:
        raise NotImplementedError

    # ----- output -------------------------------------------------------------------------------
    def _uris(self, trainer: pl.Trainer) -> tuple[str | None, str | None]:
        if self.memory_uri is not None:
            return self.memory_uri, self.query_uri
        dm = trainer.datamodule
        return getattr(dm, "memory", None), getattr(dm, "queries", None)

    def _log(self, pl_module: pl.LightningModule, metrics: dict[str, float]) -> None:
        metrics = {f"{self.prefix}/{k}": float(v) for k, v in metrics.items()}
        pl_module.log_dict(metrics, rank_zero_only=True)

    @staticmethod
    def _tensorboards(trainer: pl.Trainer) -> list:
        return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]

    def _write(
        self, trainer: pl.Trainer, record: dict, default_name: str, validating: bool
    ) -> Path | None:
        path = self.results_path
        if path is None and validating:
            path = str(Path(trainer.log_dir or trainer.default_root_dir) / default_name)
        if path is None:
            return None
        record = {
            **record,
            "epoch": int(trainer.current_epoch),
            "global_step": int(trainer.global_step),
            "ckpt_path": getattr(trainer, "ckpt_path", None),
        }
        return write_json_atomic(path, record)


class KNNCallback(_MemoryEvalCallback):
    """k-NN accuracy of the current teacher (weighted vote exp(cos/T), paper §4.1).

    Logs `knn/{method}/k{k}/top1` and `/top5` (percent) for every k and method, plus
    `knn/{method}/best/top1`; and a TensorBoard image of `n_image_queries` queries with their
    `n_image_neighbours` nearest memory items (label, similarity). At the end of a validation
    epoch it also prints the table and writes the results as JSON (`results_path`, default
    `<log_dir>/knn_results.json`).

    Args:
        memory, queries: dataset URIs (e.g. "fashion_mnist:train", "fashion_mnist:test") for the
            evaluation during `fit`; without them only the validation-epoch mode runs.
        every_n_epochs: evaluate during fit every that many training epochs.
        ks: neighbour counts (all from one search of the largest).
        methods: votes among "weighted", "plurality", "rank".
        T: temperature of the weighted vote (0.07).
        image_size: input size; default the teacher's `img_size`.
        resize_policy, crop_ratio, interpolation, normalize: the `EvalTransform`.
        max_memory, max_queries, subset_seed: seeded subsets of the two sets.
        batch_size, num_workers: embedding loader.
        skip_corrupt: skip undecodable images instead of failing.
        results_path: JSON file written after every evaluation.
        log_images: log the neighbour picture to TensorBoard.
        n_image_queries, n_image_neighbours: its size.
    """

    prefix = "knn"

    def __init__(
        self,
        memory: str | None = None,
        queries: str | None = None,
        every_n_epochs: int = 1,
        ks: list[int] = list(DEFAULT_KS),  # noqa: B006 - jsonargparse needs the literal default
        methods: list[str] = ["weighted"],  # noqa: B006
        T: float = DEFAULT_T,
        image_size: int | None = None,
        resize_policy: Literal["crop", "resize", "none"] = "crop",
        crop_ratio: float = 0.875,
        interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic",
        normalize: Literal["imagenet", "none"] = "imagenet",
        max_memory: int | None = None,
        max_queries: int | None = None,
        subset_seed: int = 0,
        batch_size: int = 256,
        num_workers: int = 0,
        skip_corrupt: bool = False,
        results_path: str | None = None,
        log_images: bool = True,
        n_image_queries: int = 6,
        n_image_neighbours: int = 5,
    ) -> None:
        super().__init__(
            memory, queries, every_n_epochs, image_size, resize_policy, crop_ratio, interpolation,
            normalize, max_memory, max_queries, subset_seed, batch_size, num_workers, skip_corrupt,
            results_path,
        )  # fmt: skip
        self.ks, self.methods, self.T = [int(k) for k in ks], list(methods), float(T)
        self.log_images = log_images
        self.n_image_queries, self.n_image_neighbours = n_image_queries, n_image_neighbours

    def _evaluate(self, trainer, pl_module, memory, queries, sets, validating=False) -> None:
        mem = build_memory(memory[0], memory[1])
        sweep = knn_sweep(
            mem, queries[0].numpy(), queries[1].numpy(), tuple(self.ks), tuple(self.methods), self.T
        )
        results = flatten_sweep(sweep)
        self.last_results = results
        self._log(pl_module, {k: v for k, v in results.items() if not k.startswith("info/")})
        if self.log_images and sets is not None:
            self._log_neighbours(trainer, mem, queries, sets)
        table = knn_table(results)
        if validating:
            print(
                f"\nk-NN accuracy (%), memory {len(memory[1])}, queries {len(queries[1])}, T={self.T}\n{table}"
            )
        record = {
            "results": results,
            "table": table,
            "ks": self.ks,
            "methods": self.methods,
            "T": self.T,
        }
        if sets is not None:
            record["memory"], record["queries"] = sets[0].describe(), sets[1].describe()
        record["memory_uri"], record["query_uri"] = self._uris(trainer)
        self._write(trainer, record, "knn_results.json", validating)

    def _log_neighbours(
        self, trainer, mem, queries: Pair, sets: tuple[RealDataset, RealDataset]
    ) -> None:
        boards = self._tensorboards(trainer)
        if not boards or self.n_image_queries < 1:
            return
        memory_set, query_set = sets
        names = memory_set.class_names
        n = min(self.n_image_queries, len(queries[0]))
        picks = np.linspace(0, len(queries[0]) - 1, n).round().astype(int) if n else []
        sims, ids = mem.search(queries[0][picks].numpy(), self.n_image_neighbours)
        rows_q, rows_n = [], []
        for r, qi in enumerate(picks):
            rows_q.append((query_set.load_image(int(qi)), _name(names, int(queries[1][qi]))))
            rows_n.append([
                (memory_set.load_image(int(i)), _name(names, int(memory_set.labels[int(i)])), float(s))
                for s, i in zip(sims[r], ids[r], strict=True) if i >= 0
            ])  # fmt: skip
        panel = neighbour_panel(rows_q, rows_n)
        for tb in boards:
            tb.add_image(f"{self.prefix}/neighbours", panel, trainer.global_step, dataformats="HWC")


class PrivacyCallback(_MemoryEvalCallback):
    """Exact non-private fraction of the memory and k-NN accuracy of the current teacher (paper
    §6, Fig. 12): an item is non-private when removing it changes at least one query's prediction.

    Logs `privacy/non_private_fraction` and `privacy/paper_variant_fraction` (percent of the
    memory), `privacy/non_private_count`, `privacy/queries_with_flips`, `privacy/accuracy_top1`,
    and a TensorBoard histogram `privacy/flip_counts` (queries flipped per non-private item).

    Args: as `KNNCallback`, with one `k` and `method` instead of sweeps.
    """

    prefix = "privacy"

    def __init__(
        self,
        memory: str | None = None,
        queries: str | None = None,
        every_n_epochs: int = 1,
        k: int = 20,
        method: Literal["weighted", "plurality", "rank"] = "weighted",
        T: float = DEFAULT_T,
        image_size: int | None = None,
        resize_policy: Literal["crop", "resize", "none"] = "crop",
        crop_ratio: float = 0.875,
        interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic",
        normalize: Literal["imagenet", "none"] = "imagenet",
        max_memory: int | None = None,
        max_queries: int | None = None,
        subset_seed: int = 0,
        batch_size: int = 256,
        num_workers: int = 0,
        skip_corrupt: bool = False,
        results_path: str | None = None,
    ) -> None:
        super().__init__(
            memory, queries, every_n_epochs, image_size, resize_policy, crop_ratio, interpolation,
            normalize, max_memory, max_queries, subset_seed, batch_size, num_workers, skip_corrupt,
            results_path,
        )  # fmt: skip
        self.k, self.method, self.T = int(k), method, float(T)

    def _evaluate(self, trainer, pl_module, memory, queries, sets, validating=False) -> None:
        mem = build_memory(memory[0], memory[1])
        audit = privacy_audit(
            mem,
            queries[0].numpy(),
            queries[1].numpy(),
            self.k,
            self.method,
            self.T,
            per_query=False,
        )
        metrics = privacy_metrics(audit)
        self.last_results = metrics
        self._log(pl_module, metrics)
        counts = np.asarray(audit["flip_counts"]["counts"], dtype=np.int64)
        for tb in self._tensorboards(trainer):
            if len(counts):
                tb.add_histogram(f"{self.prefix}/flip_counts", counts, trainer.global_step)
        if validating:
            print("\nprivacy: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        record = {"results": metrics, "k": self.k, "method": self.method, "T": self.T,
                  "flip_counts": audit["flip_counts"]}  # fmt: skip
        record["memory_uri"], record["query_uri"] = self._uris(trainer)
        self._write(trainer, record, "privacy_results.json", validating)


def privacy_metrics(audit: dict) -> dict[str, float]:
    """The loggable numbers of a `privacy_audit` result (fractions in percent of the memory)."""
    out = {
        "non_private_fraction": 100.0 * audit["non_private_fraction"],
        "non_private_count": float(audit["non_private_count"]),
        "queries_with_flips": float(audit["queries_with_flips"]),
    }
    if "accuracy_top1" in audit:
        out["accuracy_top1"] = float(audit["accuracy_top1"])
        out["paper_variant_fraction"] = 100.0 * audit["paper_variant"]["bad_fraction"]
        out["paper_variant_count"] = float(audit["paper_variant"]["bad_count"])
    return out


def _name(names: list[str], label: int) -> str:
    return names[label] if 0 <= label < len(names) else str(label)


class UnlearningCallback(_MemoryEvalCallback):
    """Check exact unlearning with the current teacher at epoch ends (paper §6).

    Builds the memory, removes a seeded random `forget_fraction` of its items, and proves with
    `verify_unlearned` that the edited memory answers every query bit-for-bit like a memory built
    from scratch without those items (neighbours, similarities, scores, predictions, content hash),
    and that no removed id is stored or returned. Logs `unlearning/ok` (1 or 0),
    `unlearning/removed`, `unlearning/accuracy_before` and `unlearning/accuracy_after` (k-NN top-1
    with the chosen vote, percent) and `unlearning/predictions_changed` (queries whose prediction
    changed with the removal). A failed check raises, since a memory that cannot forget exactly
    breaks the package's promise.

    Args: as `KNNCallback`, plus `forget_fraction` (0 < f < 1) and `forget_seed`.
    """

    prefix = "unlearning"

    def __init__(
        self,
        memory: str | None = None,
        queries: str | None = None,
        every_n_epochs: int = 1,
        forget_fraction: float = 0.05,
        forget_seed: int = 0,
        k: int = 20,
        method: Literal["weighted", "plurality", "rank"] = "weighted",
        T: float = DEFAULT_T,
        image_size: int | None = None,
        resize_policy: Literal["crop", "resize", "none"] = "crop",
        max_memory: int | None = None,
        max_queries: int | None = None,
        subset_seed: int = 0,
        batch_size: int = 256,
        results_path: str | None = None,
    ) -> None:
        if not 0.0 < forget_fraction < 1.0:
            raise ValueError(f"forget_fraction must be in (0, 1), got {forget_fraction}")
        super().__init__(
            memory, queries, every_n_epochs, image_size, resize_policy,
            max_memory=max_memory, max_queries=max_queries, subset_seed=subset_seed,
            batch_size=batch_size, results_path=results_path,
        )  # fmt: skip
        self.forget_fraction, self.forget_seed = float(forget_fraction), int(forget_seed)
        self.k, self.method, self.T = int(k), method, float(T)

    def _evaluate(self, trainer, pl_module, memory, queries, sets, validating=False) -> None:
        from procvision.memory import VisualMemory, verify_unlearned

        emb, lab = memory[0].numpy(), memory[1].numpy()
        n = len(lab)
        n_forget = max(1, round(self.forget_fraction * n))
        rng = np.random.default_rng(self.forget_seed)
        forgotten = np.sort(rng.choice(n, size=min(n_forget, n - 1), replace=False))
        full = build_memory(emb, lab)
        edited = full.copy()
        edited.remove(forgotten)
        keep = np.setdiff1d(np.arange(n), forgotten)

        def rebuilt():  # the kept items added to a new memory, with their original ids
            mem = VisualMemory(emb.shape[1])
            mem.add(emb[keep], lab[keep], ids=keep)
            return mem

        q = queries[0].numpy()
        k = min(self.k, len(keep))
        check = verify_unlearned(edited, rebuilt, q, k, forgotten, (self.method,), self.T)
        before = _predictions(full, q, k, self.method, self.T)
        after = _predictions(edited, q, k, self.method, self.T)
        truth = queries[1].numpy()
        metrics = {
            "ok": float(check["ok"]),
            "removed": float(len(forgotten)),
            "accuracy_before": 100.0 * float((before == truth).mean()),
            "accuracy_after": 100.0 * float((after == truth).mean()),
            "predictions_changed": float((before != after).sum()),
        }
        self.last_results = {**metrics, "check": check}
        self._log(pl_module, metrics)
        if validating:
            print("\nunlearning: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        record = {"results": metrics, "check": check, "forgotten_ids": forgotten.tolist()}
        self._write(trainer, record, "unlearning_results.json", validating)
        if not check["ok"]:
            raise RuntimeError(f"exact unlearning check failed: {check}")


def _predictions(memory, queries: np.ndarray, k: int, method: str, T: float) -> np.ndarray:
    """Predicted labels [Q] of a k-NN vote over `memory` (labels in the memory's label space)."""
    from procvision.memory import map_labels, predict, vote_scores

    sims, ids = memory.search(queries, k)
    classes = memory.classes
    scores = vote_scores(sims, map_labels(memory.labels_of(ids), classes), len(classes), method, T)
    return classes[predict(scores)]
