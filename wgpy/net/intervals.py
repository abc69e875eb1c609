"""Sets of endpoint numbers as sorted, disjoint half-open ranges: the network check's sets of
sources and destinations (the endpoints of one IP version, numbered in address order, so that
every prefix is one range of numbers).

An :data:`Ranges` is a tuple of ``(lo, hi)`` with ``lo < hi``, sorted, never touching; the
empty set is ``()``. Pure functions, no classes: these are built and compared millions of
times.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from typing import TypeAlias

__all__ = [
    "Ranges",
    "contains",
    "from_indices",
    "indices",
    "intersect",
    "size",
    "split",
    "subtract",
    "union_all",
]

Ranges: TypeAlias = tuple[tuple[int, int], ...]


def size(ranges: Ranges) -> int:
    return sum(hi - lo for lo, hi in ranges)


def contains(ranges: Ranges, number: int) -> bool:
    at = bisect_right(ranges, (number, 1 << 62)) - 1
    return at >= 0 and ranges[at][0] <= number < ranges[at][1]


def indices(ranges: Ranges) -> Iterator[int]:
    for lo, hi in ranges:
        yield from range(lo, hi)


def from_indices(numbers: Iterable[int]) -> Ranges:
    return union_all((n, n + 1) for n in numbers)


def union_all(pieces: Iterable[tuple[int, int]]) -> Ranges:
    """The union of any ranges, in any order."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(pieces):
        if out and lo <= out[-1][1]:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)


def intersect(a: Ranges, b: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def subtract(a: Ranges, b: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    j = 0
    for lo, hi in a:
        while j < len(b) and b[j][1] <= lo:
            j += 1
        k = j
        while lo < hi and k < len(b) and b[k][0] < hi:
            if b[k][0] > lo:
                out.append((lo, b[k][0]))
            lo = max(lo, b[k][1])
            k += 1
        if lo < hi:
            out.append((lo, hi))
    return tuple(out)


def split(ranges: Ranges, bounds: list[int]) -> list[tuple[int, Ranges]]:
    """``ranges`` cut at ``bounds`` (sorted, from 0 to past the last number): (atom, part)
    for every atom ``k`` (the numbers ``bounds[k]`` to ``bounds[k + 1]``) that ``ranges``
    meets, in atom order."""
    if len(bounds) <= 2:
        return [(0, ranges)] if ranges else []
    # ranges are sorted and disjoint: their pieces come in atom order
    out: list[tuple[int, Ranges]] = []
    last_atom = -1
    pending: list[tuple[int, int]] = []
    for lo, hi in ranges:
        atom = bisect_right(bounds, lo) - 1
        while lo < hi:
            end = bounds[atom + 1]
            if end > hi:
                end = hi
            if atom != last_atom:
                if pending:
                    out.append((last_atom, tuple(pending)))
                pending = [(lo, end)]
                last_atom = atom
            else:
                pending.append((lo, end))
            lo = end
            atom += 1
    if pending:
        out.append((last_atom, tuple(pending)))
    return out
