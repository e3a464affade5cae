"""`lmcli train` end to end on a tiny model: run directory, resume, Ctrl-C, divergence, bad inputs."""

from __future__ import annotations

import json
import math
import random
import signal
import sys
import types

import numpy as np
import pytest
import torch

from lmcli.tokenizer.files import save_tokenizer
from lmcli.training import load_model_from_checkpoint
from lmcli.training.checkpoint import read_checkpoint
from lmcli.training.config import load_config
from lmcli.training.device import setup_runtime
from lmcli.training.loop import StopRequest, Throughput, training_flops_per_token
from lmcli.training.observers import TrainObserver
from lmcli.training.run import RunSpec, run_training
from lmcli.workspace import Workspace

TINY_CONFIG = """
[model]
vocab_size = 256
context_length = 16
d_model = 32
num_layers = 2
num_heads = 2
d_ff = 64

[optimizer]
lr = 1e-2
min_lr = 1e-3
warmup_steps = 5
no_decay = ["*ln*", "token_embeddings.weight"]

[training]
batch_size = 4
max_steps = 40
log_interval = 1
eval_interval = 10
eval_batches = 2
checkpoint_interval = 10

[system]
device = "cpu"
"""



def _text(n_words: int, seed: int) -> bytes:
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "park", "with", "ball"]
    return " ".join(rng.choice(words) for _ in range(n_words)).encode()


def byte_workspace(root):
    """``root/workspace`` with a byte-level tokenizer (256 tokens) and byte ids of a small text as data,
    and the tiny config as ``root/tiny.toml``."""
    ws = root / "workspace"
    save_tokenizer(ws / "tokenizer", {i: bytes([i]) for i in range(256)}, [], [])
    (ws / "data").mkdir()
    np.save(ws / "data" / "train.npy", np.frombuffer(_text(4000, 0), dtype=np.uint8).astype(np.uint16))
    np.save(ws / "data" / "valid.npy", np.frombuffer(_text(500, 1), dtype=np.uint8).astype(np.uint16))
    (root / "tiny.toml").write_text(TINY_CONFIG)
    return ws


@pytest.fixture
def workspace(tmp_path):
    return byte_workspace(tmp_path)


@pytest.fixture
def config(tmp_path) -> str:
    return str(tmp_path / "tiny.toml")


def _rows(run_dir, kind):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == kind]


