"""A small pcapng writer and reader for annotated captures of inner packets.

One section, one interface of link type RAW (bare IPv4/IPv6 packets, what a TUN carries). Each
packet is an Enhanced Packet Block with two options: ``epb_flags`` for the direction and
``opt_comment`` with the verdict, peer and drop reason, which ``tshark -V`` shows as
"Packet comments". Never carries secrets: only inner packets and public keys.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final

from wgpy.events import Direction, DropReason, Verdict, key_b64

BLOCK_SHB: Final = 0x0A0D0D0A
BLOCK_IDB: Final = 0x00000001
BLOCK_EPB: Final = 0x00000006
BYTE_ORDER_MAGIC: Final = 0x1A2B3C4D
LINKTYPE_RAW: Final = 101
OPT_END: Final = 0
OPT_COMMENT: Final = 1
OPT_IF_NAME: Final = 2
OPT_EPB_FLAGS: Final = 2
_FLAG_INBOUND: Final = 0b01
_FLAG_OUTBOUND: Final = 0b10


class PcapngError(ValueError):
    """A file that is not a pcapng capture this module can read."""


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad4(value)


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


def header(interface: str) -> bytes:
    """Section header and the one interface description, to start a capture."""
    shb = _block(
        BLOCK_SHB,
        struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
        + _option(OPT_COMMENT, b"wgpy capture of inner packets with verdicts")
        + _option(OPT_END, b""),
    )
    idb = _block(
        BLOCK_IDB,
        struct.pack("<HHI", LINKTYPE_RAW, 0, 0)
        + _option(OPT_IF_NAME, interface.encode())
        + _option(OPT_END, b""),
    )
    return shb + idb


def annotation(
    direction: Direction, verdict: Verdict, peer: bytes | None, reason: DropReason | None
) -> str:
    parts = [f"wgpy: {direction.value} {verdict.value}"]
    if reason is not None:
        parts.append(f"reason={reason.value}")
    parts.append(f"peer={key_b64(peer) or '(none)'}")
    return " ".join(parts)


def packet_block(timestamp: float, packet: bytes, direction: Direction, comment: str) -> bytes:
    micros = int(timestamp * 1_000_000)
    flags = _FLAG_INBOUND if direction is Direction.INCOMING else _FLAG_OUTBOUND
    body = (
        struct.pack("<IIIII", 0, micros >> 32, micros & 0xFFFFFFFF, len(packet), len(packet))
        + _pad4(packet)
        + _option(OPT_EPB_FLAGS, struct.pack("<I", flags))
        + _option(OPT_COMMENT, comment.encode())
        + _option(OPT_END, b"")
    )
    return _block(BLOCK_EPB, body)


@dataclass(frozen=True, slots=True)
class CapturedPacket:
    timestamp: float
    packet: bytes
    direction: Direction | None
    comment: str


def _options(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + 4 <= len(data):
        code, length = struct.unpack_from("<HH", data, offset)
        if code == OPT_END:
            return
        value = data[offset + 4 : offset + 4 + length]
        if len(value) != length:
            raise PcapngError("truncated option")
        yield code, value
        offset += 4 + length + (-length % 4)


def read(stream: BinaryIO) -> Iterator[CapturedPacket]:
    """Yield the packets of a little-endian pcapng file written by :func:`header`/… or tshark."""
    first = True
    while True:
        head = stream.read(8)
        if not head:
            return
        if len(head) != 8:
            raise PcapngError("truncated block header")
        kind, total = struct.unpack("<II", head)
        if first and kind != BLOCK_SHB:
            raise PcapngError("not a pcapng file (no section header block)")
        if total < 12 or total % 4:
            raise PcapngError(f"bad block length {total}")
        body = stream.read(total - 8)
        if len(body) != total - 8:
            raise PcapngError("truncated block")
        body = body[:-4]
        if first:
            if struct.unpack_from("<I", body)[0] != BYTE_ORDER_MAGIC:
                raise PcapngError("big-endian or corrupt pcapng section")
            first = False
        if kind != BLOCK_EPB:
            continue
        if len(body) < 20:
            raise PcapngError("truncated packet block")
        _, high, low, captured, _original = struct.unpack_from("<IIIII", body)
        packet = body[20 : 20 + captured]
        if len(packet) != captured:
            raise PcapngError("truncated packet data")
        comment = ""
        direction: Direction | None = None
        for code, value in _options(body[20 + captured + (-captured % 4) :]):
            if code == OPT_COMMENT:
                comment = value.decode(errors="replace")
            elif code == OPT_EPB_FLAGS and len(value) == 4:
                bits = struct.unpack("<I", value)[0] & 0b11
                direction = {
                    _FLAG_INBOUND: Direction.INCOMING,
                    _FLAG_OUTBOUND: Direction.OUTGOING,
                }.get(bits)
        yield CapturedPacket(((high << 32) | low) / 1_000_000, packet, direction, comment)
