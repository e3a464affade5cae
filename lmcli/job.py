"""This process's place in a multi-process job, read without torch, and how a worker's life follows the job.

``torchrun`` (and ``lmcli train --nproc N``, which runs the same launcher) starts each worker as
a child with ``RANK`` and ``WORLD_SIZE`` in its environment. Three things make such a worker
behave as one part of a job rather than as a program of its own:

- ``follow_launcher``: the worker asks the kernel for SIGTERM when its parent dies (Linux's
  ``PR_SET_PDEATHSIG``), so a launcher killed with ``kill -9`` does not leave its workers
  training to the end for nobody; SIGTERM is a stop request (save, then exit), as from a
  scheduler.
- ``reports_interruption``: Ctrl-C reaches every process of the terminal, and is reported once:
  by ``lmcli train --nproc``'s launcher (``LAUNCHER_REPORTS`` in the workers' environment), or
  under another launcher by rank 0. Until its training loop takes Ctrl-C as a stop request
  (save, then stop), a worker that gets it simply ends, at once and quietly (exit 130): while it
  imports or reads its data there is nothing to save, and a KeyboardInterrupt raised inside an
  import leaves half-imported modules and tracebacks instead of one message.
- ``exit_worker``: a worker ends with ``os._exit`` once its output is flushed (and what was asked
  of it last, ``at_exit``, is done). The interpreter's own teardown would destroy torch's C++
  objects that outlive the process group (gloo's and the store's threads, held by module
  globals) in no defined order, and can abort a process that has already finished its work
  ("terminate called without an active exception"), which the launcher then reports as a
  crashed rank.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import NoReturn

INTERRUPTED = 130  # the exit code of a process stopped by Ctrl-C (128 + SIGINT), as shells report it
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
LAUNCHER_REPORTS = "LMCLI_LAUNCHER_REPORTS"  # set by `lmcli train --nproc` for its workers: it reports Ctrl-C itself


def worker_rank() -> int | None:
    """This process's rank when it is one worker of several (``WORLD_SIZE`` > 1), else None."""
    size, rank = os.environ.get("WORLD_SIZE", ""), os.environ.get("RANK", "")
    if not (size.isdigit() and int(size) > 1 and rank.isdigit()):
        return None
    return int(rank)


def reports_interruption() -> bool:
    """Whether "interrupted" is this process's to print: alone, or rank 0 of a launcher that does not report it."""
    return worker_rank() is None or (worker_rank() == 0 and LAUNCHER_REPORTS not in os.environ)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold a Ctrl-C that comes during the block (heavy imports) and raise its KeyboardInterrupt when the
    block ends. Raised inside an import, it would cut the import in half: numpy then refuses to load
    again, and a library that imports numpy inside try/except goes on without it, the Ctrl-C lost. Only
    where Python's own handler is in place (the main thread of a process that is not a worker)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    held: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt


def follow_launcher() -> None:
    """End quietly on Ctrl-C until the training loop handles it, and have the kernel send this worker
    SIGTERM when the process that launched it dies (Linux only). A launcher that died before this
    call is caught too."""
    signal.signal(signal.SIGINT, end_quietly)
    sigterm_when_parent_dies(os.getppid())


def sigterm_when_parent_dies(parent: int) -> None:
    """Have the kernel send this process SIGTERM when ``parent`` (its parent now, or its parent to be,
    before a fork) dies (Linux only), and send it now if it died already: a request made after the
    death is never answered."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl in this C library: the parent's own SIGTERM still applies
        return
    if os.getppid() != parent:  # orphaned already, before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def end_quietly(signum, frame) -> NoReturn:
    """A worker's answer to Ctrl-C outside its training loop: end now, leaving the message to the launcher."""
    exit_worker(INTERRUPTED)


_last_calls: list[Callable[[], None]] = []


def at_exit(call: Callable[[], None]) -> None:
    """Have ``exit_worker`` call ``call`` after flushing the output (``atexit`` handlers never run there)."""
    _last_calls.append(call)


def exit_worker(code: int) -> NoReturn:
    """End this worker (or an interrupted launcher) with ``code`` once its output is flushed, skipping the
    interpreter's teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or vanished terminal: nothing more can be said there
            pass
    for call in _last_calls:
        call()
    os._exit(code)
