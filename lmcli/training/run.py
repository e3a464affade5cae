"""A training run in its directory: set it up (or reopen it to resume), train, summarise.

A run directory ``<workspace>/runs/<name>`` holds::

    config.toml      the resolved config (defaults, ``extends`` and ``--set`` applied)
    metrics.jsonl    train / eval / final_eval rows (see ``metrics``)
    train.log        what the run printed
    latest.pt        the newest checkpoint (resume from here), best.pt (lowest validation loss),
                     step-NNNNNN.pt when ``training.keep_interval`` is set

Everything the run reads is checked before the directory is created, so a bad config or
bad data leaves nothing behind, and the memory the run needs is compared with what the device
has before anything is allocated. An error during training is recorded as a ``failed`` row.
A run that stopped before its first checkpoint starts again from step 0 on ``--resume``.
``run_training`` is what ``lmcli train`` and ``lmcli sweep`` call; it prints nothing itself:
observers and a progress sink show what it does.

Under ``torchrun`` (or ``lmcli train --nproc N``) every process runs ``run_training``: each
checks the config and the data, joins the others (``distributed``) and trains its share; only
rank 0 creates the run directory, writes its files and reports to the observers.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmcli.accounting.memory import max_batch_size, training_memory
from lmcli.atomic import atomic_open
from lmcli.data.token_shards import shard_paths
from lmcli.errors import LmcliError
from lmcli.memory_budget import allocation_errors, available_bytes, require_memory
from lmcli.model.config import ModelConfig
from lmcli.progress import SILENT, Progress
from lmcli.tokenizer.files import tokenizer_fingerprint
from lmcli.training import distributed
from lmcli.training.checkpoint import (
    BEST,
    LATEST,
    RESUMABLE,
    TRAINED,
    check_entries,
    find_checkpoint,
    load_weights,
    read_checkpoint,
)
from lmcli.training.checkpointer import Checkpointer
from lmcli.training.config import TrainConfig, load_config, resolve_config_path
from lmcli.training.data import load_training_data
from lmcli.training.device import Runtime, setup_runtime
from lmcli.training.distributed import World
from lmcli.training.loop import TrainingDiverged, count_parameters, train, training_flops_per_token
from lmcli.training.metrics import RunLog, perplexity, require_tensorboard, require_wandb
from lmcli.training.observers import TrainObserver
from lmcli.training.state import TrainState
from lmcli.workspace import RUN_CONFIG_FILE as CONFIG_FILE
from lmcli.workspace import Workspace, is_locked

WANDB_PROJECT = "lmcli"
TENSORBOARD_DIR = "tensorboard"  # in the run directory: `tensorboard --logdir workspace/runs` shows every run


@dataclass(frozen=True)
class RunSpec:
    """Which run to train: a new one from ``config``, or the existing run ``resume``."""

    config: str | None = None  # a config path or bundled config name
    resume: str | None = None  # a run directory, or a run name under the workspace's runs/
    overrides: tuple[str, ...] = ()  # section.key=value
    name: str | None = None  # the new run's directory name (default: config name + timestamp)
    device: str | None = None  # overrides system.device
    wandb: bool = False  # also log to Weights & Biases
    tensorboard: bool = False  # also write TensorBoard event files into the run's tensorboard/
    init_from: str | None = None  # start a new run from this checkpoint's weights (a file, run directory or run name)


def run_training(
    spec: RunSpec, workspace: Workspace, observers: Sequence[TrainObserver] = (), progress: Progress = SILENT,
    world: World | None = None,
) -> dict[str, Any]:
    """Start or continue the run ``spec`` names, train it to its last step; returns its summary. With
    several processes (``world``, default: from torchrun's environment) every rank calls this."""
    world = world or World.from_env()
    config, run_dir, checkpoint, notes = prepare_run(spec, workspace, world)
    init = initial_weights(spec, workspace)
    if init is not None:  # the model is the checkpoint's, whatever the config's [model] says
        keys = [override.split("=", 1)[0].strip() for override in spec.overrides]
        changed = [key for key in keys if key.startswith("model.") and key != "model.kernels"]
        if changed:
            raise LmcliError(f"--init-from takes the model of {spec.init_from} as it is: --set {changed[0]} cannot change it "
                             "(only model.kernels can)")
        saved = ModelConfig.from_dict(init["model_config"])  # its tables as saved: an unset multiple is no padding
        config = dataclasses.replace(config, model=dataclasses.replace(saved, kernels=config.model.kernels,
                                                                       vocab_multiple=saved.vocab_multiple or 1))
        notes.append(f"initialized from {spec.init_from} (its model: {config.model.num_layers} layers, d_model "
                     f"{config.model.d_model}); the optimizer starts fresh")
    wandb_module = require_wandb() if spec.wandb and world.is_main else None
    if spec.tensorboard and world.is_main:
        require_tensorboard()  # before any training: a missing package is one line now, not after setup
    s = config.system
    run_flops = config.max_steps * config.training.batch_size * config.model.context_length * training_flops_per_token(config)
    runtime = setup_runtime(s.device, s.compile, s.autocast, config.training.peak_flops, world.local_rank, run_flops / world.size)
    config = with_vocab_multiple(config, runtime.device.type == "cuda")
    if config.model.padded_vocab_size != config.model.vocab_size:
        notes.append(f"vocabulary tables padded from {config.model.vocab_size:,} to {config.model.padded_vocab_size:,} rows "
                     f"(model.vocab_multiple = {config.model.vocab_multiple}; the padding ids are never used)")
    require_training_memory(config, runtime, world)
    resolve = workspace.path
    if init is not None:  # before the data is read: its size check would blame model.vocab_size, which is not the config's
        tokenizer_dir = resolve(config.data.tokenizer)
        if init.get("tokenizer", {}).get("fingerprint") not in (None, tokenizer_fingerprint(tokenizer_dir)):
            raise LmcliError(f"the tokenizer in {tokenizer_dir} (data.tokenizer) is not the one {spec.init_from} was "
                             "trained with: encode the data with that tokenizer and point data.tokenizer at it")
    data = load_training_data(
        data_sources(config, "train", resolve), data_sources(config, "valid", resolve), resolve(config.data.tokenizer),
        config.model.vocab_size, config.model.context_length, progress if world.is_main else SILENT,
    )
    if checkpoint is not None and checkpoint["tokenizer"]["fingerprint"] != data.tokenizer_fingerprint:
        raise LmcliError(f"the tokenizer in {data.tokenizer_dir} is not the one {run_dir} was trained with")
    distributed.start(world, runtime.device)
    summary = train_run(spec, config, run_dir, checkpoint, notes, data, runtime, world, wandb_module,
                        list(observers) if world.is_main else [], progress if world.is_main else SILENT, init)
    distributed.stop()  # after an error the group stays up, so the ranks can agree which one reports it
    return summary


def data_sources(config: TrainConfig, split: str, resolve) -> list[tuple[str, float, list[Path]]]:
    """``data.train`` or ``data.valid`` as (name, weight, token files) sources."""
    return [(s.name, s.weight, shard_paths(s.path, resolve)) for s in config.data.sources(split)]


def with_vocab_multiple(config: TrainConfig, on_cuda: bool) -> TrainConfig:
    """``model.vocab_multiple = 0`` decided for the device: 64 on CUDA (aligned bf16 matrix products), else 1."""
    if config.model.vocab_multiple:
        return config
    multiple = 64 if on_cuda else 1
    return dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_multiple=multiple))


