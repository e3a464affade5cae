"""The workspace: one directory where commands find each other's outputs by default.

Layout (all under the workspace root, default ``./workspace``, or ``--workspace`` /
``LMCLI_WORKSPACE``)::

    data/demo-train.txt, data/demo-valid.txt   the embedded demo corpus (``lmcli.data.demo``)
    data/<name>.npy                             token ids written by ``lmcli encode``
    tokenizer/vocab.json, tokenizer/merges.txt  written by ``lmcli train-bpe``
    runs/<name>/                                one directory per ``lmcli train`` run: config.toml,
                                                metrics.jsonl, train.log, latest.pt, best.pt

Relative paths inside configs are resolved against the workspace root, so a config names
``data/train.npy`` rather than a path that depends on where the command was typed. This module
only names paths (and says whether a process holds the lock on one, as a run that trains does);
it creates nothing.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from lmcli.errors import LmcliError

DEFAULT_WORKSPACE = Path("workspace")
WORKSPACE_ENV = "LMCLI_WORKSPACE"
# What a run directory holds (written by lmcli.training, read by lmcli.experiments without torch).
RUN_CONFIG_FILE = "config.toml"
RUN_METRICS_FILE = "metrics.jsonl"
RUN_LOG_FILE = "train.log"
DEMO_SPLITS = ("train", "valid")


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def resolve(cls, path: str | os.PathLike | None = None) -> Workspace:
        """The workspace named by ``path``, else ``$LMCLI_WORKSPACE``, else ``./workspace``."""
        chosen = path or os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE
        root = Path(chosen).expanduser()
        if root.exists() and not root.is_dir():
            source = "--workspace" if path else (WORKSPACE_ENV if os.environ.get(WORKSPACE_ENV) else "the default workspace")
            raise LmcliError(f"workspace {root} ({source}) is a file, not a directory")
        return cls(root)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run_dir(self, name: str) -> Path:
        """The directory of the run called ``name``: a plain name, so every run stays inside runs/."""
        check_run_name(name)
        return self.runs_dir / name

    def path(self, relative: str | os.PathLike) -> Path:
        """Resolve a path from a config: absolute paths stay, relative ones live in the workspace."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.root / p

    def demo_path(self, split: str) -> Path:
        """Where the demo corpus split ("train" or "valid") lives (``lmcli.data.demo`` writes it)."""
        return self.data_dir / f"demo-{split}.txt"

    def encoded_path(self, text_path: Path) -> Path:
        """Default ``.npy`` for an encoded text file: demo splits map to train.npy / valid.npy."""
        for split in DEMO_SPLITS:
            if text_path.name == self.demo_path(split).name:
                return self.data_dir / f"{split}.npy"
        return self.data_dir / f"{text_path.stem}.npy"


def check_run_name(name: str) -> None:
    """A run name is one path component: no "/", not "." or "..", not hidden, no control characters."""
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith(".") or not name.isprintable():
        raise LmcliError(f"run name {name!r} must be a plain name (letters, digits, -_.=+; no /, not starting with .)")


def is_locked(path: Path) -> bool:
    """Whether another process holds an exclusive lock on ``path`` (a training run on its directory and its
    log). The probe takes a shared lock: probes at the same moment (the ranks of one job, a sweep, ``lmcli
    runs``) never collide with each other."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False
