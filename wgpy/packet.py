"""Inner IP packets: the few header fields cryptokey routing needs, and ICMP unreachables."""

from __future__ import annotations

import ipaddress
import struct
from typing import Final

from wgpy.events import InnerInfo

IPV4_HEADER_MIN: Final = 20
IPV6_HEADER_SIZE: Final = 40
PROTO_ICMP: Final = 1
PROTO_ICMPV6: Final = 58

# IPv4 payload quoted in an ICMP error: fill up to 576 bytes (RFC 1812); IPv6 up to 1280.
_ICMP4_MAX_QUOTE: Final = 576 - 20 - 8
_ICMP6_MAX_QUOTE: Final = 1280 - 40 - 8


def inner_info(packet: bytes) -> InnerInfo | None:
    """Describe an inner packet for events; None if it is not a parsable IP packet."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= IPV4_HEADER_MIN:
        return InnerInfo(
            4,
            str(ipaddress.IPv4Address(packet[12:16])),
            str(ipaddress.IPv4Address(packet[16:20])),
            packet[9],
            len(packet),
        )
    if version == 6 and len(packet) >= IPV6_HEADER_SIZE:
        return InnerInfo(
            6,
            str(ipaddress.IPv6Address(packet[8:24])),
            str(ipaddress.IPv6Address(packet[24:40])),
            packet[6],
            len(packet),
        )
    return None


def internet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _is_icmp_error_v4(packet: bytes) -> bool:
    ihl = (packet[0] & 0x0F) * 4
    if packet[9] != PROTO_ICMP or len(packet) <= ihl:
        return False
    # Only echo reply (0), echo request (8), timestamp and info messages are not errors.
    return packet[ihl] not in (0, 8, 13, 14, 15, 16, 17, 18)


def _unreachable_parts(packet: bytes) -> tuple[int, bytes, bytes] | None:
    """(IP version, the packet's source, the quote) of a packet that may get an ICMP error;
    None where RFC 1122/4443 forbid one (ICMP errors, fragments, multicast or unspecified
    sources)."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= IPV4_HEADER_MIN:
        src, dst = packet[12:16], packet[16:20]
        frag_offset = struct.unpack_from("!H", packet, 6)[0] & 0x1FFF
        if frag_offset or _is_icmp_error_v4(packet) or src == b"\0\0\0\0" or src[0] >= 224:
            return None
        if dst[0] >= 224 or dst == b"\xff\xff\xff\xff":
            return None
        return 4, src, packet[:_ICMP4_MAX_QUOTE]
    if version == 6 and len(packet) >= IPV6_HEADER_SIZE:
        src, dst = packet[8:24], packet[24:40]
        if src == bytes(16) or src[0] == 0xFF or dst[0] == 0xFF:
            return None
        if packet[6] == PROTO_ICMPV6 and len(packet) > 40 and packet[40] < 128:
            return None
        return 6, src, packet[:_ICMP6_MAX_QUOTE]
    return None


def may_answer_unreachable(packet: bytes) -> bool:
    return _unreachable_parts(packet) is not None


def icmp_unreachable(packet: bytes) -> bytes | None:
    """The ICMP destination unreachable the kernel sends when no peer has the destination,
    as a whole IP packet to write into the TUN.

    IPv4: type 3 code 1 (host unreachable); IPv6: type 1 code 3 (address unreachable). The
    error's source is the unreachable destination itself: a TUN cannot inject packets from a
    local address (the kernel drops those as martians), and the sender matches the error by the
    quoted header anyway. Returns None where no error may be sent. The daemon prefers
    :func:`icmp_unreachable_message`, sent from the interface's own stack as the kernel does.
    """
    parts = _unreachable_parts(packet)
    if parts is None:
        return None
    version, src, quote = parts
    if version == 4:
        dst = packet[16:20]
        icmp = bytearray(struct.pack("!BBHI", 3, 1, 0, 0) + quote)
        struct.pack_into("!H", icmp, 2, internet_checksum(bytes(icmp)))
        total = IPV4_HEADER_MIN + len(icmp)
        header = bytearray(
            struct.pack("!BBHHHBBH4s4s", 0x45, 0xC0, total, 0, 0, 64, PROTO_ICMP, 0, dst, src)
        )
        struct.pack_into("!H", header, 10, internet_checksum(bytes(header)))
        return bytes(header + icmp)
    dst = packet[24:40]
    icmp = bytearray(struct.pack("!BBHI", 1, 3, 0, 0) + quote)
    pseudo = dst + src + struct.pack("!I3xB", len(icmp), PROTO_ICMPV6)
    struct.pack_into("!H", icmp, 2, internet_checksum(pseudo + bytes(icmp)))
    header6 = struct.pack("!IHBB16s16s", 0x60000000, len(icmp), PROTO_ICMPV6, 64, dst, src)
    return header6 + bytes(icmp)


def icmp_unreachable_message(
    packet: bytes, original_source: bytes | None = None
) -> tuple[int, bytes, bytes] | None:
    """(IP version, destination, ICMP message) of the error for a raw socket of the
    interface's namespace, whose stack picks the source address as the kernel module's
    ``icmp_ndo_send`` does. ``original_source`` replaces the quoted packet's source where
    connection tracking had rewritten it (SNAT), as ``icmp_ndo_send`` does; the error then goes
    to that address. The IPv6 checksum is left to the kernel (raw ICMPv6 sockets fill it in).
    """
    parts = _unreachable_parts(packet)
    if parts is None:
        return None
    version, src, quote = parts
    if original_source is not None and original_source != src:
        src = original_source
        if version == 4:
            ihl = (quote[0] & 0x0F) * 4
            header = bytearray(quote[:ihl])
            header[12:16] = src
            header[10:12] = b"\0\0"
            struct.pack_into("!H", header, 10, internet_checksum(bytes(header)))
            quote = bytes(header) + quote[ihl:]
        else:
            quote = quote[:8] + src + quote[24:]
    if version == 4:
        icmp = bytearray(struct.pack("!BBHI", 3, 1, 0, 0) + quote)
        struct.pack_into("!H", icmp, 2, internet_checksum(bytes(icmp)))
        return 4, src, bytes(icmp)
    return 6, src, struct.pack("!BBHI", 1, 3, 0, 0) + quote
