"""The UDP sockets of an interface: IPv4 and IPv6 on one port, fwmark, rebinding."""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from collections.abc import Sequence
from typing import Final

from wgpy.batch import Segments
from wgpy.device.state import RUN_MAX_BYTES, RUN_MAX_DATAGRAMS, QueuedDatagrams, datagrams_of

SO_MARK: Final = 36
_BUFFER_SIZE: Final = 7 << 20
_PORT_RETRIES: Final = 100
# Path MTU discovery (linux/in.h, linux/in6.h; Python's socket module lacks them)
IP_MTU_DISCOVER: Final = 10
IP_PMTUDISC_DONT: Final = 0
IP_PMTUDISC_DO: Final = 2
IPV6_DONTFRAG: Final = 62


def _configure(sock: socket.socket, fwmark: int) -> None:
    sock.setblocking(False)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, _BUFFER_SIZE)
    # As the kernel module sends them: IPv4 datagrams without DF, so that a router on a
    # smaller-MTU path fragments them (IPv6 has no such bit; the sender fragments to the
    # path MTU it knows, which is the socket's default)
    if sock.family == socket.AF_INET:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
    if fwmark:
        _set_mark(sock, fwmark)


def bind_pair(port: int, fwmark: int) -> tuple[socket.socket, socket.socket | None, int]:
    """Bind 0.0.0.0:port and [::]:port (IPv6-only); with port 0 pick one free on both.

    A busy non-zero port raises OSError(EADDRINUSE); a missing IPv6 stack is tolerated.
    """
    attempts = _PORT_RETRIES if port == 0 else 1
    last_error: OSError | None = None
    for _ in range(attempts):
        sock4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            _configure(sock4, fwmark)
            sock4.bind(("0.0.0.0", port))
        except OSError:
            sock4.close()
            raise
        chosen = int(sock4.getsockname()[1])
        try:
            sock6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        except OSError:
            return sock4, None, chosen
        try:
            sock6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            _configure(sock6, fwmark)
            sock6.bind(("::", chosen))
        except OSError as error:
            sock6.close()
            if error.errno == errno.EADDRINUSE:
                sock4.close()
                last_error = error
                continue
            if error.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                return sock4, None, chosen
            sock4.close()
            raise
        return sock4, sock6, chosen
    assert last_error is not None
    raise last_error


def _set_mark(sock: socket.socket, fwmark: int) -> None:
    # As a u32: marks above 2**31 - 1 do not fit the C int that an int option would pass.
    sock.setsockopt(socket.SOL_SOCKET, SO_MARK, struct.pack("=I", fwmark))


def set_fwmark(sockets: list[socket.socket], fwmark: int) -> None:
    for sock in sockets:
        _set_mark(sock, fwmark)


# UDP segmentation offload: one sendmsg for a run of equal-sized datagrams to one endpoint
# (the kernel cuts the buffer into datagrams), and GRO: one recvmsg may return several
# datagrams of one flow glued together, with their size in a control message.
SOL_UDP: Final = 17
UDP_SEGMENT: Final = 103
UDP_GRO: Final = 104
GSO_MAX_SEGMENTS: Final = RUN_MAX_DATAGRAMS
GSO_MAX_BYTES: Final = RUN_MAX_BYTES


def enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


# Sticky source addresses (what the kernel module and wireguard-go do): the local address a
# peer's datagrams arrive at is the one replies leave from, whatever the routing table would
# pick on a multi-homed host. It is learned from IP_PKTINFO / IPV6_PKTINFO on receive and
# given back in the same control message on send.
IP_PKTINFO: Final = 8  # Linux <linux/in.h>; Python's socket module lacks it on some builds
IPV6_RECVPKTINFO: Final = 49
IPV6_PKTINFO: Final = 50
_CMSG_SPACE: Final = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(20)  # UDP_GRO + in6_pktinfo
_NO_IPV4: Final = bytes(4)

#: A control message for sendmsg: (level, type, data).
Cmsg = tuple[int, int, bytes]


