"""Tests for wgpy.allowedips (cryptokey routing table).

Fixed cases follow the kernel selftest (``src/selftest/allowedips.c``) and wireguard-go's
``device/allowedips_test.go`` as summarised in docs/wireguard-behaviour.md §1 and §12 item 4;
the randomized tests compare against a naive list implementation, as both of those do.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from wgpy.allowedips import AllowedIPs, Prefix


class Peer:
    """A stand-in peer: hashed and compared by identity, like the real one."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Peer({self.name})"


class TreeAllowedIPs(AllowedIPs[Peer]):
    """Always uses the binary search over prefix lengths (with markers)."""

    CHAIN_MAX = 0
    SLOTS_MIN = 10**9


class ChainAllowedIPs(AllowedIPs[Peer]):
    """Always probes the prefix lengths one by one, longest first."""

    CHAIN_MAX = 1000


class SlotsTreeAllowedIPs(AllowedIPs[Peer]):
    """Always the two-level structure, with a tree in every slot holding longer prefixes."""

    CHAIN_MAX = 0
    SLOTS_MIN = 0


class SlotsMixedAllowedIPs(AllowedIPs[Peer]):
    """The two-level structure as soon as three lengths are in use; slots with up to two
    lengths of longer prefixes get a chain, others a tree."""

    CHAIN_MAX = 2
    SLOTS_MIN = 0


IMPLEMENTATIONS = [
    AllowedIPs,
    TreeAllowedIPs,
    ChainAllowedIPs,
    SlotsTreeAllowedIPs,
    SlotsMixedAllowedIPs,
]
IMPL_IDS = ["default", "tree", "chain", "slots-tree", "slots-mixed"]


@pytest.fixture(params=IMPLEMENTATIONS, ids=IMPL_IDS)
def table(request: pytest.FixtureRequest) -> AllowedIPs[Peer]:
    cls: type[AllowedIPs[Peer]] = request.param
    return cls()


@pytest.fixture
def peers() -> dict[str, Peer]:
    return {name: Peer(name) for name in "abcdefgh"}


def v4(a: int, b: int, c: int, d: int) -> str:
    return f"{a}.{b}.{c}.{d}"


def v6(a: int, b: int, c: int, d: int) -> str:
    """Address from four 32-bit words, as in the kernel selftest."""
    return str(IPv6Address((a << 96) | (b << 64) | (c << 32) | d))


def snapshot(t: AllowedIPs[Peer], probes: list[str]) -> Any:
    return (
        len(t),
        t.peers(),
        {p: t.entries(p) for p in t.peers()},
        [t.lookup(x) for x in probes],
    )


# --------------------------------------------------------------- kernel / go fixed cases


def test_selftest_ipv4(table: AllowedIPs[Peer], peers: dict[str, Peer]) -> None:
    a, b, c, d, e, g, h = (peers[n] for n in "abcdegh")
    table.insert(f"{v4(192, 168, 4, 0)}/24", a)
    table.insert(f"{v4(192, 168, 4, 4)}/32", b)
    table.insert(f"{v4(192, 168, 0, 0)}/16", c)
    table.insert(f"{v4(192, 95, 5, 64)}/27", d)
    # same masked prefix: ownership moves to c (and masking is required to see that)
    assert table.insert(f"{v4(192, 95, 5, 65)}/27", c) == IPv4Network("192.95.5.64/27")
    table.insert("0.0.0.0/0", e)
    table.insert(f"{v4(64, 15, 112, 0)}/20", g)
    table.insert(f"{v4(64, 15, 123, 211)}/25", h)  # masking required
    table.insert(f"{v4(10, 0, 0, 0)}/25", a)
    table.insert(f"{v4(10, 0, 0, 128)}/25", b)
    table.insert(f"{v4(10, 1, 0, 0)}/30", a)
    table.insert(f"{v4(10, 1, 0, 4)}/30", b)
    table.insert(f"{v4(10, 1, 0, 8)}/29", c)
    table.insert(f"{v4(10, 1, 0, 16)}/29", d)

    expected = [
        (a, (192, 168, 4, 20)),
        (a, (192, 168, 4, 0)),
        (b, (192, 168, 4, 4)),
        (c, (192, 168, 200, 182)),
        (c, (192, 95, 5, 68)),
        (e, (192, 95, 5, 96)),
        (g, (64, 15, 116, 26)),
        (g, (64, 15, 127, 3)),
        (g, (64, 15, 123, 1)),
        (h, (64, 15, 123, 128)),
        (h, (64, 15, 123, 129)),
        (a, (10, 0, 0, 52)),
        (b, (10, 0, 0, 220)),
        (a, (10, 1, 0, 2)),
        (b, (10, 1, 0, 6)),
        (c, (10, 1, 0, 10)),
        (d, (10, 1, 0, 20)),
    ]
    for peer, octets in expected:
        assert table.lookup(v4(*octets)) is peer, (octets, peer)
    assert table.entries(d) == [IPv4Network("10.1.0.16/29")]
    assert table.owner("192.95.5.64/27") is c
    # no IPv6 entries: the IPv4 /0 does not leak into the other family
    assert table.lookup("::") is None
    assert table.lookup("::ffff:192.168.4.20") is None

    for first in (1, 64, 128, 192, 255):
        table.insert(f"{first}.0.0.0/32", a)
    for first in (1, 64, 128, 192, 255):
        assert table.lookup(f"{first}.0.0.0") is a
    table.remove_by_peer(a)
    for first in (1, 64, 128, 192, 255):
        assert table.lookup(f"{first}.0.0.0") is e
    assert table.lookup("192.168.4.20") is c  # a's /24 is gone, c's /16 remains
    assert table.lookup("10.0.0.52") is e
    assert table.entries(a) == []
    assert a not in table.peers()

    for p in peers.values():
        table.remove_by_peer(p)
    assert len(table) == 0
    assert table.peers() == []
    assert table.lookup("192.168.4.4") is None

    table.insert("192.168.0.0/16", a)
    table.insert("192.168.0.0/24", a)
    table.remove_by_peer(a)
    assert table.lookup("192.168.0.1") is None
    assert len(table) == 0


