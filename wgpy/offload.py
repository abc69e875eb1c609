"""TUN offloads as pure functions: the virtio-net header, TSO/USO segmentation, GRO coalescing.

With ``IFF_VNET_HDR`` every TUN read and write starts with a 10-byte ``struct virtio_net_hdr``
(Linux include/uapi/linux/virtio_net.h; little-endian on the machines wgpy runs on). With TSO
enabled (``TUNSETOFFLOAD``) a read may bring a TCP super-packet of up to 64 KiB: one IP and TCP
header and a payload to cut into ``gso_size`` pieces. :func:`split` makes the MTU-sized packets
the sans-I/O Device encrypts one by one; :func:`coalesce` does the reverse for decrypted packets,
gluing consecutive segments of one flow into one write, as the kernel's GRO would.

Checksums are ones' complement sums of 16-bit words. ``2**16 ≡ 1 (mod 0xFFFF)``, so the sum of a
buffer's words is congruent to the buffer read as one big integer, modulo 0xFFFF: one
``int.from_bytes`` per segment instead of a loop over words.
"""

from __future__ import annotations

import importlib
import importlib.util
import struct
from collections.abc import Sequence
from typing import Any, Final

VNET_HDR: Final = struct.Struct("<BBHHHH")
"""flags, gso_type, hdr_len, gso_size, csum_start, csum_offset"""
VNET_HDR_LEN: Final = VNET_HDR.size  # 10

F_NEEDS_CSUM: Final = 1
F_DATA_VALID: Final = 2
GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_UDP: Final = 3  # UFO (IP fragmentation): never enabled by wgpy
GSO_TCPV6: Final = 4
GSO_UDP_L4: Final = 5  # USO
GSO_ECN: Final = 0x80

#: The largest IP packet a super-packet may carry (the IPv4 total length field; TUN's default
#: GSO limit is 64 KiB too).
MAX_SUPER_PACKET: Final = 65535
#: More segments than this in one super-packet is refused (a TCP MSS below 64 bytes).
MAX_SEGMENTS: Final = 1024
#: Segments glued into one write at most (the kernel's GRO stops at 64 as well).
MAX_COALESCE: Final = 64

TCP: Final = 6
UDP: Final = 17
_TCP_FIN: Final = 0x01
_TCP_PSH: Final = 0x08
_TCP_ACK: Final = 0x10
_TCP_CWR: Final = 0x80

NO_OFFLOAD_HEADER: Final = bytes(VNET_HDR_LEN)
#: For a decrypted packet: its Poly1305 tag was verified, so the kernel need not verify its
#: checksums (the kernel module marks decrypted packets CHECKSUM_UNNECESSARY for the same reason).
VALID_HEADER: Final = VNET_HDR.pack(F_DATA_VALID, GSO_NONE, 0, 0, 0, 0)


class OffloadError(ValueError):
    """A super-packet whose virtio-net header is inconsistent with its packet, or too large."""