def enable_pktinfo(sock: socket.socket) -> bool:
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    except OSError:
        return False
    return True


def _source_cmsg(level: int, kind: int, value: bytes) -> Cmsg | None:
    """The send-side control message that makes a reply leave from the address a received
    datagram was sent to, or None if ``(level, kind)`` is not packet info."""
    if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 12:
        # in_pktinfo {int ifindex; in_addr spec_dst; in_addr addr}: send from addr, let the
        # routing table choose the interface
        return (level, kind, bytes(4) + value[8:12] + _NO_IPV4)
    if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(value) >= 20:
        # in6_pktinfo {in6_addr addr; int ifindex}: a link-local address needs its interface
        link_local = value[0] == 0xFE and value[1] & 0xC0 == 0x80
        return (level, kind, value[:16] + (value[16:20] if link_local else bytes(4)))
    return None


def _arrival_ifindex(level: int, value: bytes) -> int:
    """The interface index in an in_pktinfo (first field) or in6_pktinfo (after the address)."""
    offset = 16 if level == socket.IPPROTO_IPV6 else 0
    return int(struct.unpack_from("=i", value, offset)[0])


def source_address(source: Cmsg) -> tuple[str, int]:
    """The local address (and IPv6 scope) that a sticky-source control message sends from."""
    level, _, value = source
    if level == socket.IPPROTO_IPV6:
        return socket.inet_ntop(socket.AF_INET6, value[:16]), int.from_bytes(value[16:20], "little")
    return socket.inet_ntop(socket.AF_INET, value[4:8]), 0


class Receiver:
    """Reads datagrams into one preallocated 64 KiB buffer and copies out only the bytes
    received: ``recvfrom(65535)`` would allocate (and the allocator often fault in) 64 KiB
    per datagram, the largest single cost of a small packet in the profile."""

    __slots__ = ("_buffer", "_view", "ifindex")

    def __init__(self) -> None:
        self._buffer = bytearray(65535)
        self._view = memoryview(self._buffer)
        #: The interface the last datagram with packet info arrived on (0 if unknown).
        self.ifindex = 0

    def receive(
        self, sock: socket.socket, gro: bool
    ) -> tuple[Sequence[bytes], tuple[str, int], Cmsg | None]:
        """Read one datagram, or with GRO a glued run of them, with the control message that
        sends replies from the address it arrived at (None without packet info); raises
        BlockingIOError when empty."""
        view = self._view
        size, ancillary, _, address = sock.recvmsg_into([self._buffer], _CMSG_SPACE)
        endpoint = (address[0], address[1])
        segment = 0
        source = None
        for level, kind, value in ancillary:
            if level == SOL_UDP and kind == UDP_GRO and len(value) >= 4:
                segment = struct.unpack_from("=i", value)[0]
            else:
                source = _source_cmsg(level, kind, value)
                if source is not None:
                    self.ifindex = _arrival_ifindex(level, value)
        if gro and 0 < segment < size:
            # one copy of the read; each datagram is cut from it only if the Device asks
            return Segments(bytes(view[:size]), segment), endpoint, source
        return [bytes(view[:size])], endpoint, source


def send_runs(
    sock: socket.socket,
    datagrams: list[tuple[bytes, tuple[str, int]]],
    gso: bool,
    sources: dict[tuple[str, int], Cmsg] | None = None,
) -> list[tuple[bytes, tuple[str, int], OSError]]:
    """Send datagrams in order; with ``gso`` coalesce runs to one endpoint whose datagrams all
    have the first one's size (the last may be shorter). ``sources`` maps endpoints to the
    control message of their sticky source address. Returns the ones that failed."""
    failed: list[tuple[bytes, tuple[str, int], OSError]] = []
    count = len(datagrams)
    index = 0
    while index < count:
        datagram, endpoint = datagrams[index]
        size = len(datagram)
        end = index + 1
        if gso:
            total = size
            while end < count and end - index < GSO_MAX_SEGMENTS:
                following, where = datagrams[end]
                length = len(following)
                if where != endpoint or length > size or total + length > GSO_MAX_BYTES:
                    break
                total += length
                end += 1
                if length < size:
                    break
        cmsgs: list[Cmsg] = []
        if end - index > 1:
            cmsgs.append((SOL_UDP, UDP_SEGMENT, struct.pack("=H", size)))
            datagram = b"".join([d for d, _ in datagrams[index:end]])
        try:
            send_one(sock, datagram, endpoint, cmsgs, sources)
        except OSError as error:
            failed.extend((d, e, error) for d, e in datagrams[index:end])
        index = end
    return failed


