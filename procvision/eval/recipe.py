"""How a memory's embeddings were made: the backbone spec and the image transform.

The memory's recipe (`procvision.memory.recipe`: backbone spec and fingerprint, transform,
features, default vote) is recorded in its manifest at build and is what `classify`, `add`,
`privacy` and the service embed new images with. Each item's metadata also records "backbone" and
"transform" (with "source" and "sha256"); memories written before recipes existed get their
recipe from the newest item's record, and store it on their next write. Backbone specs:

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
from procvision.memory import FingerprintMismatch, InvalidArgument, RecipeMismatch, VisualMemory
from procvision.memory.recipe import make_recipe, recipe_differences, recipe_vote

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
        raise InvalidArgument(
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


def transform_to_dict(t: EvalTransform) -> dict[str, Any]:
    """The recipe's "transform" record of an EvalTransform."""
    return {"size": int(t.size), "policy": t.policy, "crop_ratio": float(t.crop_ratio),
            "interpolation": t.interpolation, "normalize": t.normalize}  # fmt: skip


def transform_from_dict(d: dict[str, Any]) -> EvalTransform:
    """The EvalTransform of a recipe's "transform" record."""
    return EvalTransform(int(d["size"]), d["policy"], float(d["crop_ratio"]), d["interpolation"],
                         d["normalize"])  # type: ignore[arg-type]  # fmt: skip


def recorded_recipe(memory: VisualMemory) -> dict[str, str]:
    """{"backbone", "transform"} as recorded by the most recently added item (highest id); keys
    that were not recorded are absent (an empty dict for a memory built without records)."""
    if len(memory) == 0:
        return {}
    meta = memory.metadata_of([int(memory.ids.max())])[0]
    return {k: meta[k] for k in ("backbone", "transform") if isinstance(meta.get(k), str)}


def memory_recipe(memory: VisualMemory) -> dict | None:
    """The memory's recipe: the manifest's, or for a memory written before recipes existed, one
    made from its newest item's record (None if it records no backbone)."""
    if memory.recipe is not None:
        return memory.recipe
    rec = recorded_recipe(memory)
    if "backbone" not in rec:
        return None
    t = transform_from_str(rec["transform"]) if "transform" in rec else None
    tdict = transform_to_dict(t) if t is not None else None
    recipe = make_recipe(rec["backbone"], memory.fingerprint, tdict or _UNKNOWN_TRANSFORM)
    if tdict is None:
        recipe["transform"] = None
    return recipe


_UNKNOWN_TRANSFORM = {
    "size": 0,
    "policy": "",
    "crop_ratio": 0.0,
    "interpolation": "",
    "normalize": "",
}


def recipe_for(
    spec: str | None,
    backbone,
    transform: EvalTransform,
    vote: dict | None = None,
    precision: str = "fp32",
) -> dict:
    """The recipe of items embedded by `backbone` (from `spec`) through `transform` (CLS token
    after the final norm, in `precision`: what `embed_dataset` computes)."""
    return make_recipe(
        spec, backbone.fingerprint(), transform_to_dict(transform), precision=precision, vote=vote
    )


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
    check: bool = True,
):
    """(backbone, spec, transform) to embed new images exactly as the memory's items were.

    The memory's recipe is used unless overridden; a memory without one (built by the library
    directly) needs `override`. With `check`, a backbone whose fingerprint is not the memory's
    is refused (FingerprintMismatch).
    """
    recipe = memory_recipe(memory) or {}
    recorded = (recipe.get("backbone") or {}).get("spec")
    spec = resolve_spec(override) if override else recorded
    if spec is None:
        raise InvalidArgument(
            "the memory does not record the backbone that embedded it: pass --backbone PATH "
            "(and --image-size / --resize-policy if its images were not prepared the default way)"
        )
    backbone = load_backbone_spec(spec, device)
    if check:
        check_backbone(memory, backbone, override or spec)
    if recipe.get("transform"):
        t = transform_from_dict(recipe["transform"])
    else:
        t = EvalTransform(int(backbone.config.get("img_size", 224)))
    if image_size is not None or resize_policy is not None:
        t = make_transform(image_size or t.size, resize_policy or t.policy, t)
    return backbone, spec, t


def make_transform(size: int, policy: str, like: EvalTransform | None = None) -> EvalTransform:
    """EvalTransform(size, policy) keeping `like`'s crop ratio, interpolation and normalisation;
    bad values raise InvalidArgument naming the flag."""
    if int(size) < 1:
        raise InvalidArgument(f"--image-size: expected a positive size in pixels, got {size}")
    if policy not in ("crop", "resize", "none"):
        raise InvalidArgument(f"--resize-policy: expected crop, resize or none, got {policy!r}")
    if like is None:
        return EvalTransform(int(size), policy)  # type: ignore[arg-type]
    return EvalTransform(int(size), policy, like.crop_ratio, like.interpolation, like.normalize)  # type: ignore[arg-type]


def resolve_spec(text: str, *args: Any) -> str:
    """`resolve_backbone_spec` with its errors as user errors (a bad path or spec is the user's)."""
    try:
        return resolve_backbone_spec(text, *args)
    except (FileNotFoundError, ValueError) as err:
        raise InvalidArgument(str(err)) from err


def check_recipe(memory: VisualMemory, new: dict, fix: str) -> list[str]:
    """Differences between the memory's recipe and `new`; RecipeMismatch (naming them and `fix`)
    if there are any and `fix` is not empty."""
    current = memory_recipe(memory)
    if current is None or current.get("transform") is None:
        return []
    diff = recipe_differences(current, new)
    if diff and fix:
        raise RecipeMismatch(
            "these items would be embedded differently from the memory's recipe ("
            + "; ".join(diff)
            + f"): {fix}"
        )
    return diff


def recipe_precision(memory: VisualMemory) -> str:
    """ "fp32" or "bf16": the precision the memory's items were embedded in (its recipe's
    features.precision; "fp32" for a memory whose recipe records none). Every path that embeds
    for the memory (add, classify, privacy, the service) embeds in it."""
    features = (memory_recipe(memory) or {}).get("features") or {}
    return "bf16" if features.get("precision") == "bf16" else "fp32"


def default_vote_of(memory: VisualMemory) -> dict:
    """{"k", "method", "T"}: the vote recorded in the memory's recipe, else the paper's."""
    return recipe_vote(memory_recipe(memory))


def class_table(memory: VisualMemory, names: list[str]) -> tuple[list[str], np.ndarray]:
    """The memory's class names extended by new `names`, and the index of each of `names` in it."""
    if memory.class_names is None and len(memory):
        raise InvalidArgument(
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
