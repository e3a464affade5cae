"""The cases of issue #13, one test each: damaged files lmcli reads back, numbers of any size, text
that is not text, writes that could destroy or mislead, states without a way out, pathological
input and misleading messages. Each ends in one error line (or works), and nothing is destroyed."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import lmcli.atomic as atomic
from lmcli.errors import LmcliError
from lmcli.tokenizer import Tokenizer
from lmcli.tokenizer.files import save_tokenizer
from lmcli.training.checkpoint import read_checkpoint
from lmcli.training.observers import TrainObserver
from lmcli.training.run import RunSpec, run_training
from lmcli.workspace import Workspace
from tests.fuzz.common import EOT, make_workspace


@pytest.fixture
def ws(tmp_path, monkeypatch):
    workspace = make_workspace(tmp_path)
    monkeypatch.setenv("LMCLI_WORKSPACE", str(workspace))
    return workspace


def one_error_line(result, *fragments: str) -> str:
    """The result failed with exactly one ``error:`` line holding every fragment, and no traceback."""
    assert result.exit_code != 0, result.stdout
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def test_ctrl_c_while_a_command_loads_is_raised_once_its_modules_are_loaded(cli, monkeypatch):
    """A KeyboardInterrupt raised inside an import cuts it in half (numpy then refuses to load again, and
    a library importing it under try/except loses the Ctrl-C): it waits for the command's imports."""
    real_import, loaded = importlib.import_module, []

    def interrupted_while_importing(name: str, *args, **kwargs):
        if not name.startswith("lmcli.commands."):
            return real_import(name, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, handled between the import's own steps
        module = real_import(name, *args, **kwargs)
        loaded.append(name)
        return module

    monkeypatch.setattr(importlib, "import_module", interrupted_while_importing)
    result = cli("runs")
    assert loaded == ["lmcli.commands.runs"]
    assert (result.exit_code, result.stderr.strip()) == (130, "error: interrupted")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler



@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_a_process_whose_parent_died_before_it_asked_to_follow_it_stops_at_once():
    """A request for SIGTERM at the parent's death, made after that death, is never answered: the process
    (a trial whose sweep was killed while starting it) must stop at once rather than train for nobody."""
    def follow(parent: str) -> int:
        code = f"import os, time\nfrom lmcli.job import sigterm_when_parent_dies\nsigterm_when_parent_dies({parent})\ntime.sleep(1)\n"
        return subprocess.run([sys.executable, "-c", code], timeout=60, cwd=Path(__file__).parent.parent).returncode

    follows, orphaned = follow("os.getppid()"), follow("0")  # 0: not its parent, as if the one that started it died
    assert (follows, orphaned) == (0, -signal.SIGTERM)


# ---------------------------------------------------------------- files lmcli reads back, damaged


@pytest.mark.parametrize("name, data, message", [
    ("vocab.json", b"\xff\xfe{}", "not the file tokenizer-meta.json was written with"),
    ("tokenizer-meta.json", b"\xff\xfe", "is not UTF-8 text (byte offset 0"),
    ("tokenizer-meta.json", b'{"special_tokens": 3}', "special_tokens must be a list"),
    ("tokenizer-meta.json", b'{"special_tokens": [', "is not valid JSON"),
])
@pytest.mark.parametrize("command", [["encode", "{ws}/data/corpus.txt"], ["decode", "{ws}/data/valid.npy"],
                                     ["stats", "{ws}/data/corpus.txt", "--docs", "2"],
                                     ["generate", "--prompt", "a", "-n", "1", "--tokenizer", "{ws}/tokenizer"]],
                         ids=lambda c: c[0])
def test_damaged_tokenizer_files_are_one_line(cli, ws, command, name, data, message):
    (ws / "tokenizer" / name).write_bytes(data)
    one_error_line(cli(*[a.format(ws=ws) for a in command]), message, str(ws / "tokenizer"))


@pytest.mark.parametrize("data, message", [(b"\xff\x00\x01", "is not UTF-8"), (b'{"a": ', "is not valid JSON"),
                                           (b'{"a": "x"}', "token ids must be integers"), (b"[1, 2]", "a JSON object")])
def test_a_vocabulary_without_digests_is_checked_by_its_reader(tmp_path, data, message):
    (tmp_path / "vocab.json").write_bytes(data)
    (tmp_path / "merges.txt").write_text("")
    with pytest.raises(LmcliError, match=message):
        Tokenizer.from_dir(tmp_path)


def test_a_binary_config_is_one_line(cli, ws, tmp_path):
    (tmp_path / "bad.toml").write_bytes(b"\x00\xff\xfe binary")
    one_error_line(cli("train", "--config", tmp_path / "bad.toml"), "is not UTF-8 text")


def test_a_cut_off_metrics_tail_is_repaired_on_resume(cli, ws):
    run = ws / "runs" / "tiny"
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'{"kind": "train", "st')  # what a kill -9 during a write leaves
    result = cli("train", "--resume", "tiny", "--set", "training.max_steps=6")
    assert result.exit_code == 0, result.stderr
    assert "dropped a cut-off last line" in result.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["kind"] == "final_eval" and rows[-1]["step"] == 6


