"""Abusive local UAPI clients against wgpyd and wireguard-go side by side (issue 8).

test_uapi_vs_go.py compares well-behaved exchanges (complete requests, reading every reply,
lines up to and beyond 64 KiB). This covers clients that misbehave at the socket level: one that
resets the connection in the middle of a line, one that closes after a partial request without
reading, one that sends megabytes without a newline, one that asks for ``get`` and never reads,
many that connect and hang. After each, both daemons must be alive, answer ``get``, and hold the
same configuration (what a torn request applied, if anything, must match go).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.netns.harness import WIREGUARD_GO, Netns, WgDaemon, start_wg_daemon, unique_ifname

pytestmark = pytest.mark.netns

WGPYD = (sys.executable, "-m", "wgpy.daemon", "-f")
A = "a1" * 32


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(path))
    return sock


def _reset(sock: socket.socket) -> None:
    """Close abruptly (SO_LINGER 0: unread data is discarded, the peer sees a reset)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def torn_line_reset(path: Path) -> None:
    sock = _connect(path)
    sock.sendall(f"set=1\nfwmark=7\npublic_key={A}\nallowed_ip=10.7.0.0/1".encode())
    time.sleep(0.1)
    _reset(sock)


def partial_request_closed(path: Path) -> None:
    sock = _connect(path)
    sock.sendall(b"set=1\nfwmark=8\n")
    time.sleep(0.1)
    sock.close()


def megabytes_without_newline(path: Path) -> None:
    sock = _connect(path)
    # the daemon may give up on the line and close: fine
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(b"set=1\nfwmark=" + b"9" * (4 << 20))
    sock.close()


def overlong_operation_reset(path: Path) -> None:
    sock = _connect(path)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(b"g" * 300_000)
    _reset(sock)


def get_never_read(path: Path) -> None:
    socks = []
    for _ in range(20):
        sock = _connect(path)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"get=1\n\n" * 50)
        socks.append(sock)
    time.sleep(0.2)
    for sock in socks:
        _reset(sock)


def many_idle_clients(path: Path) -> None:
    socks = [_connect(path) for _ in range(200)]
    for i, sock in enumerate(socks):
        sock.sendall(b"set=1\nfwmark=1" if i % 2 else b"get=")
    time.sleep(0.3)
    for i, sock in enumerate(socks):
        if i % 3:
            sock.close()
        else:
            _reset(sock)


SCENARIOS: list[Callable[[Path], None]] = [
    torn_line_reset,
    partial_request_closed,
    megabytes_without_newline,
    overlong_operation_reset,
    get_never_read,
    many_idle_clients,
]


def _get(path: Path) -> list[str]:
    """``get=1`` without listen_port (random on each daemon) and handshake times."""
    with _connect(path) as sock:
        sock.sendall(b"get=1\n\n")
        data = b""
        while not data.endswith(b"\n\n"):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
    return [
        line for line in data.decode().splitlines() if line and not line.startswith("listen_port=")
    ]


def test_abusive_clients_leave_both_daemons_up_and_equal(
    netns_factory: Callable[[], Netns],
) -> None:
    ns = netns_factory()
    daemons: dict[str, WgDaemon] = {
        "wireguard-go": start_wg_daemon(ns, unique_ifname("wgg"), WIREGUARD_GO),
        "wgpyd": start_wg_daemon(ns, unique_ifname("wgp"), WGPYD),
    }
    states: dict[str, list[list[str]]] = {name: [] for name in daemons}
    for scenario in SCENARIOS:
        for name, daemon in daemons.items():
            scenario(daemon.socket_path)
            time.sleep(0.3)  # let the daemon finish with the connection
            assert daemon.alive, f"{name} died after {scenario.__name__}:\n{daemon.log()}"
            states[name].append(_get(daemon.socket_path))
    for i, scenario in enumerate(SCENARIOS):
        assert states["wgpyd"][i] == states["wireguard-go"][i], (
            f"after {scenario.__name__}: wgpyd {states['wgpyd'][i]} "
            f"!= wireguard-go {states['wireguard-go'][i]}"
        )
