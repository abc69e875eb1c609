"""The C library's allocator, told to keep the memory a daemon frees.

A data batch allocates and frees a few hundred KiB every few hundred microseconds (a GRO read,
the plaintexts, the glued TUN writes, the sealed runs). glibc gives memory at the top of its
heap back to the kernel once more than ``M_TRIM_THRESHOLD`` (128 KiB) is free there, so the
next batch takes fresh pages: each faults in and is zeroed by the kernel. `perf` of a
receiving wgpyd showed a fifth of its CPU there (``clear_page``, ``do_anonymous_page`` under
the memcpy into a new buffer, and ``brk``). Keeping up to :data:`KEEP_FREE` bytes at the top
of the heap costs at most that much resident memory and removes the churn.
"""

from __future__ import annotations

import ctypes
from typing import Final

#: glibc's mallopt parameter numbers (malloc.h)
M_TRIM_THRESHOLD: Final = -1
M_MMAP_THRESHOLD: Final = -3
#: Free bytes the heap may keep at its top before it is trimmed.
KEEP_FREE: Final = 16 << 20
#: Allocations from this size on are mapped on their own (glibc's default, made fixed: a
#: trim threshold set by hand stops glibc from raising it on its own).
MAP_ALONE_FROM: Final = 128 << 10


def keep_freed_memory() -> bool:
    """Raise the trim threshold to :data:`KEEP_FREE` (and pin the mmap threshold at
    :data:`MAP_ALONE_FROM`); whether the C library took both (False on one without
    ``mallopt``, such as musl: nothing changes there)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREE)) and bool(
        mallopt(M_MMAP_THRESHOLD, MAP_ALONE_FROM)
    )
