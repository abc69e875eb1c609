"""The two questions the daemon asks the routing of its UDP sockets' namespace.

When routes or addresses change, the kernel module re-checks a peer's sticky source address
(the local address the peer's datagrams arrived at) the next time it sends: an IPv4 source is
dropped when the address is gone or when the route to the peer now leaves through another
interface than the one the datagrams came in on; an IPv6 source only when the address is gone.
The daemon asks the same at the moment rtnetlink reports a change: ``route_oif`` is one
RTM_GETROUTE (``ip route get DST from SRC mark MARK``), ``is_local_address`` a bind test.

The wire format is `netlink.py`'s.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Final

from wgpy.io import netlink

RTM_GETROUTE: Final = 26
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

RTA_METRICS: Final = 8
RTAX_MTU: Final = 2
SOL_NETLINK: Final = 270
NETLINK_LISTEN_ALL_NSID: Final = 8
NETLINK_GET_STRICT_CHK: Final = 12

_RTMSG: Final = struct.Struct("=BBBBBBBBI")


def route_oif(dst: str, src: str, mark: int = 0) -> int:
    """The output interface index of ``ip route get DST from SRC [mark MARK]``.

    Raises OSError with the kernel's errno when there is no such route (EINVAL when SRC is not
    a local address, ENETUNREACH, ...)."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    bits = 128 if family == socket.AF_INET6 else 32
    body = _RTMSG.pack(family, bits, bits, 0, 0, 0, 0, 0, RTM_F_LOOKUP_TABLE)
    body += netlink.attribute(RTA_DST, socket.inet_pton(family, dst))
    body += netlink.attribute(RTA_SRC, socket.inet_pton(family, src))
    if mark:
        body += netlink.attribute(RTA_MARK, struct.pack("=I", mark))
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(1.0)
        for reply in netlink.request(sock, RTM_GETROUTE, 0, body):
            return _oif(reply[_RTMSG.size :])
    return 0


def _oif(data: bytes) -> int:
    value = netlink.attributes(data).get(RTA_OIF, b"")
    return int(struct.unpack_from("=i", value)[0]) if len(value) >= 4 else 0


def _mtu(attributes: dict[int, bytes]) -> int:
    value = netlink.attributes(attributes.get(RTA_METRICS, b"")).get(RTAX_MTU, b"")
    return int(struct.unpack_from("=I", value)[0]) if len(value) >= 4 else 0


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
        body += netlink.attribute(RTA_OIF, struct.pack("=i", ifindex))
        for reply in netlink.request(sock, RTM_GETROUTE, netlink.NLM_F_DUMP, body):
            found_attributes = netlink.attributes(reply[_RTMSG.size :])
            oif = found_attributes.get(RTA_OIF, b"")
            if len(oif) >= 4 and struct.unpack_from("=i", oif)[0] == ifindex:
                mtu = _mtu(found_attributes)
                if mtu:
                    found.add(mtu)
    return found


def route_mtu(sock: socket.socket, destination: bytes, ifindex: int) -> int:
    """The MTU of the route to ``destination`` (4 or 16 bytes) through ``ifindex`` (``ip
    route get DST oif DEV``), 0 when the route sets none."""
    family = socket.AF_INET6 if len(destination) == 16 else socket.AF_INET
    body = _RTMSG.pack(family, len(destination) * 8, 0, 0, 0, 0, 0, 0, 0)
    body += netlink.attribute(RTA_DST, destination) + netlink.attribute(
        RTA_OIF, struct.pack("=i", ifindex)
    )
    for reply in netlink.request(sock, RTM_GETROUTE, 0, body):
        return _mtu(netlink.attributes(reply[_RTMSG.size :]))
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
