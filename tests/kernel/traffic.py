"""TCP and UDP transfers through the tunnel, both ways, checked byte for byte.

The host's end is a Python socket created inside the host namespace (`dropkit.in_netns`);
the guest's end is busybox `nc` for TCP and the host's `ncat`, copied into the guest, for
UDP (Debian's busybox nc has no `-u`). Each function returns (what was sent, what arrived) —
for UDP, the datagrams as a list — and leaves the comparison to the test.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import time
from typing import Final

from tests.kernel.lab import GUEST_TUNNEL, HOST_TUNNEL, Family, KernelTunnel, q
from tests.netns.dropkit import in_netns
from tests.netns.harness import wait_for

TCP_PORT: Final = 5000
UDP_PORT: Final = 5001
TCP_SIZE: Final = 256 * 1024
"""Enough for many full-size segments in each direction (the guest moves 40–110 Mbit/s)."""

UDP_DATAGRAMS: Final = 5
UDP_SIZE: Final = 1000


def _family(family: Family) -> socket.AddressFamily:
    return socket.AF_INET if family == 4 else socket.AF_INET6


def _connect(tunnel: KernelTunnel, family: Family, timeout: float = 10.0) -> socket.socket:
    """A TCP connection from the host namespace to the guest's listener, retried until the
    listener is up."""
    deadline = time.monotonic() + timeout
    while True:
        with in_netns(tunnel.ns):
            sock = socket.socket(_family(family), socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((GUEST_TUNNEL[family], TCP_PORT))
            return sock
        except ConnectionRefusedError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _guest_file_md5(tunnel: KernelTunnel, path: str, size: int, timeout: float = 20.0) -> str:
    """The md5 of a file in the guest once it has `size` bytes (and writers are done)."""

    def complete() -> str | None:
        out = tunnel.guest.run(f"stat -c %s {path} 2>/dev/null || echo 0").stdout
        return out if int(out) >= size else None

    wait_for(complete, timeout, interval=0.2, what=f"{size} bytes in the guest's {path}")
    return tunnel.guest.run(f"md5sum {path}").stdout.split()[0]


def tcp_host_to_guest(
    tunnel: KernelTunnel, family: Family, size: int = TCP_SIZE
) -> tuple[str, str]:
    """md5 of `size` random bytes sent by the host, and of what the guest's nc received."""
    tunnel.guest.run(
        f"rm -f /tmp/tcp.rx; nc -l -p {TCP_PORT} >/tmp/tcp.rx 2>/tmp/nc.err </dev/null &"
    )
    data = os.urandom(size)
    with _connect(tunnel, family) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        # the guest's nc exits when it has read everything and the host's FIN
        sock.recv(1)
    return hashlib.md5(data).hexdigest(), _guest_file_md5(tunnel, "/tmp/tcp.rx", size)


def tcp_guest_to_host(
    tunnel: KernelTunnel, family: Family, size: int = TCP_SIZE
) -> tuple[str, str]:
    """md5 of `size` random bytes the guest's nc sent, and of what the host received."""
    with in_netns(tunnel.ns):
        listener = socket.socket(_family(family), socket.SOCK_STREAM)
    with listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST_TUNNEL[family], TCP_PORT))
        listener.listen(1)
        listener.settimeout(20)
        sent = tunnel.guest.run(
            f"head -c {size} /dev/urandom >/tmp/tcp.tx && md5sum /tmp/tcp.tx\n"
            f"timeout 30 nc {HOST_TUNNEL[family]} {TCP_PORT} </tmp/tcp.tx >/dev/null 2>&1 &"
        ).stdout.split()[0]
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(20)
            received = bytearray()
            while chunk := conn.recv(65536):
                received += chunk
    return sent, hashlib.md5(received).hexdigest()


def _payloads(tag: str) -> list[bytes]:
    return [
        f"{tag} {i} ".encode() + os.urandom(UDP_SIZE // 2).hex().encode()[: UDP_SIZE - 20]
        for i in range(UDP_DATAGRAMS)
    ]


def udp_host_to_guest(tunnel: KernelTunnel, family: Family) -> tuple[bytes, bytes]:
    """Datagrams the host sent (concatenated) and what the guest's ncat wrote out."""
    tunnel.guest.run(
        "rm -f /tmp/udp.rx\n"
        f"timeout 20 ncat -u -l {GUEST_TUNNEL[family]} {UDP_PORT} >/tmp/udp.rx 2>/dev/null"
        " </dev/null &\n"
        # wait until ncat listens (busybox netstat: the guest has no ss)
        f"for i in $(seq 50); do netstat -lnu | grep -q ':{UDP_PORT} ' && exit 0; sleep 0.1; done;"
        " exit 1"
    )
    payloads = _payloads("host")
    with in_netns(tunnel.ns):
        sock = socket.socket(_family(family), socket.SOCK_DGRAM)
    with sock:
        for payload in payloads:
            sock.sendto(payload, (GUEST_TUNNEL[family], UDP_PORT))
            time.sleep(0.05)
    expected = b"".join(payloads)
    with contextlib.suppress(TimeoutError):
        wait_for(
            lambda: int(tunnel.guest.run("stat -c %s /tmp/udp.rx").stdout) >= len(expected),
            10,
            interval=0.2,
        )
    received = tunnel.guest.run("cat /tmp/udp.rx; killall ncat 2>/dev/null; true").stdout
    return expected, received.encode()


def udp_guest_to_host(tunnel: KernelTunnel, family: Family) -> tuple[bytes, bytes]:
    """Lines the guest's ncat sent (a datagram per read of its input, so one or more lines
    each) and what the host received, both concatenated."""
    payloads = _payloads("guest")
    expected = b"".join(p + b"\n" for p in payloads)
    with in_netns(tunnel.ns):
        sock = socket.socket(_family(family), socket.SOCK_DGRAM)
    with sock:
        sock.bind((HOST_TUNNEL[family], UDP_PORT))
        lines = "".join(f"echo {q(p.decode())}; sleep 0.1; " for p in payloads)
        tunnel.guest.run(
            f"({lines}) | timeout 20 ncat -u {HOST_TUNNEL[family]} {UDP_PORT} >/dev/null 2>&1 &"
        )
        received = bytearray()
        deadline = time.monotonic() + 15
        while len(received) < len(expected) and time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0.5)
            if readable:
                received += sock.recv(65536)
    return expected, bytes(received)
