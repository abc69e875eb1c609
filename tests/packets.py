"""Build small inner IP packets for tests."""

from __future__ import annotations

import ipaddress
import struct

from wgpy.packet import internet_checksum


def ipv4_udp(
    src: str, dst: str, payload: bytes = b"hello", *, sport: int = 1234, dport: int = 5678
) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    total = 20 + len(udp)
    header = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            total,
            0,
            0,
            64,
            17,
            0,
            ipaddress.IPv4Address(src).packed,
            ipaddress.IPv4Address(dst).packed,
        )
    )
    struct.pack_into("!H", header, 10, internet_checksum(bytes(header)))
    return bytes(header) + udp


def ipv6_udp(
    src: str, dst: str, payload: bytes = b"hello", *, sport: int = 1234, dport: int = 5678
) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return (
        struct.pack(
            "!IHBB16s16s",
            0x60000000,
            len(udp),
            17,
            64,
            ipaddress.IPv6Address(src).packed,
            ipaddress.IPv6Address(dst).packed,
        )
        + udp
    )
