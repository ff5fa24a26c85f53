"""Checkpoints are read with `torch.load(weights_only=True)`, whatever the environment says.

Lightning's own loader passes `weights_only=None` on resume (`--ckpt_path`), and torch then lets
`TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` turn the unpickler's allow-list off: a crafted `last.ckpt`
would run code. Here every checkpoint procvision's CLI reads goes through `load_checkpoint_safely`,
which always asks for `weights_only=True` explicitly (torch never overrides an explicit value) and
allow-lists only what a Lightning checkpoint of procvision holds beyond tensors and plain
containers (`LIGHTNING_SAFE_GLOBALS`). A refused or unreadable file is a `CheckpointLoadError`
naming the file, which the CLI reports as one line (exit 2).

- `WeightsOnlyCheckpointIO`: the Trainer plugin (resume, `validate --ckpt_path`, ...);
- `SafeCheckpointCLIMixin`: for a LightningCLI subclass; installs the plugin on every Trainer it
  builds and checks the checkpoint that LightningCLI reads for hyper-parameters before it does.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from procvision.errors import UserError


class CheckpointLoadError(UserError, ValueError):
    """A checkpoint that cannot be read safely (a pickle with code, or a corrupt file)."""


def _lightning_safe_globals() -> list[Callable[..., Any] | type]:
    """The non-tensor classes that a Lightning checkpoint of procvision may pickle.

    A `procvision fit` checkpoint needs none (`torch.serialization.get_unsafe_globals_in_checkpoint`
    on one is empty): state dicts, optimiser, loop and callback states and LightningCLI's
    hyper-parameters are tensors, numbers, strings and containers, which `weights_only=True`
    accepts by itself. A DINOModule built in Python may save hyper-parameters holding a path or
    Lightning's AttributeDict (`save_hyperparameters`): both are plain data, so both are allowed.
    """
    from lightning.fabric.utilities.data import AttributeDict

    return [AttributeDict, type(Path())]


LIGHTNING_SAFE_GLOBALS = _lightning_safe_globals()


def load_checkpoint_safely(path: str | os.PathLike, map_location: Any = None) -> Any:
    """`torch.load(path, weights_only=True)` with `LIGHTNING_SAFE_GLOBALS` allowed.

    Raises:
        CheckpointLoadError: the file needs a class outside the allow-list (it may run code), or
            it is not a readable checkpoint; the message names the file and the fix.
    """
    where = os.fspath(path)
    fs = get_filesystem(where)
    try:
        with torch.serialization.safe_globals(LIGHTNING_SAFE_GLOBALS), fs.open(where, "rb") as f:
            return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointLoadError(
            f"refused to load checkpoint {where!r}: it holds Python objects that could run code "
            f"({first}); procvision loads checkpoints with weights_only=True whatever "
            "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says. Use a checkpoint written by procvision fit, "
            "or export the weights you trust to a plain state dict"
        ) from err
    except (RuntimeError, EOFError, ValueError) as err:
        raise CheckpointLoadError(
            f"cannot read checkpoint {where!r} ({type(err).__name__}: {str(err)[:200]}); "
            "the file is truncated or not a PyTorch checkpoint: pass another --ckpt_path"
        ) from err
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
        raise CheckpointLoadError(
            f"checkpoint {where!r} is not a readable file ({err.strerror or err}); "
            "pass the path of a .ckpt file, or --ckpt_path last"
        ) from err


class WeightsOnlyCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, loading with `weights_only=True` always (see module doc).

    A request for `weights_only=False` (or the environment's) is ignored on purpose: procvision's
    checkpoints need no arbitrary objects.
    """

    def load_checkpoint(
        self,
        path: str | os.PathLike,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        ckpt = load_checkpoint_safely(path, map_location)
        if not isinstance(ckpt, dict):
            raise CheckpointLoadError(
                f"checkpoint {os.fspath(path)!r} holds a {type(ckpt).__name__}, not a Lightning "
                "checkpoint dict: pass a checkpoint written by procvision fit"
            )
        return ckpt


def with_safe_checkpoint_io(plugins: Any) -> list[Any]:
    """`plugins` (None, one plugin or a list) plus a `WeightsOnlyCheckpointIO`, unless the user
    already chose a CheckpointIO."""
    if plugins is None:
        plugins = []
    elif not isinstance(plugins, list | tuple):
        plugins = [plugins]
    plugins = list(plugins)
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(WeightsOnlyCheckpointIO())
    return plugins


class SafeCheckpointCLIMixin:
    """Mix into a LightningCLI subclass (before LightningCLI) to load every checkpoint safely."""

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads `ckpt_path`'s hyper-parameters here; check the file first so that a
        # refused one is a one-line error, not an UnpicklingError traceback.
        config = self.config  # type: ignore[attr-defined]
        sub = config.get("subcommand")
        ckpt_path = config[sub].get("ckpt_path") if sub else None
        if ckpt_path and Path(ckpt_path).is_file():
            load_checkpoint_safely(ckpt_path, map_location="cpu")
        super()._parse_ckpt_path()  # type: ignore[misc]

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        init = self.config_init  # type: ignore[attr-defined]
        sub = self.subcommand  # type: ignore[attr-defined]
        trainer_cfg = (init.get(sub, init) if sub else init).get("trainer", {}) or {}
        plugins = kwargs.pop("plugins", trainer_cfg.get("plugins"))
        return super().instantiate_trainer(  # type: ignore[misc]
            plugins=with_safe_checkpoint_io(plugins), **kwargs
        )