def test_selftest_ipv6(table: AllowedIPs[Peer], peers: dict[str, Peer]) -> None:
    a, b, c, d, e, f, g, h = (peers[n] for n in "abcdefgh")
    table.insert(f"{v6(0x26075300, 0x60006B00, 0, 0xC05F0543)}/128", d)
    table.insert(f"{v6(0x26075300, 0x60006B00, 0, 0)}/64", c)
    table.insert("::/0", e)
    table.insert("::/0", f)  # ownership move
    table.insert(f"{v6(0x24046800, 0, 0, 0)}/32", g)
    # masking required
    table.insert(f"{v6(0x24046800, 0x40040800, 0xDEADBEEF, 0xDEADBEEF)}/64", h)
    table.insert(f"{v6(0x24046800, 0x40040800, 0xDEADBEEF, 0xDEADBEEF)}/128", a)
    table.insert(f"{v6(0x24446800, 0x40E40800, 0xDEAEBEEF, 0xDEFBEEF)}/128", c)
    table.insert(f"{v6(0x24446800, 0xF0E40800, 0xEEAEBEEF, 0)}/98", b)

    expected = [
        (d, (0x26075300, 0x60006B00, 0, 0xC05F0543)),
        (c, (0x26075300, 0x60006B00, 0, 0xC02E01EE)),
        (f, (0x26075300, 0x60006B01, 0, 0)),
        (g, (0x24046800, 0x40040806, 0, 0x1006)),
        (g, (0x24046800, 0x40040806, 0x1234, 0x5678)),
        (f, (0x240467FF, 0x40040806, 0x1234, 0x5678)),
        (f, (0x24046801, 0x40040806, 0x1234, 0x5678)),
        (h, (0x24046800, 0x40040800, 0x1234, 0x5678)),
        (h, (0x24046800, 0x40040800, 0, 0)),
        (h, (0x24046800, 0x40040800, 0x10101010, 0x10101010)),
        (a, (0x24046800, 0x40040800, 0xDEADBEEF, 0xDEADBEEF)),
        (c, (0x24446800, 0x40E40800, 0xDEAEBEEF, 0xDEFBEEF)),
        (b, (0x24446800, 0xF0E40800, 0xEEAEBEEF, 0x12345678)),
    ]
    for peer, words in expected:
        assert table.lookup(v6(*words)) is peer, (words, peer)
    assert table.entries(e) == []
    assert e not in table.peers()
    assert table.entries(f) == [IPv6Network("::/0")]
    assert table.entries(h) == [IPv6Network("2404:6800:4004:800::/64")]
    assert table.lookup("0.0.0.0") is None  # the IPv6 /0 does not match IPv4


def test_selftest_read_back_masking(table: AllowedIPs[Peer], peers: dict[str, Peer]) -> None:
    a = peers["a"]
    table.insert("192.95.5.93/27", a)
    table.insert("2607:5300:6000:6b00::c05f:543/128", a)
    table.insert("10.1.0.20/29", a)
    table.insert("2607:5300:6d8a:6bf8:dab1:f1df:c05f:1523/83", a)
    table.insert("2607:5300:6d8a:6bf8:dab1:f1df:c05f:1523/21", a)
    assert [str(p) for p in table.entries(a)] == [
        "192.95.5.64/27",
        "2607:5300:6000:6b00::c05f:543/128",
        "10.1.0.16/29",
        "2607:5300:6d8a:6bf8:dab1:e000::/83",
        "2607:5000::/21",
    ]
    assert len(table) == 5