def test_one_damaged_run_does_not_hide_the_others(cli, ws):
    shutil.copytree(ws / "runs" / "tiny", ws / "runs" / "broken")
    (ws / "runs" / "broken" / "metrics.jsonl").write_bytes(b"\x00\x01\x02\n" * 3 + b'{"kind": "train", "step": 1}\n')
    (ws / "runs" / "broken" / "config.toml").write_bytes(b"\xff\xfe")
    result = cli("runs")
    assert result.exit_code == 0, result.stderr
    assert "tiny" in result.stdout and "finished" in result.stdout and "damaged" in result.stdout
    assert "note: broken is damaged" in result.stderr
    plotted = cli("plot", "--terminal")
    assert plotted.exit_code == 0 and "note: broken is damaged" in plotted.stderr


def test_a_damaged_checkpoint_is_one_line(cli, ws):
    (ws / "runs" / "tiny" / "latest.pt").write_bytes((ws / "runs" / "tiny" / "latest.pt").read_bytes()[:500])
    one_error_line(cli("train", "--resume", "tiny", "--set", "training.max_steps=6"),
                   "latest.pt is not an lmcli checkpoint")


def test_a_text_file_given_as_ids_is_named_for_what_it_is(cli, ws):
    one_error_line(cli("decode", ws / "data" / "corpus.txt"), "is not a .npy file (a text file?")


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize("args, message", [
    (["generate", "-p", "a", "--temperature", "nan"], "'nan' is not a finite number"),
    (["generate", "-p", "a", "--top-p", "inf"], "'inf' is not a finite number"),
    (["generate", "-p", "a", "--seed", "99999999999999999999"], "less than or equal to 9223372036854775807"),
    (["generate", "-p", "a", "-n", "99999999999999999999"], "less than or equal to 9223372036854775807"),
    (["accounting", "--memory", "nan"], "not a finite number"),
    (["accounting", "--compare", ""], "--compare needs at least two models"),
    (["train", "--config", "{toml}", "--set", "optimizer.lr=nan"], "optimizer.lr must be a finite number"),
    (["train", "--config", "{toml}", "--set", "training.seed=99999999999999999999"], "training.seed must fit in 64 bits"),
])
def test_numbers_that_mean_nothing_are_one_line(cli, ws, args, message):
    one_error_line(cli(*[a.format(toml=ws.parent / "tiny.toml") for a in args]), message)


def test_sizes_are_checked_against_memory_before_allocating(cli, ws):
    line = one_error_line(cli("generate", "-p", "a", "--num-samples", "10000000000"),
                          "10,000,000,000 samples at once needs about", "is available on cpu")
    assert "fit" in line
    one_error_line(cli("train", "--config", ws.parent / "tiny.toml", "--set", "training.batch_size=100000000000"),
                   "training.micro_batch_size=100000000000 with this model needs about",
                   "at most training.micro_batch_size=")
    # eval caps its batch at the number of windows: nothing to refuse
    result = cli("eval", "--checkpoint", "tiny", "--batch-size", "100000000000")
    assert result.exit_code == 0, result.stderr


