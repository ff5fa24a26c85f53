"""Linear probe on frozen, pre-computed features (paper App. B.2, Table 6).

DINO's linear evaluation, scaled to a feature set: one `nn.Linear` trained with SGD (momentum 0.9,
no weight decay) under a cosine schedule for a few epochs, the lr chosen from a small sweep on a
seeded 10% validation split of the *training* set, then retrained on the whole training set with
the chosen lr and evaluated once on the test set. The test set never takes part in choosing
anything: `select_lr` does not receive it.

The features are any tensors [N, D]; `linear_probe_datasets` takes an embedding function
`features(dataset) -> (embeddings [N, D], labels [N])` (`dataset_features` by default), the place
where a disk cache of embeddings plugs in. The k-NN on the same features is computed alongside, so
"k-NN vs linear" compares one embedding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

Features = Callable[[Dataset], tuple[torch.Tensor, torch.Tensor]]
RESULT_KIND = "linear"


@dataclass(frozen=True)
class LinearRecipe:
    """Hyper-parameters of the probe.

    Args:
        lrs: the learning rates swept (SGD; features are L2-normalised, hence lrs near 1).
        epochs: epochs of each fit (cosine schedule from lr to 0 over all steps).
        batch_size: features per step.
        momentum: SGD momentum (DINO: 0.9).
        weight_decay: SGD weight decay (DINO: 0).
        val_fraction: share of the training set held out to choose the lr (0.1).
        seed: seed of the split, the initialisation and the shuffling.
    """

    lrs: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
    epochs: int = 20
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    seed: int = 0

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


class LinearProbe(pl.LightningModule):
    """One `nn.Linear(dim, num_classes)` trained with cross-entropy, SGD and a per-step cosine lr."""

    def __init__(
        self,
        dim: int,
        num_classes: int,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)
        nn.init.normal_(self.linear.weight, std=0.01)  # DINO's LinearClassifier init
        nn.init.zeros_(self.linear.bias)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=False, logger=False)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum,
                              weight_decay=self.weight_decay)  # fmt: skip
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=0.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


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
    lr: float,
    recipe: LinearRecipe = LinearRecipe(),
    device: str = "cpu",
) -> LinearProbe:
    """Train a probe on features x [N, D] with labels y [N] (a Lightning fit); returns it in eval mode."""
    pl.seed_everything(recipe.seed, workers=True, verbose=False)
    probe = LinearProbe(x.shape[1], num_classes, lr, recipe.momentum, recipe.weight_decay)
    data = TensorDataset(x.float(), y.long())
    loader = DataLoader(data, batch_size=recipe.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(recipe.seed))  # fmt: skip
    quiet = logging.getLogger("lightning.pytorch")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        trainer = pl.Trainer(
            max_epochs=recipe.epochs, accelerator=_accelerator(device), devices=1, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            deterministic=True,
        )  # fmt: skip
        trainer.fit(probe, loader)
    finally:
        quiet.setLevel(level)
    return probe.cpu().eval()


@torch.inference_mode()
def evaluate_accuracy(probe: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy (percent) of `probe` on features x [N, D] with labels y [N]."""
    if len(y) == 0:
        raise ValueError("no items to evaluate")
    pred = probe(x.float()).argmax(1)
    return 100.0 * float((pred == y.long()).float().mean())


def select_lr(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    recipe: LinearRecipe = LinearRecipe(),
    device: str = "cpu",
    progress: bool = True,
) -> tuple[float, dict[float, float]]:
    """The lr of the sweep with the best accuracy on the seeded validation split of the training set
    (the smaller lr on a tie), and {lr: validation accuracy}. Only training data comes in here."""
    fit_idx, val_idx = seeded_split(len(train_y), recipe.val_fraction, recipe.seed)
    sweep: dict[float, float] = {}
    for lr in tqdm(sorted(recipe.lrs), desc="linear lr sweep", disable=not progress, leave=False):
        probe = fit_linear(train_x[fit_idx], train_y[fit_idx], num_classes, lr, recipe, device)
        sweep[lr] = evaluate_accuracy(probe, train_x[val_idx], train_y[val_idx])
    best = max(sorted(sweep), key=lambda lr: (sweep[lr], -lr))
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
         "sweep": {str(lr): validation accuracy %}, "n_train", "n_fit", "n_val", "n_test",
         "num_classes"}.
    """
    train_y, test_y = train_y.long(), test_y.long()
    c = int(num_classes if num_classes is not None else int(train_y.max()) + 1)
    if len(test_y) and int(test_y.max()) >= c:
        raise ValueError(f"test labels go up to {int(test_y.max())} but the probe has {c} classes")
    lr, sweep = select_lr(train_x, train_y, c, recipe, device, progress)
    probe = fit_linear(train_x, train_y, c, lr, recipe, device)
    top1 = evaluate_accuracy(probe, test_x, test_y)
    fit_idx, val_idx = seeded_split(len(train_y), recipe.val_fraction, recipe.seed)
    return {"top1": top1, "lr": lr, "val_top1": sweep[lr],
            "sweep": {f"{k:g}": v for k, v in sweep.items()}, "n_train": len(train_y),
            "n_fit": len(fit_idx), "n_val": len(val_idx), "n_test": len(test_y),
            "num_classes": c}  # fmt: skip


def dataset_features(
    spec: str,
    device: str = "cpu",
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = True,
) -> tuple[Features, dict[str, Any]]:
    """An embedding function `features(dataset) -> (L2-normalised embeddings, labels)` for a
    backbone spec (see `procvision.eval.recipe`), or "pixels" for the raw-pixel baseline, and the
    model's record {"backbone", "fingerprint", "arch", "params", "config"}."""
    from procvision.eval.embed import embed_dataset, pixel_embeddings
    from procvision.eval.nights import model_info
    from procvision.eval.recipe import load_backbone_spec, resolve_backbone_spec

    if spec == "pixels":
        return (lambda ds: pixel_embeddings(ds, progress=progress)), {"backbone": "pixels",
                                                                      "fingerprint": "pixels"}  # fmt: skip
    canonical = resolve_backbone_spec(spec)
    backbone = load_backbone_spec(canonical, device)

    def features(ds: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        return embed_dataset(backbone, ds, batch_size, device, progress, num_workers)

    features.backbone = backbone  # type: ignore[attr-defined]
    return features, model_info(backbone, canonical)


def linear_probe_datasets(
    features: Features,
    train: Dataset,
    test: Dataset,
    recipe: LinearRecipe = LinearRecipe(),
    knn_ks: Sequence[int] | None = (20,),
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """`linear_probe` on `features(train)` and `features(test)`; with `knn_ks`, also the weighted
    k-NN (T = 0.07) of the test set against the training set on the same features ("knn")."""
    train_x, train_y = features(train)
    test_x, test_y = features(test)
    c = len(getattr(train, "class_names", []) or []) or None
    out = {"linear": linear_probe(train_x, train_y, test_x, test_y, recipe, c, device, progress)}
    if knn_ks:
        from procvision.eval.knn import knn_evaluate

        out["knn"] = knn_evaluate(train_x, train_y, test_x, test_y, ks=tuple(knn_ks))
    return out