def test_remove_single_prefix_absent_or_foreign_is_noop(
    table: AllowedIPs[Peer], peers: dict[str, Peer]
) -> None:
    a, b = peers["a"], peers["b"]
    table.insert("192.168.4.0/24", a)
    table.insert("192.168.4.4/32", b)
    table.insert("10.0.0.0/8", a)
    table.insert("2001:db8::/32", b)
    probes = ["192.168.4.4", "192.168.4.5", "10.1.2.3", "2001:db8::1", "2001:db9::1"]
    before = snapshot(table, probes)

    assert table.remove("192.168.4.1/32", a) is False  # no such /32
    assert table.remove("192.168.4.0/24", b) is False  # owned by a, not b
    assert table.remove("192.168.4.0/25", a) is False  # different length
    assert table.remove("2001:db8::/32", a) is False
    assert table.remove("::ffff:192.168.4.0/120", a) is False  # other family
    assert table.remove("10.0.0.0/8", peers["c"]) is False  # unknown peer
    assert snapshot(table, probes) == before

    # and the positive case: owner + exact masked prefix (host bits are ignored)
    assert table.remove("192.168.4.77/24", a) is True
    assert table.lookup("192.168.4.5") is None
    assert table.lookup("192.168.4.4") is b
    assert table.entries(a) == [IPv4Network("10.0.0.0/8")]
    assert table.owner("192.168.4.0/24") is None
    assert len(table) == 3
    assert table.remove("192.168.4.0/24", a) is False  # idempotent


def test_remove_last_prefix_of_a_length(table: AllowedIPs[Peer], peers: dict[str, Peer]) -> None:
    a, b = peers["a"], peers["b"]
    table.insert("10.0.0.0/8", a)
    table.insert("10.1.0.0/16", b)
    assert table.lookup("10.1.2.3") is b
    assert table.remove("10.1.0.0/16", b)
    assert table.lookup("10.1.2.3") is a
    assert table.remove("10.0.0.0/8", a)
    assert table.lookup("10.1.2.3") is None
    assert table.peers() == []


# ------------------------------------------------------------------- ownership and order


def test_ownership_move_goes_to_tail_and_leaves_old_owner(
    table: AllowedIPs[Peer], peers: dict[str, Peer]
) -> None:
    a, b = peers["a"], peers["b"]
    table.insert("10.0.0.0/24", a)
    table.insert("10.0.1.0/24", a)
    table.insert("10.0.2.0/24", a)
    table.insert("172.16.0.0/12", b)
    table.insert("fd00::/8", b)
    assert table.lookup("10.0.1.9") is a

    moved = table.insert("10.0.1.200/24", b)  # host bits set: still the same prefix
    assert moved == IPv4Network("10.0.1.0/24")
    assert table.entries(a) == [IPv4Network("10.0.0.0/24"), IPv4Network("10.0.2.0/24")]
    assert table.entries(b) == [
        IPv4Network("172.16.0.0/12"),
        IPv6Network("fd00::/8"),
        IPv4Network("10.0.1.0/24"),
    ]
    assert table.lookup("10.0.1.9") is b
    assert table.owner("10.0.1.0/24") is b
    assert len(table) == 5

    # re-inserting with the same owner moves the entry to the tail as well
    table.insert("172.16.0.0/12", b)
    assert table.entries(b)[-1] == IPv4Network("172.16.0.0/12")
    assert table.entries(b)[0] == IPv6Network("fd00::/8")
    assert len(table) == 5

    # moving a peer's only prefix away drops it from peers()
    table.insert("10.0.0.0/24", b)
    table.insert("10.0.2.0/24", b)
    assert table.entries(a) == []
    assert table.peers() == [b]
    assert table.remove("10.0.0.0/24", a) is False  # a no longer owns it
    assert table.lookup("10.0.0.1") is b


def test_peers_order_and_clear(table: AllowedIPs[Peer], peers: dict[str, Peer]) -> None:
    a, b, c = peers["a"], peers["b"], peers["c"]
    table.insert("10.0.0.0/8", b)
    table.insert("11.0.0.0/8", a)
    table.insert("12.0.0.0/8", c)
    table.insert("13.0.0.0/8", b)
    assert table.peers() == [b, a, c]
    table.insert("11.0.0.0/8", a)  # re-inserting a's only prefix keeps a's place
    assert table.peers() == [b, a, c]
    table.insert("11.0.0.0/8", c)  # a loses its last prefix
    assert table.peers() == [b, c]
    table.insert("14.0.0.0/8", a)  # and comes back at the end
    assert table.peers() == [b, c, a]
    table.remove("14.0.0.0/8", a)
    assert table.peers() == [b, c]
    table.insert("14.0.0.0/8", a)
    table.remove_by_peer(b)
    assert table.peers() == [c, a]
    table.clear()
    assert len(table) == 0
    assert table.peers() == []
    assert table.entries(b) == []
    assert table.lookup("10.0.0.1") is None
    assert table.owner("10.0.0.0/8") is None
    table.insert("10.0.0.0/8", c)
    assert table.lookup("10.0.0.1") is c


# ------------------------------------------------------------------------ families, /0


def test_ipv4_mapped_ipv6_prefix_is_plain_ipv6(
    table: AllowedIPs[Peer], peers: dict[str, Peer]
) -> None:
    a, b = peers["a"], peers["b"]
    got = table.insert("::ffff:10.0.0.0/104", a)
    assert got == IPv6Network("::ffff:a00:0/104")
    assert isinstance(got, IPv6Network)
    assert table.lookup("10.0.0.1") is None
    assert table.lookup(IPv4Address("10.0.0.1")) is None
    assert table.lookup(bytes([10, 0, 0, 1])) is None
    assert table.lookup_v4(int(IPv4Address("10.0.0.1"))) is None
    assert table.match("10.0.0.1") is None
    assert table.lookup("::ffff:10.0.0.1") is a
    assert table.lookup(IPv6Address("::ffff:10.0.0.1").packed) is a
    assert table.owner("10.0.0.0/8") is None
    assert table.owner("::ffff:10.0.0.0/104") is a

    table.insert("10.0.0.0/8", b)
    assert table.lookup("10.0.0.1") is b
    assert table.lookup("::ffff:10.0.0.1") is a
    assert table.entries(a) == [IPv6Network("::ffff:a00:0/104")]
    assert table.entries(b) == [IPv4Network("10.0.0.0/8")]
    # removing the IPv4 prefix leaves the mapped one alone, and vice versa
    assert table.remove("::ffff:10.0.0.0/104", b) is False
    assert table.remove("10.0.0.0/8", b) is True
    assert table.lookup("::ffff:10.0.0.1") is a


