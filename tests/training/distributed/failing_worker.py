"""A torchrun worker that runs `lmcli train` with one rank failing: the fault the tests inject.

``FAIL_RANK`` raises an LmcliError in that rank's 5th training step (the others carry on into
their next collective, which must end them, not hang).
"""

import os
import sys

import lmcli.training.loop as loop
from lmcli.__main__ import main
from lmcli.errors import LmcliError

real_step = loop.train_step


def failing_step(state, *args, **kwargs):
    if state.step + 1 == 5 and os.environ["RANK"] == os.environ["FAIL_RANK"]:
        raise LmcliError(f"injected failure on rank {os.environ['RANK']}")
    return real_step(state, *args, **kwargs)


loop.train_step = failing_step
sys.argv[0] = "lmcli"
main()
