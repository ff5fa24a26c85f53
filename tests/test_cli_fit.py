"""`procvision fit` through LightningCLI: demo smoke run, exact resume, and 2-process DDP on gloo."""

import json
from pathlib import Path

import pytest
import torch

from procvision.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = [
    "--model.backbone_kwargs={depth: 1, embed_dim: 32, num_heads: 2}",
    "--model.out_dim=64",
    "--model.hidden_dim=32",
    "--model.bottleneck_dim=16",
]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
STAND_IN = ["--data.init_args.source=tests.models.stand_in.GradientSource"]


def fit(root, *extra):
    args = ["fit", "--config", str(ROOT / "configs/demo.yaml"), "--trainer.accelerator=cpu"]
    args += [f"--trainer.default_root_dir={root}", *TINY_MODEL, *QUIET, *extra]
    return main(args)


def test_demo_fast_dev_run(tmp_path):
    fit(
        tmp_path,
        "--trainer.fast_dev_run=true",
        "--data.init_args.batch_size=2",
        "--data.init_args.render_size=32",
    )
    assert (tmp_path / "export" / "model.safetensors").is_file()  # no logger in fast_dev_run
    card = json.loads((tmp_path / "export" / "config.json").read_text())
    assert (
        card["meta"]["training_data"]["family"] == "kml_mixup" and card["meta"]["global_step"] == 1
    )
    assert card["meta"]["hparams"]["n_local_crops"] == 4  # linked from data


def _stream_args(root):
    return [
        *STAND_IN,
        "--data.init_args.batch_size=4",
        "--data.init_args.samples_per_epoch=8",  # 2 steps per epoch
        "--data.init_args.render_size=32",
        "--model.drop_path_rate=0.2",
        "--model.backbone_kwargs={depth: 2, embed_dim: 32, num_heads: 2}",  # drop path 0, 0.2
        "--trainer.max_epochs=-1",
        "--trainer.max_steps=5",
        "--trainer.log_every_n_steps=1",
    ]


def _state(root):
    ckpt = torch.load(Path(root) / "checkpoints" / "last.ckpt", weights_only=True)
    return ckpt


def test_resume_is_exact(tmp_path):
    from tests.models.stand_in import SimulatedCrash

    a, b = tmp_path / "a", tmp_path / "b"
    fit(a, *_stream_args(a))
    crash = ["--trainer.callbacks+=tests.models.stand_in.CrashAtStep", "--trainer.callbacks.step=3"]
    with pytest.raises(SimulatedCrash):
        fit(b, *_stream_args(b), *crash)  # dies in epoch 1; last.ckpt is from the end of epoch 0
    assert _state(b)["global_step"] == 2
    fit(b, *_stream_args(b), "--ckpt_path", "last")
    sa, sb = _state(a), _state(b)
    assert sa["global_step"] == sb["global_step"] == 5
    assert sa["state_dict"].keys() == sb["state_dict"].keys()
    for k in sa["state_dict"]:
        assert torch.equal(sa["state_dict"][k], sb["state_dict"][k]), k
    assert sb["state_dict"]["center"].abs().sum() > 0
    adam_a = sa["optimizer_states"][0]["state"]
    adam_b = sb["optimizer_states"][0]["state"]
    for i in adam_a:
        assert torch.equal(adam_a[i]["exp_avg"], adam_b[i]["exp_avg"])
    # config and TensorBoard logs are written per run; the teacher is exported at the end
    runs = sorted((b / "lightning_logs").iterdir())
    assert (runs[-1] / "config.yaml").is_file() and (runs[-1] / "export" / "config.json").is_file()
    assert list(runs[-1].glob("events.out.tfevents.*"))


PAPER = [
    "kml_mixup",
    "kml",
    "shaders_mixup",
    "shaders",
    "stylegan",
    "kml_mixup_vit_tiny",
    "kml_mixup_vit_base",
]