def initial_weights(spec: RunSpec, workspace: Workspace) -> dict | None:
    """The checkpoint ``--init-from`` names (its weights, model config and tokenizer), or None."""
    if spec.init_from is None:
        return None
    if spec.resume is not None:
        raise LmcliError("--init-from starts a new run; a resumed run continues from its own checkpoint")
    checkpoint = read_checkpoint(find_checkpoint(spec.init_from, workspace), entries=TRAINED)
    ModelConfig.from_dict(checkpoint["model_config"])  # checked here, before the run is set up
    return checkpoint


def prepare_run(spec: RunSpec, workspace: Workspace, world: World) -> tuple[TrainConfig, Path, dict | None, list[str]]:
    """The run's config, directory, checkpoint to resume (if any) and notes, all checked."""
    if (spec.config is None) == (spec.resume is None):
        raise LmcliError("give either --config (start a run) or --resume RUN_DIR (continue one)")
    overrides = [*spec.overrides, *([f"system.device={spec.device}"] if spec.device is not None else [])]
    notes = []
    if spec.resume is not None:
        run_dir = find_run(spec.resume, workspace)
        refuse_if_training(run_dir)  # before its checkpoint is read
        config = load_config(run_dir / CONFIG_FILE, overrides)
        checkpoint = read_checkpoint(run_dir / LATEST, entries=TRAINED) if (run_dir / LATEST).is_file() else None
        others = sorted(p.name for p in run_dir.glob("*.pt") if p.name != LATEST)
        if checkpoint is None and others:  # training again from step 0 would overwrite them
            raise LmcliError(f"{run_dir} has {', '.join(others)} but no {LATEST} to resume from; to keep training its "
                             f"weights, start a new run with `lmcli train --config CONFIG --init-from {run_dir / others[0]}`")
        if checkpoint is None:
            notes.append(f"{run_dir} has no checkpoint yet: training it again from step 0")
        elif "imported_from" in checkpoint:
            raise LmcliError(f"{run_dir} holds an imported model, not a run to resume: start a run from it with "
                             f"`lmcli train --config CONFIG --init-from {run_dir.name}`")
        else:
            check_entries(checkpoint, RESUMABLE, run_dir / LATEST)
            check_resumable(config, checkpoint, run_dir)
    else:
        path = resolve_config_path(spec.config)
        config = load_config(path, overrides)
        run_dir = workspace.run_dir(spec.name or f"{path.stem}-{time.strftime('%Y%m%d-%H%M%S')}")
        if run_dir.exists():
            hint = "--resume it" if (run_dir / LATEST).is_file() else f"`lmcli train --resume {run_dir.name}` starts it again"
            raise LmcliError(f"run directory {run_dir} already exists (choose another --name, or {hint})")
        checkpoint = None
    config.accumulation_steps(world.size)  # the batch divides among the processes
    return config, run_dir, checkpoint, notes


