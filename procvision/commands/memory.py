"""`procvision memory build|add|remove|forget|info|classify`: an editable, explainable visual memory.

    procvision memory build --backbone runs/demo/export --dataset fashion_mnist --out mem/
    procvision memory build --backbone random:vit_small_patch16_224 --dataset imagefolder:DIR --out mem/
    procvision memory add --memory mem/ --dataset imagefolder:NEW_DIR
    procvision memory classify --memory mem/ photo.jpg --k 20
    procvision memory remove --memory mem/ --ids 3 17
    procvision memory forget --memory mem/ --source '*/patient_042/*' --reason 'consent withdrawn'
    procvision memory info --memory mem/

Every item stores its source (path, or file#row), the sha256 of its bytes, and how it was embedded
(backbone spec, transform); the memory stores one recipe (backbone and fingerprint, transform,
features, default vote) and refuses items embedded another way. Writing commands (build, add,
remove, forget) hold the memory's writer lock for their whole read-modify-write (`--wait SECONDS`
waits for another writer); readers (info, classify) read a consistent snapshot.
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

from procvision.commands._common import run_reporting
from procvision.constants import PAPER_K, PAPER_T
from procvision.data.datasets import (
    CorruptImageWarning,
    EvalTransform,
    RealDataset,
    open_dataset,
    seeded_subset,
)
from procvision.data.datasets.base import file_sha256
from procvision.data.datasets.registry import parse_dataset_uri
from procvision.eval.classify import classify_images
from procvision.eval.embed import embed_dataset, resolve_precision
from procvision.eval.recipe import (
    check_recipe,
    class_table,
    default_policy,
    default_vote_of,
    item_metadata,
    load_backbone_spec,
    make_transform,
    memory_backbone,
    memory_recipe,
    recipe_for,
    recipe_precision,
    resolve_spec,
    set_class_names,
    transform_to_dict,
    transform_to_str,
)
from procvision.memory import (
    METHODS,
    FingerprintMismatch,
    InvalidArgument,
    RecipeMismatch,
    VisualMemory,
    VisualMemoryError,
    build_memory,
    forget,
    read_audit,
    read_manifest,
    read_memory,
    update_memory,
    writer_lock,
)
from procvision.memory.persist import check_memory_target, is_memory_dir, read_key_file
from procvision.memory.recipe import default_vote


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
    p.add_argument("--image-size", type=int | None, default=None,
                   help="override the memory recipe's image size (warned: queries are then "
                        "prepared unlike the memory's items)")  # fmt: skip
    p.add_argument("--resize-policy", type=str | None, default=None,
                   help="crop, resize, none: override the memory recipe's policy (warned)")  # fmt: skip


def _common_args(p: ArgumentParser, writer: bool) -> None:
    p.add_argument("--hmac-key", type=str | None, default=None,
                   help="key file (outside the memory) to verify and, when writing, sign the "
                        "manifest with HMAC-SHA256")  # fmt: skip
    if writer:
        p.add_argument("--wait", type=float | None, default=None,
                       help="seconds to wait for another writer of the memory (default: fail at once)")  # fmt: skip


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
    p.add_argument("--k", type=int, default=PAPER_K, help="the recipe's default vote: neighbours")
    p.add_argument(
        "--method", type=str, default="weighted", help=f"default vote: {', '.join(METHODS)}"
    )
    p.add_argument("--T", type=float, default=PAPER_T, help="default vote: temperature")
    p.add_argument("--precision", type=str, default="auto",
                   help="auto (bf16 on CUDA and on CPUs with native bf16, else fp32; as validate "
                        "and the demo), fp32 or bf16: recorded in the recipe, so every later add, "
                        "classify, privacy and the service embed the same way")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing memory at --out (only a procvision memory)")  # fmt: skip
    _common_args(p, True)
    sub.add_subcommand("build", p, help="build a memory from a dataset")

    p = ArgumentParser(
        description="Embed more items (a folder, a dataset) into an existing memory."
    )
    p.add_argument("--memory", type=str, required=True)
    _embedding_args(p, False)
    _dataset_args(p)
    p.add_argument("--recipe-override", action="store_true",
                   help="adopt the new backbone/transform: re-embed every item from its source "
                        "(refused, listing them, if some sources are unreadable)")  # fmt: skip
    _common_args(p, True)
    sub.add_subcommand("add", p, help="add items to a memory")

    p = ArgumentParser(description="Remove items by id (use `forget` for an audited removal).")
    p.add_argument("--memory", type=str, required=True)
    p.add_argument("--ids", type=int, nargs="+", required=True)
    p.add_argument("--reason", type=str, default="", help="recorded in the audit log")
    _common_args(p, True)
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
    _common_args(p, True)
    sub.add_subcommand("forget", p, help="audited, compacting removal (unlearning)")

    p = ArgumentParser(description="Show a memory's size, classes, fingerprint and format.")
    p.add_argument("--memory", type=str, required=True)
    p.add_argument("--json", action="store_true", help="print JSON")
    _common_args(p, False)
    sub.add_subcommand("info", p, help="describe a memory")

    p = ArgumentParser(description="Classify images and show the neighbours behind each decision.")
    p.add_argument("images", type=str, nargs="+", help="image files")
    p.add_argument("--memory", type=str, required=True)
    _embedding_args(p, False)
    p.add_argument("--k", type=int | None, default=None, help="default: the memory recipe's vote")
    p.add_argument(
        "--method",
        type=str | None,
        default=None,
        help=f"one of {', '.join(METHODS)}; default: the recipe's",
    )
    p.add_argument(
        "--T", type=float | None, default=None, help="temperature; default: the recipe's"
    )
    p.add_argument(
        "--show", type=int | None, default=None, help="neighbours to print (default: all k)"
    )
    p.add_argument("--skip-corrupt", action="store_true",
                   help="report undecodable images and classify the others")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON")
    _common_args(p, False)
    sub.add_subcommand("classify", p, help="classify images, explained by their neighbours")
    return parser


# ---------------------------------------------------------------- shared steps
def _out(line: str = "") -> None:
    print(line, flush=True)


def hmac_key_of(cfg: Namespace, memory: str) -> bytes | None:
    """The key in `--hmac-key FILE`, refused when the file lies inside the memory directory."""
    if not cfg.get("hmac_key"):
        return None
    key_path, mem_path = Path(cfg.hmac_key).absolute(), Path(memory).absolute()
    if mem_path == key_path or mem_path in key_path.parents:
        raise InvalidArgument(
            f"--hmac-key {cfg.hmac_key}: the key must be kept outside the memory directory"
        )
    return read_key_file(cfg.hmac_key)


def open_memory(directory: str, hmac_key: bytes | None = None) -> VisualMemory:
    """A consistent, verified snapshot of the memory (readers change nothing on disk)."""
    return read_memory(directory, hmac_key=hmac_key)


def require_items(mem: VisualMemory, directory: str, what: str) -> None:
    """An empty memory (e.g. after forgetting everything) is valid but has nothing to `what`."""
    if len(mem) == 0:
        raise VisualMemoryError(
            f"memory {directory} is empty (it holds no items, e.g. after forgetting them all), so "
            f"there is nothing to {what}: add items with `procvision memory add`"
        )


def check_dataset_args(cfg: Namespace) -> None:
    """Flags of the dataset group, checked before any work."""
    parse_dataset_uri_checked(cfg.dataset)
    if cfg.max_items is not None and cfg.max_items < 1:
        raise InvalidArgument(f"--max-items: expected a positive count, got {cfg.max_items}")
    if cfg.batch_size < 1:
        raise InvalidArgument(f"--batch-size: expected a positive count, got {cfg.batch_size}")


def parse_dataset_uri_checked(uri: str):
    try:
        return parse_dataset_uri(uri)
    except ValueError as err:
        raise InvalidArgument(f"--dataset: {err}") from err


def open_items(cfg: Namespace, transform: EvalTransform) -> RealDataset:
    parse_dataset_uri_checked(cfg.dataset)
    ds = open_dataset(cfg.dataset, cfg.split, transform, cfg.skip_corrupt)
    return seeded_subset(ds, cfg.max_items, cfg.seed)


def embed_items(
    cfg: Namespace,
    backbone,
    dataset: RealDataset,
    spec: str,
    transform: EvalTransform,
    precision: str = "fp32",
):
    """Embed `dataset` (CLS in `precision`); returns (embeddings, labels as dataset label
    indices, metadata, skipped sources)."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # skipped files are listed at the end instead
        warnings.simplefilter("ignore", CorruptImageWarning)
        out = embed_dataset(backbone, dataset, cfg.batch_size, cfg.device, True, cfg.num_workers,
                            True, "embed", precision=precision)  # type: ignore[arg-type]  # fmt: skip
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