def test_train_writes_a_complete_run_directory_and_a_json_summary(cli, workspace, config):
    result = cli("train", "--config", config, "--name", "tiny", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    run_dir = workspace / "runs" / "tiny"
    assert summary["run_dir"] == str(run_dir) and summary["steps"] == 40 and summary["tokens"] == 40 * 4 * 16
    assert sorted(p.name for p in run_dir.iterdir()) == ["best.pt", "config.toml", "latest.pt", "metrics.jsonl", "train.log"]
    train_rows = _rows(run_dir, "train")
    assert [r["step"] for r in train_rows] == list(range(1, 41))
    assert {"tokens", "elapsed_s", "lr", "loss", "grad_norm", "tokens_per_s", "mfu"} <= set(train_rows[0])
    assert train_rows[0]["mfu"] is None  # CPU without training.peak_flops: no MFU
    evals = _rows(run_dir, "eval")
    assert [r["step"] for r in evals] == [10, 20, 30, 40]
    assert all(r["val_perplexity"] == pytest.approx(math.exp(r["val_loss"])) for r in evals)
    (final,) = _rows(run_dir, "final_eval")
    assert final["val_loss"] == pytest.approx(summary["final_val_loss"])
    # 40 steps of a 2-layer model already beat predicting bytes by their frequency alone
    assert summary["final_val_loss"] < summary["unigram_entropy"] < math.log(256)
    assert "unigram entropy" in (run_dir / "train.log").read_text()

    model, model_config, checkpoint = load_model_from_checkpoint(run_dir / "latest.pt")
    assert model_config.d_model == 32 and checkpoint["iteration"] == 40
    assert checkpoint["tokenizer"]["dir"] == str((workspace / "tokenizer").resolve())
    assert checkpoint["config"]["training"]["max_steps"] == 40
    assert read_checkpoint(run_dir / "best.pt")["best_val_loss"] == min(r["val_loss"] for r in evals)


def test_resume_after_an_interrupt_continues_bit_for_bit(cli, workspace, config):
    run_training(RunSpec(config=config, name="straight"), Workspace(workspace))

    class CtrlCAtStep20(TrainObserver):
        def on_step(self, step: int) -> None:
            if step == 20:
                signal.raise_signal(signal.SIGINT)  # what the terminal sends; the loop finishes the step first

    with pytest.raises(KeyboardInterrupt):
        run_training(RunSpec(config=config, name="split"), Workspace(workspace), [CtrlCAtStep20()])
    assert read_checkpoint(workspace / "runs" / "split" / "latest.pt")["iteration"] == 20
    result = cli("train", "--resume", "split", "--quiet")
    assert result.exit_code == 0, result.output

    straight, split = workspace / "runs" / "straight", workspace / "runs" / "split"
    for kind, keys in (("train", ("step", "lr", "loss", "grad_norm")), ("eval", ("step", "val_loss"))):
        assert [[r[k] for k in keys] for r in _rows(straight, kind)] == [[r[k] for k in keys] for r in _rows(split, kind)]
    a, b = read_checkpoint(straight / "latest.pt"), read_checkpoint(split / "latest.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_ctrl_c_saves_a_checkpoint_and_exits_130(cli, workspace, config, monkeypatch):
    import lmcli.training.loop as loop

    real_learning_rate = loop.learning_rate

    def press_ctrl_c_at_step_7(config, step):
        if step == 7:
            signal.raise_signal(signal.SIGINT)  # what the terminal sends; the loop finishes the step first
        return real_learning_rate(config, step)

    monkeypatch.setattr(loop, "learning_rate", press_ctrl_c_at_step_7)
    result = cli("train", "--config", config, "--name", "stopped")
    assert result.exit_code == 130
    assert "interrupted" in result.stderr and "--resume" in result.stderr
    run_dir = workspace / "runs" / "stopped"
    assert read_checkpoint(run_dir / "latest.pt")["iteration"] == 7
    assert _rows(run_dir, "interrupted") == [{"kind": "interrupted", "step": 7}]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(cli, workspace, config, monkeypatch):
    import lmcli.model.transformer as transformer

    real_loss, training_calls = transformer.loss_and_z_term, []

    def nan_from_step_26(x, weight, targets, *args, **options):
        loss, z_term = real_loss(x, weight, targets, *args, **options)
        if torch.is_grad_enabled():  # a training step, not an evaluation
            training_calls.append(1)
            if len(training_calls) >= 26:
                return loss * float("nan"), z_term
        return loss, z_term

    monkeypatch.setattr(transformer, "loss_and_z_term", nan_from_step_26)
    result = cli("train", "--config", config, "--name", "nan")
    assert result.exit_code == 1
    assert "training diverged at step 26" in result.stderr and "latest.pt (step 20) is kept" in result.stderr
    assert "Traceback" not in result.output
    run_dir = workspace / "runs" / "nan"
    checkpoint = read_checkpoint(run_dir / "latest.pt")
    assert checkpoint["iteration"] == 20
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    assert _rows(run_dir, "diverged")[0]["step"] == 26


def _write_ids(workspace, name: str, ids) -> None:
    np.save(workspace / "data" / name, np.asarray(ids, dtype=np.uint16))


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (lambda ws: _write_ids(ws, "train.npy", [1, 2, 300] * 100), [],
         "contains token id 300, outside the model's vocabulary of 256"),
        (lambda ws: (ws / "data" / "valid.npy").unlink(), [], "validation data file"),
        (lambda ws: _write_ids(ws, "train.npy", []), [], "is empty"),
        (lambda ws: (ws / "data" / "train.npy").write_text("not numpy"), [], "is not a .npy file (a text file?"),
        (lambda ws: _write_ids(ws, "valid.npy", range(50)), ["--set", "model.context_length=64"],
         "has 50 tokens, fewer than the 65 one context window needs"),
        (lambda ws: None, ["--set", "model.vocab_size=128"], "has 256 tokens but model.vocab_size is 128"),
        (lambda ws: None, ["--set", "model.vocab_size=512"], "has 256 tokens but model.vocab_size is 512"),
        (lambda ws: None, ["--set", "data.tokenizer=elsewhere"], "tokenizer directory"),
        (lambda ws: None, ["--set", "training.bogus=1"], "unknown key training.bogus"),
        (lambda ws: None, ["--set", "training.batch_size=big"], "training.batch_size must be an integer"),
        (lambda ws: None, ["--set", "model.d_model=33"], "must divide model.d_model"),
        (lambda ws: None, ["--set", "optimizer.no_decay=['norms']"], "'norms' matches no parameter"),
        (lambda ws: None, ["--device", "tpu"], "system.device must be one of"),
    ],
)
def test_bad_input_is_a_one_line_error_before_any_step(cli, workspace, config, setup, args, message):
    setup(workspace)
    result = cli("train", "--config", config, "--name", "bad", *args)
    assert result.exit_code == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and message in last_line
    assert "Traceback" not in result.output
    assert not (workspace / "runs" / "bad" / "latest.pt").exists()
    assert not (workspace / "runs" / "bad" / "metrics.jsonl").read_text() if (workspace / "runs" / "bad").exists() else True


