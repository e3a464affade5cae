"""``lmcli train --nproc N``: N worker processes on this machine, started as ``torchrun`` starts them.

The launcher is PyTorch's own (``torch.distributed.launcher``, what ``torchrun`` and
``python -m torch.distributed.run`` run): a rendezvous on a free local port, one worker per
process with ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` set, each running ``python -m lmcli``
with the same arguments minus ``--nproc``. What it adds is the ending:

- a worker that fails makes the launcher stop the others (SIGTERM, then SIGKILL after
  ``SHUTDOWN_S``); the worker printed its own error, the launcher only says which rank died
  when it was killed by a signal (no message of its own);
- Ctrl-C reaches every worker (they share the terminal), and the launcher forwards it too:
  the ranks finish their step, rank 0 saves, all exit with 130, and the launcher alone says so
  (``lmcli.job``: a worker interrupted while it starts ends at once, quietly).

On a CPU each worker gets ``cores / N`` threads (``OMP_NUM_THREADS``, unless already set), so
N processes do not fight over the cores.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid

from lmcli.errors import LmcliError
from lmcli.job import INTERRUPTED, LAUNCHER_REPORTS
from lmcli.parallel import available_cores

SHUTDOWN_S = 60  # how long stopping workers may take (rank 0 saving a checkpoint) before they are killed


def launch_local(nproc: int, args: list[str]) -> int:
    """Run ``python -m lmcli *args`` in ``nproc`` processes; the job's exit code (0, the failing worker's
    code, or 130 after Ctrl-C), or an LmcliError naming a worker killed by a signal."""
    # torch's launcher is imported only here: `lmcli train` without --nproc never needs it
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in list(logging.Logger.manager.loggerDict):  # quiet: the failing rank speaks for itself
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ[LAUNCHER_REPORTS] = "1"
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, available_cores() // nproc))
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()), rdzv_backend="c10d",
        rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1, shutdown_timeout=SHUTDOWN_S,
    )
    try:
        # Each worker starts with Ctrl-C ignored (the shell's trap survives exec; Python keeps an ignored SIGINT
        # as it is) until it installs its own handler: a Ctrl-C during interpreter start-up would otherwise
        # abort it with "Fatal Python error: init_import_site".
        elastic_launch(config, entrypoint="/bin/sh")("-c", 'trap "" INT; exec "$0" "$@"', sys.executable, "-m", "lmcli", *args)
    except ChildFailedError as e:
        return job_outcome(e.failures)
    except SignalException:
        return INTERRUPTED
    finally:  # the outcome is decided: a late Ctrl-C has nothing left to stop, and must not replace the exit code
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return 0


def job_outcome(failures: dict) -> int:
    """The exit code of a job whose workers failed (rank -> torch's ProcessFailure), or an LmcliError
    for a worker killed by a signal other than a stop request: it could not say why itself. Which
    rank ended first is no guide: a rank that lost its peer exits (1) as soon as the peer is gone."""
    killed = {rank: f for rank, f in failures.items() if f.exitcode < 0 and f.signal_name() not in ("SIGINT", "SIGTERM")}
    if killed:
        rank, failure = min(killed.items())
        raise LmcliError(f"rank {rank} (pid {failure.pid}) was killed by {failure.signal_name()}; the other ranks were stopped")
    codes = [f.exitcode for _, f in sorted(failures.items()) if f.exitcode > 0]
    if codes:
        return INTERRUPTED if INTERRUPTED in codes else codes[0]
    return INTERRUPTED  # stopped by SIGINT or SIGTERM: Ctrl-C, or a scheduler
