"""Protocol time constants and a lazy deadline queue for per-peer timers.

Timers are deadlines, not threads: the device asks :meth:`TimerQueue.next_deadline` and the
adapter calls back at that time. Re-arming a timer on every packet (persistent keepalive does)
must stay cheap, so a re-arm only updates the peer's deadline; the heap keeps at most a couple
of entries per (peer, timer) and stale ones are re-queued or skipped when they surface.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from typing import Final, Generic, Protocol, TypeVar

REKEY_AFTER_MESSAGES: Final = 2**60
REKEY_AFTER_TIME: Final = 120.0
REJECT_AFTER_TIME: Final = 180.0
REKEY_ATTEMPT_TIME: Final = 90.0
REKEY_TIMEOUT: Final = 5.0
REKEY_TIMEOUT_JITTER_MAX_MS: Final = 334
KEEPALIVE_TIMEOUT: Final = 10.0
MAX_TIMER_HANDSHAKES: Final = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)  # 18
ZERO_KEYS_AFTER: Final = 3 * REJECT_AFTER_TIME  # 540 s
INITIATIONS_MIN_INTERVAL: Final = 1.0 / 50  # 20 ms flood window
UNDER_LOAD_AFTER_TIME: Final = 1.0


class Timer(enum.IntEnum):
    RETRANSMIT_HANDSHAKE = 0
    SEND_KEEPALIVE = 1
    NEW_HANDSHAKE = 2
    ZERO_KEY_MATERIAL = 3
    PERSISTENT_KEEPALIVE = 4


TIMER_COUNT: Final = len(Timer)


class HasDeadlines(Protocol):
    deadlines: list[float | None]
    queued: list[float | None]


T = TypeVar("T", bound=HasDeadlines)


class TimerQueue(Generic[T]):
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T, int]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def arm(self, owner: T, timer: int, deadline: float) -> None:
        owner.deadlines[timer] = deadline
        queued = owner.queued[timer]
        if queued is None or deadline < queued:
            owner.queued[timer] = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), owner, timer))

    @staticmethod
    def cancel(owner: T, timer: int) -> None:
        owner.deadlines[timer] = None

    @staticmethod
    def pending(owner: T, timer: int) -> bool:
        return owner.deadlines[timer] is not None

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            when, _, owner, timer = heap[0]
            if owner.queued[timer] != when:
                heapq.heappop(heap)  # superseded by an earlier entry
                continue
            real = owner.deadlines[timer]
            if real is None:
                heapq.heappop(heap)
                owner.queued[timer] = None
                continue
            if real > when:
                heapq.heappop(heap)
                owner.queued[timer] = real
                heapq.heappush(heap, (real, next(self._seq), owner, timer))
                continue
            return when
        return None

    def pop_due(self, now: float) -> list[tuple[T, int]]:
        """Remove and return every (owner, timer) whose deadline is at or before ``now``."""
        due: list[tuple[T, int]] = []
        while True:
            when = self.next_deadline()
            if when is None or when > now:
                return due
            _, _, owner, timer = heapq.heappop(self._heap)
            owner.queued[timer] = None
            owner.deadlines[timer] = None
            due.append((owner, timer))

    def clear(self) -> None:
        for _, _, owner, timer in self._heap:
            owner.queued[timer] = None
            owner.deadlines[timer] = None
        self._heap.clear()
