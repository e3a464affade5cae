"""Shared test helpers: the CS336 fixtures in ../shared (skipped when absent) and a CLI runner."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]  # pytest puts it on sys.path: tests import benchmarks/ scripts
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"
# rich's consoles take COLUMNS as a fixed width when they are made; a value the test runner passes
# on (pytest-xdist's workers get 80) would then hold for every test. Without it they follow the
# COLUMNS a test sets (the ``cli`` fixture's 200), as in a plain run.
os.environ.pop("COLUMNS", None)
# A suite started in the background of a script (`make test &`, nohup) inherits Ctrl-C ignored, and so
# would every lmcli it starts (an ignored signal stays ignored across exec; Python keeps it so): the
# tests of Ctrl-C then saw sweeps run on through it. They expect what a terminal gives.
signal.signal(signal.SIGINT, signal.default_int_handler)
# The same for the lmcli processes the tests start (trials, wheels, launchers): set before torch is
# imported, so they inherit it. Two threads each, beside pytest-xdist's other worker on two cores,
# made a tiny model's sweep trial train 10x slower than one thread does.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The suite's models are tiny: one thread is fastest for them, and two threads on a busy
    2-core machine spin-wait for each other (45x slower steps were seen). (OMP_NUM_THREADS, set
    above, does this for the processes the tests start.)"""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def fixtures() -> Path:
    """The CS336 fixture directory; tests that need it skip when ../shared is not beside the checkout."""
    if not FIXTURES.is_dir():
        pytest.skip(f"CS336 fixtures not found at {FIXTURES} (../shared is absent)")
    return FIXTURES


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Invoke ``lmcli`` in-process with a fresh workspace; returns (result) of CliRunner.invoke."""
    from lmcli.cli import app

    monkeypatch.setenv("LMCLI_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    return invoke
