"""The evaluation layer's on-disk embedding store: one key function with the in-memory cache,
keyed by the backbone fingerprint, sha256-verified on read, stale or corrupt entries re-embedded."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from procvision.data.datasets.datamodule import EvalSet
from procvision.eval.cache import (
    CacheEntryWarning,
    CacheKey,
    CacheStoreError,
    DiskStore,
    EmbeddingCache,
    cache_key,
    images_key,
)
from procvision.eval.embed import embed_dataset
from procvision.models import random_backbone
from tests.fixtures_real import make_idx_root, write_idx

TINY = dict(img_size=16, patch_size=8, depth=2, embed_dim=32, num_heads=2)


def _vit(seed: int = 0):
    return random_backbone("vit_tiny_patch16_224", seed=seed, **TINY)


class Counted:
    """Counts the backbone's forward passes (images embedded) through a forward hook."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.images = 0
        model.register_forward_hook(lambda m, args, out: self._add(len(args[0])))

    def _add(self, n: int) -> None:
        self.images += n


def _set(root: Path, split: str = "train", **kw) -> EvalSet:
    return EvalSet(
        f"fashion_mnist:{root}:{split}", resize_policy="resize", **{"batch_size": 8, **kw}
    )


def test_second_cache_on_the_same_folder_embeds_nothing(tmp_path: Path) -> None:
    root = make_idx_root(tmp_path / "fm", n_train=20, n_test=8)
    model = _vit()
    forwards = Counted(model)
    first = EmbeddingCache(tmp_path / "cache")
    ds, out = first.embed(model, _set(root), progress=False)
    assert first.passes == 1 and first.last_source == "embedded" and forwards.images == 20
    ref = embed_dataset(model, ds, progress=False)[0]
    torch.testing.assert_close(out.embeddings, ref)
    forwards.images = 0
    second = EmbeddingCache(tmp_path / "cache")  # a new process: nothing in memory
    _, again = second.embed(model, _set(root, batch_size=4), progress=False)
    assert forwards.images == 0 and second.passes == 0 and second.disk_hits == 1
    assert second.last_source == "disk"
    assert torch.equal(again.embeddings, out.embeddings) and torch.equal(again.labels, out.labels)
    assert torch.equal(again.indices, out.indices)
    # the layout: one folder per fingerprint, a tensors file and its JSON key file
    fp = model.fingerprint()
    [meta_path] = (tmp_path / "cache" / fp).glob("*.json")
    meta = json.loads(meta_path.read_text())
    assert meta["fingerprint"] == fp and meta["rows"] == 20 and meta["shape"] == [20, 32]
    assert meta["images"]["dataset"] == f"fashion_mnist:{root.absolute()}"
    assert meta["images"]["split"] == "train" and meta["images"]["image_size"] == 16
    assert (meta_path.with_suffix(".safetensors")).is_file()
    # in memory the second request is a memory hit
    second.embed(model, _set(root), progress=False)
    assert second.hits == 1 and second.last_source == "memory" and forwards.images == 0


def test_entries_are_never_shared_across_fingerprints_features_or_precisions(
    tmp_path: Path,
) -> None:
    root = make_idx_root(tmp_path / "fm", n_train=12, n_test=4)
    a, b = _vit(0), _vit(1)
    cache = EmbeddingCache(tmp_path / "cache")
    cache.embed(a, _set(root), progress=False)
    fresh = EmbeddingCache(tmp_path / "cache")
    fresh.embed(b, _set(root), progress=False)  # another backbone: its own folder, embedded
    fresh.embed(a, _set(root), progress=False, feature="cls_prenorm")
    fresh.embed(a, _set(root), progress=False, precision="bf16")
    fresh.embed(a, _set(root, max_items=5), progress=False)  # another subset
    fresh.embed(a, _set(root, "test"), progress=False)
    assert fresh.passes == 5 and fresh.disk_hits == 0
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [a.fingerprint(), b.fingerprint()]
    )
    assert len(list((tmp_path / "cache" / a.fingerprint()).glob("*.json"))) == 5


