"""wgpy.ratelimiter against the kernel's rate-limiter self-test and §4.5 of the behaviour spec."""

from __future__ import annotations

import ipaddress

import pytest

from wgpy.ratelimiter import (
    DEFAULT_MAX_ENTRIES,
    PACKET_COST,
    PACKETS_BURSTABLE,
    PACKETS_PER_SECOND,
    TOKEN_MAX,
    RateLimiter,
)


def v4(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def v6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def test_constants() -> None:
    assert PACKETS_PER_SECOND == 20
    assert PACKETS_BURSTABLE == 5
    assert PACKET_COST == 50_000_000
    assert TOKEN_MAX == 250_000_000
    assert DEFAULT_MAX_ENTRIES == 65536


# Kernel selftest/ratelimiter.c expected_results: (allowed?, milliseconds to wait before).
KERNEL_PATTERN = [
    (True, 0),
    (True, 0),
    (True, 0),
    (True, 0),
    (True, 0),
    (False, 0),
    (True, 50),
    (False, 0),
    (True, 100),
    (True, 0),
    (False, 0),
]


@pytest.mark.parametrize("start", [0.0, 1000.0, 123_456.789, 1_700_000_000.25])
def test_kernel_timing_pattern(start: float) -> None:
    """Like the kernel's timings_test: the pattern for one IPv4 source and one IPv6 /64 (whose
    low 64 bits change every step), while other sources interleaved are always allowed."""
    rl = RateLimiter()
    src4 = bytearray(v4("192.168.1.1"))
    src6 = bytearray(v6("2001:db8:1:2::1"))
    elapsed_ms = 0
    for i, (expected, wait_ms) in enumerate(KERNEL_PATTERN):
        elapsed_ms += wait_ms
        now = start + elapsed_ms / 1000
        assert rl.allow(bytes(src4), now) is expected, f"IPv4 step {i}"
        other4 = bytearray(src4)
        other4[3] += i + 1
        assert rl.allow(bytes(other4), now) is True, f"other IPv4 step {i}"
        src6[8:12] = i.to_bytes(4, "big")  # low 64 bits vary: same /64
        src6[12:16] = i.to_bytes(4, "big")
        assert rl.allow(bytes(src6), now) is expected, f"IPv6 step {i}"
        other6 = bytearray(src6)
        other6[0:4] = (int.from_bytes(src6[0:4], "big") + i + 1).to_bytes(4, "big")
        assert rl.allow(bytes(other6), now) is True, f"other IPv6 step {i}"


def test_new_source_starts_with_one_packet_less_than_the_burst() -> None:
    rl = RateLimiter()
    src = v4("10.0.0.1")
    assert [rl.allow(src, 5.0) for _ in range(7)] == [True] * 5 + [False] * 2


def test_tokens_are_capped_at_the_burst() -> None:
    rl = RateLimiter()
    src = v4("10.0.0.1")
    assert rl.allow(src, 5.0)
    # 0.9 s idle (no GC yet) would be 18 packets' worth; the bucket holds only 5
    assert [rl.allow(src, 5.9) for _ in range(7)] == [True] * 5 + [False] * 2


def test_partial_refill() -> None:
    rl = RateLimiter()
    src = v4("10.0.0.1")
    for _ in range(5):
        assert rl.allow(src, 1.0)
    assert not rl.allow(src, 1.0)
    assert not rl.allow(src, 1.049)  # 49 ms: not enough for one packet
    assert rl.allow(src, 1.050)  # 50 ms since the start: one packet (tokens carried over)
    assert not rl.allow(src, 1.050)
    assert rl.allow(src, 1.175)  # 125 ms more: two packets, 25 ms left over
    assert rl.allow(src, 1.175)
    assert not rl.allow(src, 1.175)
    assert rl.allow(src, 1.200)  # the 25 ms carried + 25 ms
    assert not rl.allow(src, 1.200)


def test_denied_packets_do_not_cost_tokens() -> None:
    rl = RateLimiter()
    src = v4("10.0.0.1")
    for _ in range(5):
        rl.allow(src, 1.0)
    for k in range(1, 50):
        assert not rl.allow(src, 1.0 + k * 0.0009)  # denied packets within 45 ms
    assert rl.allow(src, 1.05)  # still exactly one packet after 50 ms


def test_time_going_backwards_gives_no_tokens() -> None:
    rl = RateLimiter()
    src = v4("10.0.0.1")
    for _ in range(5):
        assert rl.allow(src, 10.0)
    assert not rl.allow(src, 9.0)
    assert not rl.allow(src, 10.0)
    assert rl.allow(src, 10.05)


# --- keys: IPv4 address, IPv6 /64 -------------------------------------------------------------


def _exhaust(rl: RateLimiter, src: bytes, now: float) -> None:
    while rl.allow(src, now):
        pass


def test_ipv6_grouped_by_slash_64() -> None:
    rl = RateLimiter()
    now = 3.0
    _exhaust(rl, v6("2001:db8:aaaa:bbbb::1"), now)
    assert not rl.allow(v6("2001:db8:aaaa:bbbb:ffff:ffff:ffff:ffff"), now)  # same /64
    assert not rl.allow(v6("2001:db8:aaaa:bbbb:1234::5678"), now)
    assert rl.allow(v6("2001:db8:aaaa:bbbc::1"), now)  # neighbouring /64
    assert rl.allow(v6("3001:db8:aaaa:bbbb::1"), now)
    assert len(rl) == 3


def test_ipv4_keyed_by_full_address() -> None:
    rl = RateLimiter()
    now = 3.0
    _exhaust(rl, v4("192.0.2.1"), now)
    assert not rl.allow(v4("192.0.2.1"), now)
    assert rl.allow(v4("192.0.2.2"), now)
    assert rl.allow(v4("193.0.2.1"), now)


def test_ipv4_and_ipv6_never_share_a_bucket() -> None:
    rl = RateLimiter()
    now = 3.0
    _exhaust(rl, v4("1.2.3.4"), now)
    assert rl.allow(v6("102:304::"), now)  # first four bytes equal to the IPv4 address
    assert rl.allow(v6("::"), now)


def test_ipv4_mapped_ipv6_keyed_as_ipv4() -> None:
    rl = RateLimiter()
    now = 3.0
    _exhaust(rl, v6("::ffff:198.51.100.7"), now)
    assert not rl.allow(v4("198.51.100.7"), now)
    # other IPv4 sources arriving mapped are not lumped into ::ffff:0:0/64's bucket
    assert rl.allow(v6("::ffff:198.51.100.8"), now)
    assert rl.allow(v4("198.51.100.9"), now)


# --- garbage collection -----------------------------------------------------------------------


def test_gc_drops_entries_idle_more_than_a_second() -> None:
    rl = RateLimiter()
    a, b, c = v4("10.0.0.1"), v4("10.0.0.2"), v4("10.0.0.3")
    assert rl.allow(a, 100.0)  # GC clock starts here
    assert rl.allow(b, 100.5)
    assert len(rl) == 2
    assert rl.allow(c, 101.2)  # GC due: a idle 1.2 s -> dropped, b idle 0.7 s -> kept
    assert len(rl) == 2
    assert rl.allow(c, 101.9)  # b idle 1.4 s, but GC ran 0.7 s ago: at most once a second
    assert len(rl) == 2
    assert rl.allow(c, 102.2)  # GC due again: b dropped, c just used
    assert len(rl) == 1
    assert rl.allow(c, 104.0)  # GC: c was idle 1.8 s -> dropped, then re-created fresh
    assert len(rl) == 1


def test_gc_collects_idle_entries_behind_busy_ones() -> None:
    rl = RateLimiter()
    a, b, c = v4("10.0.0.1"), v4("10.0.0.2"), v4("10.0.0.3")
    assert rl.allow(a, 100.0)  # oldest entry...
    assert rl.allow(b, 100.1)
    assert rl.allow(a, 100.9)  # ...but recently used
    assert rl.allow(c, 101.2)  # GC: b idle 1.1 s -> dropped; a idle 0.3 s -> kept
    assert len(rl) == 2


def test_gc_keeps_entries_idle_exactly_one_second() -> None:
    rl = RateLimiter()
    assert rl.allow(v4("10.0.0.1"), 100.0)
    assert rl.allow(v4("10.0.0.2"), 101.0)  # GC due; 10.0.0.1 idle exactly 1 s: kept
    assert len(rl) == 2
    assert rl.allow(v4("10.0.0.2"), 102.0)  # idle 2 s now: dropped
    assert len(rl) == 1


def test_gc_resets_state_of_a_dropped_source() -> None:
    rl = RateLimiter()
    src = v4("10.0.0.1")
    _exhaust(rl, src, 100.0)
    assert rl.allow(src, 102.0)  # dropped by GC and re-created: allowed again
    assert len(rl) == 1


def test_clear() -> None:
    rl = RateLimiter()
    for i in range(10):
        rl.allow(bytes([10, 0, 0, i]), 1.0)
    rl.clear()
    assert len(rl) == 0


# --- entry cap --------------------------------------------------------------------------------


def test_entry_cap_like_kernel_capacity_test() -> None:
    cap = 256
    rl = RateLimiter(max_entries=cap)
    now = 50.0
    results = [rl.allow(i.to_bytes(4, "big"), now) for i in range(cap + 1)]
    assert results == [True] * cap + [False]
    assert len(rl) == cap
    # known sources keep working while the table is full
    assert rl.allow((0).to_bytes(4, "big"), now)
    # once the idle entries are collected new sources get in again
    assert rl.allow(b"\x0a\x0b\x0c\x0d", now + 1.5)
    assert len(rl) == 1


def test_flood_of_sources_memory_is_bounded() -> None:
    cap = 1000
    rl = RateLimiter(max_entries=cap)
    now = 7.0
    allowed = 0
    for i in range(20 * cap):
        now += 0.00001  # 20 000 sources in 0.2 s: no GC in between
        allowed += rl.allow(b"\x20\x01\x0d\xb8" + i.to_bytes(4, "big") + bytes(8), now)
        assert len(rl) <= cap
    assert allowed == cap


def test_zero_capacity_denies_everything_new() -> None:
    rl = RateLimiter(max_entries=0)
    assert not rl.allow(v4("10.0.0.1"), 1.0)
    with pytest.raises(ValueError):
        RateLimiter(max_entries=-1)
