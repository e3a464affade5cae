"""A compiled run compiles a fixed number of graphs: the model with gradients (training, the loss
inside), the model without (evaluation, every batch padded to the training shape), and the AdamW
update of each parameter group; no graph breaks and no recompiles. Checked with dynamo's own counters, with the aot_eager backend (the graphs are
dynamo's; inductor would only take minutes longer to turn them into kernels)."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import lmcli.training.device as device
from tests.training.test_run import byte_workspace


@pytest.fixture
def aot_eager(monkeypatch):
    """torch.compile as lmcli calls it, but with the aot_eager backend; dynamo's counters from zero."""
    compile_ = torch.compile

    def with_aot_eager(model, **options):
        assert options.get("dynamic") is False  # fixed shapes: what makes "never recompiles" hold
        return compile_(model, **{**options, "backend": "aot_eager"})

    monkeypatch.setattr(torch, "compile", with_aot_eager)
    monkeypatch.setattr(device, "TORCH_DIR", "/no/spaces")  # aot_eager builds no C++: any path works
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("kernels", ["fast", "torch"])
def test_a_compiled_run_compiles_once_for_training_and_once_for_evaluation(cli, tmp_path, aot_eager, kernels):
    byte_workspace(tmp_path)
    # 7 final-evaluation windows in batches of 4: the last one is padded
    result = cli("train", "--config", tmp_path / "tiny.toml", "--name", "compiled", "--set", "system.compile=on",
                 "--set", f"model.kernels={kernels}", "--set", "training.max_steps=12",
                 "--set", "training.final_eval_tokens=112")
    assert result.exit_code == 0, result.output
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    # the model with gradients, the model without (evaluation), the AdamW update of each of the 2 parameter groups
    assert counters["stats"]["unique_graphs"] == 4, dict(counters["stats"])
