"""ICMP destination unreachable sent from the interface's own network stack, as the kernel does.

When no peer has a packet's destination, the kernel module calls ``icmp_ndo_send``: if
connection tracking had rewritten the packet's source (SNAT on a router that forwards into
the tunnel), the original source is put back first, and the error leaves from the stack of
the interface's namespace, whose routing picks the source address (the router's address
facing the sender). An ICMP error written into a TUN cannot do that: its source would have
to be a local address, which the kernel drops as a martian. So the daemon sends it through a
raw socket made in the interface's namespace, after asking conntrack (ctnetlink, in that
namespace too) for the connection's original source.

Everything here is best effort: ``send_unreachable`` returns False when it could not send
(no CAP_NET_RAW, say), and the caller then writes the TUN answer instead.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from typing import Final

from wgpy.io import tun
from wgpy.io.netlink import NLA_F_NESTED, attribute, attributes, request
from wgpy.packet import icmp_unreachable_message

NETLINK_NETFILTER: Final = 12
NFNL_SUBSYS_CTNETLINK: Final = 1
IPCTNL_MSG_CT_GET: Final = 1
# linux/netfilter/nfnetlink_conntrack.h
CTA_TUPLE_ORIG: Final = 1
CTA_TUPLE_REPLY: Final = 2
CTA_STATUS: Final = 3
CTA_TUPLE_IP: Final = 1
CTA_TUPLE_PROTO: Final = 2
CTA_IP_V4_SRC: Final = 1
CTA_IP_V4_DST: Final = 2
CTA_IP_V6_SRC: Final = 3
CTA_IP_V6_DST: Final = 4
CTA_PROTO_NUM: Final = 1
CTA_PROTO_SRC_PORT: Final = 2
CTA_PROTO_DST_PORT: Final = 3
CTA_PROTO_ICMP_ID: Final = 4
CTA_PROTO_ICMP_TYPE: Final = 5
CTA_PROTO_ICMP_CODE: Final = 6
CTA_PROTO_ICMPV6_ID: Final = 7
CTA_PROTO_ICMPV6_TYPE: Final = 8
CTA_PROTO_ICMPV6_CODE: Final = 9
IPS_SRC_NAT: Final = 1 << 4
#: Present once the conntrack module is loaded (any namespace).
CONNTRACK_LOADED: Final = "/proc/sys/net/netfilter/nf_conntrack_max"

#: echo request -> echo reply, the only ICMP queries that get errors and have conntrack entries
_ICMP_REPLY_TYPE: Final = {8: 0, 13: 14, 15: 16, 17: 18}
_ICMPV6_REPLY_TYPE: Final = {128: 129}
_PORTED_PROTOCOLS: Final = frozenset({6, 17, 33, 132, 136})  # TCP UDP DCCP SCTP UDP-Lite
log = logging.getLogger("wgpy")


def _reply_tuple(packet: bytes) -> bytes | None:
    """The CTA_TUPLE_REPLY of the connection ``packet`` (seen after NAT) belongs to: source
    and destination swapped, ports swapped, ICMP queries turned into their replies."""
    version = packet[0] >> 4
    if version == 4:
        proto, offset = packet[9], (packet[0] & 0x0F) * 4
        src, dst = packet[12:16], packet[16:20]
        ip = attribute(CTA_IP_V4_SRC, dst) + attribute(CTA_IP_V4_DST, src)
    else:
        proto, offset = packet[6], 40
        src, dst = packet[8:24], packet[24:40]
        ip = attribute(CTA_IP_V6_SRC, dst) + attribute(CTA_IP_V6_DST, src)
    transport = packet[offset : offset + 8]
    parts = attribute(CTA_PROTO_NUM, bytes([proto]))
    if proto in _PORTED_PROTOCOLS and len(transport) >= 4:
        parts += attribute(CTA_PROTO_SRC_PORT, transport[2:4])
        parts += attribute(CTA_PROTO_DST_PORT, transport[0:2])
    elif proto == 1 and len(transport) >= 6 and transport[0] in _ICMP_REPLY_TYPE:
        parts += attribute(CTA_PROTO_ICMP_ID, transport[4:6])
        parts += attribute(CTA_PROTO_ICMP_TYPE, bytes([_ICMP_REPLY_TYPE[transport[0]]]))
        parts += attribute(CTA_PROTO_ICMP_CODE, b"\0")
    elif proto == 58 and len(transport) >= 6 and transport[0] in _ICMPV6_REPLY_TYPE:
        parts += attribute(CTA_PROTO_ICMPV6_ID, transport[4:6])
        parts += attribute(CTA_PROTO_ICMPV6_TYPE, bytes([_ICMPV6_REPLY_TYPE[transport[0]]]))
        parts += attribute(CTA_PROTO_ICMPV6_CODE, b"\0")
    else:
        return None
    return attribute(CTA_TUPLE_IP | NLA_F_NESTED, ip) + attribute(
        CTA_TUPLE_PROTO | NLA_F_NESTED, parts
    )


def original_source(netlink: socket.socket, packet: bytes) -> bytes | None:
    """The source address the packet had before SNAT, from the conntrack entry it belongs to
    (None: no entry, no source NAT, or conntrack not there)."""
    tuple_attrs = _reply_tuple(packet)
    if tuple_attrs is None:
        return None
    family = socket.AF_INET6 if packet[0] >> 4 == 6 else socket.AF_INET
    body = struct.pack("=BBH", family, 0, 0) + attribute(
        CTA_TUPLE_REPLY | NLA_F_NESTED, tuple_attrs
    )
    try:
        replies = request(netlink, NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET, 0, body)
    except OSError:
        return None  # ENOENT: no such connection
    for reply in replies:  # after struct nfgenmsg
        return _source_if_snat(attributes(reply[4:]), family)
    return None


def _source_if_snat(attrs: dict[int, bytes], family: int) -> bytes | None:
    status = attrs.get(CTA_STATUS)
    if status is None or len(status) < 4 or not struct.unpack("!I", status[:4])[0] & IPS_SRC_NAT:
        return None
    orig = attributes(attrs.get(CTA_TUPLE_ORIG, b""))
    ip = attributes(orig.get(CTA_TUPLE_IP, b""))
    return ip.get(CTA_IP_V6_SRC if family == socket.AF_INET6 else CTA_IP_V4_SRC)


def _pre_nat_source(tun_fd: int, packet: bytes) -> bytes | None:
    """The packet's source before SNAT, asked of conntrack in the interface's namespace; None
    without connection tracking (then nothing was NATed, and asking would autoload modules)."""
    if not os.path.exists(CONNTRACK_LOADED):
        return None
    try:
        netlink, _ = tun.device_socket(
            tun_fd, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER
        )
    except OSError:
        return None
    with netlink:
        netlink.settimeout(0.5)
        try:
            return original_source(netlink, packet)
        except OSError:
            return None


def send_unreachable(tun_fd: int, packet: bytes) -> bool:
    """Answer ``packet`` (no peer has its destination) with ICMP destination unreachable from
    the stack of the namespace the TUN lives in. True if sent (or if no error is due)."""
    family = socket.AF_INET6 if packet[0] >> 4 == 6 else socket.AF_INET
    message = icmp_unreachable_message(packet, _pre_nat_source(tun_fd, packet))
    if message is None:
        return True
    _, destination, icmp = message
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    try:
        raw, _ = tun.device_socket(tun_fd, family, socket.SOCK_RAW, proto)
    except OSError as error:
        log.debug("ICMP error from the stack: no raw socket (%s)", error)
        return False
    with raw:
        raw.setblocking(False)
        try:
            raw.sendto(icmp, (socket.inet_ntop(family, destination), 0))
        except OSError as error:
            log.debug("ICMP error from the stack not sent: %s", error)
            return False
    return True
