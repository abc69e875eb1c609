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

NLM_F_DUMP: Final = 0x300
NLMSG_DONE: Final = 3
RTA_METRICS: Final = 8
RTAX_MTU: Final = 2
SOL_NETLINK: Final = 270
NETLINK_LISTEN_ALL_NSID: Final = 8
NETLINK_GET_STRICT_CHK: Final = 12

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
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(1.0)
        for reply in _request(sock, RTM_GETROUTE, 0, body):
            return _oif(reply[_RTMSG.size :])
    return 0


def _attributes(data: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        found.setdefault(kind & 0x3FFF, data[offset + 4 : offset + length])
        offset += (length + 3) & ~3
    return found


def _oif(attributes: bytes) -> int:
    value = _attributes(attributes).get(RTA_OIF, b"")
    return int(struct.unpack_from("=i", value)[0]) if len(value) >= 4 else 0


def _mtu(attributes: dict[int, bytes]) -> int:
    value = _attributes(attributes.get(RTA_METRICS, b"")).get(RTAX_MTU, b"")
    return int(struct.unpack_from("=I", value)[0]) if len(value) >= 4 else 0


def _request(sock: socket.socket, kind: int, flags: int, body: bytes) -> list[bytes]:
    """Send one request and collect the bodies of its replies (raising its error)."""
    sequence = next(_sequence) & 0xFFFFFFFF
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | flags, sequence, 0)
    sock.send(header + body)
    bodies: list[bytes] = []
    while True:
        reply = sock.recv(1 << 16)
        offset = 0
        while offset + _NLMSGHDR.size <= len(reply):
            length, got, _, seq, _ = _NLMSGHDR.unpack_from(reply, offset)
            if length < _NLMSGHDR.size:
                return bodies
            if seq == sequence:
                if got == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", reply, offset + _NLMSGHDR.size)
                    if code:
                        raise OSError(-code, f"rtnetlink request failed: error {-code}")
                    return bodies
                if got == NLMSG_DONE:
                    return bodies
                bodies.append(reply[offset + _NLMSGHDR.size : offset + length])
                if not flags & NLM_F_DUMP:
                    return bodies
            offset += (length + 3) & ~3


def route_mtus(sock: socket.socket, ifindex: int) -> set[int]:
    """The MTUs set on routes (``ip route ... mtu N``) that leave through ``ifindex``, in all
    tables of the namespace ``sock`` (an rtnetlink socket) belongs to."""
    found: set[int] = set()
    # with strict checking the kernel filters the dump by RTA_OIF itself (Linux 5.0+), so a
    # namespace with a full routing table sends only this interface's routes
    with contextlib.suppress(OSError):
        sock.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
    for family in (socket.AF_INET, socket.AF_INET6):
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        body += _attribute(RTA_OIF, struct.pack("=i", ifindex))
        for reply in _request(sock, RTM_GETROUTE, NLM_F_DUMP, body):
            attributes = _attributes(reply[_RTMSG.size :])
            oif = attributes.get(RTA_OIF, b"")
            if len(oif) >= 4 and struct.unpack_from("=i", oif)[0] == ifindex:
                mtu = _mtu(attributes)
                if mtu:
                    found.add(mtu)
    return found


def route_mtu(sock: socket.socket, destination: bytes, ifindex: int) -> int:
    """The MTU of the route to ``destination`` (4 or 16 bytes) through ``ifindex`` (``ip
    route get DST oif DEV``), 0 when the route sets none."""
    family = socket.AF_INET6 if len(destination) == 16 else socket.AF_INET
    body = _RTMSG.pack(family, len(destination) * 8, 0, 0, 0, 0, 0, 0, 0)
    body += _attribute(RTA_DST, destination) + _attribute(RTA_OIF, struct.pack("=i", ifindex))
    for reply in _request(sock, RTM_GETROUTE, 0, body):
        return _mtu(_attributes(reply[_RTMSG.size :]))
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


def from_other_namespace(ancillary: list[tuple[int, int, bytes]]) -> bool:
    """Whether a message read with ``recvmsg`` came from another namespace (it then carries
    that namespace's id here)."""
    return any(
        level == SOL_NETLINK and kind == NETLINK_LISTEN_ALL_NSID for level, kind, _ in ancillary
    )


def subscribe(groups: int) -> socket.socket:
    """A non-blocking rtnetlink socket that receives the given multicast groups, of its own
    namespace and of every namespace with an id in it."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.bind((0, groups))
        sock.setblocking(False)
        # also the events of namespaces that have an id here: the one the interface was
        # moved to gets one with the move. An id does not keep that namespace alive.
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_NETLINK, NETLINK_LISTEN_ALL_NSID, 1)
    except OSError:
        with contextlib.suppress(OSError):
            sock.close()
        raise
    return sock
