"""Checkpoints: everything needed to continue a run exactly, or to use its model alone.

A checkpoint is one ``torch.save`` file holding a dict::

    format, version        marks an lmcli checkpoint
    iteration              optimizer steps taken
    model, optimizer       state dicts (``_orig_mod.`` of torch.compile stripped)
    ... extra              written by ``lmcli train``: resolved config, model config, the RNG
                           states (Python, NumPy, torch, CUDA, the batch sampler), the
                           tokenizer's directory and fingerprint, best validation loss
    checksum               CRC-32 of all the tensors above, checked on every read: a file
                           damaged on disk is an error, not a silently different model

Files are written atomically (temporary file + rename, see ``lmcli.atomic``): a crash or a
kill in the middle of a save leaves the previous checkpoint intact. Only tensors and plain
Python values are stored, so loading works with ``torch.load(weights_only=True)`` and never
runs code from the file.

``load_model_from_checkpoint`` is what ``generate`` and ``eval`` use: it rebuilds the model
from the config stored inside, so a checkpoint is all they need.
"""

from __future__ import annotations

import os
import random
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np
import torch

from lmcli.atomic import atomic_path
from lmcli.errors import LmcliError
from lmcli.model.config import ModelConfig
from lmcli.model.transformer import TransformerLM
from lmcli.tokenizer.files import tokenizer_fingerprint
from lmcli.workspace import Workspace

LATEST = "latest.pt"  # a run's newest checkpoint (resume from here)
BEST = "best.pt"  # a run's checkpoint with the lowest validation loss
FORMAT = "lmcli-checkpoint"
VERSION = 1
COMPILED_PREFIX = "_orig_mod."
CHECKSUM = "checksum"  # CRC-32 of the tensors, written last; checked on every read


def save_checkpoint(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    out: str | os.PathLike | BinaryIO | IO[bytes],
    extra: dict[str, Any] | None = None,
) -> None:
    """Save model, optimizer and iteration (plus ``extra`` entries) to a path, atomically, or a file object."""
    entries = {"iteration": iteration, "model": uncompiled_state_dict(model), "optimizer": optimizer.state_dict()}
    write_checkpoint({**entries, **(extra or {})}, out)


def write_checkpoint(entries: dict[str, Any], out: str | os.PathLike | BinaryIO | IO[bytes]) -> None:
    """Save a checkpoint dict (marked as lmcli's, with the checksum of its tensors) to a path, atomically,
    or to a file object."""
    checkpoint = {"format": FORMAT, "version": VERSION, **entries, CHECKSUM: tensor_checksum(entries)}
    if isinstance(out, (str, os.PathLike)):
        with atomic_path(out) as tmp:
            torch.save(checkpoint, tmp)
    else:
        torch.save(checkpoint, out)


def load_checkpoint(
    src: str | os.PathLike | BinaryIO | IO[bytes], model: torch.nn.Module, optimizer: torch.optim.Optimizer | None
) -> int:
    """Restore model (compiled or not) and optimizer state from ``src``; returns the saved iteration."""
    checkpoint = read_checkpoint(src, entries=("iteration", "model", *(("optimizer",) if optimizer is not None else ())))
    load_model_state(model, checkpoint["model"])
    if optimizer is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    return checkpoint["iteration"]


# What each entry of a checkpoint must be. Every reader names the entries it needs.
ENTRY_TYPES: dict[str, type | tuple[type, ...]] = {
    "iteration": int, "model": dict, "optimizer": dict, "config": dict, "model_config": dict, "rng": dict,
    "tokenizer": dict, "best_val_loss": (int, float), "elapsed_s": (int, float),
}
TRAINED = ("iteration", "model", "model_config")  # what generate, eval and export need
RESUMABLE = tuple(ENTRY_TYPES)  # what --resume restores


def tensor_checksum(entries: Any) -> int:
    """CRC-32 of every tensor in ``entries`` (dtype, shape and bytes, in the order a saved dict keeps):
    torch.load does not check the bytes it reads, so a flipped bit in the weights would otherwise load."""
    crc = 0
    for tensor in tensors_in(entries):
        crc = zlib.crc32(f"{tensor.dtype}{tuple(tensor.shape)}".encode(), crc)
        crc = zlib.crc32(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy(), crc)
    return crc