@pytest.mark.parametrize("name", PAPER + ["demo"])
def test_configs_parse(name, capsys):
    import yaml

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(ROOT / f"configs/{name}.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    model, data, trainer = cfg["model"], cfg["data"]["init_args"], cfg["trainer"]
    assert "n_local_crops" not in model  # linked from the data
    if name == "demo":
        return
    global_batch = data["batch_size"] * trainer["devices"] * trainer["num_nodes"]
    assert global_batch == 512 and model["base_lr"] * global_batch / 256 == pytest.approx(1e-3)
    assert (data["global_size"], data["local_size"], data["n_local_crops"]) == (224, 96, 8)
    assert data["samples_per_epoch"] == 1_300_000 and trainer["max_epochs"] == 100
    assert (
        model["out_dim"] == 65536
        and model["teacher_temp"] == 0.04
        and model["momentum_teacher"] == 0.996
    )
    assert (model["weight_decay"], model["weight_decay_end"], model["min_lr"]) == (0.04, 0.4, 1e-6)
    assert (model["warmup_epochs"], model["clip_grad"], model["freeze_last_layer"]) == (10, 3.0, 1)
    assert model["drop_path_rate"] == 0.1 and trainer["precision"] == "bf16-mixed"
    assert model["patch_size"] == 16 and model["img_size"] == 224


class _Payload:
    """Unpickling this creates `marker`: code run by a crafted checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _crafted_checkpoint(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {"state_dict": {}, "pytorch-lightning_version": "2.6.0", "payload": _Payload(marker)}
    torch.save(ckpt, path)


@pytest.mark.parametrize("ckpt_path", ["last", "file"])
def test_resume_refuses_a_crafted_checkpoint_whatever_the_environment(
    tmp_path, monkeypatch, capsys, ckpt_path
):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    ckpt, marker = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "pwned"
    _crafted_checkpoint(ckpt, marker)
    where = "last" if ckpt_path == "last" else str(ckpt)
    code = fit(tmp_path, *_stream_args(tmp_path), "--ckpt_path", where)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert not marker.exists()  # no code ran
    assert err[-1].startswith("procvision fit: error: refused to load checkpoint")
    assert str(ckpt) in err[-1] and "weights_only=True" in err[-1]


def test_checkpoint_io_loads_a_real_checkpoint_and_is_installed(tmp_path):
    from procvision.models.checkpoint_io import WeightsOnlyCheckpointIO, with_safe_checkpoint_io

    fit(tmp_path, *_stream_args(tmp_path), "--trainer.max_steps=1")
    ckpt = WeightsOnlyCheckpointIO().load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 1 and "center" in ckpt["state_dict"]
    plugins = with_safe_checkpoint_io(None)
    assert len(plugins) == 1 and isinstance(plugins[0], WeightsOnlyCheckpointIO)
    mine = WeightsOnlyCheckpointIO()
    assert with_safe_checkpoint_io(mine) == [mine]  # a CheckpointIO the user chose is kept


@pytest.mark.parametrize("batch", ["0", "-1"])
def test_fit_with_a_batch_size_below_one_is_one_line(tmp_path, capsys, batch):
    code = fit(tmp_path, "--trainer.max_steps=1", f"--data.init_args.batch_size={batch}")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("procvision fit: error: data.batch_size")
    assert f"got {batch}" in err[-1] and "DataConfigError" not in "\n".join(err)  # no traceback
    assert not (tmp_path / "checkpoints").exists()  # refused before any set-up


def test_fit_with_a_crop_size_the_patch_does_not_divide_is_one_line(tmp_path, capsys):
    code = fit(tmp_path, "--trainer.max_steps=1", "--data.init_args.global_size=30")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2  # demo.yaml: patch size 8
    assert "data.global_size = 30" in err[-1] and "patch size 8" in err[-1]
    assert "24 or 32" in err[-1]
    assert not list(tmp_path.glob("checkpoints/*.ckpt"))  # no step was taken


def test_augmentation_settings_reach_the_augment_from_yaml(tmp_path):
    from procvision.lightning_cli import run_lightning_cli

    cfg = tmp_path / "aug.yaml"
    cfg.write_text(
        "data:\n"
        "  init_args:\n"
        "    augmentation:\n"
        "      jitter: [0.8, 0.7, 0.6, 0.05]\n"
        "      blur_sigma: [0.5, 1.5]\n"
        "      blur_p: [0.9, 0.2, 0.3]\n"
        "      solarize_p: 0.35\n"
        "      gray_p: 0.0\n"
    )
    cli = run_lightning_cli(
        ["--config", str(ROOT / "configs/demo.yaml"), "--config", str(cfg), *TINY_MODEL],
        run=False,
    )
    aug = cli.datamodule.augment
    assert aug.jitter == (0.8, 0.7, 0.6, 0.05) and aug.blur_sigma == (0.5, 1.5)
    assert aug.gray_p == 0.0 and aug.flip_p == 0.5  # unset fields keep DINO's values
    assert [v.blur_p for v in aug.views[:3]] == [0.9, 0.2, 0.3]
    assert [v.solarize_p for v in aug.views[:3]] == [0.0, 0.35, 0.0]
    assert aug.sizes[:2] == (32, 32)  # the demo's geometry is untouched


def test_augmentation_out_of_range_is_one_line(tmp_path, capsys):
    code = fit(tmp_path, "--trainer.max_steps=1", "--data.init_args.augmentation.solarize_p=1.5")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "solarize_p=1.5" in err[-1]


def test_resume_from_a_mid_epoch_step_checkpoint_with_accumulation_is_exact(tmp_path):
    # step checkpoints are written by a callback after the step: the centre and EMA updates of
    # that step must already be in them (else the resumed run silently skips them)
    from tests.models.stand_in import SimulatedCrash

    args = [
        "--data.init_args.samples_per_epoch=16",  # 4 micro-batches of 4 = 2 steps per epoch
        "--trainer.accumulate_grad_batches=2",
        "--checkpoint.every_n_train_steps=1",
        "--checkpoint.every_n_epochs=0",
    ]
    a, b = tmp_path / "a", tmp_path / "b"
    fit(a, *_stream_args(a), *args)
    crash = ["--trainer.callbacks+=tests.models.stand_in.CrashAtStep", "--trainer.callbacks.step=3"]
    with pytest.raises(SimulatedCrash):
        fit(b, *_stream_args(b), *args, *crash)  # dies in the middle of epoch 1
    assert _state(b)["global_step"] == 3
    fit(b, *_stream_args(b), *args, "--ckpt_path", "last")
    sa, sb = _state(a), _state(b)
    assert sa["global_step"] == sb["global_step"] == 5
    for k in sa["state_dict"]:
        assert torch.equal(sa["state_dict"][k], sb["state_dict"][k]), k


def test_load_from_checkpoint_is_weights_only_whatever_the_environment(tmp_path, monkeypatch):
    import pickle

    from procvision.models.module import DINOModule

    fit(tmp_path, *_stream_args(tmp_path), "--trainer.max_steps=1")
    ok = DINOModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert torch.equal(ok.center, _state(tmp_path)["state_dict"]["center"])
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    evil, marker = tmp_path / "evil.ckpt", tmp_path / "pwned"
    _crafted_checkpoint(evil, marker)
    with pytest.raises(pickle.UnpicklingError):
        DINOModule.load_from_checkpoint(evil)
    assert not marker.exists()