def precision_of(text: str, device: str) -> str:
    """`--precision` resolved for `device` (`eval.embed.resolve_precision`: auto -> bf16 on CUDA
    and on CPUs with native bf16, else fp32); a bad value is the user's error."""
    try:
        return resolve_precision(text, device)
    except ValueError as err:
        raise InvalidArgument(f"--precision: {err}") from err


# ---------------------------------------------------------------- subcommands
def _check_out(cfg: Namespace) -> Path:
    """--out may be a new path, an empty directory, or (with --overwrite) a procvision memory;
    never a file, a device, a directory of other things, nor the dataset being read."""
    out = check_memory_target(cfg.out)
    if out.exists() and is_memory_dir(out) and not cfg.overwrite:
        raise InvalidArgument(
            f"{cfg.out} is an existing memory; pass --overwrite to replace it, or use `add`"
        )
    uri = parse_dataset_uri_checked(cfg.dataset)
    if uri.path:
        data = Path(uri.path).expanduser().absolute()
        if out == data or out in data.parents or data in out.parents:
            raise InvalidArgument(
                f"--out {cfg.out} overlaps the dataset being read ({data}): choose a memory "
                "directory outside the dataset"
            )
    return out


def cmd_build(cfg: Namespace) -> int:
    if not cfg.backbone:
        raise InvalidArgument("--backbone is required: PATH or random:ARCH")
    out = _check_out(cfg)
    check_dataset_args(cfg)
    vote = default_vote(cfg.k, cfg.method, cfg.T)
    precision = precision_of(cfg.precision, cfg.device)
    key = hmac_key_of(cfg, cfg.out)
    spec = resolve_spec(cfg.backbone, cfg.image_size, cfg.patch_size, cfg.seed, cfg.backbone_kwargs)
    with writer_lock(out, cfg.wait, create=True):
        backbone = load_backbone_spec(spec, cfg.device)
        size = cfg.image_size or int(backbone.config.get("img_size", 224))
        transform = make_transform(size, cfg.resize_policy or default_policy(cfg.dataset))
        dataset = open_items(cfg, transform)
        _out(f"building memory from {cfg.dataset} ({len(dataset)} items) with {spec} ({precision})")
        emb, labels, meta, skipped = embed_items(cfg, backbone, dataset, spec, transform, precision)
        mem = build_memory(emb, labels,
                           metadata=meta, engine=cfg.engine, fingerprint=backbone.fingerprint(),
                           class_names=dataset.class_names,
                           recipe=recipe_for(spec, backbone, transform, vote, precision))  # fmt: skip
        _check_out(cfg)  # nothing appeared at --out while embedding
        mem.save(out, shred_old=cfg.overwrite, hmac_key=key)
    _out(f"memory: {out} ({len(mem)} items, {len(dataset.class_names)} classes, dim {mem.dim})")
    _report_skipped(skipped)
    return 0


