"""What ``lmcli train`` shows while it runs: its notes, progress bars and a live panel, on stderr.

``TrainDisplay`` is both a training observer (``lmcli.training.observers``) and a progress sink
(``lmcli.progress``): the bars (checking the data, the final validation) and the panel (step,
losses, learning rate, speed, ETA) share one rich ``Live`` display, drawn only on a terminal
and when not quiet (redirected to a file a live display prints only its last frame, and the
run's lines in train.log say more). Notes are printed above it unless quiet.
"""

from __future__ import annotations

from typing import Any, Self

from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from lmcli.training.observers import RunPlan, TrainObserver
from lmcli.ui.console import err_console, format_duration, format_value
from lmcli.ui.progress import Bars


class LiveView:
    """A rich ``Live`` view on stderr, redrawn 4 times a second from ``render()``: only on a terminal, and not when quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.live = Live(console=err_console, refresh_per_second=4, get_renderable=self.render) \
            if not quiet and err_console.is_terminal else None

    def render(self) -> RenderableType:
        raise NotImplementedError

    def __enter__(self) -> Self:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.stop()


class TrainDisplay(LiveView, TrainObserver):
    def __init__(self, quiet: bool = False):
        super().__init__(quiet)
        self.bars = Bars(quiet=self.live is None, embedded=True)
        self.plan: RunPlan | None = None
        self.values: dict[str, Any] = {}

    def task(self, description: str, total: float | None, completed: float = 0, unit: str = "items"):
        return self.bars.task(description, total, completed, unit)

    def on_note(self, message: str) -> None:
        if not self.quiet:
            err_console.print(message, highlight=False, soft_wrap=True, markup=False)

    def on_start(self, plan: RunPlan) -> None:
        self.plan = plan
        self.values.update(step=plan.start_step, best_val_loss=plan.best_val_loss)

    def on_step(self, step: int) -> None:
        self.values["step"] = step

    def on_row(self, row: dict[str, Any]) -> None:
        v = self.values
        if row["kind"] == "train":
            v.update(loss=row["loss"], grad_norm=row["grad_norm"], lr=row["lr"], tokens_per_s=row["tokens_per_s"],
                     mfu=row["mfu"], elapsed=row["elapsed_s"])
            if row["tokens_per_s"] and self.plan is not None:
                v["eta"] = (self.plan.max_steps - row["step"]) * self.plan.tokens_per_step / row["tokens_per_s"]
        elif row["kind"] == "eval":
            best = v.get("best_val_loss")
            v.update(val_loss=row["val_loss"], best_val_loss=row["val_loss"] if best is None else min(best, row["val_loss"]))

    def render(self) -> Group:
        return Group(self.bars.rich, self._panel()) if self.plan is not None else Group(self.bars.rich)

    def _panel(self) -> Table:
        v, total = self.values, self.plan.max_steps
        step = v.get("step", 0)
        grid = Table.grid(padding=(0, 2))
        grid.add_row("[bold]step", f"{step:,}/{total:,}", ProgressBar(total=total, completed=step, width=40))
        grid.add_row("[bold]train loss", format_value(v.get("loss"), ".4f"), f"grad norm {format_value(v.get('grad_norm'), '.3f')}")
        grid.add_row("[bold]val loss", format_value(v.get("val_loss"), ".4f"), f"best {format_value(v.get('best_val_loss'), '.4f')}")
        grid.add_row("[bold]lr", format_value(v.get("lr"), ".2e"), "")
        grid.add_row("[bold]tokens/s", format_value(v.get("tokens_per_s"), ",.0f"), f"MFU {format_value(v.get('mfu'), '.1%')}")
        grid.add_row("[bold]elapsed", format_duration(v.get("elapsed")), f"ETA {format_duration(v.get('eta'))}")
        return grid
