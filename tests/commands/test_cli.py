"""CLI basics: help, version, and the data demo command."""

from __future__ import annotations

import json
import os
import re

import typer.main

from lmcli import __version__


def test_cli_help(cli):
    result = cli("--help")
    assert result.exit_code == 0 and "Usage" in result.stdout


def command_paths(command, path=()):
    """Every command of the app as its words after ``lmcli``, with the command."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from command_paths(sub, (*path, name))


def test_every_bracketed_word_of_the_help_is_shown(cli):
    """Rich takes [word] for a style tag and drops it: "needs lmcli[data]" once read "needs lmcli"."""
    from lmcli.cli import app

    for path, command in command_paths(typer.main.get_command(app)):
        texts = [command.help or "", *(getattr(p, "help", None) or "" for p in command.params)]
        words = {m.group(1) for text in texts for m in re.finditer(r"\\?(\[[a-z]+\])", text)}
        if words:
            shown = " ".join(cli(*path, "--help").stdout.replace("│", " ").split())
            for word in words:
                assert word in shown, f"lmcli {' '.join(path)} --help lost {word}"


def test_cli_version(cli):
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"lmcli {__version__}"


def test_cli_data_demo_writes_both_splits(cli, tmp_path):
    result = cli("data", "demo", "--json")
    assert result.exit_code == 0, result.output
    splits = json.loads(result.stdout)["splits"]
    assert set(splits) == {"train", "valid"}
    for info in splits.values():
        assert os.path.getsize(info["path"]) == info["bytes"] > 100_000 * (info["stories"] >= 1000)
    table = cli("data", "demo")
    assert table.exit_code == 0 and "demo-train.txt" in table.stdout
