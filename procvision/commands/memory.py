"""`procvision memory build|add|remove|forget|info|classify`: an editable, explainable visual memory.

    procvision memory build --backbone runs/demo/export --dataset fashion_mnist --out mem/
    procvision memory build --backbone random:vit_small_patch16_224 --dataset imagefolder:DIR --out mem/
    procvision memory add --memory mem/ --dataset imagefolder:NEW_DIR
    procvision memory classify --memory mem/ photo.jpg --k 20
    procvision memory remove --memory mem/ --ids 3 17
    procvision memory forget --memory mem/ --source '*/patient_042/*' --reason 'consent withdrawn'
    procvision memory info --memory mem/

Every item stores its source (path, or file#row), the sha256 of its bytes, and how it was embedded
(backbone spec, transform); the memory stores the backbone's fingerprint and refuses another one.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from jsonargparse import ArgumentParser, Namespace
from tqdm.auto import tqdm

from procvision.constants import PAPER_T
from procvision.data.datasets import (
    CorruptImageError,
    CorruptImageWarning,
    DatasetFormatError,
    EvalTransform,
    RealDataset,
    open_dataset,
    seeded_subset,
)
from procvision.eval.classify import classify_images
from procvision.eval.embed import embed_dataset
from procvision.eval.recipe import (
    class_table,
    default_policy,
    item_metadata,
    load_backbone_spec,
    memory_backbone,
    resolve_backbone_spec,
    set_class_names,
    transform_to_str,
)
from procvision.memory import (
    METHODS,
    CorruptMemory,
    FingerprintMismatch,
    VisualMemory,
    forget,
    read_audit,
    read_manifest,
)

USER_ERRORS = (
    DatasetFormatError, CorruptImageError, CorruptMemory, FingerprintMismatch,
    FileNotFoundError, FileExistsError, KeyError, ValueError,
)  # fmt: skip


# ---------------------------------------------------------------- parser
def _embedding_args(p: ArgumentParser, with_backbone_default: bool) -> None:
    help_b = "PATH (export, .ckpt, DINO .pth) or random:ARCH"
    if not with_backbone_default:
        help_b += "; default: the backbone recorded in the memory"
    p.add_argument("--backbone", type=str | None, default=None, help=help_b)
    if not with_backbone_default:
        _transform_override_args(p)
    p.add_argument("--device", type=str, default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=0)


def _transform_override_args(p: ArgumentParser) -> None:
    p.add_argument(
        "--image-size", type=int | None, default=None, help="default: as recorded in the memory"
    )
    p.add_argument(
        "--resize-policy",
        type=str | None,
        default=None,
        help="crop, resize, none; default: as recorded",
    )


def _dataset_args(p: ArgumentParser) -> None:
    p.add_argument(
        "--dataset", type=str, required=True,
        help="fashion_mnist[:DIR] | imagefolder:DIR | medmnist:FILE.npz[:split] | cub:DIR | food101:DIR | flowers102:DIR",
    )  # fmt: skip
    p.add_argument("--split", type=str, default="train", help="split when the URI names none")
    p.add_argument(
        "--max-items", type=int | None, default=None, help="seeded random subset of this size"
    )
    p.add_argument("--seed", type=int, default=0, help="subset seed (and random-init seed)")
    p.add_argument(
        "--skip-corrupt", action="store_true", help="skip undecodable images (listed at the end)"
    )


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="procvision memory", description=__doc__.split("\n\n")[0])
    sub = parser.add_subcommands(dest="command", required=True)

    p = ArgumentParser(description="Embed a dataset with a backbone into a new memory directory.")
    _embedding_args(p, True)
    _dataset_args(p)
    p.add_argument("--out", type=str, required=True, help="memory directory to create")
    p.add_argument(
        "--image-size", type=int | None, default=None, help="default: the backbone's img_size"
    )
    p.add_argument("--patch-size", type=int | None, default=None, help="random:ARCH only")
    p.add_argument(
        "--backbone-kwargs",
        type=dict[str, Any] | None,
        default=None,
        help="random:ARCH only, e.g. {depth: 4}",
    )
    p.add_argument("--resize-policy", type=str | None, default=None,
                   help="crop (paper: resize 256 -> crop 224), resize, none; default: resize for 28-px sets")  # fmt: skip
    p.add_argument("--engine", type=str, default="auto", help="auto, faiss, torch, ivf")
    p.add_argument("--overwrite", action="store_true", help="replace an existing memory at --out")
    sub.add_subcommand("build", p, help="build a memory from a dataset")

    p = ArgumentParser(
        description="Embed more items (a folder, a dataset) into an existing memory."
    )
    p.add_argument("--memory", type=str, required=True)
    _embedding_args(p, False)
    _dataset_args(p)
    sub.add_subcommand("add", p, help="add items to a memory")

    p = ArgumentParser(description="Remove items by id (use `forget` for an audited removal).")
    p.add_argument("--memory", type=str, required=True)
    p.add_argument("--ids", type=int, nargs="+", required=True)
    sub.add_subcommand("remove", p, help="remove items by id")

    p = ArgumentParser(
        description="Forget items for good: remove, compact, shred, write an audit record."
    )
    p.add_argument("--memory", type=str, required=True)
    p.add_argument("--ids", type=int, nargs="+", default=None)
    p.add_argument(
        "--source",
        type=str | None,
        default=None,
        help="shell pattern on the item source, e.g. '*/person_7/*'",
    )
    p.add_argument("--reason", type=str, default="")
    sub.add_subcommand("forget", p, help="audited, compacting removal (unlearning)")

    p = ArgumentParser(description="Show a memory's size, classes, fingerprint and format.")
    p.add_argument("--memory", type=str, required=True)
    p.add_argument("--json", action="store_true", help="print JSON")
    sub.add_subcommand("info", p, help="describe a memory")

    p = ArgumentParser(description="Classify images and show the neighbours behind each decision.")
    p.add_argument("images", type=str, nargs="+", help="image files")
    p.add_argument("--memory", type=str, required=True)
    _embedding_args(p, False)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--method", type=str, default="weighted", help=f"one of {', '.join(METHODS)}")
    p.add_argument("--T", type=float, default=PAPER_T, help="temperature of the weighted vote")
    p.add_argument(
        "--show", type=int | None, default=None, help="neighbours to print (default: all k)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    sub.add_subcommand("classify", p, help="classify images, explained by their neighbours")
    return parser


# ---------------------------------------------------------------- shared steps
def _out(line: str = "") -> None:
    print(line, flush=True)


def open_memory(directory: str) -> VisualMemory:
    return VisualMemory.load(directory)


def open_items(cfg: Namespace, transform: EvalTransform) -> RealDataset:
    ds = open_dataset(cfg.dataset, cfg.split, transform, cfg.skip_corrupt)
    return seeded_subset(ds, cfg.max_items, cfg.seed)


def embed_items(
    cfg: Namespace, backbone, dataset: RealDataset, spec: str, transform: EvalTransform
):
    """Embed `dataset`; returns (embeddings, labels as dataset label indices, metadata, skipped sources)."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # skipped files are listed at the end instead
        warnings.simplefilter("ignore", CorruptImageWarning)
        out = embed_dataset(
            backbone, dataset, cfg.batch_size, cfg.device, True, cfg.num_workers, True, "embed"
        )
    tstr = transform_to_str(transform)
    meta = [
        item_metadata(dataset, int(i), spec, tstr)
        for i in tqdm(out.indices.tolist(), desc="sha256", unit="item", leave=False)
    ]
    skipped = [dataset.source(i) for i in out.skipped]
    _out(f"embedded {len(meta)} items in {time.perf_counter() - t0:.1f} s")
    return out.embeddings.numpy(), out.labels.numpy(), meta, skipped


