"""How a memory's embeddings were made: the backbone spec and the image transform.

Both are recorded in every item's metadata ("backbone", "transform"; with "source" and "sha256"),
so each item says how it was embedded, and `classify`, `add` and `privacy` can embed new images
the same way. Backbone specs:

    PATH                              an export dir, .safetensors, Lightning .ckpt or DINO .pth
    random:ARCH                       timm ARCH at random init (seed 0, its default size)
    random:{"arch": ..., "img_size": 32, "patch_size": 4, "seed": 0, "depth": 4, ...}
    random:PATH                       the architecture of the model at PATH (an export's
                                      config.json, a checkpoint's teacher) at random init (seed 0):
                                      the demo table's "random init" row of that model
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from procvision.data.datasets import EvalTransform, RealDataset
from procvision.memory import FingerprintMismatch, VisualMemory

_SMALL_IMAGE_KINDS = ("fashion_mnist", "mnist", "medmnist")


def random_spec(
    arch: str,
    img_size: int | None = None,
    patch_size: int | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> str:
    """Canonical `random:{json}` spec of a randomly initialised backbone."""
    cfg = {"arch": arch, "seed": int(seed), **kwargs}
    if img_size is not None:
        cfg["img_size"] = int(img_size)
    if patch_size is not None:
        cfg["patch_size"] = int(patch_size)
    return "random:" + json.dumps(cfg, sort_keys=True, separators=(",", ":"))


def resolve_backbone_spec(
    spec: str,
    img_size: int | None = None,
    patch_size: int | None = None,
    seed: int = 0,
    kwargs: dict[str, Any] | None = None,
) -> str:
    """Canonical spec: an absolute path, or `random:{json}` with the given options merged in."""
    if spec.startswith("random:"):
        body = spec[len("random:") :]
        if body.startswith("{"):
            try:
                cfg = json.loads(body)
            except ValueError as err:
                raise ValueError(
                    f"backbone spec {spec!r}: invalid JSON after 'random:' ({err})"
                ) from err
        elif _looks_like_path(body):
            cfg = architecture_of(body)
        else:
            cfg = {"arch": body}
        cfg = {**cfg, **(kwargs or {})}
        cfg.setdefault("seed", seed)
        if img_size is not None:
            cfg["img_size"] = img_size
        if patch_size is not None:
            cfg["patch_size"] = patch_size
        if not cfg.get("arch"):
            raise ValueError(
                f"backbone spec {spec!r}: expected random:ARCH, e.g. random:vit_small_patch16_224"
            )
        return random_spec(**cfg)
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"backbone {spec}: no such file or directory; expected an export directory, a .safetensors, "
            "a Lightning .ckpt or a DINO .pth, or random:ARCH"
        )
    return str(path.absolute())


def _looks_like_path(body: str) -> bool:
    return "/" in body or body.startswith(".") or body.startswith("~") or Path(body).exists()


def architecture_of(path: str) -> dict[str, Any]:
    """The rebuild config (`Backbone(**config)`) of the model at `path`: an export's config.json
    (no weights read), else the loaded backbone's config; drop-path is dropped (0 at evaluation)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"backbone spec random:{path}: no such file or directory; expected random:ARCH, "
            "random:{json} or random:PATH of an export directory or checkpoint"
        )
    card = p / "config.json" if p.is_dir() else None
    if card is not None and card.is_file():
        config = dict(json.loads(card.read_text())["backbone"])
    else:
        from procvision.models import load_backbone

        config = dict(load_backbone(p).config)
    config.pop("drop_path_rate", None)
    return config


def load_backbone_spec(
    spec: str, device: str = "cpu", arch: str | None = None, checkpoint_key: str = "teacher"
):
    """Build the backbone of a canonical spec (see `resolve_backbone_spec`), in eval mode.

    `arch` and `checkpoint_key` apply to original DINO checkpoints (see `load_backbone`); a
    state dict that does not fit `arch` raises a ValueError naming both and the fix.
    """
    from procvision.models import load_backbone, random_backbone

    if spec.startswith("random:"):
        cfg = json.loads(spec[len("random:") :])
        return random_backbone(**cfg).to(device).eval()
    try:
        return load_backbone(
            spec, map_location=device, arch=arch, checkpoint_key=checkpoint_key
        ).eval()
    except RuntimeError as err:  # load_state_dict: the weights do not fit the architecture
        if arch is None:
            raise
        raise ValueError(
            f"the weights in {spec} do not fit arch {arch!r} ({str(err).splitlines()[0]}); "
            "drop --model.arch to infer the architecture from the checkpoint's shapes, or give "
            "the arch it was trained with"
        ) from err


