"""Giving freed buffers back to the operating system (glibc's allocator).

glibc serves a request of at least its mmap threshold with a mapping of its own, which ``free``
unmaps at once; smaller requests come from the heap, which only shrinks from its top. The
threshold starts at 128 KiB, but each time a mapped block is freed it rises to that block's size
(up to 32 MiB). So a loop that allocates and frees megabyte-sized buffers (a chunk of text, the
numpy arrays of one batch) soon has them all on the heap, where the small objects that live on
between them pin the freed space: BPE counting held about 3x its live data so (tracemalloc
against RSS). Fixing the threshold keeps such buffers in their own mappings.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's <malloc.h>
LARGE_BUFFER_BYTES = 1 << 20  # below this, buffers are reused from the heap: mapping each costs page faults


def unmap_large_buffers(threshold: int = LARGE_BUFFER_BYTES) -> bool:
    """Make this process (and those it forks from now on) map every buffer of ``threshold``
    bytes or more on its own, so that freeing it returns the memory. False where the C library
    has no ``mallopt`` (macOS) or refuses."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))


def release_free_pages() -> bool:
    """Give the whole pages of the heap's free space back to the operating system (glibc's
    ``malloc_trim``). Small objects freed between others that live on leave holes that the
    heap only reuses, never returns: the merge loop frees a pair's list of words at every merge,
    which left about 20 MB of such holes in a 1 GB ``train-bpe``. False where there is no
    ``malloc_trim`` (macOS) or nothing was released."""
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    return bool(malloc_trim(0))
