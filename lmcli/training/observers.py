"""What a training run tells the world, as events: the loop calls observers, it never prints.

An observer receives, in order: ``on_start`` with the run's plan, ``on_note`` for each line
meant for the user, ``on_step`` after every optimizer step, and ``on_row`` for every metrics
row (``train``, ``eval``, ``final_eval``, ``diverged``, ``interrupted``). Every method is
optional. The run directory's files (``lmcli.training.metrics.RunLog``), Weights & Biases and
the live panel of ``lmcli train`` (``lmcli.ui.live``) are observers; so is anything a user of
the Python API wants to watch, e.g. to stop a run by raising ``KeyboardInterrupt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunPlan:
    """What a run is about to do (sent once, before the first step)."""

    start_step: int  # steps already taken (a resumed run starts after them)
    max_steps: int
    tokens_per_step: int
    best_val_loss: float | None  # of the steps already taken, if any


class TrainObserver:
    """Base class: override the events of interest."""

    def on_start(self, plan: RunPlan) -> None:
        pass

    def on_note(self, message: str) -> None:
        pass

    def on_step(self, step: int) -> None:
        pass

    def on_row(self, row: dict[str, Any]) -> None:
        pass


class Observers(TrainObserver):
    """Several observers as one, called in order."""

    def __init__(self, observers: Sequence[TrainObserver]):
        self.observers = list(observers)

    def on_start(self, plan: RunPlan) -> None:
        for o in self.observers:
            o.on_start(plan)

    def on_note(self, message: str) -> None:
        for o in self.observers:
            o.on_note(message)

    def on_step(self, step: int) -> None:
        for o in self.observers:
            o.on_step(step)

    def on_row(self, row: dict[str, Any]) -> None:
        for o in self.observers:
            o.on_row(row)
