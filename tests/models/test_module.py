"""DINOModule glue: teacher mode and gradients, EMA per optimiser step, frozen last layer, lr rule,
NaN guard, validation collection."""

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import procvision.models.module as module_mod
from procvision.data.datamodule import ProceduralDataModule
from procvision.models.module import DINOModule
from tests.models.stand_in import GradientSource

TINY = {"depth": 1, "embed_dim": 32, "num_heads": 2}


def make(n_local=1, batch=4, samples=8, **kw):
    dm = ProceduralDataModule(
        source=GradientSource(0),
        render_size=32,
        samples_per_epoch=samples,
        batch_size=batch,
        global_size=32,
        local_size=16,
        n_local_crops=n_local,
    )
    args = dict(out_dim=32, hidden_dim=16, bottleneck_dim=8, n_local_crops=n_local, warmup_epochs=0)
    args.update(kw)
    return DINOModule("vit_tiny_patch16_224", 32, 8, TINY, **args), dm


def trainer(tmp_path, **kw):
    args = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        log_every_n_steps=1,
    )
    args.update(kw)
    return pl.Trainer(**args)


class Probe(pl.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, m, outputs, batch, batch_idx):
        groups = {g["name"]: g for g in trainer.optimizers[0].param_groups}
        self.rows.append(
            {
                "teacher_training": any(x.training for x in m.teacher.modules()),
                "student_training": m.student.training,
                "teacher_grads": [p.grad for p in m.teacher.parameters() if p.grad is not None],
                "teacher_requires_grad": any(p.requires_grad for p in m.teacher.parameters()),
                "lr": groups["decay"]["lr"],
                "wd": groups["decay"]["weight_decay"],
                "wd_no_decay": groups["no_decay"]["weight_decay"],
            }
        )


def test_teacher_eval_no_grad_and_lr_rule(tmp_path):
    model, dm = make(base_lr=0.0256, weight_decay=0.04, weight_decay_end=0.4)
    probe = Probe()
    trainer(tmp_path, max_steps=2, callbacks=[probe]).fit(model, dm)
    for row in probe.rows:
        assert not row["teacher_training"] and row["student_training"]
        assert not row["teacher_grads"] and not row["teacher_requires_grad"]
        assert row["wd_no_decay"] == 0.0
    # lr = base_lr * global batch / 256 at step 0 (no warm-up); then cosine over 2 steps
    assert probe.rows[0]["lr"] == pytest.approx(0.0256 * 4 / 256)
    assert probe.rows[0]["wd"] == pytest.approx(0.04)
    assert probe.rows[1]["wd"] == pytest.approx(0.22)  # halfway along the cosine
    assert not model.teacher.training
    model.train()
    assert model.student.training and not any(x.training for x in model.teacher.modules())


def test_teacher_starts_as_student_and_moves_by_ema(tmp_path):
    model, dm = make(momentum_teacher=0.9)
    for a, b in zip(model.teacher.parameters(), model.student.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    t0 = [p.detach().clone() for p in model.teacher.parameters()]
    trainer(tmp_path, max_steps=1).fit(model, dm)
    changed = [not torch.equal(a, b) for a, b in zip(t0, model.teacher.parameters(), strict=True)]
    assert any(changed)


def test_ema_once_per_optimizer_step(tmp_path, monkeypatch):
    calls = []
    real = module_mod.ema_update_

    def counting(teacher, student, m):
        calls.append(m)
        real(teacher, student, m)

    monkeypatch.setattr(module_mod, "ema_update_", counting)
    model, dm = make(samples=16)
    trainer(tmp_path, max_steps=2, accumulate_grad_batches=2).fit(model, dm)
    # 4 micro-batches, 2 optimiser steps, one EMA each (parameters + buffers = 2 calls)
    assert len(calls) == 4
    assert calls[0] == pytest.approx(model.schedule(0)["momentum"])
    assert calls[2] == pytest.approx(model.schedule(1)["momentum"])


@pytest.mark.parametrize("freeze", [1.0, 0.0])
def test_last_layer_frozen_during_first_epoch(tmp_path, freeze):
    model, dm = make(freeze_last_layer=freeze)
    last = model.student["head"].last_layer.parametrizations.weight.original1
    mlp = model.student["head"].mlp[0].weight
    last0, mlp0 = last.detach().clone(), mlp.detach().clone()
    trainer(tmp_path, max_steps=2).fit(model, dm)  # 2 steps = epoch 0
    assert not torch.equal(mlp, mlp0)
    assert torch.equal(last, last0) == (freeze == 1.0)


def test_nan_loss_raises_with_step(tmp_path):
    model, dm = make()
    with torch.no_grad():
        model.student["head"].mlp[0].weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="global step 0"):
        trainer(tmp_path, max_steps=1).fit(model, dm)


