"""The netlink wire format, as the daemon's few requests need it: attributes (TLVs), one
request with its replies, and the message types in a datagram of notifications. rtnetlink
(routes, `rtnl.py`) and ctnetlink (conntrack, `icmp_errors.py`) both speak it.

Written against the socket module rather than pyroute2: it runs inside the daemon's event
loop, where pyroute2's own loop and its 140 ms import are out of place.
"""

from __future__ import annotations

import itertools
import socket
import struct
from typing import Final

NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLM_F_REQUEST: Final = 1
NLM_F_DUMP: Final = 0x300
NLA_F_NESTED: Final = 0x8000
NLA_TYPE_MASK: Final = 0x3FFF

HEADER: Final = struct.Struct("=IHHII")  # struct nlmsghdr
_sequence = itertools.count(1)


def attribute(kind: int, value: bytes) -> bytes:
    """One attribute: length, type, value, padded to 4 bytes."""
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + bytes(-length % 4)


def attributes(data: bytes) -> dict[int, bytes]:
    """The attributes in ``data`` by type (the first of each type; nesting flags masked)."""
    found: dict[int, bytes] = {}
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        found.setdefault(kind & NLA_TYPE_MASK, data[offset + 4 : offset + length])
        offset += (length + 3) & ~3
    return found


def message_types(data: bytes) -> set[int]:
    """The nlmsg types in one datagram read from a netlink socket."""
    types: set[int] = set()
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind, _, _, _ = HEADER.unpack_from(data, offset)
        if length < HEADER.size:
            break
        types.add(kind)
        offset += (length + 3) & ~3
    return types


def request(sock: socket.socket, kind: int, flags: int, body: bytes) -> list[bytes]:
    """Send one request and collect the bodies (after the nlmsghdr) of its replies: one, or
    all of a dump (``NLM_F_DUMP``). Raises OSError with the kernel's errno for an error."""
    sequence = next(_sequence) & 0xFFFFFFFF
    header = HEADER.pack(HEADER.size + len(body), kind, NLM_F_REQUEST | flags, sequence, 0)
    sock.send(header + body)
    bodies: list[bytes] = []
    while True:
        reply = sock.recv(1 << 16)
        offset = 0
        while offset + HEADER.size <= len(reply):
            length, got, _, seq, _ = HEADER.unpack_from(reply, offset)
            if length < HEADER.size:
                return bodies
            if seq == sequence:
                if got == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", reply, offset + HEADER.size)
                    if code:
                        raise OSError(-code, f"netlink request failed: error {-code}")
                    return bodies
                if got == NLMSG_DONE:
                    return bodies
                bodies.append(reply[offset + HEADER.size : offset + length])
                if not flags & NLM_F_DUMP:
                    return bodies
            offset += (length + 3) & ~3
