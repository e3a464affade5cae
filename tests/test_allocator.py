"""``unmap_large_buffers``: glibc's mmap threshold fixed, so that freed megabyte buffers leave the process."""

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


def test_without_mallopt_it_says_so(monkeypatch):
    class NoMallopt:
        def __init__(self, name):
            pass

    monkeypatch.setattr(ctypes, "CDLL", NoMallopt)
    assert allocator.unmap_large_buffers() is False
