"""Export -> load round trips, original DINO checkpoints and Lightning checkpoints."""

import json

import lightning.pytorch as pl
import pytest
import torch

from procvision.models.backbone import Backbone, random_backbone
from procvision.models.export import export_backbone, infer_vit_config, load_backbone

TINY = {"depth": 1, "embed_dim": 32, "num_heads": 2}


def _same_outputs(a, b, size=32):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fa, fb = a.forward_features(x), b.forward_features(x)
    torch.testing.assert_close(fa["cls"], fb["cls"])
    torch.testing.assert_close(fa["patches"], fb["patches"])


@pytest.mark.parametrize("as_file", [False, True])
def test_export_round_trip(tmp_path, as_file):
    b = random_backbone("vit_tiny_patch16_224", 32, 8, seed=1, **TINY)
    target = tmp_path / ("teacher.safetensors" if as_file else "export")
    path = export_backbone(b, target, {"training_data": {"family": "kml_mixup"}, "global_step": 7})
    assert path.is_file()
    card = json.loads(
        path.with_suffix(".json").read_text() if as_file else (target / "config.json").read_text()
    )
    assert (
        card["arch"] == "vit_tiny_patch16_224"
        and card["patch_size"] == 8
        and card["embed_dim"] == 32
    )
    assert card["img_size"] == 32 and card["meta"]["global_step"] == 7
    assert card["fingerprint"] == b.fingerprint()
    loaded = load_backbone(target)
    assert loaded.fingerprint() == b.fingerprint() and not loaded.training
    _same_outputs(b, loaded)
    # the safetensors file alone carries its config too
    if not as_file:
        (target / "config.json").unlink()
        assert load_backbone(path).fingerprint() == b.fingerprint()
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave nothing behind


def test_export_convnet(tmp_path):
    b = random_backbone("resnet18", 32, seed=0)
    export_backbone(b, tmp_path / "r", {})
    _same_outputs(b, load_backbone(tmp_path / "r"), size=64)


def _dino_vit(seed=0):
    """A ViT with DINO's parameter names (timm uses the same ones): width 192 = ViT-Tiny."""
    torch.manual_seed(seed)
    return Backbone("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2)


def test_original_dino_checkpoint(tmp_path):
    src = _dino_vit()
    teacher = {f"module.backbone.{k}": v for k, v in src.model.state_dict().items()}
    teacher["module.head.mlp.0.weight"] = torch.randn(16, 192)
    teacher["module.head.last_layer.weight_g"] = torch.ones(64, 1)
    student = {k: torch.zeros_like(v) for k, v in teacher.items()}
    path = tmp_path / "checkpoint.pth"
    torch.save(
        {"teacher": teacher, "student": student, "epoch": 3, "args": {"arch": "vit_tiny"}}, path
    )
    loaded = load_backbone(path)
    assert loaded.embed_dim == 192 and loaded.patch_size == 8 and loaded.config["img_size"] == 32
    assert loaded.config["depth"] == 2 and loaded.config["num_heads"] == 3
    _same_outputs(src, loaded)
    # explicit arch (timm name) with the geometry from shapes
    loaded2 = load_backbone(path, arch="vit_tiny_patch16_224")
    assert loaded2.model.patch_embed.patch_size == (8, 8)


def test_bare_dino_state_dict(tmp_path):
    src = _dino_vit(1)
    torch.save(src.model.state_dict(), tmp_path / "dino_pretrain.pth")
    _same_outputs(src, load_backbone(tmp_path / "dino_pretrain.pth"))
    cfg = infer_vit_config(src.model.state_dict())
    assert cfg["embed_dim"] == 192 and cfg["patch_size"] == 8 and cfg["mlp_ratio"] == 4.0


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_backbone(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        load_backbone(tmp_path / "empty")
    torch.save({"teacher": {"head.x": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError):
        load_backbone(tmp_path / "bad.pth")


class _Unsafe:
    pass


def test_refuses_pickled_code(tmp_path):
    torch.save({"teacher": _Unsafe()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights_only"):
        load_backbone(tmp_path / "evil.pth")


def test_lightning_checkpoint_gives_teacher(tmp_path):
    from procvision.data.datamodule import ProceduralDataModule
    from procvision.models.module import DINOModule
    from tests.models.stand_in import GradientSource

    dm = ProceduralDataModule(
        source=GradientSource(0),
        render_size=32,
        samples_per_epoch=8,
        batch_size=4,
        global_size=32,
        local_size=16,
        n_local_crops=1,
    )
    model = DINOModule(
        "vit_tiny_patch16_224",
        32,
        8,
        TINY,
        out_dim=32,
        hidden_dim=16,
        bottleneck_dim=8,
        n_local_crops=1,
        warmup_epochs=0,
        freeze_last_layer=0,
        momentum_teacher=0.5,
    )
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, dm)
    trainer.save_checkpoint(tmp_path / "dino.ckpt")
    loaded = load_backbone(tmp_path / "dino.ckpt")
    assert loaded.fingerprint() == model.teacher_backbone.fingerprint()
    assert loaded.fingerprint() != Backbone(**loaded.config).fingerprint()  # weights, not init
    _same_outputs(model.teacher_backbone, loaded)


def test_pickle_renamed_safetensors_is_a_one_line_user_error(tmp_path, capsys):
    from procvision.commands._common import run_reporting
    from procvision.errors import UserError
    from procvision.models.export import BackboneLoadError

    fake = tmp_path / "model.safetensors"
    torch.save({"teacher": {"x": torch.zeros(2)}}, fake)  # a pickle under the wrong name
    with pytest.raises(BackboneLoadError) as info:
        load_backbone(fake)
    msg = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in msg
    assert str(fake) in msg and "safetensors" in msg and "export folder" in msg
    (tmp_path / "export").mkdir()
    fake.rename(tmp_path / "export" / "model.safetensors")  # the same inside an export folder
    assert run_reporting("procvision test", load_backbone, tmp_path / "export") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.safetensors" in err


def test_load_errors_are_user_errors(tmp_path):
    from procvision.errors import UserError

    torch.save({"teacher": {"head.x": torch.zeros(1)}}, tmp_path / "bad.pth")
    for path in (tmp_path / "missing", tmp_path / "bad.pth"):
        with pytest.raises(UserError, match=str(path.name)):
            load_backbone(path)
