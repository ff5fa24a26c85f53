"""Linear probe on frozen, pre-computed features (paper App. B.2, Table 6).

DINO's linear evaluation, scaled to a feature set: one `nn.Linear` trained with SGD (momentum 0.9,
no weight decay) under a cosine schedule for a few epochs (the heads of the lr sweep are trained
side by side in one fit), the lr chosen from a small sweep on a
seeded 10% validation split of the *training* set, then retrained on the whole training set with
the chosen lr and evaluated once on the test set. The test set never takes part in choosing
anything: `select_lr` does not receive it.

The features are any tensors [N, D]; `dataset_features` gives the embedding function
`features(EvalSet or dataset) -> (embeddings [N, D], labels [N])` of a backbone spec, which embeds
`EvalSet`s through the evaluation layer's embedding cache (`procvision.eval.cache`; with
`cache_dir`, kept on disk keyed by the backbone's fingerprint, so a second run embeds nothing).
The k-NN on the same features is computed alongside (`probe_features`), so "k-NN vs linear"
compares one embedding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

Features = Callable[[Dataset], tuple[torch.Tensor, torch.Tensor]]
RESULT_KIND = "linear"


@dataclass(frozen=True)
class LinearRecipe:
    """Hyper-parameters of the probe.

    Args:
        lrs: the learning rates swept (SGD, for standardised features).
        epochs: epochs of each fit (cosine schedule from lr to 0 over all steps).
        batch_size: features per step.
        momentum: SGD momentum (DINO: 0.9).
        weight_decay: SGD weight decay (DINO: 0).
        val_fraction: share of the training set held out to choose the lr (0.1).
        seed: seed of the split, the initialisation and the shuffling.
        standardize: train on features standardised per dimension with the mean and std of the
            rows being fitted (never of the validation or test rows), then fold that affine map
            into the heads, so the returned heads act on the original features. A linear probe's
            hypotheses are unchanged by it; only the conditioning improves (embeddings after a
            final LayerNorm and L2 normalisation are nearly collinear, so raw SGD needs lrs that
            differ by orders of magnitude between backbones).
    """

    lrs: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    epochs: int = 20
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    seed: int = 0
    standardize: bool = True

    def __post_init__(self) -> None:
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise ValueError(f"lrs must be a non-empty list of positive numbers, got {self.lrs}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"need epochs >= 1 and batch_size >= 1, got {self.epochs}, {self.batch_size}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lrs"] = list(self.lrs)
        return d


def _linear_head(dim: int, num_classes: int) -> nn.Linear:
    head = nn.Linear(dim, num_classes)
    nn.init.normal_(head.weight, std=0.01)  # DINO's LinearClassifier init
    nn.init.zeros_(head.bias)
    return head


class LinearProbe(pl.LightningModule):
    """Linear classifiers `nn.Linear(dim, num_classes)`, one per lr, trained side by side on the
    same batches with cross-entropy, SGD and a per-step cosine lr from each lr to 0 over
    `total_steps`.

    The heads share nothing (the loss is the sum of their cross-entropies, so each head gets
    exactly its own gradient, and each has its own SGD parameter group), so one fit of K heads is K
    independent fits; the lr sweep then costs one pass over the features instead of K.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        lrs: Sequence[float],
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        total_steps: int = 1,
    ) -> None:
        super().__init__()
        self.total_steps = max(1, int(total_steps))
        self.heads = nn.ModuleList(_linear_head(dim, num_classes) for _ in lrs)
        self.lrs, self.momentum, self.weight_decay = (
            [float(lr) for lr in lrs],
            momentum,
            weight_decay,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """features [B, D] -> logits [K, B, C] of the K heads."""
        return torch.stack([head(x) for head in self.heads])

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        return sum(F.cross_entropy(z, y) for z in logits)

    def configure_optimizers(self):
        groups = [
            {"params": h.parameters(), "lr": lr} for h, lr in zip(self.heads, self.lrs, strict=True)
        ]
        opt = torch.optim.SGD(groups, lr=self.lrs[0], momentum=self.momentum,
                              weight_decay=self.weight_decay)  # fmt: skip
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.total_steps, eta_min=0.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ShuffledBatches(IterableDataset):
    """Seeded shuffled mini-batches of in-memory tensors: one permutation per epoch, then slices
    (gathered in one indexing op per batch rather than item by item). Epoch e of a given seed
    always gives the same batches."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> None:
        self.x, self.y, self.batch_size = x, y, int(batch_size)
        self.generator = torch.Generator().manual_seed(int(seed))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = torch.randperm(len(self.y), generator=self.generator)
        for i in range(0, len(perm), self.batch_size):
            idx = perm[i : i + self.batch_size]
            yield self.x[idx], self.y[idx]


def seeded_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit indices, validation indices), sorted, of a seeded random split of range(n).

    The validation part has round(val_fraction * n) items, at least 1 and at most n - 1.
    """
    if n < 2:
        raise ValueError(f"need at least 2 training items to hold out a validation split, got {n}")
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _accelerator(device: str | torch.device) -> str:
    kind = torch.device(device).type
    return {"cuda": "gpu", "cpu": "cpu", "mps": "mps"}.get(kind, kind)


def fit_linear(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    lrs: Sequence[float],
    recipe: LinearRecipe = LinearRecipe(),
    device: str = "cpu",
    progress: bool = False,
) -> list[nn.Linear]:
    """Train one linear head per lr on features x [N, D] with labels y [N] (one Lightning fit);
    returns the heads (CPU, eval mode, acting on the original features) in the order of `lrs`."""
    pl.seed_everything(recipe.seed, workers=True, verbose=False)
    x = x.float()
    mean, std = feature_stats(x) if recipe.standardize else (None, None)
    if mean is not None:
        x = (x - mean) / std
    steps = recipe.epochs * -(-len(y) // recipe.batch_size)
    probe = LinearProbe(x.shape[1], num_classes, lrs, recipe.momentum, recipe.weight_decay, steps)
    loader = DataLoader(ShuffledBatches(x, y.long(), recipe.batch_size, recipe.seed),
                        batch_size=None)  # fmt: skip
    quiet = logging.getLogger("lightning.pytorch")
    level, threads = quiet.level, torch.get_num_threads()
    quiet.setLevel(logging.WARNING)
    if torch.device(device).type == "cpu":
        # the steps are tiny matmuls: one thread is ~20x faster than two fighting for busy cores
        torch.set_num_threads(1)
    try:
        trainer = pl.Trainer(
            max_epochs=recipe.epochs, accelerator=_accelerator(device), devices=1, logger=False,
            enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
        )  # fmt: skip
        trainer.fit(probe, loader)
    finally:
        quiet.setLevel(level)
        torch.set_num_threads(threads)
    heads = [head.cpu().eval() for head in probe.heads]
    if mean is not None:
        heads = [fold_standardization(h, mean, std) for h in heads]
    return heads


def feature_stats(x: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean [D] and std [D] of features x [N, D]; a constant dimension gets std 1."""
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    return mean, torch.where(std > eps, std, torch.ones_like(std))


@torch.no_grad()
def fold_standardization(head: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> nn.Linear:
    """The head on raw features equal to `head` on (x - mean) / std: W' = W / std, b' = b - W' mean."""
    out = nn.Linear(head.in_features, head.out_features)
    w = head.weight / std.to(head.weight)
    out.weight.copy_(w)
    out.bias.copy_(head.bias - w @ mean.to(w))
    return out.eval()


@torch.inference_mode()
def evaluate_accuracy(head: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy (percent) of a linear head on features x [N, D] with labels y [N]."""
    if len(y) == 0:
        raise ValueError("no items to evaluate")
    pred = head(x.float()).argmax(1)
    return 100.0 * float((pred == y.long()).float().mean())


def select_lr(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    recipe: LinearRecipe = LinearRecipe(),
    device: str = "cpu",
    progress: bool = False,
) -> tuple[float, dict[float, float]]:
    """The lr of the sweep with the best accuracy on the seeded validation split of the training set
    (the smaller lr on a tie), and {lr: validation accuracy}. Only training data comes in here."""
    fit_idx, val_idx = seeded_split(len(train_y), recipe.val_fraction, recipe.seed)
    lrs = sorted(recipe.lrs)
    heads = fit_linear(
        train_x[fit_idx], train_y[fit_idx], num_classes, lrs, recipe, device, progress
    )
    xv, yv = train_x[val_idx], train_y[val_idx]
    sweep = {lr: evaluate_accuracy(h, xv, yv) for lr, h in zip(lrs, heads, strict=True)}
    best = max(lrs, key=lambda lr: (sweep[lr], -lr))
    return best, sweep


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    recipe: LinearRecipe = LinearRecipe(),
    num_classes: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Choose the lr on the training set's validation split, retrain on all training features with
    it, and test once.

    Args:
        train_x, train_y: training features [N, D] and integer labels [N] in 0..C-1.
        test_x, test_y: test features [M, D] and labels [M].
        recipe: the probe's hyper-parameters.
        num_classes: C; default 1 + the largest training label.
    Returns:
        {"top1": test accuracy %, "lr": chosen lr, "val_top1": its validation accuracy %,
         "sweep": {str(lr): validation accuracy %}, "lr_at_edge": whether the chosen lr is the
         smallest or largest swept (widen the sweep), "n_train", "n_fit", "n_val", "n_test",
         "num_classes"}.
    """
    train_y, test_y = train_y.long(), test_y.long()
    c = int(num_classes if num_classes is not None else int(train_y.max()) + 1)
    if len(test_y) and int(test_y.max()) >= c:
        raise ValueError(f"test labels go up to {int(test_y.max())} but the probe has {c} classes")
    lr, sweep = select_lr(train_x, train_y, c, recipe, device, progress)
    [head] = fit_linear(train_x, train_y, c, [lr], recipe, device, progress)
    top1 = evaluate_accuracy(head, test_x, test_y)
    fit_idx, val_idx = seeded_split(len(train_y), recipe.val_fraction, recipe.seed)
    edge = len(sweep) > 1 and lr in (min(sweep), max(sweep))
    return {"top1": top1, "lr": lr, "val_top1": sweep[lr], "lr_at_edge": edge,
            "sweep": {f"{k:g}": v for k, v in sweep.items()}, "n_train": len(train_y),
            "n_fit": len(fit_idx), "n_val": len(val_idx), "n_test": len(test_y),
            "num_classes": c}  # fmt: skip


class DatasetFeatures:
    """The one `features` callable of `procvision linear` and `procvision medmnist`.

    `features(data)` gives (L2-normalised embeddings [N, D], labels [N]) of an `EvalSet` (through
    the evaluation layer's `EmbeddingCache`: in memory, and on disk under `cache_dir` keyed by the
    backbone's fingerprint) or of an opened dataset (embedded directly: a plain dataset carries
    no description to key it by). `embed_set(evalset)` also returns the opened dataset. The
    raw-pixel baseline (`backbone=None`) reads pixels and never caches (reading them is cheaper).

    Attributes:
        backbone: the module, or None for pixels; model: its record (see `dataset_features`);
        cache: the `EmbeddingCache` (None for pixels); sources: {set name: "embedded" | "disk" |
        "memory" | "pixels"} of every set embedded so far.
    """

    def __init__(
        self,
        backbone: nn.Module | None,
        model: dict[str, Any],
        cache_dir: str | None = None,
        device: str = "cpu",
        batch_size: int = 256,
        num_workers: int = 0,
        progress: bool = True,
        feature: str = "cls",
        precision: str = "fp32",
    ) -> None:
        from procvision.eval.cache import EmbeddingCache

        self.backbone, self.model = backbone, model
        self.device, self.batch_size, self.num_workers = device, batch_size, num_workers
        self.progress, self.feature, self.precision = progress, feature, precision
        self.cache = None if backbone is None else EmbeddingCache(cache_dir)
        self.sources: dict[str, str] = {}

    def embed_set(
        self, evalset: Any, name: str | None = None
    ) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """(the opened dataset, embeddings [N, D], labels [N]) of an `EvalSet`."""
        from procvision.eval.embed import pixel_embeddings

        name = name or evalset.dataset
        if self.backbone is None:
            ds = evalset.open(evalset.size_for(None))
            self.sources[name] = "pixels"
            return (ds, *pixel_embeddings(ds, progress=self.progress))
        ds, out = self.cache.embed(
            self.backbone, evalset, self.device, self.feature, self.precision,  # type: ignore[arg-type]
            progress=self.progress, desc=f"embed {name}", fingerprint=self.model.get("fingerprint"),
        )  # fmt: skip
        self.sources[name] = str(self.cache.last_source)
        return ds, out.embeddings, out.labels

    def __call__(self, data: Any) -> tuple[torch.Tensor, torch.Tensor]:
        from procvision.data.datasets.datamodule import EvalSet
        from procvision.eval.embed import embed_dataset, pixel_embeddings

        if isinstance(data, EvalSet):
            return self.embed_set(data)[1:]
        if self.backbone is None:
            return pixel_embeddings(data, progress=self.progress)
        return embed_dataset(self.backbone, data, self.batch_size, self.device, self.progress,
                             self.num_workers, feature=self.feature, precision=self.precision)  # fmt: skip


def dataset_features(
    spec: str,
    device: str = "cpu",
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = True,
    cache_dir: str | None = None,
    feature: str = "cls",
    precision: str = "fp32",
) -> tuple[DatasetFeatures, dict[str, Any]]:
    """The embedding function `features(EvalSet or dataset) -> (L2-normalised embeddings, labels)`
    (a `DatasetFeatures`) for a backbone spec (see `procvision.eval.recipe`), or "pixels" for the
    raw-pixel baseline, and the model's record {"backbone", "fingerprint", "arch", "params",
    "config"}. With `cache_dir`, `EvalSet`s are embedded once per backbone fingerprint and kept
    on disk (`procvision.eval.cache.DiskStore`)."""
    from procvision.eval.embed import resolve_precision
    from procvision.eval.nights import model_info
    from procvision.eval.recipe import load_backbone_spec, resolve_backbone_spec

    if spec == "pixels":
        model = {"backbone": "pixels", "fingerprint": "pixels"}
        return DatasetFeatures(None, model, None, device, batch_size, num_workers, progress), model
    precision = resolve_precision(precision, device)
    canonical = resolve_backbone_spec(spec)
    backbone = load_backbone_spec(canonical, device)
    model = {**model_info(backbone, canonical), "feature": feature, "precision": precision}
    features = DatasetFeatures(backbone, model, cache_dir, device, batch_size, num_workers,
                               progress, feature, precision)  # fmt: skip
    return features, model


def probe_features(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    recipe: LinearRecipe = LinearRecipe(),
    knn_ks: Sequence[int] | None = (20,),
    num_classes: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """{"linear": `linear_probe`, "knn": weighted k-NN (T = 0.07) of the test features against the
    training features (with `knn_ks`)} on one set of features."""
    out = {"linear": linear_probe(train_x, train_y, test_x, test_y, recipe, num_classes, device,
                                  progress)}  # fmt: skip
    if knn_ks:
        from procvision.eval.knn import knn_evaluate

        out["knn"] = knn_evaluate(train_x, train_y, test_x, test_y, ks=tuple(knn_ks))
    return out


def linear_probe_datasets(
    features: Features,
    train: Dataset,
    test: Dataset,
    recipe: LinearRecipe = LinearRecipe(),
    knn_ks: Sequence[int] | None = (20,),
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """`probe_features` on `features(train)` and `features(test)` (datasets or `EvalSet`s)."""
    train_x, train_y = features(train)
    test_x, test_y = features(test)
    c = len(getattr(train, "class_names", []) or []) or None
    return probe_features(train_x, train_y, test_x, test_y, recipe, knn_ks, c, device, progress)