def test_eval_needs_a_whole_window(cli, ws):
    one_error_line(cli("eval", "--checkpoint", "tiny", "--max-tokens", "1"),
                   "--max-tokens 1 is less than one window of the model's context (16 tokens)")


# ---------------------------------------------------------------- text that is not text


def test_a_prompt_that_is_not_utf8(cli, ws):
    one_error_line(cli("generate", "--prompt", "-", input=b"ab\xffcd"),
                   "the prompt on stdin is not valid UTF-8 (byte 0xff at offset 2)")
    one_error_line(cli("generate", "--prompt", "ab\udcffcd"), "the prompt is not valid UTF-8")


def test_an_endpoint_without_a_scheme(cli, ws, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "localhost:8000")
    one_error_line(cli("data", "download", "tinystories"), "is not an http:// or https:// URL")


def test_stats_on_invalid_utf8_says_where_and_replace_counts_the_file_bytes(cli, ws):
    (ws / "data" / "latin1.txt").write_bytes(f"caf\xe9 {EOT} na\xefve".encode("latin-1"))
    one_error_line(cli("stats", ws / "data" / "latin1.txt"), "is not valid UTF-8 at byte offset 3")
    result = cli("stats", ws / "data" / "latin1.txt", "--errors", "replace", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["bytes"] == len(b"caf\xe9 ") + len(b" na\xefve")  # the file's bytes, not U+FFFD's


# ---------------------------------------------------------------- writes that could destroy or mislead


def test_encode_refuses_to_write_over_its_input(cli, ws):
    corpus = ws / "data" / "corpus.txt"
    before = corpus.read_bytes()
    one_error_line(cli("encode", corpus, "--out", corpus), "is an input file")
    assert corpus.read_bytes() == before


@pytest.mark.parametrize("name", ["../../escape", "a/b", ".hidden", ".."])
def test_run_names_stay_inside_the_workspace(cli, ws, name):
    one_error_line(cli("train", "--config", ws.parent / "tiny.toml", "--name", name), "run name")
    assert not (ws.parent.parent / "escape").exists()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a small tmpfs needs root")
def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(cli, ws):
    runs, size = ws / "runs", (ws / "runs" / "tiny" / "latest.pt").stat().st_size
    # Room for latest.pt and the smaller best.pt (weights only) of step 2, not for a second latest.pt beside them at step 4.
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(1.8 * size)}", "tmpfs", str(runs)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        result = cli("train", "--config", ws.parent / "tiny.toml", "--name", "full", "--set", "training.max_steps=6")
        one_error_line(result, "could not write", "at step 4 (No space left on device: ", "is kept")
        assert read_checkpoint(runs / "full" / "latest.pt")["iteration"] == 2
        assert not list((runs / "full").glob(".*.tmp")), "the failed write left its temporary file"
        shutil.copytree(runs / "full", ws.parent / "rescued")
    finally:
        subprocess.run(["umount", str(runs)], check=True)
    resumed = cli("train", "--resume", ws.parent / "rescued")
    assert resumed.exit_code == 0, resumed.stderr