def test_wrong_crop_count_is_explained(tmp_path):
    model, dm = make(n_local=1)
    dm.augment = make(n_local=2)[1].augment
    with pytest.raises(ValueError, match="2 global \\+ 1 local"):
        trainer(tmp_path, max_steps=1).fit(model, dm)


def test_validation_collects_teacher_embeddings(tmp_path):
    model, _ = make()
    g = torch.Generator().manual_seed(0)
    sets = [
        TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 3) for n in (5, 3)
    ]
    loaders = [DataLoader(s, batch_size=2) for s in sets]
    trainer(tmp_path).validate(model, loaders)
    assert sorted(model.collected) == [0, 1]
    z = torch.cat(model.collected[0]["embeddings"])
    assert z.shape == (5, 32) and z.device.type == "cpu"
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(torch.cat(model.collected[1]["labels"]), torch.tensor([0, 1, 2]))
    want = torch.nn.functional.normalize(model.embed(sets[0].tensors[0]), dim=-1)
    torch.testing.assert_close(z, want)


# ----- the centre: one update per optimiser step ---------------------------------------------------


class _FixedCrops(torch.utils.data.Dataset):
    """Item i: the same three views (2 global 32 px, 1 local 16 px) every time it is read."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(1)
        self.views = [torch.randn(n, 3, s, s, generator=g) for s in (32, 32, 16)]

    def __len__(self) -> int:
        return len(self.views[0])

    def __getitem__(self, i: int) -> dict:
        return {"crops": [v[i] for v in self.views]}


def _centre_run(tmp_path, batch, accumulate, n_items, **trainer_kw):
    """Train on fixed crops; returns (module, teacher head outputs [2, B, K] of each micro-batch)."""
    torch.manual_seed(0)
    model = DINOModule(
        "vit_tiny_patch16_224", 32, 8, TINY, out_dim=32, hidden_dim=16, bottleneck_dim=8,
        n_local_crops=1, warmup_epochs=0, drop_path_rate=0.0, batch_size=batch, log_crops=False,
    )  # fmt: skip
    outputs = []
    model.teacher["head"].register_forward_hook(
        lambda mod, inp, out: outputs.append(out.detach().view(2, -1, out.shape[-1]).clone())
    )
    loader = DataLoader(_FixedCrops(n_items), batch_size=batch, shuffle=False)
    trainer(tmp_path, accumulate_grad_batches=accumulate, **trainer_kw).fit(model, loader)
    return model, outputs


def _expected_centre(steps: list[list[torch.Tensor]], momentum: float = 0.9) -> torch.Tensor:
    """The recipe from the equation: per optimiser step, c <- m c + (1 - m) mean of its outputs."""
    c = torch.zeros(1, steps[0][0].shape[-1])
    for micro in steps:
        mean = torch.cat([t.reshape(-1, t.shape[-1]) for t in micro]).mean(0, keepdim=True)
        c = momentum * c + (1 - momentum) * mean
    return c


def test_centre_with_accumulation_equals_one_big_batch(tmp_path):
    big, big_out = _centre_run(tmp_path / "a", batch=8, accumulate=1, n_items=8, max_steps=1)
    acc, acc_out = _centre_run(tmp_path / "b", batch=4, accumulate=2, n_items=8, max_steps=1)
    assert len(big_out) == 1 and len(acc_out) == 2 and acc.global_step == 1
    torch.testing.assert_close(torch.cat(acc_out, dim=1), big_out[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(acc.center, big.center, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(acc.center, _expected_centre([acc_out]), rtol=1e-5, atol=1e-7)
    assert acc.center.abs().sum() > 0 and not acc.center_accumulator.any()


def test_centre_without_accumulation_moves_every_step(tmp_path):
    model, out = _centre_run(tmp_path, batch=4, accumulate=1, n_items=8, max_steps=2)
    assert len(out) == 2
    torch.testing.assert_close(model.center, _expected_centre([[out[0]], [out[1]]]))


def test_centre_short_last_accumulation_is_weighted_by_its_count(tmp_path):
    # 3 micro-batches per epoch with accumulation 2: steps of 2 and then 1 micro-batch
    model, out = _centre_run(tmp_path, batch=4, accumulate=2, n_items=12, max_epochs=1)
    assert len(out) == 3 and model.global_step == 2
    torch.testing.assert_close(model.center, _expected_centre([[out[0], out[1]], [out[2]]]))


class _SaveMidAccumulation(pl.Callback):
    def __init__(self, path):
        self.path = path

    def on_train_batch_end(self, trainer, m, outputs, batch, batch_idx):
        if batch_idx == 0:  # the first of two micro-batches: no optimiser step yet
            trainer.save_checkpoint(self.path)


def test_partial_centre_sums_are_in_a_mid_accumulation_checkpoint(tmp_path):
    path = tmp_path / "mid.ckpt"
    model, out = _centre_run(
        tmp_path, batch=4, accumulate=2, n_items=8, max_steps=1,
        callbacks=[_SaveMidAccumulation(path)],
    )  # fmt: skip
    ckpt = torch.load(path, weights_only=True)
    saved = ckpt["procvision"][module_mod.CENTER_ACCUMULATOR_KEY]
    torch.testing.assert_close(saved, module_mod.center_statistics(out[0]))
    assert saved[-1] == 2 * 4  # 2 global views x batch 4
    fresh, _ = make(n_local=1)
    fresh.on_load_checkpoint(ckpt)
    torch.testing.assert_close(fresh.center_accumulator, saved)


def test_center_statistics_add_up_to_the_mean():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 5, generator=g), torch.randn(2, 1, 5, generator=g)
    stats = module_mod.center_statistics(a) + module_mod.center_statistics(b)
    assert stats[-1] == 8
    want = 0.9 * torch.ones(1, 5) + 0.1 * torch.cat([a, b], dim=1).mean(dim=(0, 1))[None]
    torch.testing.assert_close(
        module_mod.center_from_statistics(torch.ones(1, 5), stats, 0.9), want
    )
    c = torch.ones(1, 5)
    assert torch.equal(module_mod.center_from_statistics(c, torch.zeros(6), 0.9), c)


def test_init_backbone_of_another_architecture_is_one_line(tmp_path):
    from procvision.models.backbone import Backbone
    from procvision.models.export import export_backbone

    export_backbone(Backbone("vit_tiny_patch16_224", 32, 8, **TINY), tmp_path / "export")
    with pytest.raises(module_mod.TrainingConfigError) as info:
        DINOModule("vit_tiny_patch16_224", 32, 4, TINY, out_dim=8, hidden_dim=8, bottleneck_dim=8,
                   init_backbone=str(tmp_path / "export"))  # fmt: skip
    msg = str(info.value)
    assert "\n" not in msg and "patch_size 4" in msg and "config.json" in msg


def test_crop_sizes_the_patch_does_not_divide():
    module_mod.check_crop_sizes({"global_size": 32, "local_size": 16}, 8)
    module_mod.check_crop_sizes({"global_size": 33}, None)  # not a ViT
    with pytest.raises(module_mod.TrainingConfigError, match="local_size = 20 .* 16 or 24"):
        module_mod.check_crop_sizes({"global_size": 32, "local_size": 20}, 8)


def test_batch_size_hparam_below_one_is_refused():
    with pytest.raises(module_mod.TrainingConfigError, match="model.batch_size"):
        make(batch_size=0)
