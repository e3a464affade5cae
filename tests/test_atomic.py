"""Atomic writes: a failed write leaves the old file and no temporary file."""

from __future__ import annotations

import os

import pytest

from lmcli.atomic import atomic_open


def test_atomic_open_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["result.txt"], "no temporary file left behind"
    with atomic_open(target) as f:
        f.write("new")
    assert target.read_text() == "new"
