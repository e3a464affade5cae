"""``--tensorboard``: a run's metrics rows also become TensorBoard scalars in its tensorboard/ folder."""

from __future__ import annotations

import json
import sys

import pytest

from tests.tiny import tiny_workspace

accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator", reason="the tensorboard extra")


def test_train_writes_every_row_as_scalars(cli, tmp_path):
    ws, config = tiny_workspace(tmp_path, steps=6, eval_interval=3, log_interval=2)
    result = cli("train", "--config", config, "--name", "tb", "--tensorboard", "--workspace", ws, "-q")
    assert result.exit_code == 0, result.stderr
    events = accumulator.EventAccumulator(str(ws / "runs" / "tb" / "tensorboard"))
    events.Reload()
    rows = [json.loads(line) for line in (ws / "runs" / "tb" / "metrics.jsonl").read_text().splitlines()]
    train = [(r["step"], r["loss"]) for r in rows if r["kind"] == "train"]
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("train/loss")] == train
    assert [e.step for e in events.Scalars("eval/val_loss")] == [3, 6]
    assert {"train/lr", "train/tokens_per_s", "final_eval/val_loss", "final_eval/val_bpb"} <= set(events.Tags()["scalars"])


def test_without_the_package_it_is_one_line_naming_the_extra(cli, tmp_path, monkeypatch):
    ws, config = tiny_workspace(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what an import finds when the package is not installed
    result = cli("train", "--config", config, "--name", "tb", "--tensorboard", "--workspace", ws)
    assert result.exit_code == 1
    assert "--tensorboard needs the tensorboard package: pip install 'lmcli[tensorboard]'" in result.stderr
    assert not (ws / "runs" / "tb").exists()
