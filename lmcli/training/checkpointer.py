"""When a run writes its checkpoints, and writing them.

- ``latest.pt`` every ``training.checkpoint_interval`` steps, at the last step and when the run
  is asked to stop (Ctrl-C): ``lmcli train --resume`` continues from it;
- ``best.pt`` whenever an evaluation finds the lowest validation loss so far: the weights only
  (what generate, eval and export read), without the optimizer state, a third of the size;
- ``step-NNNNNN.pt``, a kept copy, every ``training.keep_interval`` steps (if set).

A checkpoint holds the run's ``TrainState`` and what is needed to use the model alone: the
resolved config, the model config and the tokenizer's directory and fingerprint. Saving copies
the state to host memory (the only part the training waits for) and a background thread
writes the file while training goes on; the next save, the end of the run and any error wait
for it. Each file is written atomically, so a kill at any moment leaves the previous one
loadable; a write that fails (a full disk) keeps the previous file and stops the run with one
line that says so, at the next save or the end. With several processes every rank takes part
in collecting the state (FSDP gathers its shards) and rank 0 alone writes; all ranks learn
whether it succeeded.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
from pathlib import Path
from typing import Any

from lmcli.errors import LmcliError
from lmcli.training.checkpoint import BEST, LATEST, checkpoint_bytes, map_tensors, write_checkpoint
from lmcli.training.config import TrainConfig
from lmcli.training.distributed import PeerFailed, World, any_rank
from lmcli.training.state import TrainState


class Checkpointer:
    def __init__(self, run_dir: Path, config: TrainConfig, tokenizer: dict[str, str], resumed_step: int | None = None,
                 world: World = World()):
        self.run_dir, self.writes = run_dir, world.is_main
        self.interval, self.keep_interval = config.training.checkpoint_interval, config.training.keep_interval
        self.max_steps = config.max_steps
        self.about_run = {"config": config.to_dict(), "model_config": dataclasses.asdict(config.model), "tokenizer": tokenizer}
        self.saved_step = resumed_step  # the step of the newest latest.pt, if any
        self._latest_queued = resumed_step  # the step of the newest latest.pt written or being written
        self._writer: threading.Thread | None = None  # the write in flight
        self._error: LmcliError | None = None  # how it failed

    def due(self, step: int, stopping: bool) -> bool:
        """Whether ``latest.pt`` is written after this step."""
        return step % self.interval == 0 or step == self.max_steps or stopping

    def save_latest(self, state: TrainState) -> None:
        if self._latest_queued == state.step:  # already written at this step (before the run's first best.pt)
            return
        self._latest_queued = state.step
        names = [LATEST, *([f"step-{state.step:06d}.pt"] if self.keep_interval and state.step % self.keep_interval == 0 else [])]
        self._write(state.state_dict(), names, state.step)

    def save_best(self, state: TrainState) -> None:
        if self._latest_queued is None:  # never a best.pt without a latest.pt: a run killed now stays resumable
            self.save_latest(state)
        self._write(state.weights_dict(), [BEST], state.step)

    def wait(self) -> None:
        """Wait for the write in flight; every rank raises if it failed (all ranks call this together)."""
        self.close()
        error, self._error = self._error, None
        if any_rank(error is not None):
            raise error or PeerFailed("rank 0 could not write a checkpoint")

    def close(self) -> None:
        """Wait for the write in flight, on this rank alone (a failing run on its way out)."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None

    def kept(self) -> str:
        """What a failed run leaves to resume from, for its error message."""
        self.close()
        if self.saved_step is None:
            return "no checkpoint was written"
        return f"{self.run_dir / LATEST} (step {self.saved_step:,}) is kept"

    def _write(self, state: dict[str, Any], names: list[str], step: int) -> None:
        self.wait()
        if not self.writes:
            return
        # a copy on the host: training goes on changing the weights
        entries = map_tensors({**state, **self.about_run}, lambda t: t.detach().to("cpu", copy=True))
        self._writer = threading.Thread(target=self._write_files, args=(entries, names, step), name="checkpoint-writer")
        self._writer.start()

    def _write_files(self, entries: dict[str, Any], names: list[str], step: int) -> None:
        for name in names:
            self._error = self._write_entries(entries, self.run_dir / name, step)
            if self._error is not None:
                return
            if name == LATEST:
                self.saved_step = step

    def _write_entries(self, entries: dict[str, Any], path: Path, step: int) -> LmcliError | None:
        """The error that stops the run, if the write fails."""
        name = path.name
        try:
            write_checkpoint(entries, path)
            return None
        except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
            needed, free = checkpoint_bytes(entries), shutil.disk_usage(self.run_dir).free
            if free < needed:  # what torch's message means
                reason = f"No space left on device: {free / 2**20:,.1f} MiB free, the checkpoint needs {needed / 2**20:,.1f} MiB"
            kept = "no earlier one exists"
            if path.is_file():
                kept = f"the one of step {self.saved_step:,} is kept" if name == LATEST and self.saved_step else "the previous one is kept"
            return LmcliError(f"could not write {path} at step {step:,} ({reason}); {kept}")
