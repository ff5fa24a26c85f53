"""`procvision report`: every evaluation JSON of several models -> the paper's tables and figures.

    procvision report --runs results/small/kml_mixup_seed0 results/small/shaders_seed0 ... --out results/small/report

Each `--runs` folder is one model (its name, family and seed from `run.json` if present, else from
the folder name, e.g. `kml_mixup_seed1`); every *.json under it that is an evaluation result is read
(k-NN of KNNCallback / `procvision medmnist`, linear probe, NIGHTS, privacy, R², Gestalt). Writes
`report.md` (tables shaped like the paper's Tables 1-6; every number links to its JSON; the Sources
table gives each one's checkpoint fingerprint), PNG plots and `report.json`. Missing results are
gaps, never zeros.
"""

from __future__ import annotations

from jsonargparse import ArgumentParser, Namespace

from procvision.commands._common import PATH_ERRORS, run_reporting
from procvision.eval.paper_report import build_report

PROG = "procvision report"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=str, required=True, nargs="+",
                   help="one folder per model (its evaluation JSONs, any depth)")  # fmt: skip
    p.add_argument("--out", type=str, required=True, help="folder for report.md, PNGs, report.json")
    p.add_argument("--alpha", type=float, default=0.05, help="level of the NIGHTS z-tests")
    p.add_argument("--title", type=str, default="procvision report")
    return p


def run(cfg: Namespace) -> int:
    return run_reporting(PROG, _run, cfg, extra=PATH_ERRORS)


def _run(cfg: Namespace) -> int:
    runs = [r for group in cfg.runs for r in (group if isinstance(group, list) else [group])]
    out = build_report(runs, cfg.out, cfg.alpha, cfg.title)
    print(f"{out['runs']} models; wrote {out['markdown']}, {out['json']}"
          + (f" and {len(out['plots'])} plot(s)" if out["plots"] else ""))  # fmt: skip
    return 0
