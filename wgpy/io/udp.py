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