def test_command_line_mistakes_are_clear_errors(cli, workspace, config, monkeypatch):
    assert "give either --config" in cli("train").stderr
    assert "give either --config" in cli("train", "--config", config, "--resume", "x").stderr
    assert "no run directory nowhere" in cli("train", "--resume", "nowhere").stderr
    assert "config nope.toml does not exist" in cli("train", "--config", "nope.toml").stderr
    assert "--set 'lr=1'" in cli("train", "--config", config, "--set", "lr=1").stderr
    monkeypatch.setitem(sys.modules, "wandb", None)  # the package is not installed
    result = cli("train", "--config", config, "--name", "w", "--wandb")
    assert result.exit_code == 1 and "pip install wandb" in result.stderr
    assert not (workspace / "runs" / "w").exists()


def test_an_existing_run_name_is_refused_and_a_finished_run_cannot_resume_without_more_steps(cli, workspace, config):
    assert cli("train", "--config", config, "--name", "r", "--set", "training.max_steps=10", "-q").exit_code == 0
    again = cli("train", "--config", config, "--name", "r")
    assert again.exit_code == 1 and "already exists" in again.stderr
    done = cli("train", "--resume", "r")
    assert done.exit_code == 1 and "already finished its 10 steps" in done.stderr
    longer = cli("train", "--resume", "r", "--set", "training.max_steps=15", "--json")
    assert longer.exit_code == 0, longer.output
    assert json.loads(longer.stdout)["steps"] == 15
    changed = cli("train", "--resume", "r", "--set", "model.d_model=64", "--set", "training.max_steps=20")
    assert changed.exit_code == 1 and "cannot change it" in changed.stderr


def test_mfu_is_reported_against_a_configured_peak(cli, workspace, config):
    from lmcli.accounting import forward_flops
    from lmcli.training import load_config

    result = cli("train", "--config", config, "--name", "mfu", "-q", "--set", "training.max_steps=10",
                 "--set", "training.peak_flops=1e12")
    assert result.exit_code == 0, result.output
    model = load_config(config).model
    flops_per_token = 3 * forward_flops(model, 16)["total"] / 16
    for row in _rows(workspace / "runs" / "mfu", "train"):
        assert row["mfu"] == pytest.approx(row["tokens_per_s"] * flops_per_token / 1e12, rel=1e-3)


def test_wandb_receives_the_config_and_every_row(cli, workspace, config, monkeypatch):
    inits, logged = [], []

    class FakeRun:
        def log(self, values, step):
            logged.append((step, values))

        def finish(self):
            logged.append("finished")

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: inits.append(kw) or FakeRun()))
    result = cli("train", "--config", config, "--name", "wb", "-q", "--wandb", "--set", "training.max_steps=10")
    assert result.exit_code == 0, result.output
    (init,) = inits
    assert init["project"] == "lmcli" and init["name"] == "wb" and init["config"]["model"]["d_model"] == 32
    assert [step for step, values in logged[:-1] if "train/loss" in values] == list(range(1, 11))
    assert [step for step, values in logged[:-1] if "eval/val_loss" in values] == [10]
    assert logged[-1] == "finished"


