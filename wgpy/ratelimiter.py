"""Per-source token-bucket rate limiter for handshake messages under load (behaviour spec §4.5).

Kernel (``ratelimiter.c``) semantics: one bucket per source, where the source is the full IPv4
address or the top 64 bits (/64) of an IPv6 address.  Tokens are nanoseconds of elapsed time,
capped at ``TOKEN_MAX`` (a burst of 5 packets); a packet costs ``PACKET_COST`` (1/20 s) and
passes if the bucket holds at least that much.  A source seen for the first time gets a bucket
holding ``TOKEN_MAX - PACKET_COST`` and is allowed.  Buckets idle for more than one second are
garbage-collected; here lazily, at most once per second, from inside :meth:`RateLimiter.allow`.
The number of buckets is capped (kernel: 8 x its hash-table size, 65536 on machines with more
than 1 GiB of RAM); a new source beyond the cap is denied, so a flood of spoofed sources costs
bounded memory.

Sans-I/O: the caller passes ``now`` (monotonic seconds); nothing here reads a clock.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "GC_INTERVAL_NS",
    "PACKETS_BURSTABLE",
    "PACKETS_PER_SECOND",
    "PACKET_COST",
    "TOKEN_MAX",
    "RateLimiter",
]

NSEC_PER_SEC = 1_000_000_000
PACKETS_PER_SECOND = 20
PACKETS_BURSTABLE = 5
PACKET_COST = NSEC_PER_SEC // PACKETS_PER_SECOND  # 50 000 000 ns
TOKEN_MAX = PACKET_COST * PACKETS_BURSTABLE  # 250 000 000 ns
GC_INTERVAL_NS = NSEC_PER_SEC  # GC runs at most this often; entries idle longer than it go
DEFAULT_MAX_ENTRIES = 8192 * 8  # the kernel's cap with 8192 buckets (RAM > 1 GiB)

_V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


def _source_key(source: bytes) -> bytes:
    """The bucket key: a 4-byte IPv4 address as is, an IPv6 address cut to its /64.

    An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, as delivered by a dual-stack socket) is
    keyed as the IPv4 address; otherwise every IPv4 source would share the ``::/64`` bucket.
    """
    if len(source) == 16:
        if source[:12] == _V4_MAPPED_PREFIX:
            return source[12:]
        return source[:8]
    return source


class RateLimiter:
    """Token buckets keyed by source address (see the module docstring)."""

    __slots__ = ("_entries", "_last_gc", "max_entries")

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries = max_entries
        # key -> [tokens_ns, last_time_ns]; ordered by last use (oldest first), so GC only has
        # to look at the front.
        self._entries: OrderedDict[bytes, list[int]] = OrderedDict()
        self._last_gc: int | None = None

    def __len__(self) -> int:
        """Number of live buckets."""
        return len(self._entries)

    def clear(self) -> None:
        """Drop every bucket."""
        self._entries.clear()
        self._last_gc = None

    def allow(self, source: bytes, now: float) -> bool:
        """Charge one packet from ``source`` (raw IP address bytes) at time ``now`` (seconds).

        Returns True if the packet may be processed.  ``now`` should not go backwards; if it
        does, no tokens accrue until it passes the latest time already seen for that source.
        """
        now_ns = round(now * NSEC_PER_SEC)
        last_gc = self._last_gc
        if last_gc is None:
            self._last_gc = now_ns
        elif now_ns - last_gc >= GC_INTERVAL_NS:
            self._gc(now_ns)

        key = _source_key(source)
        entries = self._entries
        entry = entries.get(key)
        if entry is not None:
            last = entry[1]
            if now_ns > last:
                tokens = entry[0] + now_ns - last
                if tokens > TOKEN_MAX:
                    tokens = TOKEN_MAX
                entry[1] = now_ns
            else:  # same instant, or the clock went backwards: no refill, keep the later time
                tokens = entry[0]
            entries.move_to_end(key)
            if tokens >= PACKET_COST:
                entry[0] = tokens - PACKET_COST
                return True
            entry[0] = tokens
            return False

        if len(entries) >= self.max_entries:
            return False
        entries[key] = [TOKEN_MAX - PACKET_COST, now_ns]
        return True

    def _gc(self, now_ns: int) -> None:
        """Drop buckets idle for more than one second (kernel: ``now - last > NSEC_PER_SEC``)."""
        self._last_gc = now_ns
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if now_ns - entry[1] <= NSEC_PER_SEC:
                break
            del entries[key]
