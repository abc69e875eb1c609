"""Fuzz target: ``wgpy explain`` agrees with the Device (the property of fuzz/explain_world.py).

The input is decoded into table changes (add, remove one prefix, replace a peer's list,
remove a peer; prefixes of both families and every length, often nested in an earlier one so
that they overlap) and probes (to / from an address: random, inside a prefix of the table, or
just outside it). The invariant is the property itself: every explain answer matches what the
hub Device does with a real packet. The Hypothesis twin is tests/unit/test_explain_property.py.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_network

from fuzz.explain_world import ExplainWorld, Op, OpKind, Probe, address_in

MAX_OPS = 16
MAX_PROBES = 16
REBUILD_EVERY = 100_000

_world: ExplainWorld | None = None
_inputs = 0
_KINDS: tuple[OpKind, ...] = ("add", "remove", "replace", "remove_peer")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def byte(self) -> int:
        value = self.data[self.at] if self.at < len(self.data) else 0
        self.at += 1
        return value

    def integer(self, size: int) -> int:
        chunk = self.data[self.at : self.at + size].ljust(size, b"\0")
        self.at += size
        return int.from_bytes(chunk, "big")

    @property
    def left(self) -> int:
        return len(self.data) - self.at


def _prefix(reader: _Reader, v6: bool, earlier: list[str]) -> str:
    bits = 128 if v6 else 32
    length = reader.byte() % (bits + 1)
    value = reader.integer(bits // 8)
    nest = reader.byte()
    family = [p for p in earlier if (":" in p) == v6]
    if nest & 1 and family:
        # inside an earlier prefix: its network bits, this one's host bits, longer or equal
        base = ip_network(family[(nest >> 1) % len(family)], strict=False)
        host = value & ((1 << (bits - base.prefixlen)) - 1) if base.prefixlen < bits else 0
        value = int(base.network_address) | host
        length = max(length, base.prefixlen)
    address = IPv6Address(value) if v6 else IPv4Address(value)
    return f"{address}/{length}"


def decode(data: bytes) -> tuple[list[Op], list[Probe]]:
    reader = _Reader(data)
    ops: list[Op] = []
    prefixes: list[str] = []
    for _ in range(reader.byte() % (MAX_OPS + 1)):
        head = reader.byte()
        kind = _KINDS[head & 3]
        if kind == "remove_peer" and head & 0x0C:  # 1 in 4 of them: removing a peer is rare
            kind = "add"
        peer = (head >> 4) % 4
        if kind == "remove_peer":
            ops.append(Op(kind, peer))
            continue
        v6 = bool(head & 0x40)
        if kind == "remove" and prefixes and head & 0x80:
            prefix = prefixes[reader.byte() % len(prefixes)]  # remove one that was added
        else:
            prefix = _prefix(reader, v6, prefixes)
        prefixes.append(prefix)
        ops.append(Op(kind, peer, prefix))
    probes: list[Probe] = []
    while reader.left > 0 and len(probes) < MAX_PROBES:
        head = reader.byte()
        direction = "from" if head & 1 else "to"
        peer = (head >> 1) & 3
        v6 = bool(head & 0x08)
        mode = (head >> 4) & 3
        family = [p for p in prefixes if (":" in p) == v6]
        if mode == 0 or not family:
            value = reader.integer(16 if v6 else 4)
            address = str(IPv6Address(value) if v6 else IPv4Address(value))
        else:
            prefix = family[reader.byte() % len(family)]
            address = address_in(prefix, reader.integer(16 if v6 else 4), edge=mode - 1)
        probes.append(Probe(direction, address, peer))
    return ops, probes


def _get_world() -> ExplainWorld:
    global _world, _inputs
    if _world is None or _inputs % REBUILD_EVERY == 0:
        _world = ExplainWorld(seed=5)
    _inputs += 1
    return _world


def test_one_input(data: bytes) -> None:
    ops, probes = decode(data)
    _get_world().run(ops, probes)


def seeds() -> list[bytes]:
    return [
        b"",
        # one v4 /8 for peer 0, probes to and from inside it
        bytes([1, 0x00, 8, 10, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 5, 0x11, 0, 0, 0, 0, 5]),
        # nested v4 prefixes of two peers, probes at the edges
        bytes([2, 0x00, 8, 10, 0, 0, 0, 0, 0x10, 24, 0, 0, 5, 0, 1])
        + bytes([0x20, 0, 0, 0, 0, 0, 0x30, 1, 0, 0, 0, 0, 0x13, 0, 0, 0, 0, 9]),
        # v6 ::/0 for peer 2, a /64 inside for peer 3, a /128 moved to peer 1
        bytes([3, 0x60, 0])
        + bytes(16)
        + bytes([0, 0x70, 64])
        + bytes(16)
        + bytes([1])
        + bytes([0x50, 128])
        + bytes(16)
        + bytes([3])
        + bytes([0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x1B, 1])
        + bytes(16),
        # add, then remove the same prefix, then remove a peer
        bytes([3, 0x00, 16, 192, 168, 0, 0, 0, 0x81, 0, 0x03, 0x10, 0, 0, 1, 0x01, 192, 168, 0, 1]),
        # replace a peer's list
        bytes([2, 0x10, 0, 0, 0, 0, 0, 0, 0x12, 1, 128, 0, 0, 0, 0, 0x00, 1, 2, 3, 4]),
    ]
