"""Several training processes as one: who this process is, and the few messages they exchange.

``torchrun`` (or ``lmcli train --nproc N``, which runs the same launcher, ``torch.distributed.run``)
starts one process per device and tells each its place in the environment: ``RANK`` (0 ..
``WORLD_SIZE`` - 1 over all machines), ``LOCAL_RANK`` (its device on this machine), and
``MASTER_ADDR`` / ``MASTER_PORT`` where they meet. ``World.from_env`` reads them; without them
the world is one process and nothing here communicates.

``start`` joins the process group: NCCL between GPUs, gloo on CPUs, plus a gloo group for the
small control messages (whether any rank was asked to stop), so those never wait on the GPU.
Then:

- ``all_reduce_sum``: a tensor summed over all ranks (losses, token counts);
- ``any_rank``: whether a flag is set on some rank, so all ranks stop at the same step;
- ``first_to_report``: whether this rank is the first to report a failure, so a job prints its
  error once, not once per rank; the reporter marks when it has said it (``report_said``) and
  the other ranks wait for that (``wait_for_report``) before they exit: the launcher stops the
  whole job as soon as any rank exits, which could cut the reporter off before its message;
- ``lost_peer``: whether an exception only says that another rank went away (its own error,
  or the launcher's report of it, is the message worth showing).

When one rank fails, the launcher stops the others; a collective with a dead rank fails at
once on gloo, and all ranks wait at most ``TIMEOUT`` for each other otherwise.
"""

from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lmcli.errors import LmcliError

TIMEOUT = datetime.timedelta(minutes=10)  # the longest a rank waits for the others in one collective
PEER_ERRORS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted")

REPORTER_KEY, SAID_KEY = "lmcli/reported", "lmcli/said"  # in the job's store: who reports its failure, and when it has


class PeerFailed(LmcliError):
    """Another rank failed and reports why: this rank stops without a message of its own."""


_control_group: dist.ProcessGroup | None = None  # gloo, for the stop flags; None: the default group


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # processes on this machine

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and talks to the user."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> World:
        """This process's place in the job, from the variables ``torchrun`` sets (one process without them)."""
        values = {}
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
            text = os.environ.get(key, "1" if key.endswith("WORLD_SIZE") else "0")
            if not text.isdigit():
                raise LmcliError(f"the environment variable {key} must be a number, got {text!r}")
            values[key] = int(text)
        world = cls(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"], values["LOCAL_WORLD_SIZE"])
        if world.size < 1 or world.rank >= world.size:
            raise LmcliError(f"RANK={world.rank} does not fit WORLD_SIZE={world.size}")
        return world


def start(world: World, device: torch.device) -> None:
    """Join the other ranks (nothing to do for one process)."""
    global _control_group
    if world.size == 1 or dist.is_initialized():
        return
    if "MASTER_ADDR" not in os.environ:
        raise LmcliError("WORLD_SIZE is set but MASTER_ADDR is not: start the job with torchrun or `lmcli train --nproc N`")
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=TIMEOUT,
                                device_id=device if device.type == "cuda" else None)
    except dist.DistError as e:  # not a lost peer: the job could not meet at all (a port taken, an address wrong)
        where = f"{os.environ['MASTER_ADDR']}:{os.environ.get('MASTER_PORT', '?')}"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LmcliError(f"rank {world.rank} could not join the job at {where} (MASTER_ADDR:MASTER_PORT): {reason}") from None
    _control_group = dist.new_group(backend="gloo", timeout=TIMEOUT) if backend != "gloo" else None


def stop() -> None:
    """Leave the job after a finished run. Every rank first waits for the others, so that no rank
    closes its connections while a peer still uses them (a rank that runs ahead, having nothing left
    to write, would tear its threads down under a peer's last collective). Objects that still hold
    the group (a DDP reducer in a reference cycle) are collected first: the group then shuts down
    here, in order, not during interpreter exit. After a failure the group is not left here: the
    peers may be gone, and the worker ends through ``lmcli.job.exit_worker``."""
    global _control_group
    if not dist.is_initialized():
        return
    dist.barrier(group=_control_group)
    gc.collect()
    dist.destroy_process_group()
    _control_group = None


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over all ranks, in place."""
    if active():
        dist.all_reduce(tensor)
    return tensor


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one."""
    if not active():
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_control_group)
    return bool(t.item())


def first_to_report() -> bool:
    """True for exactly one rank of the job, the first to ask (every rank, when alone or when the
    job's store cannot be reached)."""
    if not active():
        return True
    try:
        return _store().add(REPORTER_KEY, 1) == 1
    except Exception:  # the store lived in a rank that is gone: report rather than stay silent
        return True


def report_said() -> None:
    """The reporting rank has printed its error (called as it exits)."""
    try:
        _store().set(SAID_KEY, "1")
    except Exception:  # the store is gone: the ranks waiting for this give up at their timeout
        pass


def wait_for_report(timeout_s: float, reporter_known: bool) -> None:
    """Wait until the rank reporting the job's failure has printed it, at most ``timeout_s``; at once
    when no rank is reporting (``reporter_known``: one is, even if it has not said so yet)."""
    try:
        store = _store()
        if reporter_known or store.add(REPORTER_KEY, 0):
            store.wait([SAID_KEY], datetime.timedelta(seconds=timeout_s))
    except Exception:  # a timeout, or a store that is gone: stop waiting
        pass


def _store() -> dist.Store:
    return dist.distributed_c10d._get_default_store()


def lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another rank stopped."""
    return isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and any(text in str(error) for text in PEER_ERRORS)
    )
