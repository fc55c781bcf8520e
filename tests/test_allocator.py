"""The C heap (embedsearch.allocator): big temporaries taken from the heap, for reuse.

glibc's dynamic mmap threshold (mallopt(3)) is what ``keep_large_blocks`` relies on. Each
case runs in a fresh interpreter, so that the allocator starts from its defaults, and reads
glibc's own account of its mapped blocks (``mallinfo2``).
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

MAPPED = """
import ctypes, sys
import numpy as np
from embedsearch.allocator import keep_large_blocks

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Info
if sys.argv[1] == "keep":
    keep_large_blocks()
    keep_large_blocks()  # (once per process: the second call does nothing)
before = mallinfo2().hblkhd
block = np.ones(16 << 20, dtype=np.uint8)  # a temporary of 16 MiB
print(mallinfo2().hblkhd - before)
"""


def _mapped(mode: str) -> int:
    """Bytes glibc holds in separately mapped blocks once a 16 MiB temporary is made."""
    out = subprocess.run(
        [sys.executable, "-c", MAPPED, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator rule")
def test_a_large_temporary_comes_from_the_heap_once_large_blocks_are_kept():
    """By default glibc maps a 16 MiB block apart and unmaps it when freed, so the next one
    is faulted in afresh; after ``keep_large_blocks`` it comes from the heap, where a freed
    block is reused (at 5M rows a keyword query's temporaries had made 879 page faults a
    query, 41 with it)."""
    assert _mapped("plain") >= 16 << 20
    assert _mapped("keep") == 0
