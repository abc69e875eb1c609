"""Fuzz target: TUN offloads (wgpy.offload), what a TUN with IFF_VNET_HDR and TSO/USO gives.

The input is one TUN read: a virtio-net header and a packet or super-packet. ``split`` either
refuses it with OffloadError (the runner counts it as ``bad_offload``) or returns packets; the
packets then go through ``coalesce`` as if decrypted, with UDP gluing on.

Invariants: no other exception; at most MAX_SEGMENTS packets, none longer than an IPv6 packet
can be; a super-packet's segments carry its payload in order, with valid IP and transport
checksums and length fields; every packet given to ``coalesce`` comes out exactly once, in
order within its flow (all of them, here); a glued write splits back into the very packets it
holds (what the kernel's own segmentation of it gives). With the C batch extension built,
``seal_super`` (cut and seal in one call) gives byte for byte what its pure twin gives, None
included, whatever the input; and the C GRO (wgpy.batch.coalesce) gives what its twin gives,
on those packets and on the raw input taken as packets.
"""

from __future__ import annotations

import struct

from fuzz.world import ipv4, ipv6
from wgpy import batch, offload
from wgpy.offload import VNET_HDR, VNET_HDR_LEN, OffloadError, coalesce, split
from wgpy.packet import internet_checksum


def _transport_ok(packet: bytes) -> bool:
    """Lengths and checksums of a TCP or UDP packet, word by word."""
    if packet[0] >> 4 == 4:
        ip_len, protocol = (packet[0] & 15) * 4, packet[9]
        if int.from_bytes(packet[2:4], "big") != len(packet):
            return False
        if internet_checksum(packet[:ip_len]) != 0:
            return False
        pseudo = packet[12:20] + struct.pack("!BBH", 0, protocol, len(packet) - ip_len)
    else:
        ip_len, protocol = 40, packet[6]
        if int.from_bytes(packet[4:6], "big") != len(packet) - 40:
            return False
        pseudo = packet[8:40] + struct.pack("!IxxxB", len(packet) - 40, protocol)
    if protocol == offload.UDP and int.from_bytes(packet[ip_len + 4 : ip_len + 6], "big") != (
        len(packet) - ip_len
    ):
        return False
    return internet_checksum(pseudo + packet[ip_len:]) == 0


_KEY = bytes(range(32))


def _plain(sealed: batch.SealedSuper | None) -> object:
    if sealed is None:
        return None
    runs, singles, sent, count = sealed
    return [(bytes(run), size) for run, size in runs], singles, sent, count


def _check_seal_super(data: bytes) -> None:
    """The C call against its twin, with counters that end just below, at and past a limit."""
    try:
        import wgpy._batch as c_batch
    except ImportError:
        return
    counter = int.from_bytes(data[-2:], "little") if len(data) >= 2 else 0
    limit = counter + len(data) % 50
    c = c_batch.seal_super(_KEY, 7, counter, data, 1420, limit)
    assert _plain(c) == _plain(batch.pure_seal_super(_KEY, 7, counter, data, 1420, limit))


def test_one_input(data: bytes) -> None:
    _check_seal_super(data)
    raw = [data, data[VNET_HDR_LEN:], data[VNET_HDR_LEN:], data[: len(data) // 2]]
    for udp in (False, True):  # garbage as decrypted packets: C and twin agree
        assert batch.coalesce(raw, udp=udp) == batch.pure_coalesce(raw, udp=udp)
    try:
        packets = split(data)
    except OffloadError:
        return
    assert len(packets) <= offload.MAX_SEGMENTS
    assert all(len(p) <= 40 + offload.MAX_SUPER_PACKET for p in packets)
    _flags, gso_type, _hdr, gso_size, start, _offset = VNET_HDR.unpack_from(data)
    gso = gso_type & ~offload.GSO_ECN
    if gso != offload.GSO_NONE:
        # the headers were checked: csum_start is the IP header's length
        protocol = offload.TCP if gso in (offload.GSO_TCPV4, offload.GSO_TCPV6) else offload.UDP
        body = data[VNET_HDR_LEN:]
        header_len = start + ((body[start + 12] >> 4) * 4 if protocol == offload.TCP else 8)
        assert b"".join(p[header_len:] for p in packets) == body[header_len:]
        for packet in packets:
            assert len(packet) - header_len <= gso_size
            assert _transport_ok(packet), "a segment with a bad length or checksum"
    for udp in (False, True):
        frames = coalesce(packets, udp=udp)
        assert batch.coalesce(packets, udp=udp) == frames  # the C twin's, when built
        assert [p for _, held in frames for p in held] == packets  # one flow here: in order
        for frame, held in frames:
            if len(held) == 1:
                assert frame == offload.VALID_HEADER + held[0]
            else:
                assert split(frame) == held, "a glued write does not split back"


def _super(packet: bytes, gso_size: int, protocol: int) -> bytes:
    ip_len = 40 if packet[0] >> 4 == 6 else 20
    if protocol == offload.TCP:
        hdr_len, where = ip_len + (packet[ip_len + 12] >> 4) * 4, 16
        gso = offload.GSO_TCPV6 if ip_len == 40 else offload.GSO_TCPV4
    else:
        hdr_len, where, gso = ip_len + 8, 6, offload.GSO_UDP_L4
    header = VNET_HDR.pack(offload.F_NEEDS_CSUM, gso, hdr_len, gso_size, ip_len, where)
    return header + packet


def _tcp(payload: bytes, flags: int = 0x18) -> bytes:
    return struct.pack("!HHIIBBHHH", 40000, 5201, 7, 9, 8 << 4, flags, 500, 0, 0) + (
        b"\x01\x01\x08\x0a" + bytes(range(8)) + payload
    )


def _udp(payload: bytes) -> bytes:
    return struct.pack("!HHHH", 40000, 5201, 8 + len(payload), 0) + payload


def seeds() -> list[bytes]:
    data = bytes(range(256)) * 3
    plain = offload.NO_OFFLOAD_HEADER
    partial = VNET_HDR.pack(offload.F_NEEDS_CSUM, offload.GSO_NONE, 0, 0, 20, 16)
    return [
        b"",
        plain + ipv4("10.0.0.1", "10.0.0.2"),
        partial + ipv4("10.0.0.1", "10.0.0.2", _tcp(b"abc"), proto=6),
        _super(ipv4("10.0.0.1", "10.0.0.2", _tcp(data), proto=6), 100, offload.TCP),
        _super(ipv4("10.0.0.1", "10.0.0.2", _tcp(data), proto=6), 256, offload.TCP),
        _super(ipv6(1, 2, _tcp(data), proto=6), 300, offload.TCP),
        _super(ipv6(1, 2, _tcp(data, flags=0x99), proto=6), 64, offload.TCP),
        _super(ipv4("10.0.0.1", "10.0.0.2", _udp(data), proto=17), 200, offload.UDP),
        _super(ipv6(1, 2, _udp(data), proto=17), 97, offload.UDP),
        _super(ipv4("10.0.0.1", "10.0.0.2", _tcp(data), proto=6), 0, offload.TCP),
    ]
