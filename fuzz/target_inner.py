"""Fuzz target: inner IP header parsing, on both paths.

Incoming: the input is the exact plaintext of a data message that b encrypts on its current
keypair (no padding), so every byte reaches ``Device._deliver``. Outgoing: the same bytes go
to ``Device.send_packet`` as if read from the TUN (cryptokey routing, staging, ICMP
unreachables). ``wgpy.packet.inner_info`` and ``icmp_unreachable`` are called directly too.

Invariants: no exception; an incoming plaintext is delivered, a keepalive, or counted under
exactly one drop reason, and a delivered packet is the plaintext cut to its IP length with a
source that a routes to b; an outgoing packet is sent, staged or counted once; an ICMP error
is a well-formed IPv4/IPv6 packet with valid checksums, never answering an ICMP error.
"""

from __future__ import annotations

from fuzz.world import B_ENDPOINT, World, check_bounded, ipv4, ipv6, receive_checked
from wgpy.packet import icmp_unreachable, inner_info, internet_checksum

REBUILD_EVERY = 65536

_world: World | None = None
_inputs = 0


def _get_world() -> World:
    global _world, _inputs
    if _world is None or _inputs % REBUILD_EVERY == 0:
        _world = World(seed=11)
    _inputs += 1
    return _world


def _check_icmp(packet: bytes, reply: bytes) -> None:
    version = reply[0] >> 4
    if version == 4:
        assert internet_checksum(reply[:20]) == 0, "bad IPv4 header checksum"
        assert int.from_bytes(reply[2:4], "big") == len(reply) <= 576
        assert internet_checksum(reply[20:]) == 0, "bad ICMP checksum"
        assert reply[12:16] == packet[16:20] and reply[16:20] == packet[12:16]
    else:
        assert version == 6 and len(reply) <= 1280
        assert int.from_bytes(reply[4:6], "big") == len(reply) - 40
        pseudo = reply[8:40] + (len(reply) - 40).to_bytes(4, "big") + bytes([0, 0, 0, 58])
        assert internet_checksum(pseudo + reply[40:]) == 0, "bad ICMPv6 checksum"


def test_one_input(data: bytes) -> None:
    world = _get_world()
    a = world.a
    # incoming
    info = inner_info(data)
    datagram = world.seal(data)
    before = a.drop_counts.total()
    a.packets_to_deliver()
    receive_checked(a, datagram, B_ENDPOINT, world.now)
    if a.drop_counts.total() == before and data:
        # delivered: receive_checked drained it; recompute what it must have been
        assert info is not None, "delivered a packet inner_info cannot describe"
        if info.version == 4:
            length = int.from_bytes(data[2:4], "big")
            assert 20 <= length <= len(data)
        else:
            length = 40 + int.from_bytes(data[4:6], "big")
            assert length <= len(data)
        owner = (
            a.allowed_ips.lookup_v4(int.from_bytes(data[12:16], "big"))
            if info.version == 4
            else a.allowed_ips.lookup_v6(int.from_bytes(data[8:24], "big"))
        )
        assert owner is world.peer_ab, "delivered a packet from a source not routed to b"
    # outgoing
    before = a.drop_counts.total()
    staged = sum(len(peer.staged) for peer in a.peers.values())
    a.send_packet(data, world.now)
    dropped = a.drop_counts.total() - before
    sent = a.datagrams_to_send()
    replies = a.packets_to_deliver()
    list(a.events())
    outcome = dropped + len(sent) + (sum(len(peer.staged) for peer in a.peers.values()) > staged)
    assert outcome >= 1, "an outgoing packet vanished"
    assert len(sent) <= 2 and dropped <= 2  # a packet, plus at most a handshake or an overflow
    for reply in replies:
        _check_icmp(data, reply)
        assert inner_info(reply) is not None
    check_bounded(a)
    # the ICMP builder alone, without the rate limit
    icmp = icmp_unreachable(data)
    if icmp is not None:
        _check_icmp(data, icmp)


def seeds() -> list[bytes]:
    return [
        b"",
        ipv4("10.0.0.2", "10.0.0.1"),
        ipv4("10.2.3.4", "10.0.0.1", b"\x08\x00" + bytes(30), proto=1),
        ipv4("10.3.0.1", "10.0.0.1"),
        ipv4("10.0.0.1", "10.0.0.2"),
        ipv4("10.0.0.1", "10.9.9.9", b"\x08\x00" + bytes(6), proto=1),
        ipv4("10.0.0.1", "10.9.9.9", b"\x03\x01" + bytes(6), proto=1),
        ipv6(2, 1),
        ipv6(1, 2),
        ipv6(1, 9, b"\x80\x00" + bytes(6), proto=58),
        ipv4("10.0.0.2", "10.0.0.1") + bytes(13),
        b"\x45" + bytes(19),
        b"\x60" + bytes(39),
    ]
