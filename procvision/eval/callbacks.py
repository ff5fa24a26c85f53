"""Lightning callbacks that evaluate the current backbone through the visual memory (thin glue).

`KNNCallback` (k-NN accuracy, paper §4.1), `PrivacyCallback` (non-private fraction, paper §6,
Fig. 12) and `UnlearningCallback` (exact unlearning, paper §6) each work in two ways:
- during `fit`, every `every_n_epochs` at the end of a training epoch, given `memory` and
  `queries` (`EvalSet` descriptions): the sets are embedded with `pl_module.teacher_backbone`
  through the trainer's shared embedding cache (`procvision.eval.cache`), so callbacks on the
  same sets share one pass per set per epoch end; global rank 0 evaluates;
- at the end of a validation (or test) epoch (`procvision validate` with `KNNDataModule` and
  `BackboneEvaluator`): they use what the evaluator embedded, `pl_module.gathered()` (loader 0 =
  memory, 1 = queries; all ranks' shards gathered under DDP).
The maths lives in `procvision.eval.knn` and `procvision.memory` (knn_results, privacy_audit,
privacy_metrics, forget_sample, unlearning_check, knn_predict). Metrics are logged with
`pl_module.log_dict(..., rank_zero_only=True)` on global rank 0 (under DDP not usable as a
checkpoint or early-stopping monitor); nothing is printed: `summary` holds the text that
`procvision validate` prints after the run. Every collective is reached in a `finally`: when the
evaluation raises on rank 0 the other ranks are told, and stop too, instead of waiting forever.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger

from procvision.atomic import write_json_atomic
from procvision.data.datasets import RealDataset
from procvision.data.datasets.datamodule import EvalSet, with_split
from procvision.eval.cache import shared_cache
from procvision.eval.embed import Embedded, resolve_precision
from procvision.eval.knn import DEFAULT_KS, DEFAULT_T, knn_results
from procvision.eval.report import knn_table
from procvision.eval.visualise import neighbour_panel
from procvision.memory import build_memory, knn_predict, privacy_audit
from procvision.memory.privacy import privacy_metrics
from procvision.memory.unlearn import forget_sample, unlearning_check

Sets = tuple[RealDataset, RealDataset]
PrecisionArg = Literal["auto", "fp32", "bf16"]


def run_on_rank_zero(trainer: pl.Trainer, fn: Callable[[], None], name: str) -> None:
    """Run `fn` on global rank 0 while the other ranks wait; every rank reaches the collective
    (a broadcast of whether rank 0 failed) in a `finally`, and when rank 0 failed the other ranks
    raise too, so no rank hangs in its next collective."""
    error: BaseException | None = None
    try:
        if trainer.is_global_zero:
            fn()
    except BaseException as err:  # noqa: BLE001 - re-raised below, after the collective
        error = err
    finally:
        failed = bool(trainer.strategy.broadcast(error is not None, src=0))
    if error is not None:
        raise error
    if failed:
        raise RuntimeError(f"{name} failed on global rank 0 (see its error); stopping this rank")


class _MemoryEvalCallback(pl.Callback):
    """Shared plumbing: evaluation sets, shared embeddings, reading what validate gathered, output."""

    prefix = "eval"
    kind = "eval"  # the record's "kind" (what `procvision report` reads it as)

    def __init__(
        self,
        memory: EvalSet | None = None,
        queries: EvalSet | None = None,
        every_n_epochs: int = 1,
        precision: PrecisionArg = "auto",
        results_path: str | None = None,
        progress: bool = True,
    ) -> None:
        if (memory is None) != (queries is None):
            raise ValueError("give both `memory` and `queries` evaluation sets, or neither")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        resolve_precision(precision)  # check the value now
        self.memory = None if memory is None else with_split(memory, "train")
        self.queries = None if queries is None else with_split(queries, "test")
        self.every_n_epochs = every_n_epochs
        self.precision = precision
        self.results_path = results_path
        self.progress = progress
        self.last_results: dict[str, Any] | None = None
        self.summary: str | None = None
        self._log_dir: str | None = None  # resolved on every rank before rank-0 work

    # ----- fit: embed through the shared cache --------------------------------------------------
    def _due(self, trainer: pl.Trainer) -> bool:
        return self.memory is not None and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _embed_own(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple:
        cache = shared_cache(trainer)
        model, device = pl_module.teacher_backbone, pl_module.device
        precision = resolve_precision(self.precision, device)
        kw = {"device": device, "precision": precision, "step": int(trainer.global_step),
              "progress": self.progress}  # fmt: skip
        mem_set, mem = cache.embed(model, self.memory, desc="eval memory", **kw)
        qry_set, qry = cache.embed(model, self.queries, desc="eval queries", **kw)
        return mem, qry, (mem_set, qry_set), precision

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        shared_cache(trainer).clear()  # last epoch's embeddings are stale: free them while training

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._due(trainer):
            return

        def evaluate() -> None:
            mem, qry, sets, precision = self._embed_own(trainer, pl_module)
            self._evaluate(trainer, pl_module, mem, qry, sets, {"precision": precision})

        run_on_rank_zero(trainer, evaluate, type(self).__name__)

    # ----- validate / test: what the evaluator gathered -----------------------------------------
    @staticmethod
    def _collected(trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple | None:
        if hasattr(pl_module, "gathered"):
            got = pl_module.gathered()  # a collective under DDP: called on every rank
            return (got[0], got[1]) if 0 in got and 1 in got else None
        raw = getattr(pl_module, "collected", None) or {}  # DINOModule's validation_step
        if 0 not in raw or 1 not in raw or not raw[0]["embeddings"] or not raw[1]["embeddings"]:
            return None
        if trainer.world_size > 1:  # raised on every rank, so none waits for the others
            raise RuntimeError(
                f"{type(pl_module).__name__} collects one shard per process under distributed "
                "validation: validate with BackboneEvaluator (procvision validate does)"
            )
        import torch

        return tuple(
            Embedded(torch.cat(raw[i]["embeddings"]).float(), torch.cat(raw[i]["labels"]).long(),
                     torch.arange(sum(len(t) for t in raw[i]["labels"])))
            for i in (0, 1)
        )  # fmt: skip

    def _eval_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        got = self._collected(trainer, pl_module)
        if got is None:
            return
        dm = trainer.datamodule
        sets = (getattr(dm, "memory_set", None), getattr(dm, "query_set", None))
        sets = sets if all(isinstance(s, RealDataset) for s in sets) else None
        how = pl_module.describe() if hasattr(pl_module, "describe") else {}
        if hasattr(dm, "specs"):
            how["sets"] = [s.describe() for s in dm.specs]
        # trainer.log_dir is a broadcast under DDP: resolve it here, on every rank, never inside
        # the rank-0-only evaluation (where the other ranks would never join it)
        self._log_dir = str(trainer.log_dir or trainer.default_root_dir)

        def evaluate() -> None:
            self._evaluate(trainer, pl_module, got[0], got[1], sets, how, validating=True)

        run_on_rank_zero(trainer, evaluate, type(self).__name__)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_epoch_end(trainer, pl_module)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_epoch_end(trainer, pl_module)

    # ----- to implement -------------------------------------------------------------------------
    def _evaluate(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        memory: Embedded,
        queries: Embedded,
        sets: Sets | None,
        how: dict,
        validating: bool = False,
    ) -> None:
        raise NotImplementedError

    # ----- output -------------------------------------------------------------------------------
    def _sets_record(self, trainer: pl.Trainer, how: dict) -> dict:
        if "sets" in how:
            return {}
        if self.memory is not None:
            return {"sets": [self.memory.describe(), self.queries.describe()]}
        return {}

    def _uris(self, trainer: pl.Trainer) -> dict[str, str]:
        """{"memory_uri", "query_uri"} of the sets evaluated (own sets during fit, else the
        datamodule's), split included; {} when unknown."""
        sets = (self.memory, self.queries)
        dm = getattr(trainer, "datamodule", None)
        if sets[0] is None and dm is not None:
            sets = (getattr(dm, "memory_spec", None), getattr(dm, "query_spec", None))
        if not all(isinstance(x, EvalSet) for x in sets):
            return {}
        return {"memory_uri": _uri_with_split(sets[0]), "query_uri": _uri_with_split(sets[1])}

    def _log(self, pl_module: pl.LightningModule, metrics: dict[str, float]) -> None:
        metrics = {f"{self.prefix}/{k}": float(v) for k, v in metrics.items()}
        pl_module.log_dict(metrics, rank_zero_only=True)

    @staticmethod
    def _tensorboards(trainer: pl.Trainer) -> list:
        return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]

    def _write(
        self, trainer: pl.Trainer, record: dict, how: dict, default_name: str, validating: bool
    ) -> Path | None:
        path = self.results_path
        if path is None and validating:
            path = str(Path(self._log_dir or trainer.default_root_dir) / default_name)
        if path is None:
            return None
        pl_module = trainer.lightning_module
        record = {
            "kind": self.kind,
            **record,
            **self._uris(trainer),
            "model": model_record(pl_module, how),
            "produced_by": {**how, **self._sets_record(trainer, how)},
            "epoch": int(trainer.current_epoch),
            "global_step": int(trainer.global_step),
            "ckpt_path": getattr(trainer, "ckpt_path", None),
        }
        return write_json_atomic(path, record)