def test_a_tokenizer_write_interrupted_between_its_files_is_detected(tmp_path, monkeypatch):
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"ab"}
    save_tokenizer(tmp_path, vocab, [(b"a", b"b")], [EOT])
    real_replace, calls = os.replace, []

    def crash_on_the_third_file(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed after the metadata and vocab.json were replaced
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", crash_on_the_third_file)
    with pytest.raises(KeyboardInterrupt):
        save_tokenizer(tmp_path, vocab | {257: b"abc"}, [(b"a", b"b"), (b"ab", b"c")], [EOT])
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    with pytest.raises(LmcliError, match="is not the file tokenizer-meta.json was written with"):
        Tokenizer.from_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merges.txt", "tokenizer-meta.json", "vocab.json"]


def test_temporary_files_of_killed_writes_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "result.txt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".result.txt.{dead.stdout.strip()}.abc123.tmp"  # left by a process that no longer exists
    live = tmp_path / f".result.txt.{os.getpid()}.xyz789.tmp"  # a write in progress in a live process
    stale.write_text("half")
    live.write_text("half")
    with atomic.atomic_open(target) as f:
        f.write("new")
    assert target.read_text() == "new" and not stale.exists() and live.exists()


def test_a_write_error_names_the_target_not_the_temporary_file(tmp_path):
    target = tmp_path / "out.npy"
    with pytest.raises(OSError) as e, atomic.atomic_path(target):
        raise OSError(28, "No space left on device")
    assert e.value.filename == str(target) and e.value.strerror == "No space left on device"


# ---------------------------------------------------------------- states without a way out


def test_a_run_stopped_before_its_first_checkpoint_starts_again_on_resume(cli, ws):
    run = ws / "runs" / "tiny"
    for name in ("latest.pt", "best.pt"):
        (run / name).unlink()
    again = cli("train", "--config", ws.parent / "tiny.toml", "--name", "tiny")
    one_error_line(again, "already exists", "`lmcli train --resume tiny` starts it again")
    result = cli("train", "--resume", "tiny")
    assert result.exit_code == 0, result.stderr
    assert "has no checkpoint yet: training it again from step 0" in result.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4]


def test_sigterm_saves_a_checkpoint_and_exits_130(cli, ws):
    class TermAtStep1(TrainObserver):
        def on_step(self, step):
            if step == 1:
                signal.raise_signal(signal.SIGTERM)  # what a scheduler (SLURM) sends

    with pytest.raises(KeyboardInterrupt):
        run_training(RunSpec(config=str(ws.parent / "tiny.toml"), name="termed"), Workspace(ws), [TermAtStep1()])
    assert read_checkpoint(ws / "runs" / "termed" / "latest.pt")["iteration"] == 1
    result = cli("runs", "--json")
    assert {r["name"]: r["status"] for r in json.loads(result.stdout)["runs"]}["termed"] == "interrupted"


def test_a_killed_run_is_resumable(cli, ws):
    script = (f"import os, signal\nfrom lmcli.training.observers import TrainObserver\n"
              f"from lmcli.training.run import RunSpec, run_training\nfrom lmcli.workspace import Workspace\n"
              f"class Kill(TrainObserver):\n    def on_step(self, step):\n"
              f"        if step == 3: os.kill(os.getpid(), signal.SIGKILL)\n"
              f"run_training(RunSpec(config={str(ws.parent / 'tiny.toml')!r}, name='killed'), Workspace.resolve({str(ws)!r}), [Kill()])\n")
    subprocess.run([sys.executable, "-c", script], timeout=120, cwd=Path(__file__).parents[1])
    status = {r["name"]: r for r in json.loads(cli("runs", "--json").stdout)["runs"]}["killed"]
    assert status["status"] == "resumable" and status["steps"] == 2
    resumed = cli("train", "--resume", "killed")
    assert resumed.exit_code == 0, resumed.output


def test_messages_name_what_was_given(cli, ws, tmp_path):
    one_error_line(cli("train", "--config", tmp_path), "is a directory, not a TOML file")
    one_error_line(cli("encode", ws / "data" / "corpus.txt", "--tokenizer", ws / "data" / "corpus.txt"),
                   "is a file: give the directory that holds vocab.json and merges.txt")
    one_error_line(cli("decode", ws / "data"), "is a directory, not a .npy file")
    np.save(ws / "data" / "floats.npy", np.ones(4))
    one_error_line(cli("decode", ws / "data" / "floats.npy"), "holds a float64 array")


# ---------------------------------------------------------------- second round (#19): nothing read is destroyed


def run_files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