def test_default_routes_are_per_family(table: AllowedIPs[Peer], peers: dict[str, Peer]) -> None:
    a, b, c = peers["a"], peers["b"], peers["c"]
    assert table.insert("1.2.3.4/0", a) == IPv4Network("0.0.0.0/0")
    for addr in ("0.0.0.0", "255.255.255.255", "192.0.2.1", "127.0.0.1"):
        assert table.lookup(addr) is a
    for addr in ("::", "::1", "::ffff:192.0.2.1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"):
        assert table.lookup(addr) is None
    table.insert("::/0", b)
    table.insert("2001:db8::/32", c)
    for addr in ("::", "::1", "::ffff:192.0.2.1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"):
        assert table.lookup(addr) is b
    assert table.lookup("2001:db8::1") is c
    assert table.lookup("192.0.2.1") is a
    assert table.match("2001:db8::1") == (IPv6Network("2001:db8::/32"), c)
    assert table.matches("2001:db8::1") == [
        (IPv6Network("2001:db8::/32"), c),
        (IPv6Network("::/0"), b),
    ]
    assert table.matches("192.0.2.1") == [(IPv4Network("0.0.0.0/0"), a)]
    table.remove_by_peer(b)
    assert table.lookup("::1") is None
    assert table.lookup("2001:db8::1") is c


def test_full_length_and_boundaries(table: AllowedIPs[Peer], peers: dict[str, Peer]) -> None:
    a, b = peers["a"], peers["b"]
    table.insert("255.255.255.255/32", a)
    table.insert("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", a)
    table.insert("10.0.0.0/31", b)
    assert table.lookup("255.255.255.255") is a
    assert table.lookup("255.255.255.254") is None
    assert table.lookup("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") is a
    assert table.lookup("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe") is None
    assert table.lookup("10.0.0.1") is b
    assert table.lookup("10.0.0.2") is None
    assert table.lookup("9.255.255.255") is None


def test_matches_longest_first(table: AllowedIPs[Peer], peers: dict[str, Peer]) -> None:
    a, b, c = peers["a"], peers["b"], peers["c"]
    table.insert("10.0.0.0/8", a)
    table.insert("10.1.0.0/16", b)
    table.insert("10.1.2.3/32", c)
    table.insert("10.1.2.0/24", a)
    table.insert("10.2.0.0/16", c)  # does not contain the probe
    table.insert("0.0.0.0/0", b)
    assert table.matches("10.1.2.3") == [
        (IPv4Network("10.1.2.3/32"), c),
        (IPv4Network("10.1.2.0/24"), a),
        (IPv4Network("10.1.0.0/16"), b),
        (IPv4Network("10.0.0.0/8"), a),
        (IPv4Network("0.0.0.0/0"), b),
    ]
    assert table.match("10.1.2.3") == (IPv4Network("10.1.2.3/32"), c)
    assert table.match("10.1.2.4") == (IPv4Network("10.1.2.0/24"), a)
    assert table.matches("11.0.0.0") == [(IPv4Network("0.0.0.0/0"), b)]
    assert table.matches("::1") == []
    assert table.match("::1") is None


# ------------------------------------------------------------------ input forms, errors


def test_address_forms_agree(table: AllowedIPs[Peer], peers: dict[str, Peer]) -> None:
    a, b = peers["a"], peers["b"]
    table.insert(IPv4Network("198.51.100.0/24"), a)
    table.insert(IPv6Network("2001:db8:1::/48"), b)
    for text, peer in (
        ("198.51.100.7", a),
        ("198.51.101.7", None),
        ("2001:db8:1::7", b),
        ("2001:db8:2::7", None),
    ):
        addr = ip_address(text)
        fast = table.lookup_v4(int(addr)) if addr.version == 4 else table.lookup_v6(int(addr))
        assert fast is peer
        assert table.lookup(text) is peer
        assert table.lookup(addr) is peer
        assert table.lookup(addr.packed) is peer
        assert table.lookup(bytearray(addr.packed)) is peer
        assert table.lookup(memoryview(b"\x00" + addr.packed)[1:]) is peer
    # a 4-byte IPv6 lookup would be wrong: bytes length selects the family
    assert table.lookup(bytes(16)) is None
    assert table.lookup(bytes([198, 51, 100, 1])) is a


