"""`procvision --help` and an unknown command list every command with a one-line summary."""

import subprocess
import sys

import pytest

from procvision.cli import LIGHTNING_COMMANDS, TOOL_COMMANDS, command_names, main

EVERY = ["fit", "validate", "test", "predict", "generate", "memory", "privacy", "segment"]


@pytest.mark.parametrize("argv", [["--help"], ["-h"], []])
def test_help_lists_every_command_with_a_summary(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    for name in EVERY:
        line = next(ln for ln in out.splitlines() if ln.split()[:1] == [name])
        assert len(line.split()) > 2, line  # a summary after the name
    assert set(EVERY) <= set(command_names())


def test_every_registered_tool_is_importable_and_summarised():
    import importlib

    for name, (module, summary) in TOOL_COMMANDS.items():
        mod = importlib.import_module(module)
        assert callable(mod.build_parser) and callable(mod.run), name
        assert summary and "\n" not in summary
    assert all(s and "\n" not in s for s in LIGHTNING_COMMANDS.values())


def test_unknown_command_lists_the_commands_and_exits_2(capsys):
    assert main(["fitt"]) == 2
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith("procvision: error: unknown command 'fitt'")
    assert all(name in first for name in EVERY)


def test_help_through_the_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "procvision.cli", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "generate" in proc.stdout and "fit" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "procvision.cli", "nope"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "segment" in proc.stderr


def test_a_lightning_command_keeps_its_own_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--help"])
    assert info.value.code == 0
    assert "--trainer" in capsys.readouterr().out
