"""`procvision linear`: linear probe vs k-NN on the same frozen features (paper App. B.2, Table 6).

    procvision linear --config configs/eval/linear_fashion_mnist.yaml --backbone runs/demo/export
    procvision linear --train fashion_mnist:train --test fashion_mnist:test --backbone pixels

The training set is embedded once; the lr is chosen on a seeded 10% validation split of it, the
probe is retrained on all of it with that lr and tested once. The weighted k-NN (T = 0.07) of the
test set against the training set on the same features is reported beside it. `--backbone` takes
any spec of `procvision.eval.recipe` (export dir, .safetensors, .ckpt, DINO .pth, random:ARCH) or
`pixels`.

With `--cache-dir DIR` the embeddings are kept on disk by the evaluation layer's cache, keyed by
the backbone's fingerprint and the set's description (dataset, split, transform, subset), feature
and precision: a second run with the same backbone and sets embeds nothing (a new lr sweep or k
costs only the probe). Off by default. `--precision`/`--feature` mean what validate's
`--model.precision`/`--model.feature` mean (default auto/cls) and are recorded in the JSON.
"""

from __future__ import annotations

import time

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from procvision.atomic import write_json_atomic
from procvision.commands._common import (
    PATH_ERRORS,
    add_embedding_arguments,
    open_dataset_features,
    run_reporting,
)
from procvision.data.datasets.datamodule import EvalSet
from procvision.data.datasets.registry import parse_dataset_uri
from procvision.errors import UserError
from procvision.eval.knn import DEFAULT_KS
from procvision.eval.linear import (
    RESULT_KIND,
    LinearRecipe,
    probe_features,
)
from procvision.eval.recipe import default_policy

PROG = "procvision linear"


class LinearArgumentError(UserError):
    """An argument of `procvision linear` is out of range."""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options")
    p.add_argument("--backbone", type=str, default="pixels",
                   help="PATH (export, .safetensors, .ckpt, DINO .pth), random:ARCH, or pixels")  # fmt: skip
    p.add_argument("--train", type=str, default="fashion_mnist:train", help="training dataset URI")
    p.add_argument("--test", type=str, default="fashion_mnist:test", help="test dataset URI")
    p.add_argument("--name", type=str | None, default=None, help="dataset name in the JSON")
    p.add_argument("--image-size", type=int | None, default=None,
                   help="default: the backbone's img_size (224)")  # fmt: skip
    p.add_argument("--resize-policy", type=str | None, default=None,
                   help="crop, resize or none; default resize for 28-px sets, else crop")  # fmt: skip
    p.add_argument("--max-train", type=int | None, default=None, help="seeded training subset")
    p.add_argument("--max-test", type=int | None, default=None, help="seeded test subset")
    p.add_argument("--lrs", type=list[float], default=list(LinearRecipe.lrs))
    p.add_argument("--epochs", type=int, default=LinearRecipe.epochs)
    p.add_argument("--batch-size", type=int, default=LinearRecipe.batch_size)
    p.add_argument("--momentum", type=float, default=LinearRecipe.momentum)
    p.add_argument("--weight-decay", type=float, default=LinearRecipe.weight_decay)
    p.add_argument("--val-fraction", type=float, default=LinearRecipe.val_fraction)
    p.add_argument("--seed", type=int, default=0, help="split, init, shuffling and subsets")
    p.add_argument("--standardize", type=bool, default=LinearRecipe.standardize,
                   help="fit on per-dimension standardised features (stats of the fitted rows only)")  # fmt: skip
    p.add_argument("--knn-ks", type=list[int], default=list(DEFAULT_KS),
                   help="k-NN on the same features ([] to skip)")  # fmt: skip
    p.add_argument("--json", type=str | None, default=None, help="write the result JSON here")
    p.add_argument("--device", type=str, default="cpu")
    p.add_argument("--embed-batch-size", type=int, default=256)
    add_embedding_arguments(p)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--skip-corrupt", action="store_true")
    p.add_argument("--cache-dir", type=str | None, default=None,
                   help="keep the embeddings here, keyed by the backbone fingerprint (default: off)")  # fmt: skip
    return p


def _dataset_name(uri: str) -> str:
    kind, _, rest = uri.partition(":")
    if kind in ("medmnist",) and rest:
        from pathlib import Path

        return "medmnist/" + Path(rest.split(":")[0]).stem.split("_")[0].removesuffix("mnist")
    return kind


