"""The linear probe: separable features reach 100%, and the test split never chooses the lr."""

from __future__ import annotations

import pytest
import torch

import procvision.eval.linear as linear
from procvision.eval.linear import LinearRecipe, linear_probe, seeded_split, select_lr

FAST = LinearRecipe(lrs=(0.1, 1.0), epochs=5, batch_size=32, seed=0)


def separable(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes around orthogonal unit directions in 8-d, well apart (linearly separable)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.zeros(n, 8)
    x[torch.arange(n), y] = 1.0
    x += 0.05 * torch.randn(n, 8, generator=g)
    return x, y


def test_separable_features_reach_100_percent() -> None:
    (tx, ty), (qx, qy) = separable(150, 0), separable(60, 1)
    out = linear_probe(tx, ty, qx, qy, FAST, progress=False)
    assert out["top1"] == 100.0 and out["val_top1"] == 100.0
    assert out["n_train"] == 150 and out["n_val"] == 15 and out["n_fit"] == 135
    assert set(out["sweep"]) == {"0.1", "1"} and out["num_classes"] == 3


def test_seeded_split() -> None:
    fit, val = seeded_split(50, 0.1, seed=3)
    assert len(val) == 5 and len(fit) == 45
    assert sorted(torch.cat([fit, val]).tolist()) == list(range(50))
    assert torch.equal(val, seeded_split(50, 0.1, seed=3)[1])
    assert not torch.equal(val, seeded_split(50, 0.1, seed=4)[1])


def test_the_test_split_never_chooses_the_lr(monkeypatch: pytest.MonkeyPatch) -> None:
    (tx, ty), (qx, qy) = separable(90, 0), separable(30, 1)
    calls: list[int] = []
    real = linear.evaluate_accuracy

    def spy(probe, x, y):
        calls.append(x.data_ptr())
        return real(probe, x, y)

    monkeypatch.setattr(linear, "evaluate_accuracy", spy)
    out = linear_probe(tx, ty, qx, qy, FAST, progress=False)
    # one evaluation per lr (the heads of one fit) on the validation split of the training set,
    # then the test set once, last
    assert len(calls) == len(FAST.lrs) + 1
    assert calls[-1] == qx.data_ptr() and qx.data_ptr() not in calls[:-1]
    # the choice depends on the training set only: adversarial test labels change nothing but top-1
    flipped = linear_probe(tx, ty, qx, (qy + 1) % 3, FAST, progress=False)
    assert flipped["lr"] == out["lr"] and flipped["sweep"] == out["sweep"]
    assert flipped["top1"] == 0.0 and out["top1"] == 100.0
    lr, sweep = select_lr(tx, ty, 3, FAST, progress=False)
    assert lr == out["lr"] and {f"{k:g}": v for k, v in sweep.items()} == out["sweep"]


def test_recipe_checks() -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        LinearRecipe(val_fraction=0.0)
    with pytest.raises(ValueError, match="lrs"):
        LinearRecipe(lrs=())


def test_cosine_schedule_per_head() -> None:
    probe = linear.LinearProbe(4, 2, [1.0, 10.0], total_steps=10)
    conf = probe.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert [g["lr"] for g in opt.param_groups] == [1.0, 10.0]
    for _ in range(5):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5, 5.0])
    for _ in range(5):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.0, 0.0], abs=1e-12)


def test_heads_train_independently() -> None:
    """A head fitted beside others equals the same head fitted alone (disjoint parameters)."""
    x, y = separable(64, 2)
    together = linear.fit_linear(x, y, 3, [1.0, 0.1], FAST)  # the first head is initialised first
    [alone] = linear.fit_linear(x, y, 3, [1.0], FAST)
    assert torch.allclose(together[0].weight, alone.weight, atol=1e-6)
    assert torch.allclose(together[0].bias, alone.bias, atol=1e-6)
    assert not torch.allclose(together[1].weight, together[0].weight)


def test_standardization_is_folded_into_the_head() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=g) * torch.tensor([1.0, 10.0, 0.1, 3.0, 1.0, 0.0]) + 5.0
    mean, std = linear.feature_stats(x)
    assert std[5] == 1.0  # a constant dimension is left unscaled
    head = linear._linear_head(6, 3)
    torch.nn.init.normal_(head.weight, generator=g)
    folded = linear.fold_standardization(head, mean, std)
    with torch.no_grad():
        assert torch.allclose(folded(x), head((x - mean) / std), atol=1e-4)


def test_statistics_come_from_the_fitted_rows_only(monkeypatch: pytest.MonkeyPatch) -> None:
    (tx, ty), (qx, qy) = separable(90, 0), separable(30, 1)
    seen: list[int] = []
    real = linear.feature_stats
    monkeypatch.setattr(linear, "feature_stats", lambda x: (seen.append(len(x)), real(x))[1])
    linear_probe(tx, ty, qx, qy, FAST, progress=False)
    assert seen == [81, 90]  # the sweep's fit rows (90 - 9 held out), then the whole training set


def test_dataset_features_embed_evalsets_through_the_cache(tmp_path) -> None:
    import json

    from procvision.data.datasets.datamodule import EvalSet
    from tests.fixtures_real import TINY_BACKBONE, make_idx_root

    root = make_idx_root(tmp_path / "fm", n_train=30, n_test=10)
    spec = "random:" + json.dumps(TINY_BACKBONE)
    features, model = linear.dataset_features(spec, progress=False, cache_dir=str(tmp_path / "c"))
    assert model["fingerprint"] == features.backbone.fingerprint() and model["precision"] == "fp32"
    train = EvalSet(f"fashion_mnist:{root}:train", resize_policy="resize")
    test = EvalSet(f"fashion_mnist:{root}:test", resize_policy="resize")
    ds, x, y = features.embed_set(train, "train")
    direct = features(ds)  # an opened dataset: embedded directly, same numbers
    torch.testing.assert_close(direct[0], x)
    assert torch.equal(direct[1], y)
    out = linear.linear_probe_datasets(features, train, test, FAST, knn_ks=(1,), progress=False)
    assert out["linear"]["n_train"] == 30 and out["linear"]["n_test"] == 10
    assert features.cache.passes == 2 and features.cache.hits == 1  # train came from memory
    pixels, info = linear.dataset_features("pixels", progress=False, cache_dir=str(tmp_path / "c"))
    assert pixels.cache is None and info["fingerprint"] == "pixels"
    _, px, _ = pixels.embed_set(train, "train")
    assert px.shape == (30, 784) and pixels.sources == {"train": "pixels"}
