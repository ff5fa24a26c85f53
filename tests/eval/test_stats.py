"""Standard errors and the two-proportion z-test against hand computations (paper App. B.1)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy.stats import norm

from procvision.eval.stats import (
    ResultFileError,
    mean_and_spread,
    nights_z_test,
    pairwise_z_tests,
    proportion_stderr,
    two_proportion_z_test,
)


def test_stderr_matches_the_papers_table_5() -> None:
    assert round(proportion_stderr(0.8733, 1720), 4) == 0.0080  # ImageNet
    assert round(proportion_stderr(0.7605, 1720), 4) == 0.0103  # StyleGAN
    assert round(proportion_stderr(0.8244, 1720), 4) == 0.0092  # S. KML


def test_z_test_by_hand() -> None:
    # Places .8331 vs Shaders .8169, N = 1720 each. By hand: pooled q = .825, q(1-q) = .144375,
    # 1/1720 + 1/1720 = .0011627907, se = sqrt(.144375 * .0011627907) = .0129568, z = .0162 / se.
    t = two_proportion_z_test(0.8331, 1720, 0.8169, 1720)
    assert t.z == pytest.approx(0.0162 / 0.0129568, rel=1e-5)
    assert t.z == pytest.approx(1.25031, abs=1e-4)
    assert t.p_value == pytest.approx(2 * norm.sf(1.25031), abs=1e-5)
    assert not t.significant  # the paper: Places, S. KML and Shaders are equivalent at 5%
    big = two_proportion_z_test(0.8733, 1720, 0.7605, 1720)  # ImageNet vs StyleGAN
    assert big.significant and big.z > 8
    # unequal sizes: q = (.6 * 100 + .5 * 300) / 400 = .525
    u = two_proportion_z_test(0.6, 100, 0.5, 300)
    assert u.z == pytest.approx(0.1 / math.sqrt(0.525 * 0.475 * (1 / 100 + 1 / 300)))
    assert two_proportion_z_test(1.0, 10, 1.0, 20).z == 0.0


def test_z_test_between_jsons(tmp_path: Path) -> None:
    def write(name: str, score: float) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps({"kind": "nights", "results": {"2afc": score, "n": 1720}}))
        return path

    a, b = write("places.json", 0.8331), write("kml.json", 0.8244)
    t = nights_z_test(a, b)
    assert t.z == pytest.approx(two_proportion_z_test(0.8331, 1720, 0.8244, 1720).z)
    with pytest.raises(ResultFileError, match="not found"):
        nights_z_test(a, tmp_path / "missing.json")
    (tmp_path / "knn.json").write_text(json.dumps({"results": {"weighted/k20/top1": 80}}))
    with pytest.raises(ResultFileError, match="not a NIGHTS result"):
        nights_z_test(a, tmp_path / "knn.json")
    pairs = pairwise_z_tests({"a": (0.8, 100), "b": (0.7, 100), "c": (0.6, 100)})
    assert list(pairs) == [("a", "b"), ("a", "c"), ("b", "c")]


def test_mean_and_spread() -> None:
    assert mean_and_spread([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2.0)))
    assert mean_and_spread([5.0]) == (5.0, None)
