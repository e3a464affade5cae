"""Peak memory of a process tree (this process and its worker processes), sampled.

The operating system keeps each process's own peak (``getrusage`` maxrss), but not the peak of
their sum while they run side by side. A background thread therefore adds up the resident set
size (RSS) of this process and all its descendants every ``interval`` seconds and keeps the
largest sum. Two honest caveats: a peak shorter than the interval can be missed, and pages that
forked workers share with their parent are counted once per process (RSS, not PSS), so the sum
overstates a forked tree's real footprint rather than understating it.
"""

from __future__ import annotations

import threading

import psutil


class PeakMemory:
    """Context manager: ``with PeakMemory() as peak: ...; peak.bytes`` (largest sampled tree RSS)."""

    METHOD = "sampled sum of RSS of the process and its workers"

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.bytes = 0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "PeakMemory":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        self.bytes = max(self.bytes, tree_rss(self._process))


def tree_rss(process: psutil.Process) -> int:
    """RSS of a process plus all its descendants (processes that exit meanwhile are skipped)."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total