def _override_transform(cfg: Namespace, t: EvalTransform) -> EvalTransform:
    if cfg.image_size is None and cfg.resize_policy is None:
        return t
    return make_transform(cfg.image_size or t.size, cfg.resize_policy or t.policy, t)


def cmd_add(cfg: Namespace) -> int:
    check_dataset_args(cfg)
    key = hmac_key_of(cfg, cfg.memory)
    report: dict[str, Any] = {}

    def edit(mem: VisualMemory) -> None:
        try:
            backbone, spec, transform = memory_backbone(mem, cfg.backbone, cfg.device,
                                                        check=not cfg.recipe_override)  # fmt: skip
        except FingerprintMismatch as err:
            raise RecipeMismatch(f"{err}; or pass --recipe-override to re-embed every item "
                                 "with this backbone") from err  # fmt: skip
        transform = _override_transform(cfg, transform)
        precision = recipe_precision(mem)  # new items embed as the memory's did
        new = recipe_for(spec, backbone, transform, default_vote_of(mem), precision)
        fix = ("rebuild the memory with `procvision memory build` for this recipe, or pass "
               "--recipe-override to re-embed every item with it")  # fmt: skip
        diff = check_recipe(mem, new, "" if cfg.recipe_override else fix)
        if cfg.recipe_override and diff:
            _reembed(cfg, mem, backbone, spec, transform, precision)
            report["recipe"] = diff
        dataset = open_items(cfg, transform)
        emb, labels, meta, skipped = embed_items(cfg, backbone, dataset, spec, transform, precision)
        table, remap = class_table(mem, dataset.class_names)
        new_classes = table[len(mem.class_names or []) :]
        if new_classes:
            set_class_names(mem, table)
        if mem.recipe is None or diff:  # memories from before recipes get one on this write
            mem.set_recipe(new)
        ids = mem.add(emb, remap[labels], metadata=meta) if len(meta) else np.zeros(0, np.int64)
        report.update(ids=ids, new_classes=new_classes, skipped=skipped, n=len(mem))

    update_memory(cfg.memory, edit, wait=cfg.wait, hmac_key=key)
    ids = report["ids"]
    span = f"ids {int(ids.min())}..{int(ids.max())}" if len(ids) else "nothing"
    if report.get("recipe"):
        _out("re-embedded every item with the new recipe: " + "; ".join(report["recipe"]))
    _out(f"added {len(ids)} items ({span}); memory now holds {report['n']}")
    if report["new_classes"]:
        _out(f"new classes: {', '.join(report['new_classes'])}")
    _report_skipped(report["skipped"])
    return 0