def _report_skipped(skipped: list[str]) -> None:
    if skipped:
        _out(f"skipped {len(skipped)} corrupt image(s):")
        for s in skipped:
            _out(f"  {s}")


# ---------------------------------------------------------------- subcommands
def cmd_build(cfg: Namespace) -> int:
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise FileExistsError(
            f"{out} exists and is not empty; pass --overwrite to replace it, or use `add`"
        )
    if not cfg.backbone:
        raise ValueError("--backbone is required: PATH or random:ARCH")
    spec = resolve_backbone_spec(
        cfg.backbone, cfg.image_size, cfg.patch_size, cfg.seed, cfg.backbone_kwargs
    )
    backbone = load_backbone_spec(spec, cfg.device)
    size = cfg.image_size or int(backbone.config.get("img_size", 224))
    transform = EvalTransform(size, cfg.resize_policy or default_policy(cfg.dataset))  # type: ignore[arg-type]
    dataset = open_items(cfg, transform)
    _out(f"building memory from {cfg.dataset} ({len(dataset)} items) with {spec}")
    emb, labels, meta, skipped = embed_items(cfg, backbone, dataset, spec, transform)
    mem = VisualMemory(emb.shape[1], engine=cfg.engine, fingerprint=backbone.fingerprint(),
                       class_names=dataset.class_names)  # fmt: skip
    mem.add(emb, labels, metadata=meta)
    mem.save(out)
    _out(f"memory: {out} ({len(mem)} items, {len(dataset.class_names)} classes, dim {mem.dim})")
    _report_skipped(skipped)
    return 0


def cmd_add(cfg: Namespace) -> int:
    mem = open_memory(cfg.memory)
    backbone, spec, transform = memory_backbone(
        mem, cfg.backbone, cfg.device, cfg.image_size, cfg.resize_policy
    )
    dataset = open_items(cfg, transform)
    emb, labels, meta, skipped = embed_items(cfg, backbone, dataset, spec, transform)
    table, remap = class_table(mem, dataset.class_names)
    new_classes = table[len(mem.class_names or []) :]
    if new_classes:
        set_class_names(mem, table)
    ids = mem.add(emb, remap[labels], metadata=meta)
    mem.save(cfg.memory)
    span = f"ids {int(ids.min())}..{int(ids.max())}" if len(ids) else "nothing"
    _out(f"added {len(ids)} items ({span}); memory now holds {len(mem)}")
    if new_classes:
        _out(f"new classes: {', '.join(new_classes)}")
    _report_skipped(skipped)
    return 0


