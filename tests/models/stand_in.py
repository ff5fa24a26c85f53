"""A tiny stand-in Source for tests (a pure function of (seed, index)): smooth colour gradients."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback

from procvision.data import rng
from procvision.data.source import Source


class GradientSource(Source):
    """Image i: a random colour times a random-direction linear ramp plus a random offset."""

    name = "gradient"

    def _render(self, indices: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
        u = rng.uniform(self.seed, indices, 1, 6)  # [B, 6]
        c = torch.linspace(0, 1, size, device=device)
        y, x = torch.meshgrid(c, c, indexing="ij")
        ang = u[:, 3, None, None] * 6.2832
        ramp = x * torch.cos(ang) + y * torch.sin(ang)
        return u[:, :3, None, None] * ramp[:, None] + 0.5 * u[:, 4:5, None, None]


class SimulatedCrash(RuntimeError):
    """Raised by CrashAtStep."""


class CrashAtStep(Callback):
    """Kill fit when `step` optimiser steps are done, as a crash or a pre-empted job would: the
    latest checkpoint is the one written at the end of the last finished epoch."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise SimulatedCrash(f"simulated crash at step {trainer.global_step}")


class StopAtStep(Callback):
    """Ask fit to stop after `step` optimiser steps (checkpoints are written as the epoch ends)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


class RecordRanks(Callback):
    """Write {rank, indices per step, centre} to <out_dir>/rank<r>.json at the end of fit."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.indices: list[list[int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.indices.append(batch["indices"].tolist())

    def on_train_end(self, trainer, pl_module) -> None:
        import json
        from pathlib import Path

        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "indices": self.indices,
            "center": pl_module.center.flatten().tolist(),
            "teacher_sum": float(sum(p.double().sum() for p in pl_module.teacher.parameters())),
        }
        Path(self.out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