def test_a_repeated_signal_is_one_request_unless_it_comes_a_second_later():
    with StopRequest() as stop:
        signal.raise_signal(signal.SIGINT)  # Ctrl-C from the terminal
        signal.raise_signal(signal.SIGINT)  # the launcher forwarding it: the same request
        assert stop.requested
        stop.requested_at -= 2 * StopRequest.REPEAT_S  # a second Ctrl-C, pressed later: stop at once
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


def test_mfu_of_several_processes_divides_by_all_their_devices(workspace, config):
    cfg = load_config(config)
    runtime = setup_runtime("cpu", "off", "off", peak_flops=1e12)
    for devices in (1, 2):
        tokens_per_s, mfu = Throughput(cfg, runtime, 0, devices).measure(10)
        assert mfu == pytest.approx(tokens_per_s * training_flops_per_token(cfg) / (devices * 1e12))


def test_the_first_step_is_left_out_of_the_next_rate(workspace, config, monkeypatch):
    """Compilation happens in the first step: 10 s there, then 1 s per step, must read as 1 s per step;
    a row of the first step alone (log_interval 1) can only report that step."""
    cfg = load_config(config)
    tokens = cfg.training.batch_size * cfg.model.context_length
    for times, row_step, rate in (([0.0, 10.0, 12.0], 3, 2 * tokens / 2.0), ([0.0, 10.0, 10.0], 1, tokens / 10.0)):
        clock = iter(times)  # start, end of step 1, the row
        monkeypatch.setattr("lmcli.training.loop.time.perf_counter", lambda: next(clock))
        meter = Throughput(cfg, setup_runtime("cpu", "off", "off", peak_flops=0), 0)
        meter.end_first_step(1)
        assert meter.first_step_s == 10.0
        assert meter.measure(row_step)[0] == pytest.approx(rate)


@pytest.mark.parametrize(("name", "bf16", "tf32"), [
    ("NVIDIA H100 80GB HBM3", 989e12, 495e12),
    ("NVIDIA H100 PCIe", 756e12, 378e12),
    ("NVIDIA H100 NVL", 835e12, 418e12),
    ("NVIDIA H200", 989e12, 495e12),
    ("NVIDIA A100-SXM4-80GB", 312e12, 156e12),
    ("NVIDIA L4", 121e12, 60e12),
    ("NVIDIA L40S", 362e12, 183e12),
    ("NVIDIA L40", 181e12, 90.5e12),
    ("NVIDIA A10G", 70e12, 35e12),
    ("NVIDIA GeForce RTX 4090", 165e12, 82.6e12),
    ("Some Future GPU", None, None),
])
def test_gpu_peaks_are_matched_by_the_exact_card(name, bf16, tf32):
    from lmcli.accounting.hardware import gpu_peak_flops

    assert (gpu_peak_flops(name, bf16=True), gpu_peak_flops(name, bf16=False)) == (bf16, tf32)


def test_peak_flops_option_gives_every_row_an_mfu(cli, workspace, config):
    result = cli("train", "--config", config, "--name", "mfu", "--peak-flops", "1e12", "--set", "training.max_steps=6")
    assert result.exit_code == 0, result.output
    rows = _rows(workspace / "runs" / "mfu", "train")
    assert rows and all(0 < r["mfu"] < 1 for r in rows)


def test_a_padded_vocabulary_trains_generates_and_exports_its_real_rows(cli, workspace, config):
    result = cli("train", "--config", config, "--name", "padded", "--set", "model.vocab_multiple=100",
                 "--set", "training.max_steps=6")
    assert result.exit_code == 0, result.output
    run_dir = workspace / "runs" / "padded"
    assert "padded from 256 to 300 rows" in (run_dir / "train.log").read_text()
    saved = read_checkpoint(run_dir / "latest.pt")
    assert saved["model"]["lm_head.weight"].shape[0] == 300 and saved["model_config"]["vocab_multiple"] == 100
    generated = cli("generate", "--prompt", "the cat", "--checkpoint", run_dir, "--max-tokens", "8", "--json")
    assert generated.exit_code == 0, generated.output
    exported = cli("export", str(run_dir), "--out", workspace / "hf")
    assert exported.exit_code == 0, exported.output
    from safetensors.torch import load_file

    assert json.loads((workspace / "hf" / "config.json").read_text())["vocab_size"] == 256
    tensors = load_file(workspace / "hf" / "model.safetensors")
    assert tensors["model.embed_tokens.weight"].shape[0] == tensors["lm_head.weight"].shape[0] == 256


