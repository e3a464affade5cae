"""Every command, called through the CLI with damaged files and numbers of any size: it works, or
it exits non-zero with one ``error:`` line, no traceback, and no file created or changed."""

from __future__ import annotations

import math
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.common import FUZZ, assert_works_or_fails_cleanly, damaged, make_workspace, numbers, replaced, snapshot

FEWER = settings(FUZZ, max_examples=15)  # for commands that train


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("fuzz-commands"))


@pytest.fixture
def run_cli(cli, ws, monkeypatch):
    """The CLI on the shared workspace, checked against the property."""
    monkeypatch.setenv("LMCLI_WORKSPACE", str(ws))

    def invoke(*args, damaged_path=None, input=None):
        leave_out = (damaged_path,) if damaged_path else ()
        before = snapshot(ws.parent, leave_out)
        result = cli(*args, input=input)
        assert_works_or_fails_cleanly(result, before, snapshot(ws.parent, leave_out))
        return result

    return invoke


def text(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return str(value)


TOKENIZER_COMMANDS = [
    ["encode", "{ws}/data/corpus.txt", "--out", "{ws}/data/out.npy"],
    ["decode", "{ws}/data/valid.npy", "--count", "20"],
    ["stats", "{ws}/data/corpus.txt", "--docs", "2", "--workers", "1"],
    ["generate", "--prompt", "the cat", "--max-tokens", "3", "--checkpoint", "tiny", "--tokenizer", "{ws}/tokenizer"],
]


@pytest.mark.parametrize("name", ["vocab.json", "merges.txt", "tokenizer-meta.json"])
@pytest.mark.parametrize("command", TOKENIZER_COMMANDS, ids=lambda c: c[0])
@settings(FUZZ, max_examples=12)
@given(data=st.data())
def test_commands_with_a_damaged_tokenizer(run_cli, ws, command, name, data):
    path = ws / "tokenizer" / name
    with replaced(path, data.draw(damaged(path.read_bytes()))):
        result = run_cli(*[a.format(ws=ws) for a in command], damaged_path=path)
    (ws / "data" / "out.npy").unlink(missing_ok=True)
    assert result.exit_code in (0, 1)


@pytest.mark.parametrize("name", ["metrics.jsonl", "config.toml", "latest.pt", "train.log"])
@FEWER
@given(data=st.data())
def test_resume_with_a_damaged_run_file(run_cli, ws, name, data):
    run = ws / "runs" / "fuzzed"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(ws / "runs" / "tiny", run)
    path = run / name
    path.write_bytes(data.draw(damaged(path.read_bytes())))
    result = run_cli("train", "--resume", "fuzzed", "--set", "training.max_steps=5", "--quiet", damaged_path=path)
    if name in ("metrics.jsonl", "train.log"):  # what the checkpoint makes redundant never stops a resume
        assert result.exit_code == 0, result.stderr
    shutil.rmtree(run)


@pytest.mark.parametrize("command", [["runs"], ["runs", "--json"], ["plot", "--terminal"]], ids=" ".join)
@pytest.mark.parametrize("name", ["metrics.jsonl", "config.toml"])
@FUZZ
@given(data=st.data())
def test_one_damaged_run_does_not_break_the_others(run_cli, ws, command, name, data):
    run = ws / "runs" / "broken"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(ws / "runs" / "tiny", run)
    path = run / name
    path.write_bytes(data.draw(damaged(path.read_bytes())))
    result = run_cli(*command, damaged_path=path)
    assert result.exit_code == 0 and "tiny" in result.stdout, result.stderr
    shutil.rmtree(run)


@pytest.mark.parametrize("command", [["eval", "--max-tokens", "32"], ["generate", "--prompt", "a", "-n", "2"]],
                         ids=lambda c: c[0])
@FUZZ
@given(data=st.data())
def test_commands_with_a_damaged_checkpoint(run_cli, ws, command, data):
    path = ws / "runs" / "tiny" / "best.pt"
    with replaced(path, data.draw(damaged(path.read_bytes()))):
        run_cli(*command, "--checkpoint", path, damaged_path=path)


NUMERIC_OPTIONS = [
    ["generate", "--prompt", "a", "--checkpoint", "tiny", "-n", "2", "--temperature", "{n}"],
    ["generate", "--prompt", "a", "--checkpoint", "tiny", "-n", "2", "--top-p", "{n}"],
    ["generate", "--prompt", "a", "--checkpoint", "tiny", "-n", "2", "--seed", "{n}"],
    ["generate", "--prompt", "a", "--checkpoint", "tiny", "-n", "2", "--num-samples", "{n}"],
    ["eval", "--checkpoint", "tiny", "--batch-size", "{n}", "--max-tokens", "64"],
    ["eval", "--checkpoint", "tiny", "--max-tokens", "{n}"],
    ["accounting", "--batch-size", "{n}"],
    ["accounting", "--context-length", "{n}"],
    ["accounting", "--memory", "{n}"],
    ["accounting", "--mfu", "{n}"],
    ["accounting", "--steps", "{n}"],
    ["stats", "{ws}/data/corpus.txt", "--workers", "1", "--docs", "{n}"],
    ["stats", "{ws}/data/corpus.txt", "--workers", "1", "--seed", "{n}"],
    ["decode", "{ws}/data/valid.npy", "--start", "{n}"],
    ["decode", "{ws}/data/valid.npy", "--count", "{n}"],
]


@pytest.mark.parametrize("command", NUMERIC_OPTIONS, ids=lambda c: " ".join(a for a in c if a.startswith("-") and a != "-n"))
@settings(FUZZ, max_examples=25)
@given(value=numbers())
def test_numbers_of_any_size(run_cli, ws, command, value):
    run_cli(*[a.format(ws=ws, n=text(value)) for a in command])


@FUZZ
@given(value=numbers().filter(lambda v: not (isinstance(v, int) and 40 < v <= 2**63 - 1)))
def test_max_tokens_of_any_size(run_cli, value):
    # (valid sizes beyond 40 generate that many tokens, streamed: nothing grows with them but the
    # output, and the test cannot wait for them)
    run_cli("generate", "--prompt", "a", "--checkpoint", "tiny", "-n", text(value))


@pytest.mark.parametrize("key", ["training.batch_size", "training.max_steps", "training.seed", "model.vocab_size",
                                 "model.context_length", "model.d_model", "optimizer.lr", "optimizer.betas",
                                 "training.eval_batches", "model.rope_theta", "optimizer.grad_clip"])
@FEWER
@given(value=numbers())
def test_training_with_any_config_number(run_cli, ws, key, value):
    if key in ("training.max_steps", "training.eval_batches") and isinstance(value, int) and 40 < value <= 2**63 - 1:
        return  # valid: that many steps or batches, which the test cannot wait for
    value = f"[{text(value)}, 0.95]" if key == "optimizer.betas" else text(value)
    run_cli("train", "--config", ws.parent / "tiny.toml", "--name", "numbers", "--set", "training.max_steps=1",
            "--set", "optimizer.warmup_steps=0", "--set", f"{key}={value}", "--quiet")  # the fuzzed value last: it wins
    shutil.rmtree(ws / "runs" / "numbers", ignore_errors=True)


@pytest.mark.parametrize("target", ["tokenizer/vocab.json", "tokenizer/tokenizer-meta.json", "data/train.npy",
                                    "runs/tiny/metrics.jsonl"])
@settings(FUZZ, max_examples=10)
@given(data=st.data())
def test_doctor_reports_any_damage(run_cli, ws, target, data):
    path = ws / target
    with replaced(path, data.draw(damaged(path.read_bytes()))):
        result = run_cli("doctor", "--json", damaged_path=path)
    assert result.exit_code == 0, result.stderr


@settings(FUZZ, max_examples=20)
@given(corpus=st.binary(max_size=400), vocab=numbers())
def test_train_bpe_on_any_bytes_and_vocabulary_size(run_cli, ws, corpus, vocab, tmp_path_factory):
    path = tmp_path_factory.mktemp("bpe") / "corpus.txt"
    path.write_bytes(corpus)
    out = ws.parent / "bpe-out"
    result = run_cli("train-bpe", path, "--vocab", text(vocab), "--out", out, "--workers", "1", "--force")
    shutil.rmtree(out, ignore_errors=True)
    assert result.exit_code in (0, 1, 2)


@settings(FUZZ, max_examples=10)
@given(values=st.lists(numbers(), min_size=2, max_size=3))
def test_sweep_with_any_grid_values(run_cli, ws, values):
    grid = ",".join(text(v) for v in values)
    run_cli("sweep", "--config", ws.parent / "tiny.toml", "--name", "grid", "--set", f"optimizer.lr={grid}",
            "--set", "training.max_steps=1", "--set", "optimizer.warmup_steps=0", "--quiet")
    for run in (ws / "runs").glob("grid-*"):
        shutil.rmtree(run)
    shutil.rmtree(ws / "sweeps", ignore_errors=True)
