"""The C heap: large blocks kept for reuse, so big temporaries do not fault afresh, and
freed memory handed back after a build.

glibc's ``malloc`` serves a block larger than its *mmap threshold* (128 KiB at start) with a
fresh mapping, and hands it back to the kernel when it is freed: the next block of that size
is faulted in again, a page at a time. Its documented dynamic rule (``mallopt(3)``,
M_MMAP_THRESHOLD) raises the threshold to the size of a freed mapped block (up to 32 MiB on
64-bit systems), and the trim threshold to twice that, so that blocks up to that size are
taken from and returned to the heap instead, where they are reused without faults.

A keyword query over millions of rows makes temporaries of several MiB (a term's postings,
their scores, their merge): at 5M rows, 879 page faults a query, and ~15 % of its p95 went
to them (25-26 against 28-31 ms). :func:`keep_large_blocks` frees one block of
:data:`BLOCK` bytes, once per process, so the rule sets the thresholds from the first
query instead of as sizes grow (41 faults a query). The price is that up to twice
:data:`BLOCK` of freed memory stays with the process. Elsewhere than glibc nothing changes.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

#: The block freed: under glibc's 32 MiB ceiling for the dynamic threshold (a block above
#: it leaves the threshold where it is).
BLOCK = 24 << 20


@functools.cache  # once per process (a second call would change nothing)
def keep_large_blocks() -> None:
    """Raise the C allocator's thresholds (see the module notes): one block of
    :data:`BLOCK` bytes allocated and freed, its pages never touched."""
    np.empty(BLOCK, dtype=np.uint8)  # mapped by malloc, then freed: the rule applies


_malloc_trim: Any = None


def trim_heap() -> None:
    """Hand freed C-heap memory back to the operating system (glibc's ``malloc_trim``).

    The per-segment columns a filter builds are freed once they are joined into one column,
    but glibc keeps the freed blocks in the process (its threshold for returning memory
    rises after large frees): at 1.01M rows the columns of three keys left RSS at +83 MB
    without a trim and +46 MB with one (37.5 MB of columns). A no-op where the C library has
    no ``malloc_trim`` (musl, macOS).
    """
    global _malloc_trim
    if _malloc_trim is None:
        import ctypes
        import ctypes.util

        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)
