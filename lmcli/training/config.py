"""Training configs: TOML files with one table per concern, checked before anything runs.

A config has the tables ``[model]`` (``lmcli.model.ModelConfig``), ``[data]``,
``[optimizer]``, ``[training]`` and ``[system]``; missing keys take the defaults below and
unknown keys or wrong types are errors that name the key. ``extends = "base.toml"`` and
``--set section.key=value`` work as ``lmcli.toml_config`` describes. A config is a path, or
the name of one bundled with lmcli (``lmcli.configs``: demo, tinystories, ...).

The resolved config (defaults filled in, ``extends`` and overrides applied) is written back
as ``config.toml`` into the run directory, where ``--config`` or ``--resume`` can read it.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmcli.config_values import dataclass_from_table, shown
from lmcli.configs import bundled_config, bundled_names
from lmcli.errors import LmcliError
from lmcli.model.config import ModelConfig
from lmcli.toml_config import apply_override, read_toml


@dataclass(frozen=True)
class DataSource:
    """One source of a mixture: its token files, how often a window is drawn from it, a name for reports."""

    path: str | tuple[str, ...]  # as data.train: a .npy, a glob, a shard directory, or a list of them
    weight: float = 1.0  # relative: the share of windows drawn from this source is weight / sum of weights
    name: str = ""  # in reports (val_loss/NAME); default: the path's file name without its suffix


Data = str | tuple[str, ...] | tuple[DataSource, ...]


@dataclass(frozen=True)
class DataConfig:
    # token ids from `lmcli encode`: a .npy path, a glob pattern, a shard directory or a list of them;
    # or a mixture, a list of tables {path, weight, name}. Relative paths live in the workspace.
    train: Data = "data/train.npy"
    valid: Data = "data/valid.npy"
    tokenizer: str = "tokenizer"  # the tokenizer directory the ids were encoded with

    def sources(self, split: str) -> tuple[DataSource, ...]:
        """``train`` or ``valid`` as a mixture (one source of weight 1 when it is not one), names filled in."""
        value = getattr(self, split)
        if not (isinstance(value, tuple) and value and isinstance(value[0], DataSource)):
            return (DataSource(value, 1.0, split),)
        return tuple(dataclasses.replace(s, name=s.name or source_name(s.path)) for s in value)


def source_name(path: str | tuple[str, ...]) -> str:
    """A mixture source's default name: its (first) path's file name, without suffix."""
    first = path if isinstance(path, str) else path[0]
    return Path(first.rstrip("/")).name.split(".")[0] or first


@dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["adamw", "muon"] = "adamw"  # muon: Muon for the blocks' matrices, AdamW for the rest
    lr: float = 1e-3  # peak learning rate, reached after warm-up
    min_lr: float = 1e-4  # the cosine schedule's floor
    warmup_steps: int = 100
    cosine_steps: int = 0  # last step of the cosine decay; 0 = the run's last step
    schedule: Literal["cosine", "wsd", "linear"] = "cosine"  # after warm-up: cosine, warmup-stable-decay, or linear
    decay_fraction: float = 0.2  # wsd: the share of the run's steps spent decaying, at the end
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = "linear"  # wsd: how the rate falls from lr to min_lr
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    no_decay: tuple[str, ...] = ()  # glob patterns of parameter names without weight decay
    grad_clip: float = 1.0  # max global gradient L2 norm; 0 = no clipping
    muon_lr: float = 0.02  # muon: the matrices' peak learning rate (the schedule's shape, scaled)
    muon_momentum: float = 0.95  # muon: the momentum of its Nesterov buffer
    muon_weight_decay: float = 0.0  # muon: decoupled weight decay of the matrices
    embedding_lr: float = 0.0  # the token embeddings' peak rate (the schedule's shape, scaled); 0 = lr
    head_lr: float = 0.0  # the output head's peak rate; 0 = lr (a tied head is the embeddings: embedding_lr)


@dataclass(frozen=True)
class TrainingConfig:
    batch_size: int = 32  # sequences per optimizer step, over all processes (the global batch)
    micro_batch_size: int = 0  # sequences one process runs forward at once; 0 = batch_size / processes
    parallel: Literal["auto", "ddp", "fsdp"] = "auto"  # with several processes; auto = ddp
    activation_checkpointing: bool = False  # recompute each block's activations in the backward pass
    total_tokens: int = 40_960_000  # steps = total_tokens / (batch_size * context_length)
    max_steps: int = 0  # when > 0, the number of steps, overriding total_tokens
    seed: int = 0
    log_interval: int = 10  # steps between metrics.jsonl rows
    eval_interval: int = 500  # steps between validation evaluations
    eval_batches: int = 20  # fixed validation batches per evaluation
    final_eval_tokens: int = 0  # tokens of the validation file in the final evaluation; 0 = all
    checkpoint_interval: int = 500  # steps between writes of latest.pt
    keep_interval: int = 0  # steps between kept copies step-NNNNNN.pt; 0 = none
    peak_flops: float = 0.0  # the device's peak FLOP/s, for MFU; 0 = known GPUs only (none on CPU)
    z_loss: float = 0.0  # λ > 0: λ·mean(log² Z) added to the training loss (PaLM used 1e-4); rows report it as z_loss


@dataclass(frozen=True)
class SystemConfig:
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto: cuda, then mps, then cpu
    compile: Literal["auto", "on", "off"] = "auto"  # torch.compile; auto = on for cuda
    autocast: Literal["auto", "on", "off"] = "auto"  # bf16 autocast; auto = on for cuda


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    system: SystemConfig = field(default_factory=SystemConfig)

    @property
    def max_steps(self) -> int:
        t = self.training
        return t.max_steps or t.total_tokens // (t.batch_size * self.model.context_length)

    @property
    def cosine_steps(self) -> int:
        return self.optimizer.cosine_steps or self.max_steps

    def micro_batch_size(self, world_size: int = 1) -> int:
        """The sequences one process runs forward at once."""
        return self.training.micro_batch_size or self.training.batch_size // world_size

    def accumulation_steps(self, world_size: int = 1) -> int:
        """Micro-batches per process in one optimizer step: batch_size / (micro_batch_size x processes),
        which must divide exactly, so a step sees the same global batch on any number of processes."""
        batch, micro = self.training.batch_size, self.micro_batch_size(world_size)
        if micro <= 0 or batch % (micro * world_size):
            processes = f" x {world_size} processes" if world_size > 1 else ""
            raise LmcliError(
                f"training.batch_size ({batch}) must be a multiple of training.micro_batch_size ({micro}){processes}: "
                f"each optimizer step accumulates whole micro-batches"
            )
        return batch // (micro * world_size)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: _plain(dataclasses.asdict(getattr(self, f.name))) for f in dataclasses.fields(self)}

    def to_toml(self) -> str:
        """The config as TOML text that ``load_config`` reads back to an equal config."""
        lines = []
        for table, values in self.to_dict().items():
            lines.append(f"[{table}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
            lines.append("")
        return "\n".join(lines)


def resolve_config_path(name: str | Path) -> Path:
    """A config file by path, or by name among the bundled configs (``demo`` -> lmcli/configs/demo.toml)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise LmcliError(f"config {name} is a directory, not a TOML file")
    if path.exists():  # a pipe (--config <(...)) or a device: readable once, so read into a file
        return copied_stream(path)
    bundled = bundled_config(path.name) if path.parent == Path(".") else None
    if bundled is not None:
        return bundled
    raise LmcliError(f"config {name} does not exist (bundled configs: {', '.join(bundled_names())})")


