"""Training throughput of the demo and paper configs on this machine.

For each config it times real Lightning training steps (multi-crop DINO, optimiser, EMA) twice:
  streaming - rendering + augmentation on the device every step (what `procvision fit` does);
  tensors   - the same model on pre-made crops (rendered once), i.e. with the data path removed;
and the data path alone (render + multi-crop). If streaming is much slower than tensors, the data
is the bottleneck (on a GPU it must stay within 10%).

    python scripts/bench_train.py                       # demo + paper (reduced batch on CPU)
    python scripts/bench_train.py --configs demo --steps 10
    python scripts/bench_train.py --paper-batch 64      # the paper's per-device batch (GPU)

On CPU the paper config (ViT-S/16, 2x224 + 8x96 crops, 65536 prototypes, 384-px KML Mixup) runs
in fp32 with a small batch and is slow: its numbers only show the order of magnitude.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch

from procvision.lightning_cli import ProcvisionCLI
from procvision.models.module import DINOModule

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"demo": "configs/demo.yaml", "paper": "configs/kml_mixup.yaml"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class StepTimer(pl.Callback):
    """Wall time of each training step (from one batch start to the next), device-synchronised."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        _sync(pl_module.device)
        now = time.perf_counter()
        if self._t is not None:
            self.times.append(now - self._t)
        self._t = now

    def on_train_end(self, trainer, pl_module) -> None:
        _sync(pl_module.device)
        if self._t is not None:
            self.times.append(time.perf_counter() - self._t)


def build(
    config: str, batch: int | None, device: str, precision: str
) -> tuple[DINOModule, pl.LightningDataModule]:
    args = [
        "--config",
        str(ROOT / config),
        f"--trainer.accelerator={device}",
        f"--trainer.precision={precision}",
    ]
    if batch is not None:
        args.append(f"--data.init_args.batch_size={batch}")
    cli = ProcvisionCLI(
        DINOModule, pl.LightningDataModule, subclass_mode_data=True, run=False, args=args
    )
    return cli.model, cli.datamodule


def train(model, dm, steps: int, device: str, precision: str, tmp: Path) -> list[float]:
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator=device,
        devices=1,
        precision=precision,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        default_root_dir=tmp,
    )
    trainer.fit(model, dm)
    return timer.times


def data_only(dm, steps: int, device: torch.device) -> list[float]:
    it = iter(dm.train_dataloader())
    times = []
    for _ in range(steps):
        ids = next(it).to(device)
        _sync(device)
        t = time.perf_counter()
        dm.on_after_batch_transfer(ids, 0)
        _sync(device)
        times.append(time.perf_counter() - t)
    return times


def mean_after_warmup(times: list[float], warmup: int) -> float:
    kept = times[warmup:] or times
    return sum(kept) / len(kept)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--configs", nargs="+", default=["demo", "paper"], help="demo, paper, or YAML paths"
    )
    p.add_argument(
        "--steps", type=int, default=4, help="timed steps per measurement (after warm-up)"
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    p.add_argument(
        "--paper-batch", type=int, default=None, help="per-device batch of the paper config"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    gpu = args.device == "gpu" or (args.device == "auto" and torch.cuda.is_available())
    device = "gpu" if gpu else "cpu"
    tdev = torch.device("cuda" if gpu else "cpu")
    name = torch.cuda.get_device_name(0) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}")
    rows = []
    tmp = Path("/tmp/procvision_bench")
    for key in args.configs:
        config = CONFIGS.get(key, key)
        precision = "bf16-mixed" if gpu else "32-true"
        batch = None
        if key == "paper":
            batch = args.paper_batch or (64 if gpu else 8)
        n = args.warmup + args.steps
        model, dm = build(config, batch, device, precision)
        pl.seed_everything(0, verbose=False)
        stream = train(model, dm, n, device, precision, tmp)
        data = data_only(dm, max(2, args.steps), tdev)
        # same model on pre-made crops: render + augment one batch, then reuse it every step
        first = next(iter(dm.train_dataloader())).to(tdev)
        fixed = dm.on_after_batch_transfer(first, 0)
        dm.on_after_batch_transfer = lambda batch, idx, fixed=fixed: fixed
        model2, _ = build(config, batch, device, precision)
        tensors = train(model2, dm, n, device, precision, tmp)
        b = dm.batch_size
        s_stream, s_tensor = (
            mean_after_warmup(stream, args.warmup),
            mean_after_warmup(tensors, args.warmup),
        )
        s_data = mean_after_warmup(data, 1)
        crops = (
            f"2x{dm.augment.views[0].size}+{len(dm.augment.views) - 2}x{dm.augment.views[-1].size}"
        )
        rows.append((key, model.hparams.arch, b, crops, precision, s_stream, s_tensor, s_data))
    print()
    print(
        "| config | arch | batch | crops | precision | streaming s/step | img/s | pre-made tensors s/step | img/s | data only s/batch | streaming / tensors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, arch, b, crops, prec, ss, st, sd in rows:
        print(
            f"| {key} | {arch} | {b} | {crops} | {prec} | {ss:.3f} | {b / ss:.1f} | {st:.3f} | {b / st:.1f} "
            f"| {sd:.3f} | {ss / st:.2f} |"
        )


if __name__ == "__main__":
    main()