def test_one_key_function_for_memory_and_disk(tmp_path: Path, monkeypatch) -> None:
    root = make_idx_root(tmp_path / "fm", n_train=6, n_test=4)
    monkeypatch.chdir(tmp_path)
    relative = EvalSet("fashion_mnist:fm:train", resize_policy="resize")
    split_apart = EvalSet(f"fashion_mnist:{root}", "train", resize_policy="resize")
    assert images_key(relative, 16) == images_key(_set(root), 16) == images_key(split_apart, 16)
    assert images_key(_set(root), 16) != images_key(_set(root), 32)
    key = cache_key(_set(root), 16, "cls", "fp32", "fingerprint:" + "ab" * 32)
    assert key == CacheKey(images_key(_set(root), 16), "cls", "fp32", "fingerprint:" + "ab" * 32)
    assert key.fingerprint == "ab" * 32 and len(key.digest()) == 64
    store = DiskStore(tmp_path / "cache")
    tensors, meta = store.paths(key)
    assert tensors.parent.name == "ab" * 32 and meta.stem == key.digest()[:32]
    with pytest.raises(CacheStoreError, match="fingerprint"):  # a step-and-hash state (a fit)
        store.paths(CacheKey(key.images, "cls", "fp32", "3:0123abcd"))
    with pytest.raises(CacheStoreError, match="fingerprint"):
        EmbeddingCache(store).embed(torch.nn.Flatten(), _set(root), progress=False)


def _only_entry(cache_dir: Path) -> Path:
    [meta] = cache_dir.glob("*/*.json")
    return meta


def test_corrupt_and_stale_entries_are_embedded_again(tmp_path: Path) -> None:
    root = make_idx_root(tmp_path / "fm", n_train=10, n_test=4)
    model, cache_dir = _vit(), tmp_path / "cache"
    _, good = EmbeddingCache(cache_dir).embed(model, _set(root), progress=False)
    meta_path = _only_entry(cache_dir)
    tensors = meta_path.with_suffix(".safetensors")
    data = bytearray(tensors.read_bytes())
    data[-3] ^= 0xFF  # a flipped byte in the embeddings
    tensors.write_bytes(bytes(data))
    cache = EmbeddingCache(cache_dir)
    with pytest.warns(CacheEntryWarning, match="sha256"):
        _, out = cache.embed(model, _set(root), progress=False)
    assert cache.passes == 1 and torch.equal(out.embeddings, good.embeddings)
    assert cache.disk.rejected == 1 and cache.disk.writes == 1  # rewritten
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = EmbeddingCache(cache_dir)
        again.embed(model, _set(root), progress=False)
        assert again.disk_hits == 1
    # a key file that does not describe this request (e.g. a hash-named file copied over)
    meta = json.loads(meta_path.read_text())
    meta["key"]["feature"] = "patches"
    meta_path.write_text(json.dumps(meta))
    cache = EmbeddingCache(cache_dir)
    with pytest.warns(CacheEntryWarning, match="key"):
        cache.embed(model, _set(root), progress=False)
    assert cache.passes == 1
    # the data changed under the same URI: same count, other labels -> stale
    labels = (np.arange(10) % 10)[::-1].astype(np.uint8).copy()
    write_idx(root / "train-labels-idx1-ubyte", labels, True)
    cache = EmbeddingCache(cache_dir)
    with pytest.warns(CacheEntryWarning, match="labels"):
        _, out = cache.embed(model, _set(root), progress=False)
    assert cache.passes == 1 and out.labels.tolist() == labels.tolist()
    # fewer items -> stale
    make_idx_root(root, n_train=8, n_test=4)
    cache = EmbeddingCache(cache_dir)
    with pytest.warns(CacheEntryWarning, match="stale"):
        _, out = cache.embed(model, _set(root), progress=False)
    assert cache.passes == 1 and len(out.labels) == 8


def test_a_missing_tensors_file_is_a_miss(tmp_path: Path) -> None:
    root = make_idx_root(tmp_path / "fm", n_train=6, n_test=4)
    model, cache_dir = _vit(), tmp_path / "cache"
    EmbeddingCache(cache_dir).embed(model, _set(root), progress=False)
    _only_entry(cache_dir).with_suffix(".safetensors").unlink()
    cache = EmbeddingCache(cache_dir)
    with pytest.warns(CacheEntryWarning, match="unreadable"):
        cache.embed(model, _set(root), progress=False)
    assert cache.passes == 1
    assert DiskStore  # the store is part of the cache, not a second cache
    with pytest.raises(CacheStoreError, match="not a folder"):
        EmbeddingCache(_only_entry(cache_dir))