def transform_to_str(t: EvalTransform) -> str:
    """Compact record of an EvalTransform: `policy:size:crop_ratio:interpolation:normalize`."""
    return f"{t.policy}:{t.size}:{t.crop_ratio:g}:{t.interpolation}:{t.normalize}"


def transform_from_str(text: str) -> EvalTransform:
    try:
        policy, size, ratio, interp, norm = text.split(":")
        return EvalTransform(int(size), policy, float(ratio), interp, norm)  # type: ignore[arg-type]
    except ValueError as err:
        raise ValueError(
            f"transform record {text!r}: expected policy:size:crop_ratio:interpolation:normalize"
        ) from err


def default_policy(dataset_uri: str) -> str:
    """ "resize" for small-image datasets (Fashion-MNIST, MNIST, MedMNIST), else the paper's "crop"."""
    kind = dataset_uri.partition(":")[0].strip().lower().replace("-", "_")
    return "resize" if kind in _SMALL_IMAGE_KINDS else "crop"


def item_metadata(
    dataset: RealDataset, index: int, backbone: str | None, transform: str
) -> dict[str, str]:
    """Provenance of one item: source, sha256 of its content, and how it was embedded."""
    meta = {"source": dataset.source(index), "sha256": dataset.content_hash(index)}
    if backbone:
        meta["backbone"] = backbone
    meta["transform"] = transform
    return meta


def recorded_recipe(memory: VisualMemory) -> dict[str, str]:
    """{"backbone", "transform"} as recorded by the most recently added item (highest id); keys
    that were not recorded are absent (an empty dict for a memory built without records)."""
    if len(memory) == 0:
        return {}
    meta = memory.metadata_of([int(memory.ids.max())])[0]
    return {k: meta[k] for k in ("backbone", "transform") if isinstance(meta.get(k), str)}


def check_backbone(memory: VisualMemory, backbone, where: str) -> str:
    """The backbone's fingerprint; FingerprintMismatch naming both if it is not the memory's."""
    fp = backbone.fingerprint()
    if memory.fingerprint is not None and fp != memory.fingerprint:
        raise FingerprintMismatch(
            f"backbone {where} has fingerprint {fp[:16]}… but the memory was built with "
            f"{memory.fingerprint[:16]}…: use the memory's backbone, or build a new memory with this one"
        )
    return fp


def memory_backbone(
    memory: VisualMemory,
    override: str | None,
    device: str,
    image_size: int | None = None,
    resize_policy: str | None = None,
):
    """(backbone, spec, transform) to embed new images exactly as the memory's items were.

    The backbone and transform recorded in the memory's metadata are used unless overridden; a
    memory without records (built by the library directly) needs `override`.
    """
    recipe = recorded_recipe(memory)
    spec = resolve_backbone_spec(override) if override else recipe.get("backbone")
    if spec is None:
        raise ValueError(
            "the memory does not record the backbone that embedded it: pass --backbone PATH "
            "(and --image-size / --resize-policy if its images were not prepared the default way)"
        )
    backbone = load_backbone_spec(spec, device)
    check_backbone(memory, backbone, override or spec)
    if "transform" in recipe:
        t = transform_from_str(recipe["transform"])
    else:
        t = EvalTransform(int(backbone.config.get("img_size", 224)))
    if image_size is not None or resize_policy is not None:
        t = EvalTransform(
            image_size or t.size,
            resize_policy or t.policy,
            t.crop_ratio,
            t.interpolation,
            t.normalize,
        )  # type: ignore[arg-type]
    return backbone, spec, t


def class_table(memory: VisualMemory, names: list[str]) -> tuple[list[str], np.ndarray]:
    """The memory's class names extended by new `names`, and the index of each of `names` in it."""
    if memory.class_names is None and len(memory):
        raise ValueError(
            "the memory has no class-name table, so new items cannot be matched to its labels by "
            "class name; rebuild it with `procvision memory build`"
        )
    table = list(memory.class_names or [])
    index = {n: i for i, n in enumerate(table)}
    for n in names:
        if n not in index:
            index[n] = len(table)
            table.append(n)
    return table, np.asarray([index[n] for n in names], dtype=np.int64)


def set_class_names(mem: VisualMemory, names: list[str]) -> None:
    """Extend the class-name table (existing names keep their indices); `save` stores it."""
    mem.extend_class_names(names)
