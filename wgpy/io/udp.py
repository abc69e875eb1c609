"""The UDP sockets of an interface: IPv4 and IPv6 on one port, fwmark, rebinding."""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from typing import Final

SO_MARK: Final = 36
_BUFFER_SIZE: Final = 7 << 20
_PORT_RETRIES: Final = 100


def _configure(sock: socket.socket, fwmark: int) -> None:
    sock.setblocking(False)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, _BUFFER_SIZE)
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
GSO_MAX_SEGMENTS: Final = 64
GSO_MAX_BYTES: Final = 65000
_GRO_CMSG_SPACE: Final = socket.CMSG_SPACE(4)


def enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


class Receiver:
    """Reads datagrams into one preallocated 64 KiB buffer and copies out only the bytes
    received: ``recvfrom(65535)`` would allocate (and the allocator often fault in) 64 KiB
    per datagram, the largest single cost of a small packet in the profile."""

    __slots__ = ("_buffer", "_view")

    def __init__(self) -> None:
        self._buffer = bytearray(65535)
        self._view = memoryview(self._buffer)

    def receive(self, sock: socket.socket, gro: bool) -> tuple[list[bytes], tuple[str, int]]:
        """Read one datagram, or with GRO a glued run of them; raises BlockingIOError when
        empty."""
        view = self._view
        if not gro:
            size, address = sock.recvfrom_into(self._buffer)
            return [bytes(view[:size])], (address[0], address[1])
        size, ancillary, _, address = sock.recvmsg_into([self._buffer], _GRO_CMSG_SPACE)
        for level, kind, value in ancillary:
            if level == SOL_UDP and kind == UDP_GRO and len(value) >= 4:
                segment = struct.unpack_from("=i", value)[0]
                if 0 < segment < size:
                    return [
                        bytes(view[i : min(i + segment, size)]) for i in range(0, size, segment)
                    ], (address[0], address[1])
        return [bytes(view[:size])], (address[0], address[1])


def send_runs(
    sock: socket.socket, datagrams: list[tuple[bytes, tuple[str, int]]], gso: bool
) -> list[tuple[bytes, tuple[str, int], OSError]]:
    """Send datagrams in order; with ``gso`` coalesce runs to one endpoint whose datagrams all
    have the first one's size (the last may be shorter). Returns the ones that failed."""
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
        try:
            if end - index == 1:
                sock.sendto(datagram, endpoint)
            else:
                buffer = b"".join(d for d, _ in datagrams[index:end])
                sock.sendmsg(
                    [buffer], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0, endpoint
                )
        except OSError as error:
            failed.extend((d, e, error) for d, e in datagrams[index:end])
        index = end
    return failed
