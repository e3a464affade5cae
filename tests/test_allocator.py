"""``unmap_large_buffers``: glibc's mmap threshold fixed, so that freed megabyte buffers leave the process;
``release_free_pages``: the heap's holes given back."""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys

import pytest

from lmcli import allocator

# After an 8 MB buffer is freed, glibc's threshold has risen to 8 MB, so by default a 2 MB buffer
# comes from the heap; fixed, it gets a mapping of its own (mallinfo2's hblkhd: bytes in mappings).
MAPPED_BYTES = """
import ctypes, sys
from lmcli.allocator import unmap_large_buffers
if sys.argv[1] == "fixed":
    assert unmap_large_buffers()
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Mallinfo2
del bytearray(8 << 20)[:]
before = mallinfo2().hblkhd
buffer = b"x" * (2 << 20)
print(mallinfo2().hblkhd - before)
"""


def bytes_mapped_for_a_2mb_buffer(mode: str) -> int:
    return int(subprocess.run([sys.executable, "-c", MAPPED_BYTES, mode], capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_a_large_buffer_gets_its_own_mapping_even_after_a_larger_one_was_freed():
    assert bytes_mapped_for_a_2mb_buffer("default") == 0
    assert bytes_mapped_for_a_2mb_buffer("fixed") >= 2 << 20


# 60 MB of 2 KB blocks (malloc's heap: pymalloc takes only up to 512 bytes), every 16th kept alive, so
# the freed ones are holes no shrinking of the heap's top can return.
HOLES_RELEASED_MB = """
import sys, psutil
from lmcli.allocator import release_free_pages
blocks = [bytes(2000) for _ in range(30_000)]
kept = blocks[::16]
del blocks
before = psutil.Process().memory_info().rss
released = release_free_pages()
print(released, (before - psutil.Process().memory_info().rss) / 1e6)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_the_heaps_holes_go_back_to_the_system():
    released, mb = subprocess.run([sys.executable, "-c", HOLES_RELEASED_MB], capture_output=True, text=True, check=True).stdout.split()
    assert released == "True" and float(mb) > 30  # of about 56 MB of holes


@pytest.mark.parametrize("use", ["unmap_large_buffers", "release_free_pages"])
def test_without_the_c_function_it_says_so(monkeypatch, use):
    class NoFunctions:
        def __init__(self, name):
            pass

    monkeypatch.setattr(ctypes, "CDLL", NoFunctions)
    assert getattr(allocator, use)() is False