class _SourceImages(RealDataset):
    """The memory's items re-read from their file sources (for --recipe-override)."""

    def __init__(self, paths: list[str], labels: np.ndarray, transform: EvalTransform) -> None:
        super().__init__(transform)
        self.paths, self.labels, self.class_names = paths, labels, []

    def load_image(self, index: int):
        from procvision.data.datasets import open_image

        return open_image(self.paths[index])

    def source(self, index: int) -> str:
        return self.paths[index]

    def content_hash(self, index: int) -> str:
        return file_sha256(self.paths[index])


def _reembed(
    cfg: Namespace, mem: VisualMemory, backbone, spec: str, transform, precision: str = "fp32"
) -> None:
    """Replace every item's embedding by the new recipe's, keeping ids, labels and provenance;
    refused, listing them, if a source is not a readable file with the recorded sha256."""
    meta = mem.metadata_of(mem.ids)
    bad = []
    for m in meta:
        src = m.get("source", "")
        if not (src and Path(src).is_file() and file_sha256(src) == m.get("sha256")):
            bad.append(src or "(no source recorded)")
    if bad:
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise InvalidArgument(
            f"--recipe-override: {len(bad)} item(s) cannot be re-embedded because their source is "
            f"not a readable file with the recorded sha256 ({shown}); forget them first or rebuild"
        )
    ds = _SourceImages([m["source"] for m in meta], np.asarray(mem.labels), transform)
    emb, _ = embed_dataset(backbone, ds, cfg.batch_size, cfg.device, True, cfg.num_workers,
                           desc="re-embed", precision=precision)  # type: ignore[arg-type]  # fmt: skip
    tstr = transform_to_str(transform)
    new_meta = [{**m, "backbone": spec, "transform": tstr} for m in meta]
    mem.replace_embeddings(emb, new_meta, backbone.fingerprint())