class KNNCallback(_MemoryEvalCallback):
    """k-NN accuracy of the current backbone (weighted vote exp(cos/T), paper §4.1).

    Logs `knn/{method}/k{k}/top1` and `/top5` (percent) for every k and method, plus
    `knn/{method}/best/top1`; and a TensorBoard image of `n_image_queries` queries with their
    `n_image_neighbours` nearest memory items (label, similarity). Writes the results as JSON
    (`results_path`; at a validation epoch by default `<log_dir>/knn_results.json`), with how they
    were produced; `summary` holds the table `procvision validate` prints.

    Args:
        memory, queries: `EvalSet`s to embed during `fit` (both or neither; without them only the
            validation-epoch mode runs).
        every_n_epochs: evaluate during fit every that many training epochs.
        ks: neighbour counts (all from one search of the largest).
        methods: votes among "weighted", "plurality", "rank".
        T: temperature of the weighted vote (0.07).
        precision: embedding precision during fit ("auto": bf16 on CUDA and CPUs with native bf16).
        results_path: JSON file written after every evaluation.
        log_images: log the neighbour picture to TensorBoard.
        n_image_queries, n_image_neighbours: its size.
        progress: progress bars while embedding during fit.
    """

    prefix = "knn"
    kind = "knn"

    def __init__(
        self,
        memory: EvalSet | None = None,
        queries: EvalSet | None = None,
        every_n_epochs: int = 1,
        ks: list[int] = list(DEFAULT_KS),  # noqa: B006 - jsonargparse needs the literal default
        methods: list[str] = ["weighted"],  # noqa: B006
        T: float = DEFAULT_T,
        precision: PrecisionArg = "auto",
        results_path: str | None = None,
        log_images: bool = True,
        n_image_queries: int = 6,
        n_image_neighbours: int = 5,
        progress: bool = True,
    ) -> None:
        super().__init__(memory, queries, every_n_epochs, precision, results_path, progress)
        self.ks, self.methods, self.T = [int(k) for k in ks], list(methods), float(T)
        self.log_images = log_images
        self.n_image_queries, self.n_image_neighbours = n_image_queries, n_image_neighbours

    def _evaluate(self, trainer, pl_module, memory, queries, sets, how, validating=False) -> None:
        mem = build_memory(memory.embeddings, memory.labels)
        results = knn_results(
            mem, queries.embeddings, queries.labels, self.ks, self.methods, self.T
        )
        self.last_results = results
        self._log(pl_module, {k: v for k, v in results.items() if not k.startswith("info/")})
        if self.log_images and sets is not None:
            self._log_neighbours(trainer, mem, memory, queries, sets)
        table = knn_table(results)
        self.summary = (
            f"k-NN accuracy (%), memory {len(memory.labels)}, queries {len(queries.labels)}, "
            f"T={self.T}\n{table}"
        )
        record = {"results": results, "table": table, "ks": self.ks, "methods": self.methods,
                  "T": self.T}  # fmt: skip
        if sets is not None:
            record["memory"], record["queries"] = sets[0].describe(), sets[1].describe()
        self._write(trainer, record, how, "knn_results.json", validating)

    def _log_neighbours(
        self, trainer, mem, memory: Embedded, queries: Embedded, sets: Sets
    ) -> None:
        boards = self._tensorboards(trainer)
        if not boards or self.n_image_queries < 1:
            return
        memory_set, query_set = sets
        names = memory_set.class_names
        n = min(self.n_image_queries, len(queries.labels))
        picks = np.linspace(0, len(queries.labels) - 1, n).round().astype(int) if n else []
        found = knn_predict(mem, queries.embeddings[picks].numpy(), self.n_image_neighbours)
        mem_index = memory.indices.numpy()  # memory id (row) -> dataset index
        rows_q, rows_n = [], []
        for r, qi in enumerate(picks):
            q_item = int(queries.indices[qi])
            rows_q.append((query_set.load_image(q_item), _name(names, int(queries.labels[qi]))))
            rows_n.append([
                (memory_set.load_image(int(mem_index[i])),
                 _name(names, int(memory_set.labels[int(mem_index[i])])), float(s))
                for s, i in zip(found.sims[r], found.ids[r], strict=True) if i >= 0
            ])  # fmt: skip
        panel = neighbour_panel(rows_q, rows_n)
        for tb in boards:
            tb.add_image(f"{self.prefix}/neighbours", panel, trainer.global_step, dataformats="HWC")


