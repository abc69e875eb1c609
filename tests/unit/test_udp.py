"""UDP segmentation offload on send and GRO on receive keep datagram boundaries exactly."""

from __future__ import annotations

import socket
import time

import pytest

from wgpy.device.state import datagrams_of
from wgpy.io import udp


def _pair() -> tuple[socket.socket, socket.socket, tuple[str, int]]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return sender, receiver, receiver.getsockname()


def _drain(receiver: socket.socket, gro: bool, expected: int) -> list[bytes]:
    receiver.setblocking(False)
    got: list[bytes] = []
    reader = udp.Receiver()  # one buffer for all reads: earlier datagrams must not change
    deadline = time.monotonic() + 5
    while len(got) < expected and time.monotonic() < deadline:
        try:
            datagrams, _, _ = reader.receive(receiver, gro)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        got.extend(datagrams)
    return got


@pytest.mark.parametrize("gso", [False, True])
@pytest.mark.parametrize("gro", [False, True])
def test_boundaries_survive_offloads(gso: bool, gro: bool) -> None:
    sender, receiver, address = _pair()
    with sender, receiver:
        if gro:
            assert udp.enable_gro(receiver)
        sizes = [1452] * 70 + [700] + [96, 96, 32] + [1452, 1452, 10]
        datagrams = [(bytes([i % 251]) * size, address) for i, size in enumerate(sizes)]
        assert udp.send_runs(sender, datagrams, gso) == []
        got = _drain(receiver, gro, len(datagrams))
        assert got == [d for d, _ in datagrams]


def test_failed_sends_are_returned() -> None:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sender:
        too_big = [(b"x" * 70000, ("127.0.0.1", 9))]
        failed = udp.send_runs(sender, too_big, True)
        assert len(failed) == 1 and failed[0][0] == too_big[0][0]


def test_replies_leave_from_the_address_a_datagram_arrived_at() -> None:
    """Sticky source: a socket bound to 0.0.0.0 learns from IP_PKTINFO that a datagram was
    sent to 127.0.0.7 and replies from 127.0.0.7 (routing alone would pick 127.0.0.1)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with server, client:
        server.bind(("0.0.0.0", 0))
        assert udp.enable_pktinfo(server)
        port = server.getsockname()[1]
        client.bind(("127.0.0.1", 0))
        client.settimeout(5)
        server.settimeout(5)
        client.sendto(b"hello", ("127.0.0.7", port))
        datagrams, endpoint, source = udp.Receiver().receive(server, False)
        assert datagrams == [b"hello"] and endpoint == client.getsockname()
        assert source is not None
        sources = {endpoint: source}
        udp.send_one(server, b"reply", endpoint, [], sources)
        assert client.recvfrom(100) == (b"reply", ("127.0.0.7", port))
        # without the source, the routing table's choice
        udp.send_one(server, b"plain", endpoint, [], None)
        assert client.recvfrom(100) == (b"plain", ("127.0.0.1", port))
        # a source the host does not have is forgotten and the send goes out anyway
        stale = (source[0], source[1], bytes(4) + socket.inet_aton("192.0.2.77") + bytes(4))
        sources[endpoint] = stale
        udp.send_one(server, b"again", endpoint, [], sources)
        assert client.recvfrom(100) == (b"again", ("127.0.0.1", port))
        assert endpoint not in sources


def test_sticky_source_ipv6() -> None:
    server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with server, client:
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        server.bind(("::", 0))
        assert udp.enable_pktinfo(server)
        client.bind(("::1", 0))
        client.settimeout(5)
        server.settimeout(5)
        client.sendto(b"six", ("::1", server.getsockname()[1]))
        datagrams, endpoint, source = udp.Receiver().receive(server, False)
        assert datagrams == [b"six"] and source is not None
        assert source[2][:16] == socket.inet_pton(socket.AF_INET6, "::1")
        udp.send_one(server, b"back", endpoint, [], {endpoint: source})
        data, address = client.recvfrom(100)
        assert data == b"back" and address[0] == "::1"


@pytest.mark.parametrize("gso", [False, True])
def test_queued_runs_arrive_as_their_datagrams(gso: bool) -> None:
    """Runs the Device encrypted back to back (Device.datagram_runs_to_send) leave as the
    datagrams they hold, in order with single ones, with GSO or one by one."""
    sender, receiver, address = _pair()
    with sender, receiver:
        run = b"".join(bytes([i]) * 1452 for i in range(40)) + b"\xee" * 300
        queued: list[tuple[bytes | bytearray, tuple[str, int], int]] = [
            (b"first", address, 0),
            (bytearray(run), address, 1452),
            (b"between" * 3, address, 0),
            (b"\x01" * 96 + b"\x02" * 96, address, 96),
        ]
        assert udp.send_queued(sender, queued, gso) == []
        expected = [d for d, _ in datagrams_of(queued)]
        assert len(expected) == 1 + 41 + 1 + 2
        assert _drain(receiver, False, len(expected)) == expected


def test_failed_run_returns_each_datagram() -> None:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sender:
        # 64 segments of 1100 bytes: more than a UDP datagram can carry, refused whole
        run = bytes(1100) * 64
        failed = udp.send_queued(sender, [(run, ("127.0.0.1", 9), 1100)], True)
        assert len(failed) == 64 and all(d == bytes(1100) for d, _, _ in failed)
