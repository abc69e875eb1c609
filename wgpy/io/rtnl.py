"""The two questions the daemon asks the routing of its UDP sockets' namespace.

When routes or addresses change, the kernel module re-checks a peer's sticky source address
(the local address the peer's datagrams arrived at) the next time it sends: an IPv4 source is
dropped when the address is gone or when the route to the peer now leaves through another
interface than the one the datagrams came in on; an IPv6 source only when the address is gone.
The daemon asks the same at the moment rtnetlink reports a change: ``route_oif`` is one
RTM_GETROUTE (``ip route get DST from SRC mark MARK``), ``is_local_address`` a bind test.

Written against the socket module rather than pyroute2: it runs inside the daemon's event
loop, where pyroute2's own loop and its 140 ms import are out of place, and it needs one
request and one attribute of the reply.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
from typing import Final

RTM_NEWROUTE: Final = 24
RTM_GETROUTE: Final = 26
NLMSG_ERROR: Final = 2
NLM_F_REQUEST: Final = 1
RTA_DST: Final = 1
RTA_SRC: Final = 2
RTA_OIF: Final = 4
RTA_MARK: Final = 16
RTM_F_LOOKUP_TABLE: Final = 0x1000

# rtnetlink multicast groups (linux/rtnetlink.h, RTMGRP_*)
RTMGRP_LINK: Final = 0x1
RTMGRP_IPV4_IFADDR: Final = 0x10
RTMGRP_IPV4_ROUTE: Final = 0x40
RTMGRP_IPV6_IFADDR: Final = 0x100
RTMGRP_IPV6_ROUTE: Final = 0x400
ROUTING_GROUPS: Final = (
    RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
)
#: Message types of link changes and of address or route changes.
LINK_MESSAGES: Final = frozenset({16, 17})  # RTM_NEWLINK, RTM_DELLINK
ROUTING_MESSAGES: Final = frozenset({20, 21, 24, 25})  # RTM_{NEW,DEL}ADDR, RTM_{NEW,DEL}ROUTE

_NLMSGHDR: Final = struct.Struct("=IHHII")
_RTMSG: Final = struct.Struct("=BBBBBBBBI")
_sequence = itertools.count(1)


def message_types(data: bytes) -> set[int]:
    """The nlmsg types in one datagram read from an rtnetlink socket."""
    types: set[int] = set()
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        types.add(kind)
        offset += (length + 3) & ~3
    return types


def _attribute(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("=HH", length, kind) + value + bytes(-length % 4)


def route_oif(dst: str, src: str, mark: int = 0) -> int:
    """The output interface index of ``ip route get DST from SRC [mark MARK]``.

    Raises OSError with the kernel's errno when there is no such route (EINVAL when SRC is not
    a local address, ENETUNREACH, ...)."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    bits = 128 if family == socket.AF_INET6 else 32
    body = _RTMSG.pack(family, bits, bits, 0, 0, 0, 0, 0, RTM_F_LOOKUP_TABLE)
    body += _attribute(RTA_DST, socket.inet_pton(family, dst))
    body += _attribute(RTA_SRC, socket.inet_pton(family, src))
    if mark:
        body += _attribute(RTA_MARK, struct.pack("=I", mark))
    sequence = next(_sequence) & 0xFFFFFFFF
    request = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETROUTE, NLM_F_REQUEST, sequence, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(1.0)
        sock.send(request + body)
        while True:
            reply = sock.recv(65536)
            offset = 0
            while offset + _NLMSGHDR.size <= len(reply):
                length, kind, _, seq, _ = _NLMSGHDR.unpack_from(reply, offset)
                if length < _NLMSGHDR.size:
                    break
                if seq == sequence:
                    if kind == NLMSG_ERROR:
                        (code,) = struct.unpack_from("=i", reply, offset + _NLMSGHDR.size)
                        raise OSError(-code, f"route to {dst} from {src}: error {-code}")
                    if kind == RTM_NEWROUTE:
                        return _oif(reply[offset + _NLMSGHDR.size + _RTMSG.size : offset + length])
                offset += (length + 3) & ~3


def _oif(attributes: bytes) -> int:
    offset = 0
    while offset + 4 <= len(attributes):
        length, kind = struct.unpack_from("=HH", attributes, offset)
        if length < 4:
            break
        if kind == RTA_OIF and length >= 8:
            return int(struct.unpack_from("=i", attributes, offset + 4)[0])
        offset += (length + 3) & ~3
    return 0


def is_local_address(address: str, scope_id: int = 0) -> bool:
    """Whether this namespace has ``address`` (a bind to it succeeds)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            if family == socket.AF_INET6:
                sock.bind((address, 0, 0, scope_id))
            else:
                sock.bind((address, 0))
        except OSError:
            return False
    return True


def subscribe(groups: int) -> socket.socket:
    """A non-blocking rtnetlink socket that receives the given multicast groups."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.bind((0, groups))
        sock.setblocking(False)
    except OSError:
        with contextlib.suppress(OSError):
            sock.close()
        raise
    return sock