def train_run(
    spec: RunSpec, config: TrainConfig, run_dir: Path, checkpoint: dict | None, notes: list[str], data, runtime: Runtime,
    world: World, wandb_module, observers: list[TrainObserver], progress: Progress, init: dict | None = None,
) -> dict[str, Any]:
    """Build the state (from ``init``'s weights, if given), open the run's files (rank 0), train; the summary."""
    with allocation_errors("building the model", "choose a smaller model"):
        state = TrainState.create(config, runtime.device)  # weights, AdamW and its parameter groups: checked here too
    if init is not None:
        load_weights(state.model, init["model"], f"{spec.init_from}: its weights do not fit its model config")
    if checkpoint is not None:  # restored before any file is touched: a checkpoint that cannot be changes nothing
        try:
            state.load_state_dict(checkpoint)
        except LmcliError as e:
            raise LmcliError(f"{run_dir / LATEST}: {e}") from None
    distributed.any_rank(False)  # every rank has checked that the run directory is new before rank 0 makes it
    resumed_step = checkpoint["iteration"] if checkpoint else None
    log = None
    lock = None
    if world.is_main:
        lock = claim_run_dir(run_dir, new=spec.resume is None)
        restarting = spec.resume is not None and checkpoint is None
        log = RunLog(run_dir, resume_step=0 if restarting else resumed_step)
        observers = [log, *observers]
        for note in [*notes, *([log.repair_note] if log.repair_note else [])]:
            for observer in observers:
                observer.on_note(note)
    tokenizer = {"dir": str(data.tokenizer_dir.resolve()), "fingerprint": data.tokenizer_fingerprint}
    checkpointer = Checkpointer(run_dir, config, tokenizer, resumed_step, world)
    try:
        if log is not None:
            with atomic_open(run_dir / CONFIG_FILE, encoding="utf-8") as f:
                f.write(config.to_toml())
        if wandb_module is not None and log is not None:
            log.wandb_run = wandb_module.init(project=WANDB_PROJECT, name=run_dir.name, config=config.to_dict())
        if spec.tensorboard and log is not None:
            log.tensorboard = require_tensorboard()(str(run_dir / TENSORBOARD_DIR))
        advice = "lower training.micro_batch_size or the model's size"
        with allocation_errors("training", advice):
            result = train(config, data, runtime, state, checkpointer, observers, None, progress, world)  # restored above
    except TrainingDiverged:  # recorded by its own row
        raise
    except LmcliError as e:
        checkpointer.close()  # the step of the last checkpoint written, below, is known once its write ends
        if log is not None and not isinstance(e, distributed.PeerFailed):
            log.on_row({"kind": "failed", "step": checkpointer.saved_step or 0, "error": str(e)})
        raise
    finally:
        checkpointer.close()  # a write in flight finishes before the process may exit
        if log is not None:
            log.close()
        if lock is not None:
            os.close(lock)  # releases the claim
    tokens = config.max_steps * config.training.batch_size * config.model.context_length
    return {
        "run_dir": str(run_dir),
        "steps": config.max_steps,
        "tokens": tokens,
        "parameters": count_parameters(result.state.model),
        "device": runtime.describe(),
        "processes": world.size,
        "elapsed_s": round(result.state.elapsed_s, 1),
        "first_step_s": None if result.first_step_s is None else round(result.first_step_s, 2),
        "device_peak_memory_bytes": runtime.peak_memory_bytes(),
        "train_loss": result.train_loss,
        "best_val_loss": result.state.best_val_loss,
        "final_val_loss": result.final_val_loss,
        "final_val_perplexity": perplexity(result.final_val_loss),
        "final_val_bpb": result.final_val_bpb,
        "unigram_entropy": data.train_stats.unigram_entropy(),
        "checkpoint": str(run_dir / LATEST),
        "best_checkpoint": str(run_dir / BEST),
    }