def model_record(pl_module: pl.LightningModule | None, how: dict | None = None) -> dict[str, Any]:
    """{"fingerprint", "params", "backbone", "arch", "config"} of the backbone evaluated: the
    evaluator's (its `.describe()` in `how` gives the spec and fingerprint) or, during a fit, the
    teacher's (`pl_module.teacher_backbone`; its spec is unknown: "backbone" None)."""
    from procvision.eval.nights import model_info

    how = how or {}
    backbone = getattr(pl_module, "teacher_backbone", None)
    spec = how.get("backbone") or getattr(pl_module, "spec", None)
    if backbone is None:
        return {"fingerprint": how.get("fingerprint"), "params": None, "backbone": spec}
    info = model_info(backbone, spec)
    if how.get("fingerprint"):
        info["fingerprint"] = how["fingerprint"]
    return info


def _uri_with_split(evalset: EvalSet) -> str:
    """The set's dataset URI with the split it opens (`fashion_mnist:test`), for the report."""
    from procvision.data.datasets.registry import parse_dataset_uri

    try:
        named = parse_dataset_uri(evalset.dataset).split
    except ValueError:
        named = None
    if named is None and evalset.split:
        return f"{evalset.dataset}:{evalset.split}"
    return evalset.dataset


def _name(names: list[str], label: int) -> str:
    return names[label] if 0 <= label < len(names) else str(label)