def test_insert_accepts_network_objects_and_returns_masked(
    table: AllowedIPs[Peer], peers: dict[str, Peer]
) -> None:
    a = peers["a"]
    net = ip_network("192.0.2.77/26", strict=False)
    assert table.insert(net, a) == IPv4Network("192.0.2.64/26")
    assert table.insert("192.0.2.77", a) == IPv4Network("192.0.2.77/32")
    assert table.insert("2001:db8::1", a) == IPv6Network("2001:db8::1/128")
    assert table.insert("2001:db8::1/65", a) == IPv6Network("2001:db8::/65")
    assert table.entries(a) == [
        IPv4Network("192.0.2.64/26"),
        IPv4Network("192.0.2.77/32"),
        IPv6Network("2001:db8::1/128"),
        IPv6Network("2001:db8::/65"),
    ]
    assert table.owner("192.0.2.100/26") is a


@pytest.mark.parametrize(
    "bad",
    [
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/-1",
        "10.0.0/8",
        "not-an-ip/8",
        "",
        "10.0.0.0/8/8",
        "fe80::1%eth0/64",
        "2001:db8::/64x",
    ],
)
def test_malformed_prefixes_raise_value_error(
    table: AllowedIPs[Peer], peers: dict[str, Peer], bad: str
) -> None:
    with pytest.raises(ValueError):
        table.insert(bad, peers["a"])
    assert len(table) == 0
    assert table.peers() == []
    with pytest.raises(ValueError):
        table.remove(bad, peers["a"])
    with pytest.raises(ValueError):
        table.owner(bad)


