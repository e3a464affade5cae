"""CLI basics: help, version, and the data demo command."""

from __future__ import annotations

import json
import os

from lmcli import __version__


def test_cli_help(cli):
    result = cli("--help")
    assert result.exit_code == 0 and "Usage" in result.stdout


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
