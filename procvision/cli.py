"""The `procvision` command.

`procvision fit|validate|test|predict` go to LightningCLI (training and evaluation of models);
the tool commands (`generate`, `memory`, `privacy`, `segment`, ...) are each a jsonargparse parser
in `procvision.commands`, registered in `TOOL_COMMANDS` with a one-line summary. `procvision`,
`procvision -h` and an unknown command list every command.
"""

from __future__ import annotations

import importlib
import sys

from procvision.commands._common import fail, run_reporting
from procvision.errors import UserError

PROG = "procvision"

# LightningCLI subcommands -> one-line summary
LIGHTNING_COMMANDS = {
    "fit": "train a DINO model on procedural or folder images (--config configs/*.yaml)",
    "validate": "evaluate a model with the evaluation callbacks of a config (k-NN, ...)",
    "test": "run a config's test loop on a model",
    "predict": "embed a dataset with a model's teacher backbone",
}

# tool command -> (module in procvision.commands exposing `build_parser()` and `run(cfg)`, summary)
TOOL_COMMANDS: dict[str, tuple[str, str]] = {
    "generate": (
        "procvision.commands.generate",
        "preview grids and JPEG exports of the procedural image families",
    ),
    "memory": (
        "procvision.commands.memory",
        "build, add to, forget from, inspect and classify with a visual memory",
    ),
    "privacy": (
        "procvision.commands.privacy",
        "privacy and unlearning checks of a visual memory",
    ),
    "segment": (
        "procvision.commands.segment",
        "segmentation with frozen features: R^2, in-context, k-NN, K-means, Gestalt",
    ),
    "linear": (
        "procvision.commands.linear",
        "linear probe on frozen features beside k-NN (paper App. B.2)",
    ),
    "medmnist": (
        "procvision.commands.medmnist",
        "k-NN on the ten MedMNIST 2D sets (paper Table 3)",
    ),
    "report": (
        "procvision.commands.report",
        "the paper's tables and plots from evaluation JSONs of several runs",
    ),
    "serve": (
        "procvision.commands.serve",
        "the visual memory as an HTTP service with a web explorer (classify, explain, edit)",
    ),
}


def command_names() -> list[str]:
    """Every command of `procvision`, Lightning's first."""
    return [*LIGHTNING_COMMANDS, *TOOL_COMMANDS]


def commands_help() -> str:
    """The list of commands with their one-line summaries, as `procvision --help` prints it."""
    width = max(len(n) for n in command_names()) + 2
    lines = [
        f"usage: {PROG} COMMAND [options]   ({PROG} COMMAND --help for a command's options)",
        "",
        "training and evaluation of models (LightningCLI):",
        *(f"  {n:<{width}}{s}" for n, s in LIGHTNING_COMMANDS.items()),
        "",
        "tools:",
        *(f"  {n:<{width}}{s}" for n, (_, s) in TOOL_COMMANDS.items()),
    ]
    return "\n".join(lines) + "\n"


def run_tool(name: str, argv: list[str]) -> int:
    """Parse `argv` with the tool's parser and run it; returns the exit code."""
    module = importlib.import_module(TOOL_COMMANDS[name][0])
    parser = module.build_parser()
    cfg = parser.parse_args(argv)
    return int(module.run(cfg) or 0)


def user_error_cause(err: BaseException) -> UserError | None:
    """The UserError that `err` is or was raised from (jsonargparse wraps errors raised while it
    instantiates classes in ValueErrors), or None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _lightning(argv: list[str]) -> int:
    from procvision.lightning_cli import run_lightning_cli

    try:
        run_lightning_cli(argv)
    except Exception as err:
        cause = user_error_cause(err)
        if cause is None or cause is err:
            raise
        raise cause from err
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(commands_help())
        return 0
    name = argv[0]
    if name in TOOL_COMMANDS:
        return run_tool(name, argv[1:])
    if name.startswith("-") or name in LIGHTNING_COMMANDS:
        # a user error (bad --ckpt_path, batch size, crop size, ...) is one line, exit 2
        return run_reporting(f"{PROG} {name}", _lightning, argv)
    return fail(
        PROG,
        f"unknown command {name!r}; valid commands: {', '.join(command_names())}\n"
        + commands_help(),
    )


if __name__ == "__main__":
    sys.exit(main())