def test_bad_addresses_and_types(table: AllowedIPs[Peer], peers: dict[str, Peer]) -> None:
    table.insert("0.0.0.0/0", peers["a"])
    for bad in (b"", b"\x01\x02\x03", bytes(5), bytes(15), bytes(17)):
        with pytest.raises(ValueError):
            table.lookup(bad)
        with pytest.raises(ValueError):
            table.match(bad)
    with pytest.raises(ValueError):
        table.lookup("10.0.0.256")
    with pytest.raises(ValueError):
        table.lookup("10.0.0.0/8")
    with pytest.raises(TypeError):
        table.lookup(167772161)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        table.insert(IPv4Address("10.0.0.1"), peers["a"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        table.insert("10.0.0.0/8", None)  # type: ignore[arg-type]
    assert len(table) == 1


# -------------------------------------------------------------------- naive reference

V4_POOL = [
    int(IPv4Address(x))
    for x in (
        "0.0.0.0",
        "10.0.0.0",
        "10.0.0.1",
        "10.0.1.0",
        "10.128.0.0",
        "11.0.0.0",
        "192.168.4.4",
        "255.255.255.255",
    )
]
V6_POOL = [
    int(IPv6Address(x))
    for x in (
        "::",
        "::1",
        "::ffff:10.0.0.1",
        "2001:db8::",
        "2001:db8::1",
        "2001:db8:0:1::",
        "2001:db9::",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    )
]


def make_prefix(version: int, address: int, length: int) -> Prefix:
    width = 32 if version == 4 else 128
    masked = address >> (width - length) << (width - length)
    if version == 4:
        return IPv4Network((masked, length))
    return IPv6Network((masked, length))


class Reference:
    """The dumbest possible table: a list scanned linearly."""

    def __init__(self) -> None:
        self.entries: list[tuple[Prefix, Peer]] = []
        self.lists: dict[Peer, list[Prefix]] = {}

    def insert(self, prefix: Prefix, peer: Peer) -> None:
        for i, (p, owner) in enumerate(self.entries):
            if p == prefix:
                del self.entries[i]
                self.lists[owner].remove(p)
                if not self.lists[owner] and owner is not peer:
                    del self.lists[owner]
                break
        self.entries.append((prefix, peer))
        self.lists.setdefault(peer, []).append(prefix)

    def remove(self, prefix: Prefix, peer: Peer) -> bool:
        for i, (p, owner) in enumerate(self.entries):
            if p == prefix and owner is peer:
                del self.entries[i]
                self.lists[peer].remove(p)
                if not self.lists[peer]:
                    del self.lists[peer]
                return True
        return False

    def remove_by_peer(self, peer: Peer) -> None:
        self.entries = [(p, o) for p, o in self.entries if o is not peer]
        self.lists.pop(peer, None)

    def matches(self, address: IPv4Address | IPv6Address) -> list[tuple[Prefix, Peer]]:
        found = [(p, o) for p, o in self.entries if p.version == address.version and address in p]
        return sorted(found, key=lambda item: -item[0].prefixlen)

    def lookup(self, address: IPv4Address | IPv6Address) -> Peer | None:
        found = self.matches(address)
        return found[0][1] if found else None


def check_address(t: AllowedIPs[Peer], ref: Reference, address: IPv4Address | IPv6Address) -> None:
    expected = ref.matches(address)
    want = expected[0][1] if expected else None
    assert t.lookup(address) is want
    fast = t.lookup_v4(int(address)) if address.version == 4 else t.lookup_v6(int(address))
    assert fast is want
    assert t.lookup(address.packed) is want
    assert t.matches(address) == expected
    assert t.match(address) == (expected[0] if expected else None)


def check_tables(t: AllowedIPs[Peer], ref: Reference, all_peers: list[Peer]) -> None:
    assert len(t) == len(ref.entries)
    # peers() order: order in which each peer last went from no entries to some
    assert t.peers() == list(ref.lists)
    for peer in all_peers:
        assert t.entries(peer) == ref.lists.get(peer, [])
    for prefix, owner in ref.entries:
        assert t.owner(prefix) is owner


def probe_addresses() -> list[IPv4Address | IPv6Address]:
    """Pool addresses and their neighbours across every bit boundary (deterministic)."""
    rng = random.Random(4)
    out: list[IPv4Address | IPv6Address] = []
    for pool, width, cls in ((V4_POOL, 32, IPv4Address), (V6_POOL, 128, IPv6Address)):
        for base in pool:
            out.append(cls(base))
            for bit in rng.sample(range(width), 2):
                out.append(cls(base ^ (1 << bit)))
    return out


PROBES = probe_addresses()


def prefixes() -> st.SearchStrategy[Prefix]:
    v4p = st.builds(
        make_prefix, st.just(4), st.sampled_from(V4_POOL), st.integers(min_value=0, max_value=32)
    )
    v6p = st.builds(
        make_prefix, st.just(6), st.sampled_from(V6_POOL), st.integers(min_value=0, max_value=128)
    )
    return st.one_of(v4p, v6p)


def addresses() -> st.SearchStrategy[IPv4Address | IPv6Address]:
    def near(width: int, base: int, bit: int, tail: int) -> int:
        # flip one bit and randomise everything below it: crosses exactly one boundary
        low = (1 << bit) - 1
        return ((base ^ (1 << bit)) & ~low) | (tail & low)

    a4 = st.builds(
        near,
        st.just(32),
        st.sampled_from(V4_POOL),
        st.integers(0, 31),
        st.integers(0, 2**32 - 1),
    ).map(IPv4Address)
    a6 = st.builds(
        near,
        st.just(128),
        st.sampled_from(V6_POOL),
        st.integers(0, 127),
        st.integers(0, 2**128 - 1),
    ).map(IPv6Address)
    exact = st.one_of(
        st.sampled_from(V4_POOL).map(IPv4Address), st.sampled_from(V6_POOL).map(IPv6Address)
    )
    return st.one_of(exact, a4, a6, st.ip_addresses())


PEERS = [Peer(f"p{i}") for i in range(4)]


class AllowedIPsMachine(RuleBasedStateMachine):
    impl: type[AllowedIPs[Peer]] = AllowedIPs

    def __init__(self) -> None:
        super().__init__()
        self.table: AllowedIPs[Peer] = self.impl()
        self.ref = Reference()

    @rule(prefix=prefixes(), peer=st.sampled_from(PEERS))
    def insert(self, prefix: Prefix, peer: Peer) -> None:
        assert self.table.insert(prefix, peer) == prefix
        self.ref.insert(prefix, peer)

    @rule(prefix=prefixes(), peer=st.sampled_from(PEERS), extra=st.integers(0, 2**128 - 1))
    def insert_with_host_bits(self, prefix: Prefix, peer: Peer, extra: int) -> None:
        host = extra & int(prefix.hostmask)
        address_cls = IPv4Address if prefix.version == 4 else IPv6Address
        text = f"{address_cls(int(prefix.network_address) | host)}/{prefix.prefixlen}"
        assert self.table.insert(text, peer) == prefix
        self.ref.insert(prefix, peer)

    @rule(
        batch=st.lists(st.tuples(prefixes(), st.integers(0, 2**128 - 1)), max_size=6),
        peer=st.sampled_from(PEERS),
    )
    def insert_many(self, batch: list[tuple[Prefix, int]], peer: Peer) -> None:
        """The integer bulk path, with host bits set, and moves of existing entries."""
        existing = [prefix for prefix, _ in self.ref.entries[:2]]
        items = [(prefix, extra & int(prefix.hostmask)) for prefix, extra in batch]
        items += [(prefix, 0) for prefix in existing]
        self.table.insert_many(
            [(p.version, int(p.network_address) | host, p.prefixlen) for p, host in items], peer
        )
        for prefix, _ in items:
            self.ref.insert(prefix, peer)

    @rule(
        prefix=prefixes(),
        extras=st.lists(st.integers(0, 2**128 - 1), max_size=6),
        repeat_existing=st.booleans(),
        peer=st.sampled_from(PEERS),
    )
    def insert_run(
        self, prefix: Prefix, extras: list[int], repeat_existing: bool, peer: Peer
    ) -> None:
        """The bulk path for one version and length: prefixes of ``prefix``'s length at
        other addresses (host bits set), duplicates, and entries that exist (moves)."""
        width = prefix.max_prefixlen
        length = prefix.prefixlen
        addresses = [int(prefix.network_address)] + [extra % 2**width for extra in extras]
        if repeat_existing:
            same = [p for p, _ in self.ref.entries if p.version == prefix.version]
            addresses += [int(p.network_address) for p in same if p.prefixlen == length][:3]
            addresses += addresses[:2]
        self.table.insert_run(prefix.version, length, addresses, peer)
        network = IPv4Network if prefix.version == 4 else IPv6Network
        for address in addresses:
            self.ref.insert(network((address, length), strict=False), peer)

    @precondition(lambda self: bool(self.ref.entries))
    @rule(data=st.data(), peer=st.sampled_from(PEERS))
    def move(self, data: st.DataObject, peer: Peer) -> None:
        prefix, _ = data.draw(st.sampled_from(self.ref.entries))
        self.table.insert(prefix, peer)
        self.ref.insert(prefix, peer)

    @rule(prefix=prefixes(), peer=st.sampled_from(PEERS))
    def remove_any(self, prefix: Prefix, peer: Peer) -> None:
        assert self.table.remove(prefix, peer) is self.ref.remove(prefix, peer)

    @precondition(lambda self: bool(self.ref.entries))
    @rule(data=st.data(), other=st.booleans())
    def remove_existing(self, data: st.DataObject, other: bool) -> None:
        prefix, owner = data.draw(st.sampled_from(self.ref.entries))
        if other:
            owner = data.draw(st.sampled_from([p for p in PEERS if p is not owner]))
        assert self.table.remove(str(prefix), owner) is self.ref.remove(prefix, owner)

    @rule(peer=st.sampled_from(PEERS))
    def remove_by_peer(self, peer: Peer) -> None:
        self.table.remove_by_peer(peer)
        self.ref.remove_by_peer(peer)

    @rule(address=addresses())
    def lookup(self, address: IPv4Address | IPv6Address) -> None:
        check_address(self.table, self.ref, address)

    @invariant()
    def consistent(self) -> None:
        check_tables(self.table, self.ref, PEERS)
        for address in PROBES:
            check_address(self.table, self.ref, address)


STATEFUL_SETTINGS = settings(
    max_examples=50,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class TreeMachine(AllowedIPsMachine):
    impl = TreeAllowedIPs


class ChainMachine(AllowedIPsMachine):
    impl = ChainAllowedIPs


class SlotsTreeMachine(AllowedIPsMachine):
    impl = SlotsTreeAllowedIPs


class SlotsMixedMachine(AllowedIPsMachine):
    impl = SlotsMixedAllowedIPs


TestStatefulDefault = AllowedIPsMachine.TestCase
TestStatefulDefault.settings = STATEFUL_SETTINGS
TestStatefulTree = TreeMachine.TestCase
TestStatefulTree.settings = STATEFUL_SETTINGS
TestStatefulChain = ChainMachine.TestCase
TestStatefulChain.settings = STATEFUL_SETTINGS
TestStatefulSlotsTree = SlotsTreeMachine.TestCase
TestStatefulSlotsTree.settings = STATEFUL_SETTINGS
TestStatefulSlotsMixed = SlotsMixedMachine.TestCase
TestStatefulSlotsMixed.settings = STATEFUL_SETTINGS


# ------------------------------------------------------- larger randomized comparison


def random_prefix(rng: random.Random, version: int) -> Prefix:
    width = 32 if version == 4 else 128
    # bias towards the pool so that prefixes nest and collide, but cover all lengths
    base = rng.choice(V4_POOL if version == 4 else V6_POOL)
    if rng.random() < 0.5:
        base ^= rng.getrandbits(width)
    return make_prefix(version, base, rng.randint(0, width))


def iter_random_addresses(rng: random.Random, ref: Reference, n: int) -> Iterator[Any]:
    for _ in range(n):
        if ref.entries and rng.random() < 0.7:
            prefix, _ = rng.choice(ref.entries)
            width = prefix.max_prefixlen
            host = rng.getrandbits(width) & int(prefix.hostmask)
            yield ip_address(int(prefix.network_address) | host)
        elif rng.random() < 0.5:
            yield IPv4Address(rng.getrandbits(32))
        else:
            yield IPv6Address(rng.getrandbits(128))


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=IMPL_IDS)
def test_randomized_against_reference(impl: type[AllowedIPs[Peer]]) -> None:
    rng = random.Random(20240601)
    peers = [Peer(f"r{i}") for i in range(7)]
    table = impl()
    ref = Reference()
    for round_ in range(5):
        for _ in range(200):
            prefix = random_prefix(rng, rng.choice((4, 6)))
            peer = rng.choice(peers)
            table.insert(prefix, peer)
            ref.insert(prefix, peer)
        for address in iter_random_addresses(rng, ref, 250):
            check_address(table, ref, address)
        # mutate: moves, single removals (own and foreign), one remove_by_peer
        for _ in range(60):
            prefix, owner = rng.choice(ref.entries)
            op = rng.random()
            if op < 0.4:
                new_owner = rng.choice(peers)
                table.insert(prefix, new_owner)
                ref.insert(prefix, new_owner)
            else:
                who = owner if op < 0.8 else rng.choice(peers)
                assert table.remove(prefix, who) is ref.remove(prefix, who)
        if round_ % 2:
            victim = rng.choice(peers)
            table.remove_by_peer(victim)
            ref.remove_by_peer(victim)
        check_tables(table, ref, peers)
        for address in iter_random_addresses(rng, ref, 250):
            check_address(table, ref, address)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ((5, 0, 0), "IP version must be 4 or 6"),
        ((4, 0, 33), "not an IPv4 prefix"),
        ((4, 2**32, 8), "not an IPv4 prefix"),
        ((4, -1, 8), "not an IPv4 prefix"),
        ((6, 2**128, 8), "not an IPv6 prefix"),
        ((6, 0, 129), "not an IPv6 prefix"),
        ((6, 0, -1), "not an IPv6 prefix"),
    ],
)
def test_insert_many_rejects_bad_items_keeping_earlier_ones(
    item: tuple[int, int, int], message: str
) -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    a, b = Peer("a"), Peer("b")
    table.insert("10.0.0.0/8", b)
    with pytest.raises(ValueError, match=message):
        table.insert_many([(4, 0x0A000000, 8), (6, 1, 128), item, (4, 0x0B000000, 8)], a)
    assert [str(p) for p in table.entries(a)] == ["10.0.0.0/8", "::1/128"]
    assert table.entries(b) == []
    assert table.peers() == [a]
    assert table.lookup("10.1.2.3") is a and table.lookup("11.1.2.3") is None


