"""`procvision segment`: segmentation with frozen patch features (paper §4, Figs. 8-10, Table 4).

    procvision segment r2 --backbone EXPORT --voc VOC2012/        zero-shot PCA R² (spec §4.3)
    procvision segment r2 --backbone EXPORT --coco COCO/          (COCO val2017, official layout)
    procvision segment r2 --backbone EXPORT --benchmark DIR       the offline benchmark
    procvision segment incontext --backbone EXPORT --prompt IMG --mask PNG --query IMG --out overlay.png
    procvision segment incontext --backbone EXPORT --benchmark DIR   per-class soft IoU (spec §4.4)
    procvision segment knn --backbone EXPORT --voc VOC2012/       patch-memory k-NN (spec §4.5)
    procvision segment kmeans --backbone EXPORT --benchmark DIR   K-means + Hungarian (App. B.4)
    procvision segment gestalt --backbone EXPORT                  Gestalt R² table (spec §4.8)
    procvision segment benchmark --out DIR                        write the offline benchmark

`procvision segment --voc ...` (no subcommand) still runs `r2`. Images are resized to
--image-size (paper: 448); a ViT trained at another size (the demo model: 32 px, patch 8) is
evaluated there through positional-embedding interpolation, and the JSON states both sizes.
Every score is printed next to the same architecture at random init and, where defined, RGB.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from jsonargparse import ArgumentParser, Namespace

from procvision.atomic import write_json_atomic
from procvision.commands._common import PATH_ERRORS, fail, run_reporting
from procvision.data.datasets.base import DatasetFormatError
from procvision.errors import UserError
from procvision.eval.recipe import load_backbone_spec, resolve_backbone_spec

PROG = "procvision segment"
SUBCOMMANDS = ("r2", "incontext", "knn", "kmeans", "gestalt", "benchmark")


class SegmentArgumentError(UserError, ValueError):
    """A `procvision segment` flag, or a path it names, that cannot be used."""


@contextmanager
def _user_input(what: str) -> Iterator[None]:
    """Report a ValueError / missing-path error raised while opening what the user named (a
    backbone, an image, a data set) as a `SegmentArgumentError` naming `what`; a `UserError`
    passes unchanged, and errors of the computation itself stay bugs."""
    try:
        yield
    except UserError:
        raise
    except (ValueError, TypeError, *PATH_ERRORS) as err:
        raise SegmentArgumentError(f"{what}: {err}") from err


class _SegmentParser(ArgumentParser):
    """Forwards the old form `procvision segment --voc ...` to `procvision segment r2 ...`."""

    def parse_args(self, args=None, *rest, **kwargs):  # type: ignore[override]
        args = list(sys.argv[1:] if args is None else args)
        if args and args[0].startswith("-") and args[0] not in ("-h", "--help"):
            args = ["r2", *args]
        return super().parse_args(args, *rest, **kwargs)


# ------------------------------------------------------------------------------------ arguments
def _backbone_args(p: ArgumentParser, image_size: int = 448) -> None:
    p.add_argument("--backbone", type=str, required=True,
                   help="PATH (export, .ckpt, DINO .pth) or random:ARCH")  # fmt: skip
    p.add_argument("--image-size", type=int, default=image_size,
                   help="images are resized to this side (paper: 448); ViT positional "
                        "embeddings are interpolated to it")  # fmt: skip
    p.add_argument("--patch-size", type=int | None, default=None, help="random:ARCH only")
    p.add_argument("--backbone-kwargs", type=dict[str, Any] | None, default=None,
                   help="random:ARCH only, e.g. {depth: 4}")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init comparison")
    p.add_argument("--no-random-init", action="store_true", help="skip the random-init row")
    p.add_argument("--device", type=str, default="cpu")
    p.add_argument("--json", type=str | None, default=None, help="write the scores as JSON")


def _data_args(p: ArgumentParser) -> None:
    p.add_argument("--voc", type=str | None, default=None, help="Pascal VOC2012 folder")
    p.add_argument("--coco", type=str | None, default=None,
                   help="COCO folder (annotations/instances_<split>.json, <split>/)")  # fmt: skip
    p.add_argument("--benchmark", type=str | None, default=None,
                   help="the offline benchmark folder (written there first if absent)")  # fmt: skip
    p.add_argument("--data", type=str | None, default=None,
                   help="voc:DIR[:SPLIT] | coco:DIR[:SPLIT] | benchmark:DIR | gestalt[:P,...]")  # fmt: skip
    p.add_argument("--split", type=str | None, default=None,
                   help="VOC: val (default) / train; COCO: val2017 (default)")  # fmt: skip
    p.add_argument("--max-images", type=int | None, default=None, help="the first N images")
    p.add_argument("--benchmark-images", type=int, default=64,
                   help="images of a benchmark written by --benchmark")  # fmt: skip


def build_parser() -> ArgumentParser:
    parser = _SegmentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subcommands(dest="command", required=True)

    p = ArgumentParser(description="Zero-shot PCA R² of patch features (spec §4.3).")
    _backbone_args(p)
    _data_args(p)
    p.add_argument("--grid", type=int, default=112, help="evaluation grid side")
    p.add_argument("--pictures", type=str | None, default=None,
                   help="PNG of image | PCA colours | labels for the first images")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=8,
                   help="images per batched PCA (seg_pca, gram solver; ~3x faster on CPU than "
                        "one SVD per image, same scores)")  # fmt: skip
    p.add_argument(
        "--per-image",
        action="store_true",
        help="the per-image reference path (one SVD per image) instead",
    )
    sub.add_subcommand("r2", p, help="zero-shot segmentation R² (VOC, COCO or the benchmark)")

    p = ArgumentParser(description="In-context segmentation from a prompt mask (spec §4.4).")
    _backbone_args(p)
    _data_args(p)
    p.add_argument("--prompt", type=str | None, default=None, help="prompt image")
    p.add_argument("--mask", type=str | None, default=None, help="prompt mask PNG (> 127 = in)")
    p.add_argument("--query", type=str | None, default=None, help="query image")
    p.add_argument("--query-mask", type=str | None, default=None, help="query mask, to score")
    p.add_argument("--out", type=str | None, default=None, help="overlay PNG (single pair)")
    p.add_argument("--threshold", type=float, default=0.5, help="threshold of the IoU")
    p.add_argument("--max-pairs", type=int, default=10, help="pairs per class (batch mode)")
    p.add_argument("--temperature", type=float | None, default=None,
                   help="attention temperature (default: the feature width C, the paper's)")  # fmt: skip
    sub.add_subcommand("incontext", p, help="in-context segmentation (one pair, or per class)")

    p = ArgumentParser(description="k-NN segmentation with a patch memory (spec §4.5).")
    _backbone_args(p)
    _data_args(p)
    p.add_argument("--memory-split", type=str | None, default=None,
                   help="split of the memory images (VOC: train; else the query split)")  # fmt: skip
    p.add_argument("--memory-images", type=int, default=512,
                   help="memory images, a seeded shuffle of the memory split (paper: 512)")  # fmt: skip
    p.add_argument("--vote", type=str, default="both", help="softmax (paper), topk, or both")
    p.add_argument("--k", type=int, default=20, help="neighbours of the top-k vote")
    p.add_argument("--T", type=float, default=0.07, help="temperature of the top-k vote")
    sub.add_subcommand("knn", p, help="k-NN segmentation with a patch memory")

    p = ArgumentParser(description="K-means segmentation matched by Hungarian (App. B.4).")
    _backbone_args(p)
    _data_args(p)
    p.add_argument("--grid", type=int, default=112, help="evaluation grid side")
    p.add_argument("--k", type=int | None, default=None,
                   help="clusters per image (default: its number of ground-truth segments)")  # fmt: skip
    sub.add_subcommand("kmeans", p, help="K-means segmentation mIoU (next to R²)")

    p = ArgumentParser(description="R² on Gestalt stimuli per principle (spec §4.8).")
    _backbone_args(p, image_size=224)
    p.add_argument("--principles", type=list[str] | None, default=None, help="default: all 7")
    p.add_argument("--n", type=int, default=8, help="stimuli per principle")
    p.add_argument("--grid", type=int, default=112, help="evaluation grid side")
    p.add_argument("--pictures", type=str | None, default=None,
                   help="PNG grid of stimuli, perceived groups and PCA colours")  # fmt: skip
    sub.add_subcommand("gestalt", p, help="Gestalt R² table (model, random init, RGB)")

    p = ArgumentParser(description="Write the offline real-object benchmark (COCO format).")
    p.add_argument("--out", type=str, required=True, help="folder to write")
    p.add_argument("--n-images", type=int, default=64)
    p.add_argument("--size", type=int, default=224, help="image side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source", type=str | None, default=None,
                   help="Fashion-MNIST IDX folder (default: the Debian package's)")  # fmt: skip
    p.add_argument("--split", type=str, default="val2017")
    p.add_argument("--item-colour", type=str, default="random",
                   help="random (each item its own tint) or background (items tinted like "
                        "the ground: no colour cue)")  # fmt: skip
    sub.add_subcommand("benchmark", p, help="write the offline segmentation benchmark")
    return parser


# ------------------------------------------------------------------------------------- helpers
def _dataset(cfg: Namespace, split: str | None = None, max_images: int | None = None):
    """(dataset, description, ignore_index, num_classes) of --voc / --coco / --benchmark / --data."""
    from procvision.data.seg_benchmark import segmentation_data

    given = [k for k in ("voc", "coco", "benchmark", "data") if cfg.get(k)]
    if len(given) != 1:
        raise SegmentArgumentError(
            "give exactly one of --voc VOC2012/, --coco COCO/, --benchmark DIR or --data SPEC"
            + (f" (got {', '.join('--' + g for g in given)})" if given else "")
        )
    kind = given[0]
    split = split or cfg.split
    if kind == "data":
        spec = cfg.data
    else:
        spec = f"{kind}:{cfg[kind]}" + (f":{split}" if split else "")
    if kind == "benchmark" and not cfg.benchmark_images >= 1:
        raise SegmentArgumentError(f"--benchmark-images must be >= 1, got {cfg.benchmark_images}")
    with _user_input(f"segmentation data {spec}"):
        d = segmentation_data(spec, cfg.image_size, max_images, cfg.benchmark_images)
    return d.dataset, d.description, d.ignore_index, d.num_classes


def _backbones(cfg: Namespace) -> tuple[dict[str, torch.nn.Module], str]:
    """{"model": backbone, "random init": same architecture at random init} and the spec."""
    with _user_input(f"--backbone {cfg.backbone}"):
        spec = resolve_backbone_spec(
            cfg.backbone, cfg.image_size, cfg.patch_size, cfg.seed, cfg.backbone_kwargs
        )
        backbone = load_backbone_spec(spec, cfg.device)
    if not hasattr(backbone, "forward_features"):
        raise SegmentArgumentError(f"{cfg.backbone}: not a procvision backbone with patch features")
    out = {"model": backbone}
    if not cfg.no_random_init and getattr(backbone, "config", None):
        from procvision.models import random_backbone

        out["random init"] = random_backbone(**{**backbone.config, "seed": cfg.seed})
        out["random init"] = out["random init"].to(cfg.device).eval()
    return out, spec


def _sizes(cfg: Namespace, backbone) -> dict[str, Any]:
    """What the JSON records about the input size and the positional-embedding interpolation."""
    trained = int(getattr(backbone, "config", {}).get("img_size", cfg.image_size))
    p = getattr(backbone, "patch_size", None)
    return {
        "image_size": cfg.image_size,
        "model_img_size": trained,
        "patch_size": p,
        "token_grid": None if not p else cfg.image_size // p,
        "pos_embed_interpolated": bool(getattr(backbone, "is_vit", False))
        and trained != cfg.image_size,
    }


def _table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    print(f"\n{title}")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in r) + " |")


def _write(cfg: Namespace, record: dict) -> None:
    if cfg.get("json"):
        write_json_atomic(cfg.json, record)
        print(f"wrote {cfg.json}", file=sys.stderr)


# ------------------------------------------------------------------------------------ commands
def cmd_r2(cfg: Namespace) -> int:
    from functools import partial

    from procvision.eval.segmentation import segmentation_r2

    if cfg.batch_size < 1:
        raise SegmentArgumentError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    batch = None if cfg.per_image else cfg.batch_size
    score = partial(segmentation_r2, batch_size=batch)
    dataset, desc, ignore, _ = _dataset(cfg, max_images=cfg.max_images)
    backbones, spec = _backbones(cfg)
    t0 = time.perf_counter()
    scores = {"model": score(backbones["model"], dataset, cfg.grid, ignore, cfg.device)}
    seconds = time.perf_counter() - t0
    if "random init" in backbones:
        scores["random init"] = score(
            backbones["random init"], dataset, cfg.grid, ignore, cfg.device, with_rgb=False
        )
    rows = [[name, s["model"]] for name, s in scores.items()] + [["RGB", scores["model"]["rgb"]]]
    n = int(scores["model"]["images"])
    _table(f"zero-shot segmentation R² on {desc}, {n} images with foreground, "
           f"{cfg.image_size} px", ["features", "R²"], rows)  # fmt: skip
    if cfg.pictures:
        _r2_pictures(cfg, backbones, dataset)
    _write(cfg, {"scores": scores, "backbone": spec, "grid": cfg.grid, "split": cfg.split,
                 "pca": "per image (svd)" if batch is None else f"batched {batch} (gram)",
                 "data": desc, "seconds_model_and_rgb": seconds,
                 **_sizes(cfg, backbones["model"])})  # fmt: skip
    return 0


def _pca_picture(backbone, image: torch.Tensor, grid: int, device: str):
    from procvision.data.augment import normalize
    from procvision.eval.segmentation import grid_colours

    with torch.no_grad():
        if backbone is None:
            feats = image.permute(1, 2, 0)
        else:
            feats = backbone.forward_features(normalize(image[None].to(device)))["patches"][0]
    return grid_colours(feats.cpu(), grid).numpy()


def _r2_pictures(cfg: Namespace, backbones: dict, dataset, n: int = 4) -> None:
    from procvision.eval.seg_pca import label_colours, picture_grid

    rows = []
    for i in range(min(n, len(dataset))):
        image, labels = dataset[i][:2]
        row = [image.permute(1, 2, 0).numpy()]
        row += [_pca_picture(b, image, cfg.grid, cfg.device) for b in backbones.values()]
        row += [_pca_picture(None, image, cfg.grid, cfg.device), label_colours(labels)]
        rows.append(row)
    titles = ["image", *[f"PCA {k}" for k in backbones], "PCA RGB", "labels"]
    picture_grid(rows, cfg.pictures, titles)
    print(f"wrote {cfg.pictures}", file=sys.stderr)


def _read_image(path: str) -> torch.Tensor:
    from procvision.data.datasets.base import open_image

    with _user_input(path):
        img = open_image(path).convert("RGB")
    return torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)


def _read_mask(path: str, size: tuple[int, int], what: str) -> torch.Tensor:
    from procvision.data.datasets.base import open_image

    with _user_input(f"{what} {path}"):
        m = open_image(path).convert("L")
    if (m.size[1], m.size[0]) != size:
        raise DatasetFormatError(
            f"{what} {path} is {m.size[0]}x{m.size[1]} but its image is {size[1]}x{size[0]}: "
            "the mask must align with the image pixel for pixel"
        )
    return torch.from_numpy((np.asarray(m) > 127).astype(np.float32))


def cmd_incontext(cfg: Namespace) -> int:
    from procvision.eval.incontext import incontext_benchmark, incontext_images, iou_at, soft_iou

    single = [cfg.prompt, cfg.mask, cfg.query]
    backbones, spec = _backbones(cfg)
    if cfg.temperature is not None and not cfg.temperature > 0:
        raise SegmentArgumentError(f"--temperature must be > 0, got {cfg.temperature}")
    record: dict[str, Any] = {"backbone": spec, "temperature": cfg.temperature or "C",
                              **_sizes(cfg, backbones["model"])}  # fmt: skip
    if any(single):
        if not all(single):
            raise SegmentArgumentError("one pair needs --prompt IMG, --mask PNG and --query IMG")
        prompt, query = _read_image(cfg.prompt), _read_image(cfg.query)
        mask = _read_mask(cfg.mask, tuple(prompt.shape[1:]), "--mask")
        target = (
            _read_mask(cfg.query_mask, tuple(query.shape[1:]), "--query-mask")
            if cfg.query_mask
            else None
        )
        rows = []
        for name, bb in backbones.items():
            f2 = incontext_images(bb, prompt, mask, query, cfg.image_size, cfg.device,
                                  cfg.temperature)  # fmt: skip
            if name == "model" and cfg.out:
                _write_overlay(cfg.out, prompt, mask, query, f2)
            if target is not None:
                s, i = soft_iou(f2, target), iou_at(f2, target, cfg.threshold)
                record[name] = {"soft_iou": s, "iou": i}
                rows.append([name, s, i])
        if rows:
            _table(f"in-context segmentation of {cfg.query}", ["features", "soft IoU",
                   f"IoU@{cfg.threshold:g}"], rows)  # fmt: skip
        _write(cfg, record | {"prompt": cfg.prompt, "query": cfg.query, "out": cfg.out})
        return 0
    dataset, desc, _, _ = _dataset(cfg, max_images=cfg.max_images)
    for name, bb in backbones.items():
        record[name] = incontext_benchmark(
            bb, dataset, cfg.image_size, cfg.threshold, cfg.max_pairs, cfg.device,
            temperature=cfg.temperature,
        )  # fmt: skip
    classes = [c for c in record["model"] if c != "mean"]
    names = getattr(dataset, "categories", {})
    if not classes:
        raise SegmentArgumentError(
            f"{desc}: no class is held by two images, so there is no pair to score"
        )
    rows = [[names.get(int(c), c)] + [record[b][c]["soft_iou"] for b in backbones] for c in classes]
    rows.append(["mean"] + [record[b]["mean"]["soft_iou"] for b in backbones])
    _table(f"in-context mean soft IoU per class on {desc}", ["class", *backbones], rows)
    _write(cfg, record | {"data": desc, "threshold": cfg.threshold})
    return 0


def _write_overlay(path: str, prompt, mask, query, f2) -> None:
    from PIL import Image

    from procvision.atomic import atomic_write_path
    from procvision.eval.incontext import overlay

    left = Image.fromarray(overlay(prompt, mask).numpy())
    right = Image.fromarray(overlay(query, f2).numpy())
    h = right.height
    left = left.resize((max(1, round(left.width * h / left.height)), h))
    canvas = Image.new("RGB", (left.width + right.width + 4, h), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + 4, 0))
    atomic_write_path(path, lambda tmp: canvas.save(tmp, format="PNG"))
    print(f"wrote {path} (prompt with its mask | query with the predicted soft mask)")


def cmd_knn(cfg: Namespace) -> int:
    from procvision.eval.knn_seg import VOTES, build_patch_memory, knn_segment

    votes = list(VOTES) if cfg.vote == "both" else [cfg.vote]
    if any(v not in VOTES for v in votes):
        raise SegmentArgumentError(f"--vote: expected softmax, topk or both, got {cfg.vote!r}")
    if cfg.memory_images < 1:
        raise SegmentArgumentError(f"--memory-images must be >= 1, got {cfg.memory_images}")
    query_split = cfg.split or ("val" if cfg.voc else "val2017")
    memory_split = cfg.memory_split or ("train" if cfg.voc else query_split)
    queries, desc, ignore, num_classes = _dataset(cfg, split=query_split)
    same = memory_split == query_split
    memory_set = queries if same else _dataset(cfg, split=memory_split)[0]
    # the paper's memory: one seeded shuffled batch of the memory split
    order = torch.randperm(len(memory_set), generator=torch.Generator().manual_seed(cfg.seed))
    mem_idx = sorted(order[: cfg.memory_images].tolist())
    taken = set(mem_idx) if same else set()
    q_idx = [i for i in range(len(queries)) if i not in taken][: cfg.max_images]
    if not q_idx:
        raise SegmentArgumentError(
            f"no query image left: the split has {len(queries)} images and --memory-images "
            f"{cfg.memory_images} of them went to the memory; lower --memory-images"
        )
    from torch.utils.data import Subset

    mem_data, q_data = Subset(memory_set, mem_idx), Subset(queries, q_idx)
    backbones, spec = _backbones(cfg)
    record: dict[str, Any] = {"backbone": spec, "data": desc, "memory_images": len(mem_idx),
                              "query_images": len(q_idx), **_sizes(cfg, backbones["model"])}  # fmt: skip
    rows = []
    for name, bb in backbones.items():
        t0 = time.perf_counter()
        memory = build_patch_memory(bb, mem_data, num_classes, ignore, cfg.device)
        record[name] = {"memory_patches": len(memory), "memory_bytes": memory.nbytes,
                        "build_seconds": time.perf_counter() - t0}  # fmt: skip
        for v in votes:
            t0 = time.perf_counter()
            m = knn_segment(bb, memory, q_data, v, cfg.k, cfg.T, ignore, cfg.device)
            m["seconds_per_query_image"] = (time.perf_counter() - t0) / len(q_idx)
            record[name][v] = m
            rows.append([name, v, m["pixel_acc"], m["fg_pixel_acc"], m["miou"]])
    _table(f"k-NN segmentation on {desc}: memory {len(mem_idx)} images "
           f"({record['model']['memory_patches']} patches), {len(q_idx)} queries",
           ["features", "vote", "pixel acc", "fg pixel acc", "mIoU"], rows)  # fmt: skip
    _write(cfg, record | {"k": cfg.k, "T": cfg.T, "memory_split": memory_split,
                          "query_split": query_split})  # fmt: skip
    return 0


def cmd_kmeans(cfg: Namespace) -> int:
    from procvision.eval.kmeans_seg import kmeans_segmentation

    dataset, desc, ignore, _ = _dataset(cfg, max_images=cfg.max_images)
    backbones, spec = _backbones(cfg)
    record: dict[str, Any] = {"backbone": spec, "data": desc, "grid": cfg.grid, "k": cfg.k,
                              **_sizes(cfg, backbones["model"])}  # fmt: skip
    rows = []
    for name, bb in [*backbones.items(), ("RGB", None)]:
        record[name] = kmeans_segmentation(bb, dataset, cfg.grid, cfg.k, ignore, cfg.device,
                                           cfg.seed, with_r2=True)  # fmt: skip
        rows.append([name, record[name]["miou"], record[name]["r2"]])
    _table(f"K-means segmentation on {desc} (K = {cfg.k or 'segments per image'})",
           ["features", "mIoU", "R²"], rows)  # fmt: skip
    _write(cfg, record)
    return 0


def cmd_gestalt(cfg: Namespace) -> int:
    from procvision.data.gestalt import PRINCIPLES, GestaltDataset
    from procvision.eval.segmentation import segmentation_r2

    principles = tuple(cfg.principles or PRINCIPLES)
    backbones, spec = _backbones(cfg)
    record: dict[str, Any] = {"backbone": spec, "n": cfg.n, "grid": cfg.grid,
                              "stimulus_seed": cfg.seed, **_sizes(cfg, backbones["model"])}  # fmt: skip
    table: dict[str, dict[str, float]] = {}
    for p in principles:
        with _user_input(f"--principles {p} / --n {cfg.n} / --image-size {cfg.image_size}"):
            ds = GestaltDataset(p, cfg.n, cfg.image_size, cfg.seed)
        row = {}
        for name, bb in backbones.items():
            row[name] = segmentation_r2(bb, ds, cfg.grid, None, cfg.device, False, False)["model"]
        row["RGB"] = segmentation_r2(None, ds, cfg.grid, None, progress=False)["rgb"]
        table[p] = row
    cols = [*backbones, "RGB"]
    rows = [[p, *[table[p][c] for c in cols]] for p in principles]
    rows.append(["mean", *[sum(table[p][c] for p in principles) / len(principles) for c in cols]])
    _table(f"Gestalt R² ({cfg.n} stimuli per principle, {cfg.image_size} px)", ["principle", *cols],
           rows)  # fmt: skip
    if cfg.pictures:
        from procvision.eval.seg_pca import label_colours, picture_grid

        pics = []
        for p in principles:
            image, labels, _ = GestaltDataset(p, 1, cfg.image_size, cfg.seed)[0]
            row = [image.permute(1, 2, 0).numpy(), label_colours(labels)]
            row += [_pca_picture(b, image, cfg.grid, cfg.device) for b in backbones.values()]
            pics.append(row + [_pca_picture(None, image, cfg.grid, cfg.device)])
        picture_grid(pics, cfg.pictures, ["stimulus", "perceived", *[f"PCA {c}" for c in cols]],
                     list(principles))  # fmt: skip
        print(f"wrote {cfg.pictures}", file=sys.stderr)
    _write(cfg, record | {"r2": table})
    return 0


def cmd_benchmark(cfg: Namespace) -> int:
    from procvision.data.datasets.idx import FASHION_MNIST_ROOT
    from procvision.data.seg_benchmark import write_benchmark

    with _user_input(f"segment benchmark --out {cfg.out}"):
        rendered = write_benchmark(cfg.out, cfg.n_images, cfg.size, cfg.seed, cfg.split,
                                   cfg.source or FASHION_MNIST_ROOT,
                                   item_colour=cfg.item_colour)  # fmt: skip
    n = sum(len(r.placements) for r in rendered)
    print(f"wrote {cfg.n_images} images with {n} objects to {cfg.out} "
          f"(annotations/instances_{cfg.split}.json, {cfg.split}/)")  # fmt: skip
    return 0


COMMANDS = {"r2": cmd_r2, "incontext": cmd_incontext, "knn": cmd_knn, "kmeans": cmd_kmeans,
            "gestalt": cmd_gestalt, "benchmark": cmd_benchmark}  # fmt: skip


def run(cfg: Namespace) -> int:
    name = cfg.command
    if name not in COMMANDS:
        return fail(PROG, f"unknown subcommand {name!r}: use one of {', '.join(SUBCOMMANDS)}")
    return run_reporting(f"{PROG} {name}", COMMANDS[name], cfg[name])
