"""What the fuzz suite shares: a small trained workspace, ways to damage a file, and the property
every command must keep: it works, or it exits non-zero with one ``error:`` line, no traceback,
and no file of the workspace created or changed."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from lmcli.tokenizer.files import save_tokenizer
from lmcli.training.run import RunSpec, run_training
from lmcli.workspace import Workspace
from tests.tiny import EOT, TINY_MODEL

TINY_CONFIG = TINY_MODEL + """
[optimizer]
warmup_steps = 1

[training]
batch_size = 4
max_steps = 4
total_tokens = 256  # the steps when max_steps is 0: a few
log_interval = 1
eval_interval = 2
eval_batches = 1
checkpoint_interval = 2
final_eval_tokens = 64

[system]
device = "cpu"
"""
# Deterministic, no example database on disk, and each example may take a while (it runs a command).
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def make_workspace(root: Path) -> Path:
    """A workspace with a byte tokenizer (+ <|endoftext|>), train/valid ids, a text corpus, the config
    tiny.toml and a run "tiny" trained for 4 steps (latest.pt, best.pt, metrics.jsonl)."""
    ws = root / "workspace"
    save_tokenizer(ws / "tokenizer", {i: bytes([i]) for i in range(256)} | {256: EOT.encode()}, [], [EOT])
    (ws / "data").mkdir(parents=True)
    text = ("the cat sat on the mat and the dog ran to the park " * 60).encode()
    np.save(ws / "data" / "train.npy", np.frombuffer(text, dtype=np.uint8).astype(np.uint16))
    np.save(ws / "data" / "valid.npy", np.frombuffer(text[:800], dtype=np.uint8).astype(np.uint16))
    (ws / "data" / "corpus.txt").write_text(f"one story {EOT} another story {EOT} a third", encoding="utf-8")
    (root / "tiny.toml").write_text(TINY_CONFIG)
    run_training(RunSpec(config=str(root / "tiny.toml"), name="tiny"), Workspace(ws))
    return ws


@st.composite
def damaged(draw, valid: bytes) -> bytes:
    """``valid`` damaged the ways files get damaged: cut off (a kill -9), bytes changed or inserted,
    replaced by random bytes or by nothing."""
    kind = draw(st.sampled_from(["cut", "flip", "insert", "random", "empty"]))
    if kind == "cut":
        return valid[: draw(st.integers(0, max(len(valid) - 1, 0)))]
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "empty":
        return b""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        byte = draw(st.integers(0, 255))
        if kind == "flip" and at < len(data):
            data[at] = byte
        else:
            data[at:at] = bytes([byte])
    return bytes(data)


def json_values() -> st.SearchStrategy:
    """Any JSON value, numbers of every size included."""
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                            max_size=4), max_leaves=12)


def numbers() -> st.SearchStrategy:
    """Numbers as a user might type them: small, huge, tiny, negative, non-finite. Sizes that are valid
    but large (a model of a few GB, a million samples that fit) are left out: they would work, slowly."""
    return st.one_of(
        st.integers(-3, 40), st.sampled_from([0, -1, -(2**70), 2**40, 2**63, 2**64, 10**30]),
        st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.inf, -math.inf, math.nan, 1e308, 1e-300]),
    )


def toml_number(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return json.dumps(value)


@contextlib.contextmanager
def replaced(path: Path, data: bytes) -> Iterator[None]:
    """``path`` holds ``data`` inside the block and its old bytes after it."""
    old = path.read_bytes() if path.exists() else None
    path.write_bytes(data)
    try:
        yield
    finally:
        if old is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(old)


def snapshot(root: Path, leave_out: tuple[Path, ...] = ()) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``root``, but the ones the test itself damaged."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and p not in leave_out}


def assert_works_or_fails_cleanly(result, before: dict, after: dict) -> None:
    """The property: no traceback; a failure is one ``error:`` line and leaves every file as it was."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("error: "), result.stderr
        assert sum(line.startswith("error:") for line in lines) == 1, result.stderr
        assert after == before, "a failed command created or changed files"