_copies: dict[Path, Path] = {}  # a stream already read -> its copy


def copied_stream(path: Path) -> Path:
    """A regular file holding what the stream ``path`` gives (read once per process; removed at exit),
    so the config can be read again (``extends``, the workers of ``--nproc``)."""
    if path not in _copies:
        try:
            content = path.read_bytes()
        except OSError as e:
            raise LmcliError(f"config {path} cannot be read ({e.strerror})") from None
        fd, copy = tempfile.mkstemp(prefix="lmcli-config.", suffix=".toml")
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        atexit.register(Path(copy).unlink, missing_ok=True)
        _copies[path] = Path(copy)
    return _copies[path]


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read a TOML config (following ``extends``), apply ``section.key=value`` overrides and check it."""
    raw = read_toml(resolve_config_path(path))
    for override in overrides:
        apply_override(raw, override)
    return config_from_dict(raw)


def config_from_dict(raw: dict[str, Any], check: bool = True) -> TrainConfig:
    """Build a TrainConfig from nested dicts (a parsed TOML file): keys and types always checked, and
    unless ``check`` is False the values too (whether they can make a run)."""
    sections = {}
    for name, values in raw.items():
        if name not in _TABLES:
            raise LmcliError(f"unknown config table [{name}] (known: {', '.join(_TABLES)})")
        if not isinstance(values, dict):
            raise LmcliError(f"config key {name} must be a table [{name}], got {shown(values)}")
        sections[name] = dataclass_from_table(_TABLES[name], name, values)
    config = TrainConfig(**sections)
    if check:
        config.model.validate()
        check_config(config)
    return config


# No run trains at a higher rate; far higher ones overflow float32 in AdamW's step, lr / (1 - beta1^t).
MAX_RATE = 1e9


def check_config(config: TrainConfig) -> None:
    """Errors for values of the right type that still cannot make a run."""
    o, t = config.optimizer, config.training
    positive = {
        "training.batch_size": t.batch_size, "training.total_tokens": t.total_tokens,
        "training.log_interval": t.log_interval, "training.eval_interval": t.eval_interval,
        "training.eval_batches": t.eval_batches, "training.checkpoint_interval": t.checkpoint_interval,
    }
    non_negative = {
        "training.micro_batch_size": t.micro_batch_size, "training.max_steps": t.max_steps, "training.final_eval_tokens": t.final_eval_tokens,
        "training.keep_interval": t.keep_interval, "optimizer.min_lr": o.min_lr, "optimizer.eps": o.eps,
        "optimizer.weight_decay": o.weight_decay, "optimizer.grad_clip": o.grad_clip,
        "optimizer.embedding_lr": o.embedding_lr, "optimizer.head_lr": o.head_lr,
        "optimizer.warmup_steps": o.warmup_steps, "optimizer.cosine_steps": o.cosine_steps,
        "training.peak_flops": t.peak_flops, "training.z_loss": t.z_loss,
    }
    for key, value in positive.items():
        if value <= 0:
            raise LmcliError(f"{key} must be positive, got {value}")
    for key, value in non_negative.items():
        if value < 0:
            raise LmcliError(f"{key} must not be negative, got {value}")
    rates = {"optimizer.lr": o.lr, "optimizer.min_lr": o.min_lr, "optimizer.embedding_lr": o.embedding_lr,
             "optimizer.head_lr": o.head_lr, "optimizer.muon_lr": o.muon_lr}
    for key, value in rates.items():
        if value > MAX_RATE:
            raise LmcliError(f"{key} must be at most {MAX_RATE:,.0f} (a larger rate overflows the update), got {value:g}")
    config.accumulation_steps()
    if not o.lr > 0:
        raise LmcliError(f"optimizer.lr must be positive, got {o.lr}")
    if o.min_lr > o.lr:
        raise LmcliError(f"optimizer.min_lr ({o.min_lr}) must not exceed optimizer.lr ({o.lr})")
    if not all(0 <= b < 1 for b in o.betas):
        raise LmcliError(f"optimizer.betas must each be in [0, 1), got {list(o.betas)}")
    if config.max_steps == 0:
        raise LmcliError(
            f"training.total_tokens ({t.total_tokens:,}) is less than one batch "
            f"({t.batch_size} x {config.model.context_length} tokens)"
        )
    if o.name == "muon" and not (o.muon_lr > 0 and 0 <= o.muon_momentum < 1 and o.muon_weight_decay >= 0):
        raise LmcliError("optimizer.muon_lr must be positive, optimizer.muon_momentum in [0, 1) and "
                         "optimizer.muon_weight_decay not negative")
    if o.head_lr and config.model.tie_embeddings:
        raise LmcliError("optimizer.head_lr: a tied head is the embedding table; set optimizer.embedding_lr instead")
    for split in ("train", "valid"):
        sources = config.data.sources(split)
        if any(not (s.weight > 0) for s in sources):
            raise LmcliError(f"data.{split}: every source's weight must be positive, got {[s.weight for s in sources]}")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise LmcliError(f"data.{split}: two sources are named {sorted(n for n in names if names.count(n) > 1)[0]!r}: "
                             "give each a distinct name")
    if not 0 < o.decay_fraction <= 1:
        raise LmcliError(f"optimizer.decay_fraction must be in (0, 1], got {o.decay_fraction}")
    if o.warmup_steps > config.cosine_steps:
        raise LmcliError(
            f"optimizer.warmup_steps ({o.warmup_steps}) exceeds the schedule's {config.cosine_steps} steps "
            "(lower optimizer.warmup_steps for a short run)"
        )


_TABLES = {"model": ModelConfig, "data": DataConfig, "optimizer": OptimizerConfig, "training": TrainingConfig, "system": SystemConfig}


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table: one source of a data mixture
        return "{" + ", ".join(f"{key} = {_toml_value(v)}" for key, v in value.items()) + "}"
    return json.dumps(value)  # a JSON string is a valid TOML basic string
