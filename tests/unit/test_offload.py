"""wgpy.offload: TSO/USO segmentation and GRO coalescing, checked with a word-by-word checksum."""

from __future__ import annotations

import ipaddress
import random
import struct

import pytest

from wgpy import offload
from wgpy.offload import VNET_HDR, OffloadError, coalesce, split
from wgpy.packet import internet_checksum

V4 = ("10.0.0.1", "10.0.0.2")
V6 = ("fd00::1", "fd00::2")


def pseudo(packet: bytes, protocol: int, length: int) -> bytes:
    if packet[0] >> 4 == 4:
        return packet[12:20] + struct.pack("!BBH", 0, protocol, length)
    return packet[8:40] + struct.pack("!IxxxB", length, protocol)


def ip_header(src: str, dst: str, protocol: int, l4_length: int, ident: int = 77) -> bytes:
    if ":" in src:
        return struct.pack(
            "!IHBB16s16s",
            6 << 28,
            l4_length,
            protocol,
            64,
            ipaddress.IPv6Address(src).packed,
            ipaddress.IPv6Address(dst).packed,
        )
    header = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + l4_length,
            ident,
            0x4000,
            64,
            protocol,
            0,
            ipaddress.IPv4Address(src).packed,
            ipaddress.IPv4Address(dst).packed,
        )
    )
    struct.pack_into("!H", header, 10, internet_checksum(bytes(header)))
    return bytes(header)


def tcp_packet(
    addrs: tuple[str, str],
    seq: int,
    payload: bytes,
    *,
    flags: int = 0x10,
    options: bytes = b"\x01\x01\x08\x0a" + bytes(range(8)),
    ident: int = 77,
) -> bytes:
    data_offset = (20 + len(options)) // 4
    tcp = bytearray(
        struct.pack("!HHIIBBHHH", 40000, 5201, seq, 1234, data_offset << 4, flags, 500, 0, 0)
        + options
        + payload
    )
    ip = ip_header(*addrs, 6, len(tcp), ident)
    value = internet_checksum(pseudo(ip, 6, len(tcp)) + bytes(tcp))
    struct.pack_into("!H", tcp, 16, value)
    return ip + bytes(tcp)


def udp_packet(addrs: tuple[str, str], payload: bytes, *, ident: int = 77) -> bytes:
    udp = bytearray(struct.pack("!HHHH", 40000, 5201, 8 + len(payload), 0) + payload)
    ip = ip_header(*addrs, 17, len(udp), ident)
    value = internet_checksum(pseudo(ip, 17, len(udp)) + bytes(udp)) or 0xFFFF
    struct.pack_into("!H", udp, 6, value)
    return ip + bytes(udp)


def assert_valid(packet: bytes) -> None:
    """Length fields and every checksum of one packet, verified word by word."""
    if packet[0] >> 4 == 4:
        ip_len, protocol = (packet[0] & 15) * 4, packet[9]
        assert struct.unpack_from("!H", packet, 2)[0] == len(packet)
        assert internet_checksum(packet[:ip_len]) == 0
    else:
        ip_len, protocol = 40, packet[6]
        assert struct.unpack_from("!H", packet, 4)[0] == len(packet) - 40
    segment = packet[ip_len:]
    assert internet_checksum(pseudo(packet, protocol, len(segment)) + segment) == 0


def super_packet(packet: bytes, gso_size: int) -> bytes:
    """What the kernel hands a TSO/USO TUN: headers once, the checksum field holding only the
    pseudo-header's sum."""
    ip_len = 40 if packet[0] >> 4 == 6 else 20
    protocol = packet[6] if ip_len == 40 else packet[9]
    l4 = bytearray(packet[ip_len:])
    where = 16 if protocol == 6 else 6
    l4[where : where + 2] = b"\0\0"
    partial = 0xFFFF - internet_checksum(pseudo(packet, protocol, len(l4)))
    l4[where : where + 2] = struct.pack("!H", partial)
    hdr_len = ip_len + ((l4[12] >> 4) * 4 if protocol == 6 else 8)
    gso = (offload.GSO_TCPV6 if ip_len == 40 else offload.GSO_TCPV4) if protocol == 6 else 5
    vnet = VNET_HDR.pack(offload.F_NEEDS_CSUM, gso, hdr_len, gso_size, ip_len, where)
    return vnet + packet[:ip_len] + bytes(l4)


