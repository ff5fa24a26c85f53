"""EvalSet (one set's description), embed_batch (feature kinds, bf16 autocast with fp32 output),
resolve_precision and the shared embedding cache (one pass per set, feature, precision, state)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from procvision.data.datasets import EvalTransform, FashionMNIST, seeded_subset
from procvision.data.datasets.datamodule import EvalSet, KNNDataModule, knn_sets
from procvision.eval.cache import EmbeddingCache, shared_cache, weights_hash
from procvision.eval.embed import embed_batch, embed_dataset, resolve_precision
from procvision.models import random_backbone
from tests.fixtures_real import make_idx_root

TINY = dict(img_size=16, patch_size=8, depth=2, embed_dim=32, num_heads=2)


def _vit(seed: int = 0):
    return random_backbone("vit_tiny_patch16_224", seed=seed, **TINY)


def test_evalset_opens_the_seeded_subset_and_keys_what_decides_the_images(tmp_path: Path) -> None:
    root = make_idx_root(tmp_path, n_train=30, n_test=12)
    s = EvalSet(f"fashion_mnist:{root}", "train", resize_policy="resize", max_items=9)
    ds = s.open(16)
    ref = seeded_subset(FashionMNIST(root, "train", EvalTransform(16, "resize")), 9, 0)
    assert len(ds) == 9 and ds.source(3) == ref.source(3)
    torch.testing.assert_close(ds[3][0], ref[3][0])
    assert s.size_for(32) == 32 and EvalSet("x:y", image_size=24).size_for(32) == 24
    batching = EvalSet(s.dataset, "train", resize_policy="resize", max_items=9, batch_size=7)
    assert s.key(16) == batching.key(16)  # batching does not change the images
    assert s.key(16) != s.key(32) and s.key(16) != EvalSet(s.dataset, "test").key(16)
    with pytest.raises(ValueError, match="max_items"):
        EvalSet("fashion_mnist:train", max_items=0)
    with pytest.raises(ValueError, match="resize policy"):
        EvalSet("fashion_mnist:train", resize_policy="squash")  # type: ignore[arg-type]
    mem, qry = knn_sets("a:train", "a:test", max_memory=5, max_queries=3, subset_seed=4)
    assert (mem.subset_seed, qry.subset_seed, mem.max_items, qry.max_items) == (4, 5, 5, 3)
    dm = KNNDataModule(memory=mem, queries="a:test", max_queries=2)
    assert dm.memory_spec == mem and dm.query_spec.max_items == 2 and dm.query_spec.split == "test"


def test_embed_batch_feature_kinds_and_bf16() -> None:
    model = _vit()
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        cls = embed_batch(model, x)
        tokens = model.model.forward_features(x)
        torch.testing.assert_close(cls, torch.nn.functional.normalize(tokens[:, 0], dim=1))
        pre = embed_batch(model, x, "cls_prenorm")
        # the final norm applied to the pre-norm CLS is the CLS token
        raw_pre = model.model.blocks(
            model.model.norm_pre(model.model._pos_embed(model.model.patch_embed(x)))
        )
        torch.testing.assert_close(model.model.norm(raw_pre)[:, 0], tokens[:, 0])
        torch.testing.assert_close(pre, torch.nn.functional.normalize(raw_pre[:, 0], dim=1))
        patches = embed_batch(model, x, "patches")
        assert patches.shape == (5, 2, 2, 32)
        torch.testing.assert_close(patches.norm(dim=-1), torch.ones(5, 2, 2))
        bf = embed_batch(model, x, precision="bf16")
    assert bf.dtype == torch.float32
    torch.testing.assert_close(bf.norm(dim=1), torch.ones(5))
    assert float((bf * cls).sum(1).min()) > 0.999 and not torch.equal(bf, cls)
    with pytest.raises(ValueError, match="feature"):
        embed_batch(model, x, "mean")  # type: ignore[arg-type]


def test_resolve_precision(monkeypatch) -> None:
    import procvision.eval.embed as embed

    assert resolve_precision("fp32", "cuda") == "fp32" and resolve_precision("bf16") == "bf16"
    assert resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(embed, "cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(embed, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16")


def test_cache_embeds_once_per_set_feature_precision_and_state(tmp_path: Path) -> None:
    root = make_idx_root(tmp_path, n_train=20, n_test=8)
    mem = EvalSet(f"fashion_mnist:{root}:train", resize_policy="resize", batch_size=8)
    qry = EvalSet(f"fashion_mnist:{root}:test", resize_policy="resize")
    model, cache = _vit(), EmbeddingCache()
    kw = {"progress": False, "step": 3}
    ds, first = cache.embed(model, mem, **kw)
    _, again = cache.embed(model, EvalSet(mem.dataset, resize_policy="resize", batch_size=4), **kw)
    assert again is first and cache.passes == 1 and cache.hits == 1
    ref = embed_dataset(model, ds, progress=False)[0]
    torch.testing.assert_close(first.embeddings, ref)
    cache.embed(model, qry, **kw)
    cache.embed(model, mem, precision="bf16", **kw)
    cache.embed(model, mem, feature="cls_prenorm", **kw)
    assert cache.passes == 4
    cache.embed(model, mem, progress=False, step=4)  # a new step: a new state
    assert cache.passes == 5
    with torch.no_grad():
        model.model.cls_token.add_(1.0)  # same step, new weights
    h = weights_hash(model)
    cache.embed(model, mem, progress=False, step=4)
    assert cache.passes == 6 and h != weights_hash(_vit())
    owner = type("Owner", (), {})()
    assert shared_cache(owner) is shared_cache(owner) and shared_cache(owner) is not cache
