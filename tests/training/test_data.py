"""Token files: checks before training, chunked scans, unigram entropy, evaluation windows; device choice."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import lmcli.training.data as data
import lmcli.training.device as device
from lmcli.data.token_files import open_token_ids
from lmcli.data.token_shards import TokenShards
from lmcli.errors import LmcliError
from lmcli.training.data import draw_positions, get_batch, read_batch, scan_tokens
from lmcli.training.device import pick_device, setup_runtime


def _memmap(tmp_path, ids, dtype=np.uint16) -> np.ndarray:
    np.save(tmp_path / "ids.npy", np.asarray(ids, dtype=dtype))
    return open_token_ids(tmp_path / "ids.npy", "training data", 2)


def test_scan_counts_across_chunks_and_finds_an_out_of_range_id_in_any_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SCAN_CHUNK", 7)  # many chunks, the last one short
    x = _memmap(tmp_path, [0, 1, 1, 2, 2, 2, 3] * 5 + [3, 3])
    stats = scan_tokens(x, tmp_path / "ids.npy", vocab_size=10)
    assert stats.count == 37 and stats.max_id == 3
    assert stats.counts[:4].tolist() == [5, 10, 15, 7]
    x = _memmap(tmp_path, [1] * 30 + [10] + [1] * 5)
    with pytest.raises(LmcliError, match="contains token id 10, outside the model's vocabulary of 10"):
        scan_tokens(x, tmp_path / "ids.npy", vocab_size=10)
    x = _memmap(tmp_path, [1] * 20 + [-1], dtype=np.int32)
    with pytest.raises(LmcliError, match="contains the negative token id -1"):
        scan_tokens(x, tmp_path / "ids.npy", vocab_size=10)


def test_unigram_entropy_in_nats():
    stats = scan_tokens(np.array([0, 1, 2, 3] * 4), Path("x.npy"), 8)
    assert stats.unigram_entropy() == pytest.approx(math.log(4))  # four equally frequent ids
    skewed = scan_tokens(np.array([0, 0, 0, 1]), Path("x.npy"), 8)
    assert skewed.unigram_entropy() == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))


@pytest.mark.parametrize(("ids", "message"), [
    (np.zeros((4, 4), dtype=np.uint16), "not 1-D token ids"),
    (np.zeros(10, dtype=np.float32), "not 1-D token ids"),
    (np.zeros(0, dtype=np.uint16), "is empty"),
    (np.zeros(1, dtype=np.uint16), "fewer than the 2 one context window needs"),
])
def test_open_token_ids_rejects_what_is_not_token_ids(tmp_path, ids, message):
    np.save(tmp_path / "ids.npy", ids)
    with pytest.raises(LmcliError, match=message):
        open_token_ids(tmp_path / "ids.npy", "training data", 2)
    with pytest.raises(LmcliError, match="does not exist"):
        open_token_ids(tmp_path / "missing.npy", "training data", 2)


def test_sequential_windows_cover_each_shard_once_in_order():
    shards = TokenShards([np.arange(103), np.arange(1000, 1025)])
    x, y = read_batch(shards, shards.sequential_positions(10), 10, "cpu")
    assert len(x) == 10 + 2  # 10 windows of 10 (+1 target) in 103 ids, 2 in 25
    assert torch.equal(x[:10].flatten(), torch.arange(100))
    assert torch.equal(x[10:].flatten(), torch.arange(1000, 1020))
    assert torch.equal(y, x + 1)  # no window straddles the two shards
    assert len(shards.prefix(30, 10).sequential_positions(10)) == 3
    assert len(shards.prefix(115, 10).sequential_positions(10)) == 11  # all 10 of the first shard, 1 of the second
    capped = shards.prefix(115, 10)
    assert np.array_equal(capped.read(capped.sequential_positions(10), 10)[-1], np.arange(1000, 1011))


def test_random_windows_of_shards_never_straddle_and_reach_every_start():
    shards = TokenShards([np.arange(50), np.arange(1000, 1013)])  # 40 + 3 starts for context 10
    assert shards.num_windows(10) == 43
    x, y = read_batch(shards, np.arange(43), 10, "cpu")
    assert torch.equal(y, x + 1)  # consecutive ids: inside one shard
    assert x[:, 0].tolist() == [*range(40), 1000, 1001, 1002]
    starts = read_batch(shards, draw_positions(shards, 2000, 10, torch.Generator().manual_seed(0)), 10, "cpu")[0][:, 0]
    assert set(starts.tolist()) == {*range(40), 1000, 1001, 1002}


def test_one_shard_draws_the_windows_get_batch_draws(tmp_path):
    x = _memmap(tmp_path, np.arange(500), dtype=np.uint32)
    positions = draw_positions(TokenShards([x]), 8, 16, torch.Generator().manual_seed(3))
    inputs, _ = read_batch(TokenShards([x]), positions, 16, "cpu")
    assert torch.equal(inputs, get_batch(x, 8, 16, "cpu", torch.Generator().manual_seed(3))[0])


def test_device_choice_is_checked(monkeypatch):
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in {"cuda", "mps", "cpu"}
    if not torch.cuda.is_available():
        with pytest.raises(LmcliError, match="device cuda is not available"):
            pick_device("cuda")
    runtime = setup_runtime("cpu", compile="auto", autocast="auto", peak_flops=0.0)
    assert (runtime.autocast, runtime.compile, runtime.peak_flops) == (False, False, None)  # CPU: plain float32
    monkeypatch.setattr(device, "TORCH_DIR", "/opt/venv/torch")
    assert setup_runtime("cpu", "on", "off", 1e12).compile and setup_runtime("cpu", "on", "off", 1e12).peak_flops == 1e12
    monkeypatch.setattr(device, "TORCH_DIR", "/home/a user/venv/torch")  # inductor's C++ build would fail there
    with pytest.raises(LmcliError, match=r"PyTorch lies under a path with spaces \(/home/a user/venv/torch\)"):
        setup_runtime("cpu", "on", "off", 1e12)


def test_auto_compiles_a_cpu_run_only_when_it_is_long_enough_and_can_build(monkeypatch, tmp_path):
    monkeypatch.setattr(device, "TORCH_DIR", "/opt/venv/torch")
    monkeypatch.setattr(device.shutil, "which", lambda name: "/usr/bin/c++")
    (tmp_path / "Python.h").touch()
    monkeypatch.setattr(device.sysconfig, "get_paths", lambda: {"include": str(tmp_path)})
    hours = device.CPU_FLOPS_PER_THREAD * torch.get_num_threads() * 3600  # an hour of eager training
    assert setup_runtime("cpu", "auto", "auto", 0.0, training_flops=hours).compile
    assert not setup_runtime("cpu", "auto", "auto", 0.0, training_flops=hours / 10).compile  # 6 minutes: it would not pay
    assert not setup_runtime("cpu", "off", "auto", 0.0, training_flops=hours).compile
    monkeypatch.setattr(device, "TORCH_DIR", "/home/a user/venv/torch")  # inductor could not build there: eager, silently
    assert not setup_runtime("cpu", "auto", "auto", 0.0, training_flops=hours).compile
    monkeypatch.setattr(device, "TORCH_DIR", "/opt/venv/torch")
    monkeypatch.setattr(device.shutil, "which", lambda name: None)  # no C++ compiler
    assert not setup_runtime("cpu", "auto", "auto", 0.0, training_flops=hours).compile
    monkeypatch.setattr(device.shutil, "which", lambda name: "/usr/bin/c++")
    monkeypatch.setattr(device.sysconfig, "get_paths", lambda: {"include": "/nowhere"})  # no Python headers
    assert not setup_runtime("cpu", "auto", "auto", 0.0, training_flops=hours).compile


def test_a_mixture_draws_its_sources_by_weight_and_windows_uniformly_within_each():
    from lmcli.data.token_shards import ShardGroup

    arrays = [np.arange(1000), np.arange(500), np.arange(1500)]  # source a: the first; b: the other two
    data = TokenShards(arrays, groups=[ShardGroup("a", 0.7, 1), ShardGroup("b", 0.3, 2)])
    assert list(data.group_windows(10)) == [990, 490 + 1490]
    positions = draw_positions(data, 40_000, 10, torch.Generator().manual_seed(0))
    share_a = np.mean(positions < 990)
    assert abs(share_a - 0.7) < 0.01  # 4 standard deviations: 0.0092
    in_b = positions[positions >= 990] - 990
    assert abs(np.mean(in_b < 490) - 490 / 1980) < 0.015  # uniform over b's windows, both shards
    assert positions.max() < data.num_windows(10)
    again = draw_positions(data, 40_000, 10, torch.Generator().manual_seed(0))
    assert np.array_equal(positions, again)  # one seeded stream