def map_tensors(tree: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``tree`` (a checkpoint's nested dicts, lists and tuples) with ``fn`` applied to every tensor."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: map_tensors(v, fn) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(map_tensors(v, fn) for v in tree)
    return tree


def tensors_in(entries: Any) -> Iterator[torch.Tensor]:
    if isinstance(entries, torch.Tensor):
        yield entries
    elif isinstance(entries, dict):
        for value in entries.values():
            yield from tensors_in(value)
    elif isinstance(entries, (list, tuple)):
        for value in entries:
            yield from tensors_in(value)


def checkpoint_bytes(entries: Any) -> int:
    """About how many bytes ``torch.save`` writes for ``entries``: the bytes of the tensors in it."""
    return sum(t.numel() * t.element_size() for t in tensors_in(entries))


def file_identity(path: str | os.PathLike) -> tuple[int, int, int, int]:
    """What changes when a file is replaced or rewritten: device, inode, size, modification time."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def load_consistently(src: str | os.PathLike | BinaryIO | IO[bytes], map_location: str | torch.device,
                      attempts: int = 3) -> Any:
    """``torch.load`` of ``src``; a path is memory-mapped and read again if it was replaced meanwhile.

    A file is memory-mapped, so checking a checkpoint (the launcher, every rank of a resume) reads only its
    header and tensors are paged in when they are copied into a model. torch opens the path twice to do
    that (the header, then the storages): a training process saving ``latest.pt`` (write, then rename)
    between the two would mix two checkpoints, which the checksum would call damaged.
    """
    if not isinstance(src, (str, os.PathLike)):
        return torch.load(src, map_location=map_location, weights_only=True)
    for attempt in range(attempts):
        before = file_identity(src)
        try:
            checkpoint = torch.load(src, map_location=map_location, weights_only=True, mmap=True)
        except Exception:
            if attempt + 1 < attempts and file_identity(src) != before:
                continue
            raise
        if file_identity(src) == before:
            return checkpoint
    return checkpoint  # replaced during every attempt: the checksum decides


def read_checkpoint(
    src: str | os.PathLike | BinaryIO | IO[bytes], map_location: str | torch.device = "cpu",
    entries: tuple[str, ...] = ("iteration", "model"),
) -> dict:
    """The checkpoint dict in ``src`` with the ``entries`` a reader needs, each checked; an LmcliError
    if it is missing, not an lmcli checkpoint, or damaged."""
    name = src if isinstance(src, (str, os.PathLike)) else getattr(src, "name", "checkpoint")
    if isinstance(src, (str, os.PathLike)) and not Path(src).is_file():
        kind = "is a directory (give a .pt file, a run directory or a run name)" if Path(src).is_dir() else "does not exist"
        raise LmcliError(f"checkpoint {src} {kind}")
    try:
        checkpoint = load_consistently(src, map_location)
    except Exception as e:  # a foreign file can fail to unpickle in any number of ways
        reason = f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e) else type(e).__name__
        raise LmcliError(f"{name} is not an lmcli checkpoint (torch.load failed with {reason})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise LmcliError(f"{name} is not an lmcli checkpoint")
    if checkpoint.get("version") != VERSION:
        raise LmcliError(f"{name} has checkpoint version {checkpoint.get('version')}; this lmcli reads {VERSION}")
    saved_checksum = checkpoint.pop(CHECKSUM, None)  # absent in checkpoints of older lmcli versions
    if saved_checksum is not None:
        content = {k: v for k, v in checkpoint.items() if k not in ("format", "version")}
        if saved_checksum != tensor_checksum(content):
            raise LmcliError(f"{name} is damaged: its tensors do not match the checksum written with them "
                             "(the file changed after it was saved)")
    return check_entries(checkpoint, entries, name)


def check_entries(checkpoint: dict, entries: tuple[str, ...], name: str | os.PathLike) -> dict:
    """``checkpoint``, after checking it has the ``entries`` a reader needs; LmcliError naming the first problem."""
    problem = next((p for key in entries if (p := _entry_problem(checkpoint, key))), None)
    if problem:
        raise LmcliError(f"{name} is damaged or incomplete: {problem}")
    return checkpoint


def _entry_problem(checkpoint: dict, key: str) -> str | None:
    value = checkpoint.get(key)
    if value is None:
        return f"it has no {key!r}"
    if not isinstance(value, ENTRY_TYPES[key]) or isinstance(value, bool):
        return f"its {key!r} is a {type(value).__name__}"
    if key == "iteration" and value < 0:
        return "its iteration is negative"
    if key == "model" and not all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in value.items()):
        return "its 'model' is not a state dict of tensors"
    if key == "tokenizer" and not all(isinstance(value.get(k), str) for k in ("dir", "fingerprint")):
        return "its 'tokenizer' does not name a directory and a fingerprint"
    return None


def uncompiled_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with the ``_orig_mod.`` prefix of torch.compile removed."""
    return {k.removeprefix(COMPILED_PREFIX): v for k, v in model.state_dict().items()}


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a state dict into ``model``, whichever of the two was compiled (raises RuntimeError when the
    names or shapes do not match)."""
    state = {k.removeprefix(COMPILED_PREFIX): v for k, v in state.items()}
    getattr(model, "_orig_mod", model).load_state_dict(state)


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], mismatch: str) -> None:
    """``load_model_state``, with names or shapes that do not match reported as one LmcliError: ``mismatch``
    and the last line of PyTorch's message."""
    try:
        load_model_state(model, state)
    except RuntimeError as e:
        raise LmcliError(f"{mismatch} ({str(e).splitlines()[-1].strip()})") from None


def load_model_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild the trained model from a checkpoint written by ``lmcli train``.

    Returns ``(model, model_config, checkpoint)``: the model in eval mode on ``device``, its
    ``lmcli.model.ModelConfig``, and the whole checkpoint dict (``checkpoint["tokenizer"]``
    holds the tokenizer's ``dir`` and ``fingerprint``, ``checkpoint["config"]`` the run's
    resolved config). Raises LmcliError for a missing file or one that is not a checkpoint.
    """
    checkpoint = read_checkpoint(path, map_location=device, entries=TRAINED)
    try:
        model_config = ModelConfig.from_dict(checkpoint["model_config"])
    except LmcliError as e:
        raise LmcliError(f"{path} is damaged: its model config: {e}") from None
    model = TransformerLM.from_config(model_config, device=device, dtype=torch.float32)
    load_weights(model, checkpoint["model"], f"{path} is damaged: its weights do not fit its model config")
    model.eval()
    return model, model_config, checkpoint


def find_checkpoint(spec: str | None, workspace: Workspace) -> Path:
    """The checkpoint file named by ``spec`` (a file, a run directory or a run name in the
    workspace's runs/), or, without one, the most recently written run's; a run's is its
    best.pt, else its latest.pt."""
    if spec is None:
        found = [c for run in sorted(workspace.runs_dir.glob("*/")) if (c := run_checkpoint(run))]
        if not found:
            raise LmcliError(
                f"no checkpoint given and no run with a checkpoint in {workspace.runs_dir} "
                "(train one with `lmcli train`, or pass --checkpoint FILE)"
            )
        return max(found, key=lambda p: p.stat().st_mtime)
    candidates = (Path(spec).expanduser(), workspace.runs_dir / spec)
    for path in candidates:
        if path.is_file():
            return path
        if path.is_dir() and (checkpoint := run_checkpoint(path)):
            return checkpoint
    if any(path.is_dir() for path in candidates):
        raise LmcliError(f"{spec} holds no checkpoint ({BEST} or {LATEST})")
    raise LmcliError(f"checkpoint {spec} does not exist (give a .pt file, a run directory or a run name)")


def checkpoint_tokenizer(checkpoint: dict[str, Any], tokenizer_dir: Path | None, workspace: Workspace) -> tuple[Path, bool]:
    """The tokenizer directory to use with a checkpoint, and whether it is the one the model was trained with.

    ``tokenizer_dir`` if given, else the directory the checkpoint records (while it exists), else
    the workspace's; the second value compares fingerprints (True when the checkpoint has none)."""
    recorded = checkpoint.get("tokenizer") or {}
    if tokenizer_dir is None:
        candidates = [Path(recorded["dir"])] if recorded.get("dir") else []
        tokenizer_dir = next((d for d in candidates if d.is_dir()), workspace.tokenizer_dir)
    return tokenizer_dir, recorded.get("fingerprint") in (None, tokenizer_fingerprint(tokenizer_dir))


def run_checkpoint(run_dir: Path) -> Path | None:
    """A run's best checkpoint, else its latest, else None."""
    return next((p for p in (run_dir / BEST, run_dir / LATEST) if p.is_file()), None)


def capture_rng(batch_generator: torch.Generator) -> dict[str, Any]:
    """Every random state a run depends on, as tensors and plain values."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {**numpy_state, "state": {"key": numpy_state["state"]["key"].tolist(), "pos": numpy_state["state"]["pos"]}},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "batches": batch_generator.get_state(),
    }


def restore_rng(state: dict[str, Any], batch_generator: torch.Generator) -> None:
    """Inverse of ``capture_rng``: put every random generator back where the checkpoint left it."""
    random.setstate(_as_tuples(state["python"]))
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {"key": np.array(numpy_state["state"]["key"], dtype=np.uint32), "pos": numpy_state["state"]["pos"]}
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    batch_generator.set_state(state["batches"])


def _as_tuples(value):
    # random.setstate wants the nested tuples it produced; serialisation may hand back lists
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
