"""``python -m lmcli`` and the ``lmcli`` command: the app, run as a process of its own or as one
worker of a multi-process job (``lmcli.job``: it follows its launcher and ends with ``exit_worker``)."""

from __future__ import annotations

import sys
import traceback

from lmcli import job


def main() -> None:
    worker = job.worker_rank() is not None
    if worker:
        job.follow_launcher()
    try:
        with job.interrupts_held():  # (in a worker, follow_launcher's handler ends it quietly from the start)
            from lmcli.cli import app  # imported here: after follow_launcher, and with Ctrl-C held
        app(prog_name="lmcli")
        code = 0
    except SystemExit as e:  # how the app ends, with its exit code
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:  # Ctrl-C while the app starts, before its commands handle it
        if job.reports_interruption():
            print("error: interrupted", file=sys.stderr)
        code = job.INTERRUPTED
    except BaseException:
        if not worker:
            raise
        traceback.print_exc()  # a bug: its traceback, as without a launcher
        code = 1
    if worker or code == job.INTERRUPTED:  # after Ctrl-C, no teardown: torch's exit handlers can die of a late SIGINT
        job.exit_worker(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
