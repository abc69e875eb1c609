"""wgpy.io.allocator: glibc takes the thresholds, and a freed batch's memory stays mapped."""

from __future__ import annotations

import ctypes
import platform

import pytest

from wgpy.io import allocator


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_memory_stays_at_the_top_of_the_heap() -> None:
    """After keep_freed_memory, freeing 4 MiB of 64 KiB blocks (a few batches' worth) leaves
    the heap's top chunk (``keepcost``) holding them: the next batch reuses those pages
    instead of faulting fresh ones in. With glibc's defaults the top is trimmed back below
    128 KiB."""
    assert allocator.keep_freed_memory()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    libc.mallinfo2.restype = _Mallinfo2
    blocks = [libc.malloc(64 << 10) for _ in range(64)]
    for block in reversed(blocks):
        libc.free(block)
    assert libc.mallinfo2().keepcost >= 2 << 20
