"""Small statistics of the paper's evidence: standard errors and the two-proportion z-test (App. B.1).

The paper reports NIGHTS 2AFC scores with "std of the mean" sqrt(p (1 - p) / N) (N = 1,720) and
calls two models equivalent when a two-proportion z-test at 5% does not separate them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from procvision.errors import UserError


def proportion_stderr(p: float, n: int) -> float:
    """Standard error of a proportion: sqrt(p (1 - p) / n) (the paper's "std of the mean").

    Args:
        p: proportion in [0, 1].
        n: number of trials, >= 1.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    return math.sqrt(p * (1.0 - p) / n)


def normal_two_sided_p(z: float) -> float:
    """Two-sided tail probability of a standard normal: P(|Z| >= |z|) = erfc(|z| / sqrt 2)."""
    return math.erfc(abs(z) / math.sqrt(2.0))


@dataclass(frozen=True)
class ZTest:
    """Result of `two_proportion_z_test`: z, the two-sided p-value and the decision at `alpha`."""

    p1: float
    n1: int
    p2: float
    n2: int
    z: float
    p_value: float
    alpha: float
    significant: bool

    def to_dict(self) -> dict:
        return asdict(self)


def two_proportion_z_test(p1: float, n1: int, p2: float, n2: int, alpha: float = 0.05) -> ZTest:
    """Pooled two-proportion z-test of H0: the two models have the same success rate.

    z = (p1 - p2) / sqrt(q (1 - q) (1/n1 + 1/n2)) with the pooled q = (p1 n1 + p2 n2) / (n1 + n2);
    two-sided p-value; `significant` when p_value < alpha. Equal proportions give z = 0 (also when
    q is 0 or 1, where the formula is 0/0).
    """
    for p in (p1, p2):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"proportions must be in [0, 1], got {p}")
    if n1 < 1 or n2 < 1:
        raise ValueError(f"sample sizes must be >= 1, got {n1}, {n2}")
    q = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = math.sqrt(q * (1.0 - q) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        z = 0.0 if p1 == p2 else math.copysign(math.inf, p1 - p2)
    else:
        z = (p1 - p2) / se
    p_value = normal_two_sided_p(z)
    return ZTest(p1, int(n1), p2, int(n2), z, p_value, alpha, p_value < alpha)


class ResultFileError(UserError):
    """A result JSON is missing, unreadable or lacks the numbers asked for."""


def read_result_json(path: str | Path) -> dict:
    """Load a result JSON; `ResultFileError` naming the file when it is missing or invalid."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ResultFileError(f"{path}: result file not found") from err
    except (OSError, ValueError) as err:
        raise ResultFileError(f"{path}: not a readable JSON file ({err})") from err


def nights_proportion(
    record: Mapping, where: str = "result", key: str = "2afc"
) -> tuple[float, int]:
    """(score, n) of a NIGHTS JSON (`procvision.eval.nights`): results[key] and results["n"]."""
    results = record.get("results")
    if record.get("kind") != "nights" or not isinstance(results, Mapping):
        raise ResultFileError(f"{where}: not a NIGHTS result (expected kind 'nights' with results)")
    if key not in results or "n" not in results:
        raise ResultFileError(f"{where}: NIGHTS result has no {key!r} score or n")
    return float(results[key]), int(results["n"])


def nights_z_test(a: str | Path, b: str | Path, alpha: float = 0.05, key: str = "2afc") -> ZTest:
    """Two-proportion z-test between the NIGHTS scores of two result JSON files."""
    p1, n1 = nights_proportion(read_result_json(a), str(a), key)
    p2, n2 = nights_proportion(read_result_json(b), str(b), key)
    return two_proportion_z_test(p1, n1, p2, n2, alpha)


def pairwise_z_tests(
    scores: Mapping[str, tuple[float, int]], alpha: float = 0.05
) -> dict[tuple[str, str], ZTest]:
    """z-tests of every unordered pair of named (score, n); keys (a, b) in the given order."""
    names: Sequence[str] = list(scores)
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            out[(a, b)] = two_proportion_z_test(*scores[a], *scores[b], alpha=alpha)
    return out


def mean_and_spread(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for fewer than 2 values) of seed repeats."""
    if not values:
        raise ValueError("no values")
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    var = sum((v - m) ** 2 for v in values) / (len(values) - 1)
    return m, math.sqrt(var)