def _embed(features, evalset: EvalSet, flag: str):
    """(opened dataset, embeddings, labels) of one set; a bad URI is a one-line error naming it."""
    try:
        return features.embed_set(evalset, flag.removeprefix("--"))
    except ValueError as err:
        if isinstance(err, UserError):
            raise
        raise LinearArgumentError(f"{flag} {evalset.dataset}: {err}") from err


def run(cfg: Namespace) -> int:
    return run_reporting(PROG, _run, cfg, extra=PATH_ERRORS)


def _run(cfg: Namespace) -> int:
    t0 = time.perf_counter()
    try:
        recipe = LinearRecipe(tuple(cfg.lrs), cfg.epochs, cfg.batch_size, cfg.momentum,
                              cfg.weight_decay, cfg.val_fraction, cfg.seed, cfg.standardize)  # fmt: skip
    except ValueError as err:
        raise LinearArgumentError(str(err)) from err
    features, model, size = open_dataset_features(cfg, cfg.embed_batch_size, LinearArgumentError)
    policy = cfg.resize_policy or default_policy(cfg.train)
    try:
        sets = {
            flag: EvalSet(
                uri,
                split,
                size,
                policy,
                max_items=limit,
                subset_seed=seed,
                batch_size=cfg.embed_batch_size,
                num_workers=cfg.num_workers,
                skip_corrupt=cfg.skip_corrupt,
            )  # fmt: skip
            for flag, uri, split, limit, seed in (
                ("--train", cfg.train, "train", cfg.max_train, cfg.seed),
                ("--test", cfg.test, "test", cfg.max_test, cfg.seed + 1),
            )
        }
    except ValueError as err:
        raise LinearArgumentError(f"--image-size/--resize-policy: {err}") from err
    for flag, evalset in sets.items():  # a typo fails now, not after the first set is embedded
        try:
            parse_dataset_uri(evalset.dataset)
        except ValueError as err:
            raise LinearArgumentError(f"{flag} {evalset.dataset}: {err}") from err
    train, tx, ty = _embed(features, sets["--train"], "--train")
    test, qx, qy = _embed(features, sets["--test"], "--test")
    if list(train.class_names) != list(test.class_names):
        raise LinearArgumentError(
            f"--train {cfg.train} and --test {cfg.test} have different class tables; "
            "give two splits of one dataset"
        )
    if cfg.cache_dir:
        print(
            f"embeddings ({cfg.cache_dir}): "
            + ", ".join(f"{k} {v}" for k, v in features.sources.items())
        )
    c = len(train.class_names or []) or None
    out = probe_features(tx, ty, qx, qy, recipe, cfg.knn_ks, c, cfg.device)
    transform = sets["--train"].transform(size)
    lin = out["linear"]
    name = cfg.name or _dataset_name(cfg.train)
    record = {
        "kind": RESULT_KIND, "version": 1, "dataset": name, "results": lin,
        "knn": out.get("knn"), "recipe": recipe.to_dict(), "model": model,
        "data": {"train_uri": cfg.train, "test_uri": cfg.test, "train": train.describe(),
                 "test": test.describe(), "transform": transform.describe(),
                 "sets": [x.describe() for x in sets.values()]},
        "features": {"cache_dir": cfg.cache_dir, "sources": dict(features.sources)},
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    print(f"linear probe on {name} ({model['backbone']}): lr {lin['lr']:g} chosen on "
          f"{lin['n_val']} held-out training items (val {lin['val_top1']:.2f}%)")  # fmt: skip
    if lin["lr_at_edge"]:
        print(f"note: the chosen lr {lin['lr']:g} is at the edge of the sweep; widen --lrs")
    print("| features | lr sweep (val top-1 %) |\n|---|---|")
    print("| " + ", ".join(f"{k}: {v:.2f}" for k, v in lin["sweep"].items()) + " |")
    print(f"\n| {name} | k-NN k=20 | k-NN best k | linear |\n|---|---|---|---|")
    knn = out.get("knn") or {}
    k20 = knn.get("weighted/k20/top1")
    best = knn.get("weighted/best/top1")
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    print(f"| test top-1 % | {fmt(k20)} | {fmt(best)} | {lin['top1']:.2f} |")
    if cfg.json:
        write_json_atomic(cfg.json, record)
        print(f"wrote {cfg.json}")
    return 0
