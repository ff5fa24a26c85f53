"""`procvision report`: every evaluation JSON of several models -> the paper's tables and figures.

    procvision report --runs results/small/kml_mixup_seed0 results/small/shaders_seed0 ... --out results/small/report
    procvision report --ztest runs/a/nights_results.json runs/b/nights_results.json

Each `--runs` folder is one model (its name, family and seed from `run.json` if present, else from
the folder name, e.g. `kml_mixup_seed1`); every *.json under it that is an evaluation result is read
(k-NN of KNNCallback / `procvision medmnist`, linear probe, NIGHTS, privacy, R², Gestalt). Writes
`report.md` (tables shaped like the paper's Tables 1-6; every number links to its JSON; the Sources
table gives each one's checkpoint fingerprint), PNG plots and `report.json`. Missing results are
gaps, never zeros. `--ztest A B` prints the two-proportion z-test between two NIGHTS JSONs (App. B.1).
"""

from __future__ import annotations

from jsonargparse import ArgumentParser, Namespace

from procvision.commands._common import PATH_ERRORS, run_reporting
from procvision.errors import UserError
from procvision.eval.paper_report import build_report
from procvision.eval.stats import nights_z_test

PROG = "procvision report"


class ReportArgumentError(UserError):
    """`procvision report` was given neither --runs/--out nor --ztest, or a wrong count."""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=str, nargs="+", default=None,
                   help="one folder per model (its evaluation JSONs, any depth)")  # fmt: skip
    p.add_argument(
        "--out", type=str | None, default=None, help="folder for report.md, PNGs, report.json"
    )
    p.add_argument("--ztest", type=str, nargs="+", default=None,
                   help="two NIGHTS result JSONs: print their two-proportion z-test")  # fmt: skip
    p.add_argument("--alpha", type=float, default=0.05, help="level of the z-tests")
    p.add_argument("--title", type=str, default="procvision report")
    return p


def run(cfg: Namespace) -> int:
    return run_reporting(PROG, _run, cfg, extra=PATH_ERRORS)


def _run(cfg: Namespace) -> int:
    if cfg.ztest:
        if len(cfg.ztest) != 2:
            raise ReportArgumentError(f"--ztest takes two NIGHTS JSON files, got {len(cfg.ztest)}")
        t = nights_z_test(cfg.ztest[0], cfg.ztest[1], cfg.alpha)
        verdict = "different" if t.significant else "not significantly different"
        print(f"NIGHTS 2AFC {t.p1:.4f} (N={t.n1}) vs {t.p2:.4f} (N={t.n2}): z = {t.z:.3f}, "
              f"two-sided p = {t.p_value:.4g}: {verdict} at the {100 * t.alpha:g}% level")  # fmt: skip
        if not cfg.runs:
            return 0
    if not cfg.runs or not cfg.out:
        raise ReportArgumentError("give --runs DIR... and --out DIR (or --ztest A.json B.json)")
    out = build_report(cfg.runs, cfg.out, cfg.alpha, cfg.title)
    print(f"{out['runs']} models; wrote {out['markdown']}, {out['json']}"
          + (f" and {len(out['plots'])} plot(s)" if out["plots"] else ""))  # fmt: skip
    return 0