@pytest.mark.parametrize("out, relation", [("{run}", "is the run directory"), ("{runs}", "holds the run directory"),
                                           ("{run}/hf", "lies inside the run directory"),
                                           ("{ws}/tokenizer", "is the tokenizer directory"), ("{ws}", "holds")])
def test_export_never_replaces_what_it_reads(cli, ws, out, relation):
    run, before = ws / "runs" / "tiny", run_files(ws / "runs" / "tiny")
    tokenizer_before = run_files(ws / "tokenizer")
    target = out.format(run=run, runs=ws / "runs", ws=ws)
    one_error_line(cli("export", "tiny", "--out", target, "--force"), f"--out {target} {relation}", "choose another --out")
    assert run_files(run) == before and run_files(ws / "tokenizer") == tokenizer_before


def test_resume_of_a_run_with_best_but_no_latest_keeps_best(cli, ws):
    run = ws / "runs" / "tiny"
    (run / "latest.pt").unlink()
    best = (run / "best.pt").read_bytes()
    one_error_line(cli("train", "--resume", "tiny"), "has best.pt but no latest.pt", "--init-from")
    assert (run / "best.pt").read_bytes() == best


def flip_a_weight_byte(path: Path) -> None:
    """Change one byte inside the first tensor's data of a torch.save file (an uncompressed zip)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size > 8)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_length, extra_length = (int.from_bytes(f.read(2), "little") for _ in range(2))
        at = info.header_offset + 30 + name_length + extra_length + info.file_size // 2
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0x10]))


@pytest.mark.parametrize("command", [["generate", "-p", "a", "-n", "2", "--checkpoint", "{ckpt}"], ["eval", "--checkpoint", "{ckpt}"],
                                     ["train", "--resume", "tiny", "--set", "training.max_steps=8"]], ids=lambda c: c[0])
def test_a_flipped_byte_in_a_checkpoints_weights_is_one_error(cli, ws, command):
    checkpoint = ws / "runs" / "tiny" / "latest.pt"
    flip_a_weight_byte(checkpoint)
    args = [a.format(ckpt=checkpoint) for a in command]
    one_error_line(cli(*args), "do not match the checksum written with them")


def test_exports_and_imports_get_the_umasks_permissions_and_name_out_in_errors(cli, ws, tmp_path, monkeypatch):
    old = os.umask(0o022)
    try:
        assert cli("export", "tiny", "--out", tmp_path / "hf").exit_code == 0
        assert (tmp_path / "hf").stat().st_mode & 0o777 == 0o755
        assert {p.stat().st_mode & 0o777 for p in (tmp_path / "hf").iterdir()} == {0o644}
        assert cli("import", tmp_path / "hf", "--name", "back").exit_code == 0
        assert (ws / "runs" / "back").stat().st_mode & 0o777 == 0o755
    finally:
        os.umask(old)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(next(tmp_path.glob(".again.*.tmp")) / "model.safetensors"))

    monkeypatch.setattr("lmcli.interop.export.write_weights", full_disk)
    one_error_line(cli("export", "tiny", "--out", tmp_path / "again"), f"No space left on device: {tmp_path / 'again' / 'model.safetensors'}")
    assert not list(tmp_path.glob(".again.*")) and not (tmp_path / "again").exists()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a small tmpfs needs root")
def test_a_full_disk_during_export_is_one_error_naming_out(cli, ws, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        one_error_line(cli("export", "tiny", "--out", disk / "hf"), "No space left on device", str(disk / "hf"))
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# ---------------------------------------------------------------- second round (#19): misleading or silent


def test_eval_refuses_ids_another_tokenizer_wrote(cli, ws, tmp_path):
    other = tmp_path / "other-tokenizer"
    save_tokenizer(other, {i: bytes([i]) for i in range(256)} | {256: b"th", 257: EOT.encode()}, [(b"t", b"h")], [EOT])
    text = tmp_path / "valid.txt"
    text.write_text("the cat sat on the mat " * 40, encoding="utf-8")
    assert cli("encode", text, "--tokenizer", other, "--out", tmp_path / "other.npy").exit_code == 0
    assert (tmp_path / "other.npy.json").is_file()
    one_error_line(cli("eval", "--checkpoint", "tiny", "--data", tmp_path / "other.npy"),
                   f"{tmp_path / 'other.npy'} was encoded with the tokenizer in {other}")
    assert cli("encode", text, "--out", tmp_path / "same.npy").exit_code == 0  # the workspace's tokenizer: the model's
    assert cli("eval", "--checkpoint", "tiny", "--data", tmp_path / "same.npy").exit_code == 0
    # decode takes the tokenizer that wrote the ids, and refuses another
    decoded = cli("decode", tmp_path / "other.npy", "--count", "6")
    assert decoded.exit_code == 0 and decoded.stdout == "the cat sat"[:len(decoded.stdout)] and decoded.stdout.startswith("the ")
    one_error_line(cli("decode", tmp_path / "other.npy", "--tokenizer", ws / "tokenizer"),
                   f"{tmp_path / 'other.npy'} was encoded with the tokenizer in {other}", "decode it with that one")
    # shards: their directory's manifest says which tokenizer wrote them
    shards = tmp_path / "other-shards"
    assert cli("encode", text, "--tokenizer", other, "--out-dir", shards, "--shard-tokens", "300").exit_code == 0
    one_error_line(cli("eval", "--checkpoint", "tiny", "--data", shards),
                   f"{shards / 'shard-00000.npy'} was encoded with the tokenizer in {other}")
    one_error_line(cli("train", "--config", ws.parent / "tiny.toml", "--name", "other-data", "--set", f'data.train="{shards}"'),
                   f"{shards / 'shard-00000.npy'} was encoded with the tokenizer in {other}")
    assert not (ws / "runs" / "other-data").exists()


def test_init_from_keeps_its_model_and_says_so(cli, ws):
    config = ws.parent / "tiny.toml"
    one_error_line(cli("train", "--config", config, "--init-from", "tiny", "--name", "x", "--set", "model.d_model=64"),
                   "--init-from takes the model of tiny as it is: --set model.d_model cannot change it")
    assert not (ws / "runs" / "x").exists()


def test_a_config_from_a_pipe_is_read(cli, ws, tmp_path):
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    text = (ws.parent / "tiny.toml").read_text()

    def feed():
        with open(fifo, "w") as f:
            f.write(text)

    writer = threading.Thread(target=feed)
    writer.start()
    result = cli("train", "--config", fifo, "--name", "piped", "--set", "training.max_steps=2")
    writer.join()
    assert result.exit_code == 0, result.stderr


def test_shard_names_with_glob_characters_are_files(cli, ws):
    data = ws / "data"
    (data / "x[1].npy").write_bytes((data / "train.npy").read_bytes())
    result = cli("train", "--config", ws.parent / "tiny.toml", "--name", "brackets", "--set", "training.max_steps=2",
                 "--set", "data.train='data/x[1].npy'")
    assert result.exit_code == 0, result.stderr


def test_a_workspace_that_is_a_file_says_so(cli, tmp_path):
    (tmp_path / "ws-file").write_text("")
    one_error_line(cli("encode", "--workspace", tmp_path / "ws-file"), f"workspace {tmp_path / 'ws-file'} (--workspace) is a file")


def test_a_run_that_is_training_cannot_be_resumed_beside_itself(cli, ws):
    env = {**os.environ, "LMCLI_WORKSPACE": str(ws), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    process = subprocess.Popen([sys.executable, "-m", "lmcli", "train", "--config", str(ws.parent / "tiny.toml"), "--name", "busy",
                                "--set", "training.max_steps=100000", "--set", "training.checkpoint_interval=2", "--quiet"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        latest = ws / "runs" / "busy" / "latest.pt"
        deadline = time.monotonic() + 120
        while not latest.is_file() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert latest.is_file(), process.stderr.read() if process.poll() is not None else "no checkpoint in time"
        one_error_line(cli("train", "--resume", "busy"), "is being trained by another process")
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=120)