def test_a_checkpoint_that_cannot_be_restored_is_one_line_and_changes_no_file(cli, workspace, config):
    """A key name damaged inside latest.pt (the checksum covers the tensors, not the names): the resume
    fails before the run directory is touched, with one line."""
    from lmcli.training.checkpoint import write_checkpoint

    assert cli("train", "--config", config, "--name", "keys", "--set", "training.max_steps=10").exit_code == 0
    run_dir = workspace / "runs" / "keys"
    saved = read_checkpoint(run_dir / "latest.pt")
    saved["model"] = {(" " + k[1:] if k == "token_embeddings.weight" else k): v for k, v in saved["model"].items()}
    write_checkpoint({k: v for k, v in saved.items() if k not in ("format", "version", "checksum")}, run_dir / "latest.pt")
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.iterdir()}
    result = cli("train", "--resume", run_dir, "--set", "training.max_steps=20")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be restored" in lines[0] and "oken_embeddings.weight" in lines[0], result.stderr
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.iterdir()} == before


def test_a_wsd_run_resumed_from_its_stable_phase_with_a_larger_budget_is_the_longer_run(cli, workspace, config):
    """What makes warmup-stable-decay worth having: the 20-step run's step-10 checkpoint (before its
    decay, which starts at step 16), continued to 40 steps, gives every loss of a 40-step run."""
    import shutil

    wsd = ["--set", "optimizer.schedule='wsd'", "--set", "optimizer.decay_fraction=0.2"]
    assert cli("train", "--config", config, "--name", "long", *wsd, "--set", "training.max_steps=40").exit_code == 0
    short = cli("train", "--config", config, "--name", "short", *wsd, "--set", "training.max_steps=20",
                "--set", "training.keep_interval=10")
    assert short.exit_code == 0, short.output
    runs = workspace / "runs"
    shutil.copytree(runs / "short", runs / "continued")
    shutil.copy(runs / "short" / "step-000010.pt", runs / "continued" / "latest.pt")
    resumed = cli("train", "--resume", runs / "continued", "--set", "training.max_steps=40")
    assert resumed.exit_code == 0, resumed.output

    def losses(name: str) -> dict[int, tuple[float, float]]:
        return {r["step"]: (r["loss"], r["lr"]) for r in _rows(runs / name, "train")}  # the resumed rows come last

    long, continued = losses("long"), losses("continued")
    assert [continued[s] for s in range(11, 41)] == [long[s] for s in range(11, 41)]
    assert losses("short")[20][1] < long[20][1]  # the short run had decayed by then; the continued one had not


def test_validation_rows_report_bits_per_byte(cli, workspace, config):
    """Byte-level ids: every token is one byte of text, so bits per byte is the loss in bits."""
    assert cli("train", "--config", config, "--name", "bpb", "--set", "training.max_steps=10").exit_code == 0
    run_dir = workspace / "runs" / "bpb"
    for kind in ("eval", "final_eval"):
        for row in _rows(run_dir, kind):
            assert row["val_bpb"] == pytest.approx(row["val_loss"] / math.log(2))
    final = _rows(run_dir, "final_eval")[-1]
    listed = json.loads(cli("runs", "--json").stdout)["runs"]
    assert [r["final_val_bpb"] for r in listed if r["name"] == "bpb"] == [final["val_bpb"]]
    evaluated = json.loads(cli("eval", "--checkpoint", str(run_dir), "--json").stdout)
    assert evaluated["bits_per_byte"] == pytest.approx(evaluated["loss"] / math.log(2))


def test_bits_per_byte_divides_by_the_text_each_id_stands_for(tmp_path):
    """Special tokens stand for no text; a merged token for its bytes; bpb = total nats / ln 2 / bytes."""
    from lmcli.training.data import text_bytes_per_id
    from lmcli.training.evaluator import mean_loss

    save_tokenizer(tmp_path, {0: b"a", 1: b"b", 2: b"ab", 3: b"abab", 4: b"<|endoftext|>"}, [], ["<|endoftext|>"])
    lengths = text_bytes_per_id(tmp_path)
    assert lengths.tolist() == [1, 1, 2, 4, 0]

    class ConstantLoss(torch.nn.Module):  # a "model" whose loss is 2 nats per token
        def forward(self, x, targets):
            return torch.tensor(2.0)

    y = torch.tensor([[0, 2, 3, 4], [1, 1, 2, 3]])  # 7 + 8 bytes of text over 8 tokens
    runtime = setup_runtime("cpu", "off", "off", 0.0)
    result = mean_loss(ConstantLoss(), [((y, y), 1.0)], runtime, rows=2, text_bytes=torch.as_tensor(lengths))
    assert result.loss == pytest.approx(2.0) and result.bits_per_byte == pytest.approx(2.0 * 8 / math.log(2) / 15)


