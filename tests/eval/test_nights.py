"""NIGHTS 2AFC: the score with ties, the vote filter, both CLS choices, PSNR/SSIM, validate."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from procvision.cli import main
from procvision.eval.nights import (
    CLS_FEATURE,
    cls_embedder,
    cosine_distance,
    evaluate_nights,
    twoafc_scores,
    twoafc_summary,
)
from procvision.eval.recipe import load_backbone_spec, random_spec
from procvision.models import random_backbone
from tests.nights_fixture import EXPECTED_VAL, make_nights

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "eval"
TINY_SPEC = random_spec("vit_tiny_patch16_224", img_size=16, patch_size=8, depth=1, embed_dim=32,
                        num_heads=2)  # fmt: skip
TINY_ARGS = ["--model.backbone", TINY_SPEC, "--model.precision", "fp32"]


class MeanColour(nn.Module):
    """images [B, 3, H, W] -> mean colour [B, 3] (an embedder with hand-known distances)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def test_twoafc_score_by_hand() -> None:
    d0 = torch.tensor([0.1, 0.5, 0.2, 0.3, 0.4])
    d1 = torch.tensor([0.2, 0.1, 0.1, 0.3, 0.9])
    p = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0])
    # left closer & humans left: 1; right closer & humans right: 1; right closer & humans left: 0;
    # tie: 0.5; left closer & humans right: 0
    assert twoafc_scores(d0, d1, p).tolist() == [1.0, 1.0, 0.0, 0.5, 0.0]
    s = twoafc_summary(d0, d1, p)
    assert s["2afc"] == pytest.approx(0.5) and s["ties"] == 1 and s["n"] == 5
    assert s["stderr"] == pytest.approx((0.5 * 0.5 / 5) ** 0.5)
    # a vote tie (p = 0.5) earns 0.5 whatever the distances
    assert (
        twoafc_scores(torch.tensor([0.1]), torch.tensor([0.9]), torch.tensor([0.5])).item() == 0.5
    )


def test_cosine_distance() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    b = torch.tensor([[0.0, 2.0], [-1.0, 0.0], [1.0, 0.0]])
    assert cosine_distance(a, b).tolist() == pytest.approx([1.0, 2.0, 0.0])


def test_evaluate_on_the_official_layout(tmp_path: Path) -> None:
    root = make_nights(tmp_path / "nights")
    out = tmp_path / "nights.json"
    record = evaluate_nights(MeanColour(), root, image_size=8, progress=False, json_path=out)
    r = record["results"]
    assert r["n"] == 4 and r["ties"] == 1  # the vote filter drops row 4 (5 votes)
    assert r["2afc"] == pytest.approx(EXPECTED_VAL)
    assert r["stderr"] == pytest.approx((EXPECTED_VAL * (1 - EXPECTED_VAL) / 4) ** 0.5)
    # flat colours: PSNR and SSIM also pick the identical side, so they score like the model
    assert r["psnr_2afc"] == pytest.approx(EXPECTED_VAL) and r["ssim_2afc"] == pytest.approx(
        EXPECTED_VAL
    )
    saved = json.loads(out.read_text())
    assert saved["kind"] == "nights" and saved["cls"] == "after_norm"
    assert saved["data"]["split"] == "val" and saved["data"]["min_votes"] == 6
    # with the 5-vote row kept, the model gets that one wrong: (2.5 + 0) / 5
    loose = evaluate_nights(MeanColour(), root, min_votes=5, image_size=8, baselines=False,
                            progress=False)  # fmt: skip
    assert loose["results"]["2afc"] == pytest.approx(2.5 / 5)


def test_before_norm_cls_is_the_last_blocks_token() -> None:
    backbone = random_backbone("vit_tiny_patch16_224", img_size=16, patch_size=8, depth=2,
                               embed_dim=32, num_heads=2)  # fmt: skip
    x = torch.randn(2, 3, 16, 16)
    no_norm = copy.deepcopy(backbone)
    no_norm.model.norm = nn.Identity()
    with torch.no_grad():
        before = cls_embedder(backbone, "before_norm")(x)
        after = cls_embedder(backbone, "after_norm")(x)
        assert torch.allclose(before, no_norm(x), atol=1e-6)
        assert torch.allclose(backbone.model.norm(before), after, atol=1e-6)
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("cls", ["after_norm", "before_norm"])
def test_validate_with_the_config(tmp_path: Path, cls: str, capsys) -> None:
    root = make_nights(tmp_path / "nights")
    results = tmp_path / f"{cls}.json"
    rc = main([
        "validate", "--config", str(CONFIGS / "nights.yaml"), *TINY_ARGS,
        "--data.init_args.root", str(root), "--data.init_args.image_size", "16",
        "--data.init_args.num_workers", "0", "--model.feature", CLS_FEATURE[cls],
        "--trainer.callbacks.init_args.results_path", str(results),
        "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false",
        "--seed_everything", "0",
    ])  # fmt: skip
    assert rc == 0 and "NIGHTS val 2AFC (4 triplets" in capsys.readouterr().out
    record = json.loads(results.read_text())
    assert record["cls"] == cls and record["results"]["n"] == 4
    # reference: the same random-init backbone scored by the function
    teacher = load_backbone_spec(TINY_SPEC, "cpu")
    assert teacher.fingerprint() == record["model"]["fingerprint"]
    ref = evaluate_nights(teacher, root, cls=cls, image_size=16, progress=False)
    for key in ("2afc", "ties", "psnr_2afc", "ssim_2afc"):
        assert record["results"][key] == pytest.approx(ref["results"][key])