def cmd_remove(cfg: Namespace) -> int:
    mem = open_memory(cfg.memory)
    missing = [i for i in cfg.ids if mem.rows_of(np.asarray([i]))[0] < 0]
    n = mem.remove(cfg.ids)
    mem.save(cfg.memory)
    _out(f"removed {n} item(s); memory now holds {len(mem)}")
    if missing:
        _out(f"not in the memory: {missing}")
    return 0


def cmd_forget(cfg: Namespace) -> int:
    if not cfg.ids and cfg.source is None:
        raise ValueError("forget needs --ids ID [ID ...] and/or --source PATTERN")
    record = forget(cfg.memory, ids=cfg.ids, source_pattern=cfg.source, reason=cfg.reason)
    _out(f"forgot {record['count']} item(s): {record['n_before']} -> {record['n_after']}")
    _out(f"removed ids: {record['removed_ids']}")
    if record["not_found"]:
        _out(f"not in the memory: {record['not_found']}")
    _out(
        f"content hash before {record['content_hash_before'][:16]}…, after {record['content_hash_after'][:16]}…"
    )
    _out(f"audit record appended to {Path(cfg.memory) / 'audit.jsonl'}")
    return 0


def memory_info(directory: str) -> dict[str, Any]:
    manifest = read_manifest(directory)
    mem = open_memory(directory)
    names = mem.class_names
    counts = Counter(mem.labels.tolist())
    classes = {
        (names[c] if names and c < len(names) else str(c)): int(n)
        for c, n in sorted(counts.items())
    }
    backbones = (
        sorted({d.get("backbone", "?") for d in mem.metadata_of(mem.ids)}) if len(mem) else []
    )
    return {
        "path": str(Path(directory).absolute()),
        "format": f"{manifest['format']} v{manifest.get('format_version')}",
        "count": len(mem),
        "dim": mem.dim,
        "engine": mem.engine,
        "fingerprint": mem.fingerprint,
        "num_classes": len(names) if names else len(counts),
        "classes": classes,
        "id_range": [int(mem.ids.min()), int(mem.ids.max())] if len(mem) else None,
        "content_hash": manifest["content_hash"],
        "backbones": backbones,
        "audit_records": len(read_audit(directory)),
    }


def cmd_info(cfg: Namespace) -> int:
    info = memory_info(cfg.memory)
    if cfg.json:
        _out(json.dumps(info, indent=2))
        return 0
    for key in ("path", "format", "count", "dim", "engine", "fingerprint", "num_classes", "id_range",
                "content_hash", "audit_records"):  # fmt: skip
        _out(f"{key:14s} {info[key]}")
    _out("backbone       " + "; ".join(info["backbones"]))
    _out("classes        " + ", ".join(f"{k} ({v})" for k, v in info["classes"].items()))
    return 0


def cmd_classify(cfg: Namespace) -> int:
    mem = open_memory(cfg.memory)
    backbone, _spec, transform = memory_backbone(
        mem, cfg.backbone, cfg.device, cfg.image_size, cfg.resize_policy
    )
    results = classify_images(
        mem, backbone, transform, cfg.images, cfg.k, cfg.method, cfg.T, cfg.device
    )
    if cfg.json:
        _out(json.dumps(results, indent=2))
        return 0
    for res in results:
        share = res["scores"].get(res["prediction"], 0.0)
        _out(
            f"{res['image']}: {res['prediction']} ({100 * share:.1f}% of the {cfg.method} vote, k={cfg.k})"
        )
        others = [
            f"{n} {100 * s:.1f}%" for n, s in res["scores"].items() if n != res["prediction"]
        ][:4]
        if others:
            _out("  runners-up: " + ", ".join(others))
        _out(f"  {'rank':>4} {'id':>8} {'similarity':>10} {'vote':>6}  label / source")
        for nb in res["neighbours"][: cfg.show or None]:
            _out(f"  {nb['rank']:>4} {nb['id']:>8} {nb['similarity']:>10.4f} {100 * nb['weight']:>5.1f}%  "
                 f"{nb['label']}  {nb['source']}")  # fmt: skip
    return 0


COMMANDS = {
    "build": cmd_build, "add": cmd_add, "remove": cmd_remove, "forget": cmd_forget,
    "info": cmd_info, "classify": cmd_classify,
}  # fmt: skip


def run(cfg: Namespace) -> int:
    """Run the chosen subcommand; user errors print one line to stderr and return 2."""
    name = cfg.command
    try:
        return COMMANDS[name](cfg[name])
    except USER_ERRORS as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"procvision memory {name}: error: {msg}", file=sys.stderr)
        return 2