def cmd_remove(cfg: Namespace) -> int:
    key = hmac_key_of(cfg, cfg.memory)

    def edit(mem: VisualMemory) -> tuple[int, list[int], int]:
        missing = [i for i in cfg.ids if mem.rows_of(np.asarray([i]))[0] < 0]
        return mem.remove(cfg.ids), missing, len(mem)

    n, missing, left = update_memory(cfg.memory, edit, wait=cfg.wait, reason=cfg.reason,
                                     hmac_key=key)  # fmt: skip
    _out(f"removed {n} item(s); memory now holds {left}")
    if missing:
        _out(f"not in the memory: {missing}")
    return 0


def cmd_forget(cfg: Namespace) -> int:
    if not cfg.ids and cfg.source is None:
        raise InvalidArgument("forget needs --ids ID [ID ...] and/or --source PATTERN")
    key = hmac_key_of(cfg, cfg.memory)
    record = forget(cfg.memory, ids=cfg.ids, source_pattern=cfg.source, reason=cfg.reason,
                    wait=cfg.wait, hmac_key=key)  # fmt: skip
    _out(f"forgot {record['count']} item(s): {record['n_before']} -> {record['n_after']}")
    _out(f"removed ids: {record['removed_ids']}")
    if record["not_found"]:
        _out(f"not in the memory: {record['not_found']}")
    _out(
        f"content hash before {record['content_hash_before'][:16]}…, after {record['content_hash_after'][:16]}…"
    )
    _out(f"audit record appended to {Path(cfg.memory) / 'audit.jsonl'}")
    return 0


def memory_info(directory: str, hmac_key: bytes | None = None) -> dict[str, Any]:
    mem = open_memory(directory, hmac_key)
    manifest = read_manifest(directory, hmac_key)
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
        "next_id": mem.next_id,
        "recipe": memory_recipe(mem),
        "signed": bool(manifest.get("hmac_sha256")),
        "backbones": backbones,
        "audit_records": len(read_audit(directory)),
    }


def cmd_info(cfg: Namespace) -> int:
    info = memory_info(cfg.memory, hmac_key_of(cfg, cfg.memory))
    if cfg.json:
        _out(json.dumps(info, indent=2))
        return 0
    for key in ("path", "format", "count", "dim", "engine", "fingerprint", "num_classes", "id_range",
                "content_hash", "next_id", "signed", "audit_records"):  # fmt: skip
        _out(f"{key:14s} {info[key]}")
    _out("recipe         " + json.dumps(info["recipe"], sort_keys=True))
    _out("backbone       " + "; ".join(info["backbones"]))
    _out("classes        " + ", ".join(f"{k} ({v})" for k, v in info["classes"].items()))
    return 0


def cmd_classify(cfg: Namespace) -> int:
    mem = open_memory(cfg.memory, hmac_key_of(cfg, cfg.memory))
    require_items(mem, cfg.memory, "classify against")
    vote = default_vote_of(mem)
    vote = default_vote(cfg.k if cfg.k is not None else vote["k"], cfg.method or vote["method"],
                        cfg.T if cfg.T is not None else vote["T"])  # fmt: skip
    backbone, _spec, recorded = memory_backbone(mem, cfg.backbone, cfg.device)
    transform = _override_transform(cfg, recorded)
    if transform != recorded and memory_recipe(mem) is not None:
        print(f"procvision memory classify: warning: --image-size/--resize-policy override the "
              f"memory's recipe ({transform_to_dict(recorded)} -> {transform_to_dict(transform)}); "
              "queries are prepared unlike the memory's items", file=sys.stderr)  # fmt: skip
    results = classify_images(mem, backbone, transform, cfg.images, vote["k"], vote["method"],
                              vote["T"], cfg.device, cfg.skip_corrupt,
                              recipe_precision(mem))  # fmt: skip
    if cfg.json:
        _out(json.dumps(results, indent=2))
        return 0
    k, method = vote["k"], vote["method"]
    for res in results:
        if "error" in res:
            _out(f"{res['image']}: skipped: {res['error']}")
            continue
        share = res["scores"].get(res["prediction"], 0.0)
        _out(
            f"{res['image']}: {res['prediction']} ({100 * share:.1f}% of the {method} vote, k={k})"
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
    return run_reporting(f"procvision memory {name}", COMMANDS[name], cfg[name])
