"""Sample streams, the procedural and image-folder DataModules."""

import pytest
import torch

from procvision.data.datamodule import ImageFolderDataModule, ProceduralDataModule, StreamSampler
from tests.models.stand_in import GradientSource


def test_stream_is_disjoint_over_ranks_and_epochs():
    s = StreamSampler(length=20, batch_size=3, seed=1)
    assert s.batches_per_epoch(world=2) == 3  # 10 per rank -> 3 whole batches
    seen = []
    for counter in range(3 * 3):  # three epochs
        for rank in (0, 1):
            ids = s.batch_ids(counter, rank, 2)
            assert ids.shape == (3,)
            epoch = counter // 3
            assert ((ids >= epoch * 20) & (ids < (epoch + 1) * 20)).all()
            seen += ids.tolist()
    assert len(seen) == len(set(seen))  # no id twice: ranks disjoint, epochs distinct
    again = StreamSampler(length=20, batch_size=3, seed=1)
    assert torch.equal(again.batch_ids(4, 1, 2), s.batch_ids(4, 1, 2))
    assert not torch.equal(StreamSampler(20, 3, seed=2).batch_ids(0), s.batch_ids(0))


def test_stream_iteration_starts_at_counter():
    s = StreamSampler(length=8, batch_size=2, seed=0)
    assert len(s) == 8
    first = list(s)
    s.set_epoch(1)
    second = list(s)
    assert first == torch.cat([s.batch_ids(c) for c in range(4)]).tolist()
    assert second == torch.cat([s.batch_ids(c) for c in range(4, 8)]).tolist()
    s.start = lambda: 6  # a resumed run: 6 batches done
    assert list(s)[:4] == torch.cat([s.batch_ids(6), s.batch_ids(7)]).tolist()
    with pytest.raises(ValueError):
        StreamSampler(length=2, batch_size=3)


def make_dm(**kw):
    args = dict(
        source=GradientSource(0),
        render_size=24,
        samples_per_epoch=12,
        batch_size=4,
        global_size=16,
        local_size=8,
        n_local_crops=2,
    )
    args.update(kw)
    return ProceduralDataModule(**args)


def test_procedural_module_streams_ids_and_crops_after_transfer():
    dm = make_dm()
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == 3 and all(b.dtype == torch.int64 and b.shape == (4,) for b in batches)
    out = dm.on_after_batch_transfer(batches[0], 0)
    assert torch.equal(out["indices"], batches[0])
    assert [c.shape for c in out["crops"]] == [(4, 3, 16, 16)] * 2 + [(4, 3, 8, 8)] * 2
    again = make_dm().on_after_batch_transfer(batches[0].clone(), 0)
    assert all(torch.equal(a, b) for a, b in zip(out["crops"], again["crops"], strict=True))
    other = dm.on_after_batch_transfer(batches[1], 0)
    assert not torch.equal(other["crops"][0], out["crops"][0])
    val = (torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
    assert dm.on_after_batch_transfer(val, 0) is val  # validation batches pass through
    assert dm.describe()["family"] == "gradient"
    with pytest.raises(ValueError):
        make_dm(samples_per_epoch=2)


def test_image_folder_module(tmp_path):
    from torchvision.io import write_png

    g = torch.Generator().manual_seed(0)
    for i in range(5):
        sub = tmp_path / f"class{i % 2}"
        sub.mkdir(exist_ok=True)
        img = (torch.rand(3, 20 + i, 30, generator=g) * 255).to(torch.uint8)
        write_png(img, str(sub / f"{i}.png"))
    dm = ImageFolderDataModule(
        str(tmp_path),
        load_size=16,
        batch_size=2,
        num_workers=0,
        global_size=12,
        local_size=8,
        n_local_crops=1,
        samples_per_epoch=4,
    )
    dm.setup("fit")
    assert len(dm.dataset) == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (2, 3, 16, 16) and batch["images"].dtype == torch.uint8
    out = dm.on_after_batch_transfer(batch, 0)
    assert [c.shape for c in out["crops"]] == [(2, 3, 12, 12)] * 2 + [(2, 3, 8, 8)]
    assert dm.describe()["num_images"] == 4
    with pytest.raises(FileNotFoundError):
        ImageFolderDataModule(str(tmp_path / "none")).setup()


def test_with_registry_kml_mixup():
    dm = ProceduralDataModule(
        family="kml_mixup",
        render_size=32,
        samples_per_epoch=4,
        batch_size=2,
        global_size=16,
        local_size=8,
        n_local_crops=1,
    )
    ids = next(iter(dm.train_dataloader()))
    out = dm.on_after_batch_transfer(ids, 0)
    assert [c.shape for c in out["crops"]] == [(2, 3, 16, 16)] * 2 + [(2, 3, 8, 8)]
    assert all(torch.isfinite(c).all() for c in out["crops"])
    assert dm.describe()["family"] == "kml_mixup"


def test_procedural_module_num_unique_renders_each_image_once():
    calls = []
    dm = make_dm(num_unique=6)
    render = dm.source.render

    def counting(ids, size, device):
        calls.append(ids.clone())
        return render(ids, size, device)

    dm.source.render = counting
    a = dm.on_after_batch_transfer(torch.tensor([0, 1, 2, 3]), 0)
    b = dm.on_after_batch_transfer(torch.tensor([6, 7, 8, 9]), 0)  # the same images, mod 6
    assert torch.equal(calls[0], torch.tensor([0, 1, 2, 3])) and len(calls) == 1  # cached
    assert not torch.equal(a["crops"][0], b["crops"][0])  # crops still seeded by the raw ids
    dm.on_after_batch_transfer(torch.tensor([4, 5, 10, 11]), 0)
    assert torch.equal(calls[1], torch.tensor([4, 5]))  # only the unseen ones are rendered
    expect = render(torch.tensor([5]), dm.render_size, torch.device("cpu"))
    got = dm.stream_source.render(torch.tensor([11]), dm.render_size)
    assert (got - expect.clamp(0, 1)).abs().max() <= 0.5 / 255 + 1e-6  # uint8 cache
    assert dm.describe()["num_unique"] == 6
    with pytest.raises(ValueError):
        make_dm(num_unique=0)


def test_procedural_module_streams_kml_mixup_from_a_bank():
    dm = make_dm(
        source=None,
        family="kml_mixup",
        pool_size=64,
        source_kwargs={"bank_size": 16, "families": ["periodic", "noise"]},
    )
    bank = dm.source.kml.base
    renders = []
    base_render = bank.base.render
    bank.base.render = lambda ids, size, device: (
        renders.append(len(ids)) or base_render(ids, size, device)
    )
    for start in range(0, 400, 4):
        out = dm.on_after_batch_transfer(torch.arange(start, start + 4), 0)
        assert out["crops"][0].shape == (4, 3, 16, 16)
    assert sum(renders) == bank.filled(dm.render_size) == 16  # 100 batches, 16 base renders
    size = dm.render_size
    a, b = dm.source.render(torch.arange(4), size), dm.source.render(torch.arange(100, 104), size)
    assert not torch.equal(a, b)  # new composites from the same bank
    assert dm.describe()["kml"]["base"]["bank_size"] == 16