@pytest.mark.parametrize("addrs", [V4, V6], ids=["ipv4", "ipv6"])
def test_tso_super_packet_is_cut_into_valid_segments(addrs: tuple[str, str]) -> None:
    payload = random.Random(1).randbytes(5000)
    whole = tcp_packet(addrs, 0xFFFFF000, payload, flags=0x18 | 0x80)  # ACK PSH CWR
    segments = split(super_packet(whole, 1388))
    assert [len(s) for s in segments[:-1]] == [len(whole) - 5000 + 1388] * 3
    header_len = len(whole) - 5000
    assert b"".join(s[header_len:] for s in segments) == payload
    ip_len = header_len - 32
    for index, segment in enumerate(segments):
        assert_valid(segment)
        seq = struct.unpack_from("!I", segment, ip_len + 4)[0]
        assert seq == (0xFFFFF000 + index * 1388) & 0xFFFFFFFF  # wraps around
        flags = segment[ip_len + 13]
        assert bool(flags & 0x08) == (index == 3)  # PSH on the last only
        assert bool(flags & 0x80) == (index == 0)  # CWR on the first only
        assert segment[ip_len + 20 : header_len] == whole[ip_len + 20 : header_len]  # options
        if addrs is V4:
            assert struct.unpack_from("!H", segment, 4)[0] == 77 + index


@pytest.mark.parametrize("addrs", [V4, V6], ids=["ipv4", "ipv6"])
def test_uso_super_packet_is_cut_into_valid_datagrams(addrs: tuple[str, str]) -> None:
    payload = bytes(range(256)) * 12
    segments = split(super_packet(udp_packet(addrs, payload), 1000))
    assert len(segments) == 4
    for segment in segments:
        assert_valid(segment)
    ip_len = 40 if addrs is V6 else 20
    assert b"".join(s[ip_len + 8 :] for s in segments) == payload


def test_partial_checksum_of_a_single_packet_is_completed() -> None:
    whole = tcp_packet(V4, 1, b"abc")
    frame = bytearray(super_packet(whole, 0))
    frame[1] = offload.GSO_NONE
    assert frame[10:] != whole
    assert split(bytes(frame)) == [whole]


def test_plain_packet_passes_unchanged() -> None:
    packet = udp_packet(V6, b"x")
    assert split(offload.NO_OFFLOAD_HEADER + packet) == [packet]


def bad_frames() -> list[tuple[str, bytes]]:
    whole = tcp_packet(V4, 1, bytes(3000))
    good = super_packet(whole, 1000)
    cases = [("short", good[:5]), ("too large", good + bytes(70000))]

    def patched(name: str, **fields: int) -> None:
        values = dict(
            zip(
                ("flags", "gso", "hdr", "size", "start", "offset"),
                VNET_HDR.unpack_from(good),
                strict=True,
            )
        )
        values.update(fields)
        cases.append((name, VNET_HDR.pack(*values.values()) + good[10:]))

    patched("csum_start", start=24)
    patched("csum_offset", offset=6)
    patched("gso 0", size=0)
    patched("too many segments", size=2)
    patched("ufo", gso=offload.GSO_UDP)
    patched("tcpv6 on ipv4", gso=offload.GSO_TCPV6)
    patched("unknown gso", gso=9)
    patched("checksum beyond", gso=0, start=3040)
    cases.append(("truncated headers", good[:40]))
    return cases


@pytest.mark.parametrize(("name", "frame"), bad_frames(), ids=[n for n, _ in bad_frames()])
def test_inconsistent_super_packet_is_refused(name: str, frame: bytes) -> None:
    with pytest.raises(OffloadError):
        split(frame)


def test_gro_glues_a_flow_and_the_result_splits_back() -> None:
    payload = random.Random(2).randbytes(1300 * 5 + 100)
    segments = split(super_packet(tcp_packet(V4, 5, payload, flags=0x18), 1300))
    frames = coalesce(segments)
    assert len(frames) == 1
    frame, held = frames[0]
    assert held == segments
    flags, gso, hdr_len, gso_size, start, offset = VNET_HDR.unpack_from(frame)
    assert (flags, gso, hdr_len, gso_size, start, offset) == (1, 1, 52, 1300, 20, 16)
    assert split(frame) == segments  # the kernel's own segmentation would give these


@pytest.mark.parametrize("addrs", [V4, V6], ids=["ipv4", "ipv6"])
def test_gro_glues_udp_only_when_asked(addrs: tuple[str, str]) -> None:
    datagrams = [udp_packet(addrs, bytes([i]) * 1200, ident=77 + i) for i in range(3)]
    assert len(coalesce(datagrams)) == 3
    frames = coalesce(datagrams, udp=True)
    assert len(frames) == 1
    assert split(frames[0][0]) == datagrams


def test_gro_keeps_flows_apart_and_in_order() -> None:
    a = [tcp_packet(V4, 1000 * i, bytes([i]) * 1000) for i in range(4)]
    b = [tcp_packet(V6, 1000 * i, bytes([i]) * 1000) for i in range(4)]
    gap = tcp_packet(V4, 9000, b"z" * 1000)  # not the next sequence number
    fin = tcp_packet(V4, 4000, b"", flags=0x11)
    frames = coalesce([a[0], b[0], a[1], b[1], gap, a[2], b[2], b[3], a[3], fin])
    delivered = [packet for _, held in frames for packet in held]
    assert [p for p in delivered if p in a] == a
    assert [p for p in delivered if p in b] == b
    assert delivered[-1] == fin
    sizes = sorted(len(held) for _, held in frames)
    assert sizes == [1, 1, 2, 2, 4]  # the gap ends a run: a0 a1 | gap | a2 a3
    for frame, held in frames:
        if len(held) == 1:  # alone, as decrypted: the tag was verified, the checksum need not be
            assert frame == offload.VALID_HEADER + held[0]


