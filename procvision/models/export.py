"""Export and load the teacher backbone: the artifact that the memory and every evaluation use.

Formats read by `load_backbone`:
- an export: a directory with `model.safetensors` + `config.json`, or the `.safetensors` file alone
  (its metadata holds the same config);
- a Lightning checkpoint of `DINOModule` (the teacher backbone is taken);
- an original DINO checkpoint: a dict with a `teacher` (or `student`) state dict whose keys start
  with `backbone.` (and maybe `module.`), or a bare ViT state dict like DINO's published weights.
Pickles are read with `torch.load(weights_only=True)` only: no code from a file is ever run.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from procvision.atomic import atomic_write_path, write_text_atomic
from procvision.errors import UserError
from procvision.models.backbone import Backbone

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
_META_KEY = "procvision_config"
ACCEPTED = (
    "an export folder (model.safetensors + config.json), a .safetensors file, a Lightning "
    "checkpoint of DINOModule, or an original DINO checkpoint"
)


class BackboneLoadError(UserError, ValueError):
    """A backbone file that is not in an accepted format; the message names it and the formats."""


class BackboneNotFoundError(UserError, FileNotFoundError):
    """No backbone at the given path."""


def backbone_card(backbone: Backbone, meta: dict | None = None) -> dict[str, Any]:
    """The JSON description of an export: rebuild config, key facts, fingerprint, and `meta`."""
    return {
        "format": "procvision-backbone/1",
        "arch": backbone.arch,
        "patch_size": backbone.patch_size,
        "img_size": backbone.config["img_size"],
        "embed_dim": backbone.embed_dim,
        "fingerprint": backbone.fingerprint(),
        "backbone": backbone.config,
        "meta": dict(meta or {}),
    }


def export_backbone(backbone: Backbone, path: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write `backbone` as safetensors plus a JSON config; returns the safetensors path.

    Args:
        backbone: the model to save (usually the DINO teacher).
        path: a directory (gets `model.safetensors` and `config.json`) or a `.safetensors` file
            (gets a sibling `<stem>.json`); both also embed the config in the safetensors metadata.
        meta: JSON-serialisable facts to record, e.g. training data, steps, epochs.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        model_path, config_path = path, path.with_suffix(".json")
    else:
        model_path, config_path = path / MODEL_FILE, path / CONFIG_FILE
    card = backbone_card(backbone, meta)
    text = json.dumps(card, indent=2, sort_keys=True, default=str)
    tensors = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    atomic_write_path(model_path, lambda tmp: save_file(tensors, tmp, metadata={_META_KEY: text}))
    write_text_atomic(config_path, text + "\n")
    return model_path


def _from_config(config: dict, state: dict[str, torch.Tensor]) -> Backbone:
    config = dict(config)
    backbone = Backbone(**config)
    backbone.load_state_dict(state, strict=True)
    return backbone.eval()


def _load_safetensors(model_path: Path, map_location: str | torch.device) -> Backbone:
    try:
        with safe_open(str(model_path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise BackboneLoadError(
            f"{model_path}: not a readable safetensors file ({type(err).__name__}: "
            f"{str(err)[:200]}); a renamed pickle or a truncated copy? Expected {ACCEPTED}"
        ) from err
    if _META_KEY in metadata:
        card = json.loads(metadata[_META_KEY])
    else:
        for cand in (model_path.with_suffix(".json"), model_path.parent / CONFIG_FILE):
            if cand.is_file():
                card = json.loads(cand.read_text())
                break
        else:
            raise BackboneLoadError(
                f"{model_path}: no config in the metadata and no config.json beside it; "
                "export the backbone with procvision (export_backbone) or add its config.json"
            )
    return _from_config(card["backbone"], state).to(map_location)


def _strip(state: dict[str, Any], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k, changed = k[len(p) :], True
        out[k] = v
    return out


_VIT_NAMES = {192: "vit_tiny", 384: "vit_small", 768: "vit_base", 1024: "vit_large"}
_VIT_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16}


def infer_vit_config(state: dict[str, torch.Tensor], arch: str | None = None) -> dict[str, Any]:
    """Backbone config of a DINO/timm-style ViT state dict from its tensor shapes.

    Width, patch size, depth, MLP ratio and the positional grid (img_size) come from shapes; the
    head count is not visible in shapes: it is the given `arch`'s, or else the standard one for the
    width (tiny 3, small 6, base 12, large 16, else width // 64).
    """
    if "patch_embed.proj.weight" not in state or "pos_embed" not in state:
        raise ValueError("not a ViT state dict: no patch_embed.proj.weight / pos_embed")
    dim, _, patch, _ = state["patch_embed.proj.weight"].shape
    n_pos = state["pos_embed"].shape[1] - (1 if "cls_token" in state else 0)
    grid = int(round(n_pos**0.5))
    if grid * grid != n_pos:
        raise ValueError(f"pos_embed has {n_pos} patch positions, not a square grid")
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    name = (
        arch or f"{_VIT_NAMES.get(int(dim), 'vit_base')}_patch16_224"
    )  # geometry overridden below
    config: dict[str, Any] = {
        "arch": name,
        "img_size": grid * patch,
        "patch_size": int(patch),
        "embed_dim": int(dim),
        "depth": depth,
        "mlp_ratio": hidden / dim,
    }
    if arch is None:  # else the named arch's head count
        config["num_heads"] = _VIT_HEADS.get(int(dim), max(1, int(dim) // 64))
    return config


def _load_dino_original(ckpt: dict, arch: str | None, key: str) -> Backbone:
    if key in ckpt:
        state = _strip(ckpt[key], ("module.",))
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
        if not state:
            raise ValueError(f"checkpoint[{key!r}] has no 'backbone.' keys")
    else:
        state = _strip(ckpt, ("module.", "backbone."))
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    backbone = Backbone(**infer_vit_config(state, arch))
    backbone.model.load_state_dict(state, strict=True)
    return backbone.eval()


def _load_lightning(ckpt: dict) -> Backbone:
    prefix = "teacher.backbone."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise ValueError(
            "Lightning checkpoint has no 'teacher.backbone.' weights (not a DINOModule?)"
        )
    config = ckpt.get("procvision", {}).get("teacher_backbone_config")
    if config is None:
        raise ValueError("Lightning checkpoint lacks ['procvision']['teacher_backbone_config']")
    return _from_config(config, state)


def load_backbone(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    arch: str | None = None,
    checkpoint_key: str = "teacher",
) -> Backbone:
    """Load a backbone (in eval mode) from any supported format (see the module docstring).

    Args:
        path: export directory, `.safetensors` file, Lightning `.ckpt`, or DINO `.pth`.
        map_location: device for the returned model.
        arch: timm name for original-DINO checkpoints (else inferred from shapes).
        checkpoint_key: which state dict of an original DINO checkpoint ("teacher" or "student").
    """
    path = Path(path)
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise BackboneNotFoundError(
                f"{path} has no {MODEL_FILE}; expected an export from export_backbone"
            )
        return _load_safetensors(path / MODEL_FILE, map_location)
    if not path.is_file():
        raise BackboneNotFoundError(f"no backbone at {path}: expected {ACCEPTED}")
    if path.suffix == ".safetensors":
        return _load_safetensors(path, map_location)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - say what is accepted
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise BackboneLoadError(
            f"{path}: cannot read with torch.load(weights_only=True) ({type(error).__name__}: "
            f"{first}); expected {ACCEPTED}"
        ) from error
    if not isinstance(ckpt, dict):
        raise BackboneLoadError(f"{path}: holds a {type(ckpt).__name__}; expected {ACCEPTED}")
    try:
        if "state_dict" in ckpt and "pytorch-lightning_version" in ckpt:
            backbone = _load_lightning(ckpt)
        else:
            backbone = _load_dino_original(ckpt, arch, checkpoint_key)
    except BackboneLoadError:
        raise
    except (ValueError, KeyError) as error:  # the contents are not a backbone we know
        msg = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise BackboneLoadError(f"{path}: {msg}; expected {ACCEPTED}") from error
    return backbone.to(map_location)
