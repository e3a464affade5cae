"""A torchrun worker that runs `lmcli train` with one rank failing: the fault the tests inject.

``FAIL_RANK`` raises an LmcliError in that rank's 5th training step (the others carry on into
their next collective, which must end them, not hang); ``FAIL_RANK=all`` in every rank's; with
``FAIL_AT=start``, as the rank is about to join the others instead. With ``SLOW_REPORT=S``
printing an error takes S seconds longer (a busy machine, a slow terminal).
"""

import os
import sys
import time

import lmcli.cli
import lmcli.training.distributed as distributed
import lmcli.training.loop as loop
from lmcli.__main__ import main
from lmcli.errors import LmcliError

real_step, real_start, real_print_error = loop.train_step, distributed.start, lmcli.cli.print_error


def fail_here(where: str) -> None:
    if os.environ.get("FAIL_AT", "step") == where and os.environ["FAIL_RANK"] in (os.environ["RANK"], "all"):
        raise LmcliError(f"injected failure on rank {os.environ['RANK']}")


def failing_step(state, *args, **kwargs):
    if state.step + 1 == 5:
        fail_here("step")
    return real_step(state, *args, **kwargs)


def failing_start(*args, **kwargs):
    fail_here("start")
    return real_start(*args, **kwargs)


def slow_print_error(message: str) -> None:
    time.sleep(float(os.environ["SLOW_REPORT"]))
    real_print_error(message)


loop.train_step, distributed.start = failing_step, failing_start
if "SLOW_REPORT" in os.environ:
    lmcli.cli.print_error = slow_print_error
sys.argv[0] = "lmcli"
main()
