"""`procvision segment`: the paper's zero-shot segmentation R² (spec §4.3) on Pascal VOC.

    procvision segment --backbone runs/demo/lightning_logs/version_0/export --voc VOC2012/ --split val

Per image: patch features upsampled to a 112 x 112 grid, a 3-component PCA fitted on that image,
and 1 - (within-class inertia / total inertia) of the labelled pixels (background and void left
out), averaged over images. Printed next to the same architecture at random init and the RGB
baseline (the same pipeline on pixels). The paper reports this on COCO val2017 at 448 px.
"""

from __future__ import annotations

import sys
from typing import Any

from jsonargparse import ArgumentParser, Namespace

from procvision.atomic import write_json_atomic
from procvision.commands.memory import USER_ERRORS
from procvision.data.datasets.base import CorruptImageError
from procvision.data.datasets.voc import VOC_IGNORE, VOCSegmentation
from procvision.eval.recipe import load_backbone_spec, resolve_backbone_spec
from procvision.eval.segmentation import segmentation_r2


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="procvision segment", description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", type=str, required=True,
                   help="PATH (export, .ckpt, DINO .pth) or random:ARCH")  # fmt: skip
    p.add_argument("--voc", type=str, required=True, help="Pascal VOC2012 folder")
    p.add_argument("--split", type=str, default="val")
    p.add_argument("--image-size", type=int, default=448, help="images are resized to this side")
    p.add_argument("--grid", type=int, default=112, help="evaluation grid side")
    p.add_argument("--max-images", type=int | None, default=None, help="the first N of the split")
    p.add_argument("--patch-size", type=int | None, default=None, help="random:ARCH only")
    p.add_argument("--backbone-kwargs", type=dict[str, Any] | None, default=None,
                   help="random:ARCH only, e.g. {depth: 4}")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init comparison")
    p.add_argument("--no-random-init", action="store_true", help="skip the random-init row")
    p.add_argument("--json", type=str | None, default=None, help="write the scores as JSON")
    p.add_argument("--device", type=str, default="cpu")
    return p


def run(cfg: Namespace) -> int:
    try:
        return _run(cfg)
    except (*USER_ERRORS, CorruptImageError) as err:
        print(f"procvision segment: error: {err}", file=sys.stderr)
        return 2


def _run(cfg: Namespace) -> int:
    dataset = VOCSegmentation(cfg.voc, cfg.split, cfg.image_size, cfg.max_images)
    spec = resolve_backbone_spec(
        cfg.backbone, cfg.image_size, cfg.patch_size, cfg.seed, cfg.backbone_kwargs
    )
    backbone = load_backbone_spec(spec, cfg.device)
    if not hasattr(backbone, "forward_features"):
        raise ValueError(f"{cfg.backbone}: not a procvision backbone with patch features")
    scores = {"model": segmentation_r2(backbone, dataset, cfg.grid, VOC_IGNORE, cfg.device)}
    if not cfg.no_random_init and backbone.config:
        from procvision.models import random_backbone

        init = random_backbone(seed=cfg.seed, **backbone.config).to(cfg.device).eval()
        scores["random init"] = segmentation_r2(
            init, dataset, cfg.grid, VOC_IGNORE, cfg.device, with_rgb=False
        )
    rows = [(name, s["model"]) for name, s in scores.items()]
    rows.append(("RGB", scores["model"]["rgb"]))
    n = int(scores["model"]["images"])
    print(f"\nzero-shot segmentation R² on {cfg.voc} ({cfg.split}, {n} images with foreground)")
    print("| features | R² |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.2f} |")
    if cfg.json:
        write_json_atomic(cfg.json, {"scores": scores, "backbone": spec, "grid": cfg.grid,
                                     "image_size": cfg.image_size, "split": cfg.split})  # fmt: skip
    return 0