def send_queued(
    sock: socket.socket,
    queued: list[QueuedDatagrams],
    gso: bool,
    sources: dict[tuple[str, int], Cmsg] | None = None,
) -> list[tuple[bytes, tuple[str, int], OSError]]:
    """Send queued datagrams in order: a run the Device encrypted back to back (size > 0) in
    one call with ``gso``, one datagram per call without; single datagrams as
    :func:`send_runs` does. Returns the datagrams that failed."""
    failed: list[tuple[bytes, tuple[str, int], OSError]] = []
    singles: list[tuple[bytes, tuple[str, int]]] = []
    for data, endpoint, size in queued:
        if not size:
            singles.append((bytes(data), endpoint))
            continue
        if singles:
            failed += send_runs(sock, singles, gso, sources)
            singles = []
        if not gso:
            failed += send_runs(sock, datagrams_of([(data, endpoint, size)]), False, sources)
            continue
        try:
            send_one(
                sock, data, endpoint, [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], sources
            )
        except OSError as error:
            failed += [(d, e, error) for d, e in datagrams_of([(data, endpoint, size)])]
    if singles:
        failed += send_runs(sock, singles, gso, sources)
    return failed


def send_one(
    sock: socket.socket,
    data: bytes | bytearray,
    endpoint: tuple[str, int],
    cmsgs: list[Cmsg],
    sources: dict[tuple[str, int], Cmsg] | None,
) -> None:
    """sendto/sendmsg from the endpoint's sticky source if there is one. When a send from it
    fails (the host no longer has the address: EINVAL, EADDRNOTAVAIL, or no route from it),
    the source is forgotten and the send retried without it, as the kernel module and
    wireguard-go do; the retry's error, if any, is the one raised."""
    source = sources.get(endpoint) if sources else None
    if source is None or sources is None:
        if cmsgs:
            sock.sendmsg([data], cmsgs, 0, endpoint)
        else:
            sock.sendto(data, endpoint)
        return
    try:
        sock.sendmsg([data], [*cmsgs, source], 0, endpoint)
    except OSError:
        sources.pop(endpoint, None)
        send_one(sock, data, endpoint, cmsgs, None)


_DONTFRAG_V6: Final = (socket.IPPROTO_IPV6, IPV6_DONTFRAG, struct.pack("=i", 1))


def send_unfragmented(
    sock: socket.socket,
    datagrams: list[tuple[bytes, tuple[str, int]]],
    sources: dict[tuple[str, int], Cmsg] | None = None,
) -> list[tuple[bytes, tuple[str, int], OSError]]:
    """Send datagrams one by one, none of them fragmented: one larger than the path MTU
    fails with EMSGSIZE. IPv6 says so per datagram (IPV6_DONTFRAG); IPv4 only per socket,
    so DF is switched on around the sends. Returns the ones that failed."""
    failed: list[tuple[bytes, tuple[str, int], OSError]] = []
    v4 = sock.family == socket.AF_INET
    cmsgs: list[Cmsg] = [] if v4 else [_DONTFRAG_V6]
    if v4:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    try:
        for datagram, endpoint in datagrams:
            try:
                send_one(sock, datagram, endpoint, cmsgs, sources)
            except OSError as error:
                failed.append((datagram, endpoint, error))
    finally:
        if v4:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
    return failed