class PrivacyCallback(_MemoryEvalCallback):
    """Exact non-private fraction of the memory and k-NN accuracy of the current backbone (paper
    §6, Fig. 12): an item is non-private when removing it changes at least one query's prediction.

    Logs `privacy/non_private_fraction` and `privacy/paper_variant_fraction` (percent of the
    memory), `privacy/non_private_count`, `privacy/queries_with_flips`, `privacy/accuracy_top1`,
    and a TensorBoard histogram `privacy/flip_counts` (queries flipped per non-private item).

    Args: as `KNNCallback`, with one `k` and `method` instead of sweeps.
    """

    prefix = "privacy"
    kind = "privacy"

    def __init__(
        self,
        memory: EvalSet | None = None,
        queries: EvalSet | None = None,
        every_n_epochs: int = 1,
        k: int = 20,
        method: Literal["weighted", "plurality", "rank"] = "weighted",
        T: float = DEFAULT_T,
        precision: PrecisionArg = "auto",
        results_path: str | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(memory, queries, every_n_epochs, precision, results_path, progress)
        self.k, self.method, self.T = int(k), method, float(T)

    def _evaluate(self, trainer, pl_module, memory, queries, sets, how, validating=False) -> None:
        mem = build_memory(memory.embeddings, memory.labels)
        audit = privacy_audit(mem, queries.embeddings.numpy(), queries.labels.numpy(), self.k,
                              self.method, self.T, per_query=False)  # fmt: skip
        metrics = privacy_metrics(audit)
        self.last_results = metrics
        self._log(pl_module, metrics)
        counts = np.asarray(audit["flip_counts"]["counts"], dtype=np.int64)
        for tb in self._tensorboards(trainer):
            if len(counts):
                tb.add_histogram(f"{self.prefix}/flip_counts", counts, trainer.global_step)
        self.summary = "privacy: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        record = {"results": metrics, "k": self.k, "method": self.method, "T": self.T,
                  "flip_counts": audit["flip_counts"]}  # fmt: skip
        self._write(trainer, record, how, "privacy_results.json", validating)


