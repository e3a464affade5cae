"""Checkpoints: round trips, torch.compile prefixes, atomic writes, and clear errors."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch

from lmcli.errors import LmcliError
from lmcli.model import ModelConfig, TransformerLM
from lmcli.training import AdamW, cross_entropy, load_checkpoint, load_model_from_checkpoint, save_checkpoint

TINY = ModelConfig(vocab_size=64, context_length=16, d_model=32, num_layers=2, num_heads=2, d_ff=64)



def _trained(seed: int = 0):
    torch.manual_seed(seed)
    model = TransformerLM.from_config(TINY)
    optimizer = AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(TINY.vocab_size, (2, TINY.context_length + 1))
    cross_entropy(model(ids[:, :-1]), ids[:, 1:]).backward()
    optimizer.step()
    return model, optimizer


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("to_file_object", [False, True])
def test_save_and_load_restore_model_optimizer_and_iteration(tmp_path, to_file_object):
    model, optimizer = _trained(0)
    target = io.BytesIO() if to_file_object else tmp_path / "ckpt.pt"
    save_checkpoint(model, optimizer, 123, target)
    if to_file_object:
        target.seek(0)
    fresh, fresh_optimizer = _trained(1)
    assert not _same_state(model, fresh)
    assert load_checkpoint(target, fresh, fresh_optimizer) == 123
    assert _same_state(model, fresh)
    saved, loaded = optimizer.state_dict()["state"], fresh_optimizer.state_dict()["state"]
    assert all(torch.equal(saved[k]["exp_avg_sq"], loaded[k]["exp_avg_sq"]) for k in saved)


def test_a_compiled_model_saves_plain_keys_and_loads_into_an_uncompiled_one(tmp_path):
    model, optimizer = _trained(0)
    compiled = torch.compile(model)  # wrapping only; nothing is compiled until it is called
    assert next(iter(compiled.state_dict())).startswith("_orig_mod.")
    save_checkpoint(compiled, optimizer, 5, tmp_path / "ckpt.pt")
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod.") for k in saved["model"])
    plain, plain_optimizer = _trained(1)
    load_checkpoint(tmp_path / "ckpt.pt", plain, plain_optimizer)
    assert _same_state(model, plain)
    # and a state dict with the prefix (saved by other tools) loads too, into a compiled model
    torch.save({**saved, "model": {f"_orig_mod.{k}": v for k, v in saved["model"].items()}}, tmp_path / "prefixed.pt")
    other, other_optimizer = _trained(2)
    load_checkpoint(tmp_path / "prefixed.pt", torch.compile(other), other_optimizer)
    assert _same_state(model, other)


def test_a_failure_during_save_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    model, optimizer = _trained(0)
    path = tmp_path / "latest.pt"
    save_checkpoint(model, optimizer, 10, path)
    real_save = torch.save

    def save_half_then_die(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        with open(f, "wb") as out:
            out.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # a partial file on disk...
        raise OSError("No space left on device")  # ...then the failure

    monkeypatch.setattr(torch, "save", save_half_then_die)
    newer, newer_optimizer = _trained(1)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(newer, newer_optimizer, 20, path)
    monkeypatch.undo()
    restored, restored_optimizer = _trained(2)
    assert load_checkpoint(path, restored, restored_optimizer) == 10
    assert _same_state(model, restored)
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]  # no temporary file left behind


def test_a_checkpoint_replaced_while_it_is_read_is_read_again_whole(tmp_path, monkeypatch):
    """torch memory-maps a path by opening it a second time: a training process that saves latest.pt
    (write, then rename) between the two opens must not make the reader see a mix of two files."""
    model, optimizer = _trained(0)
    path = tmp_path / "latest.pt"
    save_checkpoint(model, optimizer, 10, path)
    newer, newer_optimizer = _trained(1)
    save_checkpoint(newer, newer_optimizer, 20, tmp_path / "newer.pt")
    real_from_file = torch.UntypedStorage.from_file
    replaced = []

    def replace_then_map(filename, *args, **kwargs):
        if not replaced:  # the saver's rename lands between torch's two opens, once
            (tmp_path / "newer.pt").replace(path)
            replaced.append(filename)
        return real_from_file(filename, *args, **kwargs)

    monkeypatch.setattr(torch.UntypedStorage, "from_file", replace_then_map)
    restored, restored_optimizer = _trained(2)
    assert load_checkpoint(path, restored, restored_optimizer) == 20
    assert replaced and _same_state(newer, restored)


def test_reading_a_missing_or_foreign_file_is_a_clear_error(tmp_path):
    model, optimizer = _trained(0)
    with pytest.raises(LmcliError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt", model, optimizer)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(LmcliError, match="is not an lmcli checkpoint"):
        load_model_from_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(LmcliError, match="is not an lmcli checkpoint"):
        load_model_from_checkpoint(tmp_path / "other.pt")
    save_checkpoint(model, optimizer, 1, tmp_path / "bare.pt")  # API checkpoint: no model config inside
    with pytest.raises(LmcliError, match="has no 'model_config'"):
        load_model_from_checkpoint(tmp_path / "bare.pt")


def test_load_model_from_checkpoint_rebuilds_the_model_from_its_config(tmp_path):
    model, optimizer = _trained(0)
    save_checkpoint(model, optimizer, 7, tmp_path / "ckpt.pt", extra={"model_config": dataclasses.asdict(TINY)})
    loaded, config, checkpoint = load_model_from_checkpoint(tmp_path / "ckpt.pt", "cpu")
    assert config == TINY and checkpoint["iteration"] == 7 and not loaded.training
    ids = torch.randint(TINY.vocab_size, (1, 8))
    torch.testing.assert_close(loaded(ids), model(ids))


def test_a_checkpoint_is_written_in_the_background_from_a_snapshot(tmp_path, monkeypatch):
    """Training goes on while the file is written: what is written is the state at the save, and
    best.pt holds the weights only."""
    import time

    import lmcli.training.checkpointer as checkpointer_module
    from lmcli.training.checkpoint import read_checkpoint
    from lmcli.training.checkpointer import Checkpointer
    from lmcli.training.config import config_from_dict
    from lmcli.training.state import TrainState

    config = config_from_dict({"model": {"vocab_size": 64, "context_length": 8, "d_model": 16, "num_layers": 1,
                                         "num_heads": 2, "d_ff": 32}, "training": {"max_steps": 10}, "optimizer": {"warmup_steps": 1}})
    state = TrainState.create(config, torch.device("cpu"))
    state.step = 3
    slow_write = checkpointer_module.write_checkpoint

    def slowly(entries, path):
        time.sleep(0.3)  # the training step below happens meanwhile
        slow_write(entries, path)

    monkeypatch.setattr(checkpointer_module, "write_checkpoint", slowly)
    checkpointer = Checkpointer(tmp_path, config, {"dir": "tok", "fingerprint": "x"})
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    checkpointer.save_latest(state)
    assert not (tmp_path / "latest.pt").exists()  # still being written: the save returned at once
    with torch.no_grad():
        for p in state.model.parameters():
            p.add_(1.0)  # the next optimizer step, in place
    checkpointer.save_best(state)  # waits for latest.pt first
    checkpointer.wait()
    latest, best = read_checkpoint(tmp_path / "latest.pt"), read_checkpoint(tmp_path / "best.pt")
    for k, v in before.items():
        torch.testing.assert_close(latest["model"][k], v)
        torch.testing.assert_close(best["model"][k], v + 1.0)
    assert "optimizer" in latest and "optimizer" not in best and "rng" not in best
    assert checkpointer.saved_step == 3
