"""Memory a run will need, checked against what the device has before anything is allocated.

A batch, a vocabulary or a number of samples far too large for the machine would otherwise
fail deep inside torch with an allocator message, or worse: on Linux a large allocation can
succeed and the process be killed later, when the pages are touched. ``require_memory``
compares an estimate (``lmcli.accounting.memory``) with the memory available now and says how
much is needed and what fits; ``allocation_errors`` turns an allocation that still fails into
the same one-line error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psutil

from lmcli.errors import LmcliError


def available_bytes(device) -> int:
    """Memory free for new tensors: the GPU's free memory on CUDA, available RAM otherwise."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch  # a CUDA device means torch is loaded already; this module stays importable without it

        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:,.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:,.1f} MiB"


def require_memory(needed: int, device, what: str, what_fits: str) -> None:
    """An LmcliError when ``what`` needs more than the memory available on ``device`` now."""
    available = available_bytes(device)
    if needed > available:
        raise LmcliError(f"{what} needs about {gib(needed)}, and {gib(available)} is available on {device}; {what_fits}")


@contextlib.contextmanager
def allocation_errors(what: str, advice: str) -> Iterator[None]:
    """Report an allocation that fails inside the block (CPU or GPU) as one line."""
    try:
        yield
    except MemoryError:
        raise LmcliError(f"out of memory while {what}; {advice}") from None
    except RuntimeError as e:
        message = str(e)
        if "out of memory" not in message and "can't allocate memory" not in message:
            raise
        raise LmcliError(f"out of memory while {what} ({message.splitlines()[0][:120]}); {advice}") from None