def test_z_loss_is_trained_on_and_reported_apart_from_the_cross_entropy(cli, workspace, config):
    assert cli("train", "--config", config, "--name", "plain", "--set", "training.max_steps=6").exit_code == 0
    result = cli("train", "--config", config, "--name", "z", "--set", "training.max_steps=6", "--set", "training.z_loss=0.1")
    assert result.exit_code == 0, result.output
    plain, z = _rows(workspace / "runs" / "plain", "train"), _rows(workspace / "runs" / "z", "train")
    assert "z_loss" not in plain[0] and all(row["z_loss"] > 0 for row in z)
    # step 1's loss is computed before any update: the same cross-entropy, the z-loss term apart
    assert z[0]["loss"] == pytest.approx(plain[0]["loss"], abs=1e-5)
    assert z[1]["loss"] != plain[1]["loss"]  # the update differs: the z-loss was trained on
    result = cli("train", "--config", config, "--name", "bad", "--set", "training.z_loss=-1")
    assert result.exit_code == 1 and result.stderr == "error: training.z_loss must not be negative, got -1.0\n"


MIXTURE = """
[data]
train = [{path = "data/story.npy", weight = 3.0}, {path = ["data/code-*.npy"], weight = 1.0, name = "code"}]
valid = [{path = "data/valid.npy", name = "story"}, {path = "data/code-valid.npy", name = "code"}]
"""


def test_a_mixture_trains_reports_each_source_and_resumes_bit_for_bit(cli, workspace, config, tmp_path):
    data = workspace / "data"
    np.save(data / "story.npy", np.frombuffer(_text(3000, 2), dtype=np.uint8).astype(np.uint16))
    code = np.frombuffer(b"def f(x):\n    return x + 1\n" * 300, dtype=np.uint8).astype(np.uint16)
    np.save(data / "code-0.npy", code[:4000])
    np.save(data / "code-1.npy", code[4000:])
    np.save(data / "code-valid.npy", code[:2000])
    mixed = tmp_path / "mixed.toml"
    mixed.write_text(f'extends = "{config}"\n{MIXTURE}')
    assert cli("train", "--config", str(mixed), "--name", "straight").exit_code == 0

    class CtrlCAtStep20(TrainObserver):
        def on_step(self, step: int) -> None:
            if step == 20:
                signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        run_training(RunSpec(config=str(mixed), name="split"), Workspace(workspace), [CtrlCAtStep20()])
    assert cli("train", "--resume", "split", "--quiet").exit_code == 0
    straight, split = workspace / "runs" / "straight", workspace / "runs" / "split"
    assert [r["loss"] for r in _rows(straight, "train")] == [r["loss"] for r in _rows(split, "train")]
    evals = _rows(straight, "eval")
    assert all({"val_loss/code", "val_loss/story", "val_bpb/code"} <= set(row) for row in evals)
    final = _rows(straight, "final_eval")[-1]
    low, high = sorted((final["val_loss/code"], final["val_loss/story"]))
    assert low < final["val_loss"] < high  # the tokens of both, together
    listed = {r["name"]: r for r in json.loads(cli("runs", "--json").stdout)["runs"]}
    assert listed["straight"]["final_val_by_source"] == {"story": final["val_loss/story"], "code": final["val_loss/code"]}
    assert cli("plot", "straight", "--metric", "val_loss/code", "--terminal").exit_code == 0
    assert "unknown metric 'val_loss/'" in cli("plot", "straight", "--metric", "val_loss/").stderr
    assert cli("train", "--config", str(mixed), "--name", "bad", "--set",
               'data.train=[{path = "data/story.npy", weight = 0.0}]').stderr.startswith("error: data.train: every source's weight")