def test_insert_many_with_nothing_valid_leaves_no_empty_peer() -> None:
    table: AllowedIPs[Peer] = AllowedIPs()
    a = Peer("a")
    with pytest.raises(ValueError):
        table.insert_many([(4, 0, 40)], a)
    table.insert_many([], a)
    assert table.peers() == [] and len(table) == 0
    with pytest.raises(TypeError):
        table.insert_many([(4, 0, 0)], None)  # type: ignore[arg-type]


def test_churn_keeps_list_order_and_bounded_logs() -> None:
    """Moves, re-insertions and removals over many rounds: each peer's list stays in
    insertion order with re-insertion moving to the tail (checked against the list-scan
    Reference), and the append-only logs are compacted (bounded by twice the live count)."""
    table: AllowedIPs[Peer] = AllowedIPs()
    ref = Reference()
    a, b = Peer("a"), Peer("b")
    rng = random.Random(7)
    nets: list[Prefix] = [IPv4Network((10 << 24 | i << 8, 24)) for i in range(40)]
    nets += [IPv6Network((0xFD << 120 | i << 64, 64)) for i in range(40)]
    for _ in range(3000):
        net = rng.choice(nets)
        action = rng.random()
        peer = rng.choice([a, b])
        if action < 0.8:
            table.insert(net, peer)
            ref.insert(net, peer)
        else:
            assert table.remove(net, peer) is ref.remove(net, peer)
    for peer in (a, b):
        assert table.entries(peer) == ref.lists.get(peer, [])
        owned = table._by_peer.get(peer)
        if owned is not None:
            assert len(owned.keys) == len(owned.metas) <= 2 * owned.count + 64
    assert table.peers() == list(ref.lists)
    table.remove_by_peer(a)
    ref.remove_by_peer(a)
    assert table.entries(a) == [] and table.entries(b) == ref.lists[b]
    assert len(table) == len(ref.entries)


