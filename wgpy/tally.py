"""Bounded tallies of the most frequent items of a stream (no I/O).

:class:`TopCounter` is the Space-Saving algorithm (Metwally, Agrawal and El Abbadi, 2005) with
its "stream summary": at most ``capacity`` items are counted; a new item arriving when the
tally is full takes the place of one of the least counted, inheriting that count as its
possible over-count (``error``). Every update is O(1); the memory never grows past
``capacity`` entries, whatever a flood sends. As long as no more than ``capacity`` distinct
items were seen, every count is exact (``error`` 0). An item counted more than
1/``capacity`` of all updates is always in the tally.

:class:`AddressTally` keeps one for the inner source and one for the inner destination
addresses of the packets dropped for one (peer, reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

K = TypeVar("K")

CAPACITY: Final = 64
TOP: Final = 5


@dataclass(frozen=True, slots=True)
class Counted(Generic[K]):
    """An item of a :class:`TopCounter`: its true count lies in ``[count - error, count]``."""

    item: K
    count: int
    error: int = 0


class TopCounter(Generic[K]):
    """The most frequent items of a stream, in bounded memory, O(1) per :meth:`add`."""

    __slots__ = ("_buckets", "_counts", "_errors", "_min", "capacity", "total")

    def __init__(self, capacity: int = CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.total = 0
        self._counts: dict[K, int] = {}
        self._errors: dict[K, int] = {}
        # count -> the items with that count (a dict used as an ordered set)
        self._buckets: dict[int, dict[K, None]] = {}
        self._min = 0  # the least count held (0 while empty)

    def __len__(self) -> int:
        return len(self._counts)

    def add(self, item: K) -> None:
        self.total += 1
        counts = self._counts
        count = counts.get(item)
        if count is None:
            if len(counts) < self.capacity:
                count = 0
                self._errors[item] = 0
                if not counts or self._min > 1:
                    self._min = 1
            else:
                # take the place of an item among the least counted
                count = self._min
                bucket = self._buckets[count]
                evicted = next(iter(bucket))
                del bucket[evicted]
                if not bucket:
                    del self._buckets[count]
                del counts[evicted]
                del self._errors[evicted]
                self._errors[item] = count
                if count not in self._buckets:
                    self._min = count + 1  # the item being moved is now the least counted
        else:
            bucket = self._buckets[count]
            del bucket[item]
            if not bucket:
                del self._buckets[count]
                if count == self._min:
                    self._min = count + 1  # items move up one at a time: count + 1 is held
        counts[item] = count + 1
        self._buckets.setdefault(count + 1, {})[item] = None

    def top(self, n: int = TOP) -> list[Counted[K]]:
        """The ``n`` items counted most, most first (ties: the first counted first)."""
        ranked = sorted(self._counts.items(), key=lambda entry: -entry[1])[:n]
        return [Counted(item, count, self._errors[item]) for item, count in ranked]


@dataclass(slots=True)
class AddressTally:
    """Inner source and destination addresses of the packets dropped for one key."""

    sources: TopCounter[str] = field(default_factory=TopCounter)
    destinations: TopCounter[str] = field(default_factory=TopCounter)

    def add(self, source: str, destination: str) -> None:
        self.sources.add(source)
        self.destinations.add(destination)
