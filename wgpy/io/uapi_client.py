"""A small client for the UAPI socket of wgpyd, wireguard-go or any userspace WireGuard."""

from __future__ import annotations

import os
import socket

from wgpy.uapi import socket_path


class UapiError(OSError):
    pass


def _exchange(ifname: str, request: str, timeout: float = 5.0) -> str:
    path = socket_path(ifname)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(request.encode())
        chunks: list[bytes] = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if b"".join(chunks[-2:]).endswith(b"\n\n"):
                break
    return b"".join(chunks).decode()


def _errno(response: str) -> int:
    for line in response.splitlines():
        if line.startswith("errno="):
            return int(line[6:])
    raise UapiError(71, "no errno in UAPI response")


def uapi_get(ifname: str) -> list[tuple[str, str]]:
    """Return the key=value pairs of a get, in order (without the errno line)."""
    response = _exchange(ifname, "get=1\n\n")
    code = _errno(response)
    if code:
        raise UapiError(-code, os.strerror(-code))
    pairs = []
    for line in response.splitlines():
        if not line or line.startswith("errno="):
            continue
        key, _, value = line.partition("=")
        pairs.append((key, value))
    return pairs


def interface_get(ifname: str) -> tuple[list[tuple[str, str]], bool]:
    """The ``get`` pairs of a userspace daemon's interface (its UAPI socket) or, when there
    is no socket, of a kernel WireGuard interface (generic netlink); and whether it was the
    kernel's. Raises OSError (ENODEV when neither has it)."""
    try:
        return uapi_get(ifname), False
    except (FileNotFoundError, ConnectionRefusedError):
        from wgpy.io.kernel_wg import kernel_get

        return kernel_get(ifname), True


def wgpy_stats(ifname: str) -> dict[str, object] | None:
    """wgpyd's drop counters; None when the daemon is not wgpyd (it closes or errors)."""
    import json

    try:
        response = _exchange(ifname, "wgpy-stats=1\n\n")
    except OSError:
        return None
    first = response.split("\n", 1)[0]
    if not first.startswith("{"):
        return None
    result: dict[str, object] = json.loads(first)
    return result


def open_capture(ifname: str) -> socket.socket:
    """Ask wgpyd for a live pcapng stream of the interface's inner packets."""
    path = socket_path(ifname)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(b"wgpy-capture=1\n\n")
    return sock


def open_events(ifname: str, *, follow: bool, as_json: bool) -> socket.socket:
    """Ask wgpyd for its recent events, one line each (JSON records with ``as_json``), then
    ``errno=0`` and an empty line; with ``follow``, every new event after that until the
    socket is closed."""
    path = socket_path(ifname)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        form = "json" if as_json else "text"
        sock.sendall(f"wgpy-events=1\nfollow={int(follow)}\nformat={form}\n\n".encode())
    except OSError:
        sock.close()
        raise
    return sock


def uapi_set(ifname: str, lines: list[str]) -> None:
    response = _exchange(ifname, "set=1\n" + "".join(f"{line}\n" for line in lines) + "\n")
    code = _errno(response)
    if code:
        raise UapiError(-code, os.strerror(-code))