_PREFIX_TEXTS = st.one_of(
    st.builds(lambda a, n: f"{IPv4Address(a)}/{n}", st.integers(0, 2**32 - 1), st.integers(0, 40)),
    st.builds(
        lambda a, n: f"{IPv6Address(a)}/{n}", st.integers(0, 2**128 - 1), st.integers(0, 140)
    ),
    st.sampled_from(
        [
            "10.0.0.1/08",
            "010.0.0.1/8",
            "10.0.0.1/+8",
            "10.0.0.1/ 8",
            "10.0.0.1",
            "10/8",
            "10.0.0.0/255.0.0.0",
            "::ffff:1.2.3.4/128",
            "::1.2.3.4/100",
            "fe80::1%eth0/64",
            "1.2.3.4/٣",
            "1.2.3.4/",
            "/8",
            "::/0",
            "0.0.0.0/0",
            "FD00::AB/64",
            "1.2.3.4.5/8",
        ]
    ),
    st.text(alphabet="0123456789abcdef.:/%", max_size=20),
)


@settings(max_examples=400)
@given(_PREFIX_TEXTS)
def test_fast_prefix_parse_agrees_with_ipaddress(text: str) -> None:
    """The inet_pton shortcut for string prefixes either declines or gives exactly what
    ``ip_network(text, strict=False)`` gives; it never accepts what ipaddress rejects."""
    from wgpy.allowedips import _fast_prefix

    fast = _fast_prefix(text)
    try:
        expected: Prefix | None = ip_network(text, strict=False)
    except ValueError:
        expected = None
    if fast is not None:
        assert fast == expected and type(fast) is type(expected)


@pytest.mark.parametrize(
    ("version", "length", "addresses"),
    [(5, 8, [1]), (4, 33, [1]), (4, 8, [1, 2**32]), (6, 64, [0, -1, 5]), (4, -1, [0])],
)
def test_insert_run_refuses_bad_items_as_insert_many_does(
    version: int, length: int, addresses: list[int]
) -> None:
    """A run with a bad item inserts what comes before it and raises ValueError, as the
    item-by-item path does."""
    run, many = AllowedIPs[str](), AllowedIPs[str]()
    with pytest.raises(ValueError):
        run.insert_run(version, length, addresses, "a")
    with pytest.raises(ValueError):
        many.insert_many([(version, address, length) for address in addresses], "a")
    assert run.entries("a") == many.entries("a")
