"""The four WireGuard wire messages: sizes, offsets, packing and parsing.

Parsers never raise anything but :class:`MessageError`; the device turns that into a counted drop.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

TYPE_INITIATION: Final = 1
TYPE_RESPONSE: Final = 2
TYPE_COOKIE_REPLY: Final = 3
TYPE_DATA: Final = 4

INITIATION_SIZE: Final = 148
RESPONSE_SIZE: Final = 92
COOKIE_REPLY_SIZE: Final = 64
DATA_HEADER_SIZE: Final = 16
DATA_MIN_SIZE: Final = 32  # header + empty AEAD tag: a keepalive
KEEPALIVE_SIZE: Final = DATA_MIN_SIZE

# mac1 covers everything before it; mac2 covers everything before it (mac1 included).
INITIATION_MAC1_OFFSET: Final = 116
INITIATION_MAC2_OFFSET: Final = 132
RESPONSE_MAC1_OFFSET: Final = 60
RESPONSE_MAC2_OFFSET: Final = 76

_HEADER_INITIATION: Final = struct.pack("<I", TYPE_INITIATION)
_HEADER_RESPONSE: Final = struct.pack("<I", TYPE_RESPONSE)
_HEADER_COOKIE: Final = struct.pack("<I", TYPE_COOKIE_REPLY)
HEADER_DATA: Final = struct.pack("<I", TYPE_DATA)

_EXPECTED_SIZE: Final = {
    TYPE_INITIATION: INITIATION_SIZE,
    TYPE_RESPONSE: RESPONSE_SIZE,
    TYPE_COOKIE_REPLY: COOKIE_REPLY_SIZE,
}


class MessageError(ValueError):
    """A datagram that is not a well-formed WireGuard message."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # "unknown_type" or "bad_size"


def message_type(datagram: bytes) -> int:
    """Classify a datagram by its LE32 header, checking the exact size rules.

    Non-zero reserved bytes make the type unknown, as in the kernel and wireguard-go.
    """
    if len(datagram) < 4:
        raise MessageError("bad_size", f"datagram of {len(datagram)} bytes is too short")
    kind = int.from_bytes(datagram[:4], "little")
    if kind == TYPE_DATA:
        if len(datagram) < DATA_MIN_SIZE:
            raise MessageError("bad_size", f"data message of {len(datagram)} bytes")
        return kind
    expected = _EXPECTED_SIZE.get(kind)
    if expected is None:
        raise MessageError("unknown_type", f"unknown message type {kind:#x}")
    if len(datagram) != expected:
        raise MessageError(
            "bad_size", f"message type {kind} of {len(datagram)} bytes, expected {expected}"
        )
    return kind


@dataclass(frozen=True, slots=True)
class Initiation:
    sender_index: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes
    mac2: bytes

    def pack_without_macs(self) -> bytes:
        return (
            _HEADER_INITIATION
            + struct.pack("<I", self.sender_index)
            + self.ephemeral
            + self.encrypted_static
            + self.encrypted_timestamp
        )


def parse_initiation(data: bytes) -> Initiation:
    if len(data) != INITIATION_SIZE or data[:4] != _HEADER_INITIATION:
        raise MessageError("bad_size", "not a handshake initiation")
    (sender,) = struct.unpack_from("<I", data, 4)
    return Initiation(sender, data[8:40], data[40:88], data[88:116], data[116:132], data[132:148])


@dataclass(frozen=True, slots=True)
class Response:
    sender_index: int
    receiver_index: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes
    mac2: bytes

    def pack_without_macs(self) -> bytes:
        return (
            _HEADER_RESPONSE
            + struct.pack("<II", self.sender_index, self.receiver_index)
            + self.ephemeral
            + self.encrypted_nothing
        )


def parse_response(data: bytes) -> Response:
    if len(data) != RESPONSE_SIZE or data[:4] != _HEADER_RESPONSE:
        raise MessageError("bad_size", "not a handshake response")
    sender, receiver = struct.unpack_from("<II", data, 4)
    return Response(sender, receiver, data[12:44], data[44:60], data[60:76], data[76:92])


@dataclass(frozen=True, slots=True)
class CookieReply:
    receiver_index: int
    nonce: bytes
    encrypted_cookie: bytes

    def pack(self) -> bytes:
        return (
            _HEADER_COOKIE
            + struct.pack("<I", self.receiver_index)
            + self.nonce
            + self.encrypted_cookie
        )


def parse_cookie_reply(data: bytes) -> CookieReply:
    if len(data) != COOKIE_REPLY_SIZE or data[:4] != _HEADER_COOKIE:
        raise MessageError("bad_size", "not a cookie reply")
    (receiver,) = struct.unpack_from("<I", data, 4)
    return CookieReply(receiver, data[8:32], data[32:64])


_DATA_HEADER: Final = struct.Struct("<IIQ")


def pack_data_header(receiver_index: int, counter: int) -> bytes:
    return _DATA_HEADER.pack(TYPE_DATA, receiver_index, counter)


def parse_data_header(data: bytes) -> tuple[int, int]:
    """Return (receiver_index, counter) of a data message already classified by its type."""
    _, receiver, counter = _DATA_HEADER.unpack_from(data)
    return receiver, counter


def padded_length(length: int, mtu: int) -> int:
    """Plaintext length after WireGuard padding (to 16, never past the MTU)."""
    if mtu <= 0:
        return (length + 15) & ~15
    last_unit = length % mtu if length > mtu else length
    padded = min((last_unit + 15) & ~15, mtu)
    return length - last_unit + padded