def checksum_sum(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """The ones' complement sum of ``data``'s 16-bit words plus ``start``, modulo 0xFFFF."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8  # an odd length is padded with a zero byte
    return (value + start) % 0xFFFF


def fold(total: int) -> int:
    """The checksum field for a ones' complement sum ``total`` (mod 0xFFFF) of the rest."""
    return 0xFFFF - (total % 0xFFFF or 0xFFFF)


def pseudo_header_sum(packet: bytes | bytearray | memoryview, protocol: int, length: int) -> int:
    """The sum of the IPv4 or IPv6 pseudo-header of a ``length``-byte transport segment."""
    if packet[0] >> 4 == 4:
        return checksum_sum(packet[12:20], protocol + length)
    return checksum_sum(packet[8:40], protocol + length)


def ipv4_header_checksum(header: bytes | bytearray) -> int:
    """The header checksum field for an IPv4 header whose checksum bytes are zero."""
    return fold(checksum_sum(header))


# ------------------------------------------------------------------------------------ read side


def split(frame: bytes | bytearray | memoryview) -> list[bytes]:
    """The IP packets in one TUN read: a virtio-net header, then a packet or a super-packet.

    Partial checksums (``NEEDS_CSUM``) are completed; a TSO (TCP) or USO (UDP) super-packet is
    cut into ``gso_size`` payloads, each with its own copy of the headers: lengths, IPv4 ID and
    header checksum, TCP sequence number and flags (FIN and PSH on the last segment only, CWR on
    the first only) and the transport checksum rewritten. Raises :class:`OffloadError` when the
    header is inconsistent with the packet or the packet is too large.
    """
    if len(frame) < VNET_HDR_LEN:
        raise OffloadError("shorter than the virtio-net header")
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(frame)
    packet = memoryview(frame)[VNET_HDR_LEN:]
    size = len(packet)
    if size > MAX_SUPER_PACKET:
        raise OffloadError(f"{size} bytes, more than {MAX_SUPER_PACKET}")
    gso = gso_type & ~GSO_ECN
    if gso == GSO_NONE:
        if not flags & F_NEEDS_CSUM:
            return [bytes(packet)]
        where = csum_start + csum_offset
        if csum_offset & 1 or where + 2 > size:
            raise OffloadError(f"checksum at {csum_start}+{csum_offset} beyond {size} bytes")
        out = bytearray(packet)
        value = fold(checksum_sum(packet[csum_start:]))
        if value == 0 and csum_offset == 6:
            value = 0xFFFF  # UDP: zero means "no checksum"
        out[where : where + 2] = value.to_bytes(2, "big")
        return [bytes(out)]
    if gso in (GSO_TCPV4, GSO_TCPV6):
        return _split_segments(packet, gso_size, csum_start, csum_offset, TCP, gso == GSO_TCPV6)
    if gso == GSO_UDP_L4:
        version = packet[0] >> 4 if size else 0
        return _split_segments(packet, gso_size, csum_start, csum_offset, UDP, version == 6)
    raise OffloadError(f"unsupported gso_type {gso_type}")


def _ip_header_length(packet: memoryview, protocol: int, is_v6: bool) -> int:
    size = len(packet)
    if is_v6:
        if size < 40 or packet[0] >> 4 != 6:
            raise OffloadError("not an IPv6 packet")
        if packet[6] != protocol:
            raise OffloadError(f"IPv6 next header {packet[6]}, expected {protocol}")
        return 40
    if size < 20 or packet[0] >> 4 != 4:
        raise OffloadError("not an IPv4 packet")
    length = (packet[0] & 0x0F) * 4
    if length < 20 or length > size:
        raise OffloadError(f"IPv4 header length {length}")
    if packet[9] != protocol:
        raise OffloadError(f"IPv4 protocol {packet[9]}, expected {protocol}")
    if int.from_bytes(packet[6:8], "big") & 0x3FFF:
        raise OffloadError("an IPv4 fragment")
    return length


def _split_segments(
    packet: memoryview,
    gso_size: int,
    csum_start: int,
    csum_offset: int,
    protocol: int,
    is_v6: bool,
) -> list[bytes]:
    ip_len = _ip_header_length(packet, protocol, is_v6)
    if csum_start != ip_len:
        raise OffloadError(f"csum_start {csum_start}, the IP header is {ip_len} bytes")
    size = len(packet)
    if protocol == TCP:
        if csum_offset != 16 or ip_len + 20 > size:
            raise OffloadError("no room for a TCP header")
        l4_len = (packet[ip_len + 12] >> 4) * 4
        if l4_len < 20:
            raise OffloadError(f"TCP header length {l4_len}")
    else:
        if csum_offset != 6:
            raise OffloadError(f"UDP checksum offset {csum_offset}")
        l4_len = 8
    header_len = ip_len + l4_len
    if header_len > size:
        raise OffloadError(f"headers of {header_len} bytes in a {size}-byte packet")
    if gso_size == 0:
        raise OffloadError("gso_size 0")
    payload = size - header_len
    count = -(-payload // gso_size)
    if count > MAX_SEGMENTS:
        raise OffloadError(f"{count} segments, more than {MAX_SEGMENTS}")
    if count <= 1:
        # nothing to cut: complete the checksum of the one packet
        one = bytearray(packet)
        _finish(one, ip_len, protocol, is_v6)
        return [bytes(one)]
    return _cut(packet, ip_len, header_len, gso_size, count, protocol)


def _cut(
    packet: memoryview, ip_len: int, header_len: int, gso_size: int, count: int, protocol: int
) -> list[bytes]:
    """The segments of a checked super-packet. Checksums are sums of parts: the headers' sums
    are computed once with the fields that change zeroed, and each segment adds its own
    fields and its payload's sum (:func:`payload_sums`)."""
    is_v4 = ip_len == 20 or packet[0] >> 4 == 4
    ip_header = bytearray(packet[:ip_len])
    l4_header = bytearray(packet[ip_len:header_len])
    l4_header_len = header_len - ip_len
    seq = flags = 0
    if protocol == TCP:
        seq = int.from_bytes(l4_header[4:8], "big")
        flags = l4_header[13]
        l4_header[4:8] = bytes(4)
        l4_header[13] = 0
        l4_header[16:18] = bytes(2)
    else:
        l4_header[4:8] = bytes(4)  # length and checksum
    addresses = packet[12:20] if is_v4 else packet[8:40]
    # pseudo-header (without the length) and transport header (without what changes)
    base = checksum_sum(addresses, protocol) + checksum_sum(l4_header)
    ident = ip_base = 0
    if is_v4:
        ident = int.from_bytes(ip_header[4:6], "big")
        ip_header[2:6] = bytes(4)
        ip_header[10:12] = bytes(2)
        ip_base = checksum_sum(ip_header)
    pack_into = struct.pack_into
    segments: list[bytes] = []
    last = count - 1
    first = 0
    full = (len(packet) - header_len) // gso_size
    numpy = _numpy() if full >= _VECTOR_MIN and not gso_size & 1 else None
    if numpy is not None:
        first = full
        segments = _cut_full_vectorised(
            numpy, packet, ip_header, l4_header, gso_size, full, base, ip_base, ident,
            seq, flags if full == count else flags & ~(_TCP_FIN | _TCP_PSH), protocol,
        )  # fmt: skip
        sums = [0] * first + payload_sums(packet[header_len + first * gso_size :], gso_size)
    else:
        sums = payload_sums(packet[header_len:], gso_size)
    for index in range(first, count):
        start = header_len + index * gso_size
        data = packet[start : start + gso_size]
        length = l4_header_len + len(data)
        total = base + length + sums[index]
        if protocol == TCP:
            segment_flags = flags
            if index:
                segment_flags &= ~_TCP_CWR
            if index != last:
                segment_flags &= ~(_TCP_FIN | _TCP_PSH)
            segment_seq = (seq + index * gso_size) & 0xFFFFFFFF
            l4_header[13] = segment_flags
            total += segment_flags + (segment_seq >> 16) + (segment_seq & 0xFFFF)
            pack_into("!I", l4_header, 4, segment_seq)
            pack_into("!H", l4_header, 16, fold(total))
        else:
            value = fold(total + length) or 0xFFFF  # the UDP length counts twice
            pack_into("!HH", l4_header, 4, length, value)
        if is_v4:
            segment_id = (ident + index) & 0xFFFF
            ip_length = ip_len + length
            ip_header[10:12] = bytes(2)
            pack_into("!HH", ip_header, 2, ip_length, segment_id)
            pack_into("!H", ip_header, 10, fold(ip_base + ip_length + segment_id))
        else:
            pack_into("!H", ip_header, 4, length)
        segments.append(b"".join((ip_header, l4_header, data)))
    return segments


def _cut_full_vectorised(
    numpy: Any,
    packet: memoryview,
    ip_header: bytearray,
    l4_header: bytearray,
    gso_size: int,
    full: int,
    base: int,
    ip_base: int,
    ident: int,
    seq: int,
    last_flags: int,
    protocol: int,
) -> list[bytes]:
    """The ``full`` segments of ``gso_size`` bytes of payload, built as rows of one numpy
    array: headers broadcast from the templates (changing fields zeroed), payloads copied,
    then each changing field and checksum written as a column. ``last_flags``: the TCP flags
    of the last of them (FIN and PSH only if it is the super-packet's last segment)."""
    ip_len, header_len = len(ip_header), len(ip_header) + len(l4_header)
    is_v4 = ip_header[0] >> 4 == 4  # with options, an IPv4 header is longer than 20 bytes
    width = header_len + gso_size
    length = header_len - ip_len + gso_size
    # what every full segment shares goes into the templates: lengths, the middle flags
    template = bytearray(ip_header) + l4_header
    middle_flags = last_flags & ~(_TCP_FIN | _TCP_PSH | _TCP_CWR)
    constant = base + length
    if is_v4:
        struct.pack_into("!H", template, 2, ip_len + length)
    else:
        struct.pack_into("!H", template, 4, length)
    if protocol == TCP:
        template[ip_len + 13] = middle_flags
        constant += middle_flags
    else:
        struct.pack_into("!H", template, ip_len + 4, length)
        constant += length  # the UDP length counts twice: pseudo-header and header
    uint8, uint64 = numpy.uint8, numpy.uint64
    rows = numpy.empty((full, width), dtype=uint8)
    rows[:, :header_len] = numpy.frombuffer(template, dtype=uint8)
    payload = packet[header_len : header_len + full * gso_size]
    rows[:, header_len:] = numpy.frombuffer(payload, dtype=uint8).reshape(full, gso_size)
    # the fields that change, as named columns of the rows (one write each, byte order and
    # all): IPv4 ID and header checksum, TCP sequence number, transport checksum
    fields = _changing_fields(numpy, ip_len, is_v4, protocol, width)
    columns = rows.view(fields).reshape(full)
    total = _row_sums(numpy, payload, full, gso_size) + constant
    index = numpy.arange(full, dtype=uint64)
    if protocol == TCP:
        seqs = index * gso_size + seq
        if seq + full * gso_size > 0xFFFFFFFF:  # the sequence numbers wrap in here
            seqs &= 0xFFFFFFFF
        columns["seq"] = seqs
        # the first keeps CWR, the last FIN and PSH (when it is the super-packet's last)
        first_flags = middle_flags | last_flags & _TCP_CWR
        final_flags = last_flags if full == 1 else last_flags & ~_TCP_CWR
        total[0] += first_flags - middle_flags
        total[-1] += final_flags - (first_flags if full == 1 else middle_flags)
        rows[0, ip_len + 13] = first_flags
        rows[-1, ip_len + 13] = final_flags
        total += seqs  # a 32-bit word ≡ the sum of its halves
        columns["check"] = 0xFFFE - (total + 0xFFFE) % 0xFFFF  # fold(), vectorised
    else:
        checksums = 0xFFFE - (total + 0xFFFE) % 0xFFFF
        checksums[checksums == 0] = 0xFFFF
        columns["check"] = checksums
    if is_v4:
        ids = index + ident
        if ident + full > 0xFFFF:
            ids &= 0xFFFF
        columns["id"] = ids
        ids += ip_base + ip_len + length + 0xFFFE
        columns["ip_check"] = 0xFFFE - ids % 0xFFFF
    blob = rows.tobytes()
    return [blob[start : start + width] for start in range(0, full * width, width)]


_FIELDS: dict[tuple[int, bool, int, int], Any] = {}


def _changing_fields(numpy: Any, ip_len: int, is_v4: bool, protocol: int, width: int) -> Any:
    """A structured dtype over one segment's bytes naming the fields :func:`_cut` rewrites
    (cached per shape: one super-packet after another has the same)."""
    key = (ip_len, is_v4, protocol, width)
    fields = _FIELDS.get(key)
    if fields is None:
        names = ["check"]
        formats = [">u2"]
        offsets = [ip_len + (16 if protocol == TCP else 6)]
        if protocol == TCP:
            names.append("seq")
            formats.append(">u4")
            offsets.append(ip_len + 4)
        if is_v4:
            names += ["id", "ip_check"]
            formats += [">u2", ">u2"]
            offsets += [4, 10]
        spec = {"names": names, "formats": formats, "offsets": offsets, "itemsize": width}
        fields = _FIELDS[key] = numpy.dtype(spec)
        if len(_FIELDS) > 64:
            _FIELDS.clear()
            _FIELDS[key] = fields
    return fields


def _row_sums(numpy: Any, payload: memoryview, rows: int, size: int) -> Any:
    """Numbers congruent (mod 0xFFFF) to the sums as big-endian words of ``rows`` pieces of
    an even ``size``, not reduced (below 2**57: the caller's fold reduces them).

    Summed as native little-endian words (a big-endian dtype makes numpy swap every element
    first), 32 bits at a time when ``size`` allows: ``65536*hi + lo ≡ hi + lo``. Swapping a
    word's bytes multiplies it by 256 modulo 0xFFFF, so the big-endian sum is 256 times the
    little-endian one."""
    if size % 4 == 0:
        words = numpy.frombuffer(payload, dtype="<u4").reshape(rows, size // 4)
    else:
        words = numpy.frombuffer(payload, dtype="<u2").reshape(rows, size // 2)
    return words.sum(1, dtype=numpy.uint64) * 256


def payload_sums(payload: memoryview, size: int) -> list[int]:
    """The ones' complement sums (mod 0xFFFF) of ``payload``'s ``size``-byte pieces.

    With numpy (the ``offload`` extra) full pieces of an even size are summed in one
    vectorised call, about 8 times faster than one big integer per piece; the last, shorter
    piece and odd sizes take the integer way."""
    full = len(payload) // size
    sums: list[int] = []
    numpy = _numpy() if full >= _VECTOR_MIN and not size & 1 else None
    if numpy is not None:
        sums = (_row_sums(numpy, payload[: full * size], full, size) % 0xFFFF).tolist()
    else:
        sums = [checksum_sum(payload[i * size : (i + 1) * size]) for i in range(full)]
    if len(payload) > full * size:
        sums.append(checksum_sum(payload[full * size :]))
    return sums


#: Fewer full pieces than this are summed without numpy (its call costs more than it saves).
_VECTOR_MIN: Final = 4
_numpy_module: Any = None
_numpy_tried = False


def _numpy() -> Any:
    """numpy, imported on first use (a daemon that never sees a super-packet never pays its
    import time and memory), or None without it."""
    global _numpy_module, _numpy_tried
    if not _numpy_tried:
        _numpy_tried = True
        try:
            _numpy_module = importlib.import_module("numpy")
        except ImportError:
            _numpy_module = None
    return _numpy_module


def vectorised_sums_available() -> bool:
    """Whether :func:`payload_sums` can use numpy (without importing it)."""
    return importlib.util.find_spec("numpy") is not None


def _finish(segment: bytearray, ip_len: int, protocol: int, is_v6: bool) -> None:
    """Lengths, IPv4 header checksum, transport length and checksum of a super-packet with
    one segment's payload or less."""
    total = len(segment)
    l4_length = total - ip_len
    if is_v6:
        segment[4:6] = l4_length.to_bytes(2, "big")
    else:
        segment[2:4] = total.to_bytes(2, "big")
        segment[10:12] = b"\0\0"
        segment[10:12] = ipv4_header_checksum(segment[:ip_len]).to_bytes(2, "big")
    where = ip_len + (16 if protocol == TCP else 6)
    if protocol == UDP:
        segment[ip_len + 4 : ip_len + 6] = l4_length.to_bytes(2, "big")
    segment[where : where + 2] = b"\0\0"
    view = memoryview(segment)
    value = fold(checksum_sum(view[ip_len:], pseudo_header_sum(view, protocol, l4_length)))
    view.release()
    if value == 0 and protocol == UDP:
        value = 0xFFFF
    segment[where : where + 2] = value.to_bytes(2, "big")


# ----------------------------------------------------------------------------------- write side


class _Flow:
    """Segments of one flow being glued into one write."""

    __slots__ = (
        "gso_size",
        "header_len",
        "ip_a",
        "ip_b",
        "ip_len",
        "length",
        "match",
        "match_ack",
        "match_ip",
        "match_ip2",
        "match_options",
        "match_window",
        "next_seq",
        "packets",
        "protocol",
        "push",
    )  # fmt: skip

    def __init__(
        self, packet: bytes, protocol: int, ip_len: int, header_len: int, match: bytes
    ) -> None:
        self.protocol = protocol
        self.ip_len = ip_len
        self.header_len = header_len
        self.gso_size = len(packet) - header_len
        self.match = match  # bytes that must be the same in every later segment
        # TCP: the sequence number the next segment must have, and the bytes it must share:
        # acknowledgement and data offset; window; urgent pointer and options; IP bytes up to
        # ip_a (IPv4 version, header length, TOS; IPv6 version, traffic class, flow label) and
        # from 6 to ip_b (IPv4 flags, fragment offset: none, TTL; IPv6 next header, hop limit)
        self.next_seq = 0
        self.ip_a = self.ip_b = 0
        self.match_ack = self.match_window = self.match_options = b""
        self.match_ip = self.match_ip2 = b""
        self.length = len(packet)  # the glued IP packet's length
        self.packets = [packet]
        self.push = False


def _tcp_shape(packet: bytes) -> int | None:
    """The headers' length of a TCP segment (IPv4 without options, IPv6 without extension
    headers) that may start a glued run: not a fragment, length fields that match, only ACK
    (and PSH) set, a payload."""
    size = len(packet)
    if packet[0] == 0x45:
        if packet[6] & 0x3F or packet[7] or (packet[2] << 8 | packet[3]) != size:
            return None
        ip_len = 20
    elif (packet[4] << 8 | packet[5]) + 40 == size:
        ip_len = 40
    else:
        return None
    if size < ip_len + 20:
        return None  # ends inside the TCP header
    header_len = ip_len + (packet[ip_len + 12] >> 4) * 4
    if packet[ip_len + 13] & ~_TCP_PSH != _TCP_ACK or header_len < ip_len + 20:
        return None
    if size <= header_len:
        return None
    return header_len


def _udp_shape(packet: bytes) -> tuple[int, bytes] | None:
    """(IP header length, bytes to match) of a UDP datagram that may be glued."""
    size = len(packet)
    first = packet[0]
    if first == 0x45:
        if packet[9] != UDP or size < 29 or packet[6] & 0x3F or packet[7]:
            return None
        if (packet[2] << 8 | packet[3]) != size:
            return None
        ip_len, match = 20, packet[1:2] + packet[6:7] + packet[8:9]
    elif first >> 4 == 6:
        if packet[6] != UDP or size < 49 or (packet[4] << 8 | packet[5]) + 40 != size:
            return None
        ip_len, match = 40, packet[0:4] + packet[7:8]
    else:
        return None
    if (packet[ip_len + 4] << 8 | packet[ip_len + 5]) != size - ip_len:
        return None
    return ip_len, match


def _flow_key(packet: bytes) -> bytes:
    """Addresses and ports (+ protocol for UDP), as :func:`coalesce` keys its flows."""
    if packet[0] >> 4 == 6:
        key = packet[8:44]
        return key if packet[6] == TCP else key + packet[6:7]
    start = (packet[0] & 0x0F) * 4
    key = packet[12:20] + packet[start : start + 4]
    return key if packet[9] == TCP and start == 20 else key + packet[9:10]


def coalesce(packets: Sequence[bytes], *, udp: bool = False) -> list[tuple[bytes, list[bytes]]]:
    """TUN writes for decrypted packets: each a virtio-net header and a packet, or a GSO
    super-packet gluing consecutive segments of one TCP (or, with ``udp``, UDP) flow, with the
    packets it holds. Segments of a flow stay in order; a packet that cannot join its flow's
    open super-packet closes it. Checksums are not verified: the packets were authenticated
    (see :data:`VALID_HEADER`), and the kernel completes the glued packet's (``NEEDS_CSUM``)."""
    out: list[tuple[bytes, list[bytes]] | _Flow] = []
    open_flows: dict[bytes, _Flow] = {}
    for packet in packets:
        size = len(packet)
        first = packet[0] if size >= 28 else 0
        # the common case first: the next full segment of an open TCP flow
        if first == 0x45 and packet[9] == TCP:
            key = packet[12:24]
            ip_len = 20
        elif first >> 4 == 6 and size >= 60 and packet[6] == TCP:
            key = packet[8:44]
            ip_len = 40
        else:
            key = b""
            ip_len = 0
        if key:
            flow = open_flows.get(key)
            if flow is not None:
                header_len = flow.header_len
                payload = size - header_len
                at = ip_len + 8
                if (
                    int.from_bytes(packet[ip_len + 4 : at], "big") == flow.next_seq
                    and 0 < payload <= flow.gso_size
                    and flow.length + payload <= MAX_SUPER_PACKET
                    and packet[at : at + 5] == flow.match_ack
                    and packet[at + 6 : at + 8] == flow.match_window
                    and packet[at + 10 : header_len] == flow.match_options
                    and packet[: flow.ip_a] == flow.match_ip
                    and packet[6 : flow.ip_b] == flow.match_ip2
                    and packet[at + 5] & ~_TCP_PSH == _TCP_ACK
                ):
                    flow.packets.append(packet)
                    flow.length += payload
                    flow.next_seq = (flow.next_seq + payload) & 0xFFFFFFFF
                    push = packet[at + 5] & _TCP_PSH
                    if push or payload < flow.gso_size or len(flow.packets) >= MAX_COALESCE:
                        flow.push = bool(push)
                        del open_flows[key]
                    continue
                del open_flows[key]  # what follows in this flow must come after this packet
            shape = _tcp_shape(packet)
            if shape is None:
                out.append((VALID_HEADER + packet, [packet]))
                continue
            header_len = shape
            flow = _Flow(packet, TCP, ip_len, header_len, b"")
            seq = int.from_bytes(packet[ip_len + 4 : ip_len + 8], "big")
            flow.next_seq = (seq + size - header_len) & 0xFFFFFFFF
            flow.push = bool(packet[ip_len + 13] & _TCP_PSH)
            at = ip_len + 8
            flow.match_ack = packet[at : at + 5]
            flow.match_window = packet[at + 6 : at + 8]
            flow.match_options = packet[at + 10 : header_len]
            flow.ip_a, flow.ip_b = (2, 9) if ip_len == 20 else (4, 8)
            flow.match_ip = packet[: flow.ip_a]
            flow.match_ip2 = packet[6 : flow.ip_b]
            out.append(flow)
            if not flow.push:
                open_flows[key] = flow
            continue
        if not udp or size < 28:
            if size >= 28:
                open_flows.pop(_flow_key(packet), None)
            out.append((VALID_HEADER + packet, [packet]))
            continue
        key = _flow_key(packet)
        flow = open_flows.get(key)
        shape_udp = _udp_shape(packet)
        if shape_udp is None:
            if flow is not None:
                del open_flows[key]
            out.append((VALID_HEADER + packet, [packet]))
            continue
        ip_len, match = shape_udp
        payload = size - ip_len - 8
        if (
            flow is not None
            and flow.protocol == UDP
            and payload <= flow.gso_size
            and match == flow.match
            and flow.length + payload <= MAX_SUPER_PACKET
        ):
            flow.packets.append(packet)
            flow.length += payload
            if payload < flow.gso_size or len(flow.packets) >= MAX_COALESCE:
                del open_flows[key]
            continue
        flow = _Flow(packet, UDP, ip_len, ip_len + 8, match)
        out.append(flow)
        open_flows[key] = flow
    return [item if isinstance(item, tuple) else _glue(item) for item in out]


def _glue(flow: _Flow) -> tuple[bytes, list[bytes]]:
    packets = flow.packets
    if len(packets) == 1:
        return VALID_HEADER + packets[0], packets
    ip_len, protocol, header_len = flow.ip_len, flow.protocol, flow.header_len
    head = bytearray(packets[0][:header_len])
    total = flow.length
    l4_length = total - ip_len
    if ip_len == 40:
        head[4:6] = l4_length.to_bytes(2, "big")
    else:
        head[2:4] = total.to_bytes(2, "big")
        head[10:12] = b"\0\0"
        head[10:12] = ipv4_header_checksum(head[:20]).to_bytes(2, "big")
    if protocol == TCP:
        if flow.push:
            head[ip_len + 13] |= _TCP_PSH
        where, gso_type = ip_len + 16, GSO_TCPV6 if ip_len == 40 else GSO_TCPV4
    else:
        head[ip_len + 4 : ip_len + 6] = l4_length.to_bytes(2, "big")
        where, gso_type = ip_len + 6, GSO_UDP_L4
    # NEEDS_CSUM: the field holds the pseudo-header's sum, the kernel completes the rest
    partial = pseudo_header_sum(head, protocol, l4_length) or 0xFFFF
    head[where : where + 2] = partial.to_bytes(2, "big")
    vnet = VNET_HDR.pack(F_NEEDS_CSUM, gso_type, header_len, flow.gso_size, ip_len, where - ip_len)
    parts: list[bytes | bytearray | memoryview] = [vnet, head, memoryview(packets[0])[header_len:]]
    parts += [memoryview(packet)[header_len:] for packet in packets[1:]]
    return b"".join(parts), packets