class UnlearningCallback(_MemoryEvalCallback):
    """Check exact unlearning with the current backbone at epoch ends (paper §6).

    Builds the memory, removes a seeded random `forget_fraction` of its items
    (`memory.unlearn.forget_sample`) and proves with `memory.unlearn.unlearning_check` that the
    edited memory answers every query bit for bit like a memory built from scratch without them
    (neighbours, similarities, scores, predictions, content hash), and that no removed id is stored
    or returned. Logs `unlearning/ok` (1 or 0), `unlearning/removed`,
    `unlearning/accuracy_before` and `unlearning/accuracy_after` (k-NN top-1 with the chosen vote,
    percent) and `unlearning/predictions_changed`. A failed check raises (on every rank), since a
    memory that cannot forget exactly breaks the package's promise.

    Args: as `PrivacyCallback`, plus `forget_fraction` (0 < f < 1) and `forget_seed`.
    """

    prefix = "unlearning"
    kind = "unlearning"

    def __init__(
        self,
        memory: EvalSet | None = None,
        queries: EvalSet | None = None,
        every_n_epochs: int = 1,
        forget_fraction: float = 0.05,
        forget_seed: int = 0,
        k: int = 20,
        method: Literal["weighted", "plurality", "rank"] = "weighted",
        T: float = DEFAULT_T,
        precision: PrecisionArg = "auto",
        results_path: str | None = None,
        progress: bool = True,
    ) -> None:
        if not 0.0 < forget_fraction < 1.0:
            raise ValueError(f"forget_fraction must be in (0, 1), got {forget_fraction}")
        super().__init__(memory, queries, every_n_epochs, precision, results_path, progress)
        self.forget_fraction, self.forget_seed = float(forget_fraction), int(forget_seed)
        self.k, self.method, self.T = int(k), method, float(T)

    def _evaluate(self, trainer, pl_module, memory, queries, sets, how, validating=False) -> None:
        emb, lab = memory.embeddings.numpy(), memory.labels.numpy()
        forgotten = forget_sample(len(lab), self.forget_fraction, self.forget_seed)
        out = unlearning_check(build_memory(emb, lab), emb, lab, queries.embeddings.numpy(),
                               queries.labels.numpy(), forgotten, self.k, self.method, self.T)  # fmt: skip
        metrics, check = out["metrics"], out["check"]
        self.last_results = {**metrics, "check": check}
        self._log(pl_module, metrics)
        self.summary = "unlearning: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        record = {"results": metrics, "check": check, "forgotten_ids": forgotten.tolist()}
        self._write(trainer, record, how, "unlearning_results.json", validating)
        if not check["ok"]:
            raise RuntimeError(f"exact unlearning check failed: {check}")
