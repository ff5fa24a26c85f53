"""The `procvision` command.

`procvision fit|validate|test|predict` go to LightningCLI (training and evaluation of models);
`procvision generate|memory|privacy|segment` are tool commands, each a jsonargparse parser in
`procvision.commands`.
"""

from __future__ import annotations

import importlib
import sys

# tool command -> module in procvision.commands exposing `build_parser()` and `run(cfg)`
TOOL_COMMANDS = {
    "generate": "procvision.commands.generate",
    "memory": "procvision.commands.memory",
    "privacy": "procvision.commands.privacy",
    "segment": "procvision.commands.segment",
    "serve": "procvision.commands.serve",
}


def run_tool(name: str, argv: list[str]) -> int:
    """Parse `argv` with the tool's parser and run it; returns the exit code."""
    module = importlib.import_module(TOOL_COMMANDS[name])
    parser = module.build_parser()
    cfg = parser.parse_args(argv)
    return int(module.run(cfg) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOL_COMMANDS:
        return run_tool(argv[0], argv[1:])
    from procvision.lightning_cli import run_lightning_cli

    run_lightning_cli(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
