"""UDP segmentation offload on send and GRO on receive keep datagram boundaries exactly."""

from __future__ import annotations

import socket
import time

import pytest

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
            datagrams, _ = reader.receive(receiver, gro)
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