def test_gro_stops_after_a_short_segment_or_push() -> None:
    packets = [
        tcp_packet(V4, 0, b"a" * 1000),
        tcp_packet(V4, 1000, b"b" * 500),
        tcp_packet(V4, 1500, b"c" * 1000, flags=0x18),
        tcp_packet(V4, 2500, b"d" * 1000),
    ]
    frames = coalesce(packets)
    assert [len(held) for _, held in frames] == [2, 1, 1]
    first, pushed_one = (
        tcp_packet(V4, 0, b"a" * 1000),
        tcp_packet(V4, 1000, b"b" * 1000, flags=0x18),
    )
    pushed = coalesce([first, pushed_one, tcp_packet(V4, 2000, b"c" * 1000)])
    assert [len(held) for _, held in pushed] == [2, 1]
    assert pushed[0][0][10 + 20 + 13] & 0x08  # the glued packet carries PSH


def test_gro_never_passes_64_kib() -> None:
    packets = [tcp_packet(V6, 1400 * i, bytes(1400)) for i in range(60)]
    frames = coalesce(packets)
    assert len(frames) == 2
    for frame, _held in frames:
        assert len(frame) - 10 <= 65535 + 40
        for segment in split(frame):
            assert_valid(segment)


@pytest.mark.parametrize("addrs", [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("gso_size", [1368, 1366, 1001, 64])
@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
@pytest.mark.parametrize("ident", [77, 0xFFFA], ids=["id", "id-wraps"])
def test_vectorised_cut_equals_the_scalar_one(
    addrs: tuple[str, str], gso_size: int, udp: bool, ident: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """numpy's rows (even sizes, at least _VECTOR_MIN full pieces) and the per-segment way
    (odd sizes, no numpy) give the same valid segments, for sizes of 4k and 4k+2 bytes."""
    pytest.importorskip("numpy")
    payload = random.Random(gso_size).randbytes(gso_size * 9 + 17)
    whole = (
        udp_packet(addrs, payload, ident=ident)
        if udp
        else tcp_packet(addrs, 0xFFFFFF00, payload, flags=0x99, ident=ident)
    )
    frame = super_packet(whole, gso_size)
    vectorised = split(frame)
    monkeypatch.setattr(offload, "_numpy_module", None)
    monkeypatch.setattr(offload, "_numpy_tried", True)
    assert split(frame) == vectorised
    assert len(vectorised) == 10
    for segment in vectorised:
        assert_valid(segment)


def with_ip_options(packet: bytes, options: bytes) -> bytes:
    """An IPv4 packet with ``options`` (a multiple of 4 bytes) after its 20-byte header."""
    header = bytearray(packet[:20] + options)
    header[0] = 0x40 | len(header) // 4
    struct.pack_into("!HH", header, 2, len(packet) + len(options), 0)
    struct.pack_into("!H", header, 10, internet_checksum(bytes(header)))
    return bytes(header) + packet[20:]


@pytest.mark.parametrize("gso_size", [1000, 1001])
def test_ipv4_options_are_kept_and_counted_in_every_segment(
    gso_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An IPv4 header longer than 20 bytes: each segment's total length, ID and header
    checksum are rewritten in it, on the numpy way (even sizes) as on the scalar one."""
    payload = random.Random(3).randbytes(gso_size * 6 + 5)
    whole = with_ip_options(tcp_packet(V4, 5, payload, flags=0x18), b"\x94\x04\x00\x00")
    # the checksum field's partial sum does not matter: split recomputes it whole
    frame = VNET_HDR.pack(1, offload.GSO_TCPV4, 24 + 32, gso_size, 24, 16) + whole
    segments = split(frame)
    assert len(segments) == 7
    for index, segment in enumerate(segments):
        assert_valid(segment)
        assert segment[20:24] == b"\x94\x04\x00\x00"
        assert struct.unpack_from("!H", segment, 4)[0] == index
    monkeypatch.setattr(offload, "_numpy_module", None)
    monkeypatch.setattr(offload, "_numpy_tried", True)
    assert split(frame) == segments


@pytest.mark.parametrize("size", [28, 30, 32, 33, 39])
def test_gro_writes_a_truncated_tcp_header_alone(size: int) -> None:
    """An IPv4 TCP packet whose length field is right but which ends inside the TCP header
    (a peer may send one) is written as it is, not raised over (IndexError)."""
    packet = bytearray(tcp_packet(V4, 0, b"")[:size])
    struct.pack_into("!H", packet, 2, size)
    alone = bytes(packet)
    assert coalesce([alone, alone]) == [(offload.VALID_HEADER + alone, [alone])] * 2