def claim_run_dir(run_dir: Path, new: bool) -> int:
    """Create (``new``) or open the run directory and hold an exclusive lock on it while the run trains:
    a second process starting the same run name, or resuming a run that is training, gets an
    LmcliError instead of writing into the same files. Returns the descriptor that holds the lock."""
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir(exist_ok=not new)
    except FileExistsError:
        raise LmcliError(f"run directory {run_dir} was just created by another process (choose another --name)") from None
    descriptor = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise LmcliError(being_trained(run_dir)) from None
    return descriptor


def refuse_if_training(run_dir: Path) -> None:
    """An LmcliError if a process holds ``claim_run_dir``'s lock on ``run_dir`` now."""
    if is_locked(run_dir):
        raise LmcliError(being_trained(run_dir))


def being_trained(run_dir: Path) -> str:
    return f"{run_dir} is being trained by another process: wait for it to end"


def require_training_memory(config: TrainConfig, runtime: Runtime, world: World = World()) -> None:
    """An LmcliError, before anything is allocated, when the run's estimated peak per process (parameters,
    gradients, AdamW state, activations of one micro-batch: ``lmcli accounting``'s model) exceeds the
    device's available memory (on a CPU, shared by the machine's processes)."""
    dtype = "bf16" if runtime.autocast else "fp32"
    micro = config.micro_batch_size(world.size)
    fsdp = world.size > 1 and config.training.parallel == "fsdp"
    memory = training_memory(config.model, config.model.context_length, micro, dtype, world.size if fsdp else 1)
    sharing = world.local_size if runtime.device.type == "cpu" else 1
    fits = max_batch_size(memory, available_bytes(runtime.device) // sharing)
    what_fits = f"at most training.micro_batch_size={fits} fits" if fits else "not even the model's weights and AdamW state fit"
    per_process = f" in each of {sharing} processes" if sharing > 1 else ""
    require_memory(memory["peak"] * sharing, runtime.device,
                   f"training.micro_batch_size={micro} with this model{per_process}", what_fits)


def find_run(resume: str, workspace: Workspace) -> Path:
    """A run directory given as a path or as a name under the workspace's runs/."""
    for candidate in (Path(resume).expanduser(), workspace.runs_dir / resume):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise LmcliError(f"no run directory {resume} (looked for {CONFIG_FILE} there and in {workspace.runs_dir})")


def check_resumable(config: TrainConfig, checkpoint: dict[str, Any], run_dir: Path) -> None:
    """A resumed run may train longer or differently, but not with another model, and must have steps left."""
    saved = checkpoint.get("model_config")
    if not isinstance(saved, dict) or not config.model.same_architecture(ModelConfig.from_dict(saved)):
        raise LmcliError(f"[model] differs from the model checkpointed in {run_dir}; a resumed run cannot change it")
    done = checkpoint["iteration"]
    if done >= config.max_steps:
        raise LmcliError(
            f"{run_dir} already finished its {config.max_steps:,} steps; to train longer, resume with "
            f"--set training.max_steps=N (N > {done:,})"
        )
