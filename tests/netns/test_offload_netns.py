"""TUN offloads end to end: bytes through a TCP connection arrive intact, over IPv4 and IPv6,
while the kernel hands wgpyd super-packets (TSO) and wgpyd writes glued ones (GRO).

A sends 6 MiB of random bytes to B through the tunnel; B answers their SHA-256. The interface
counters show the offloads at work: A's TUN transmitted packets bigger than its MTU (the kernel
left the segmentation to wgpyd), and a wgpyd B received packets bigger than its MTU (it glued
decrypted segments into one write). Against wireguard-go on the other side, each direction
meets a different implementation.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Final

import pytest

from tests.netns.harness import WIREGUARD_GO, Netns, TwoPeers, two_peer_topology, wait_for

WGPYD: Final[tuple[str, ...]] = (sys.executable, "-m", "wgpy.daemon", "-f")
MTU: Final = 1420
SIZE: Final = 6 << 20

SERVER: Final = """
import hashlib, socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
with socket.socket(family, socket.SOCK_STREAM) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2])))
    s.listen(1)
    print("listening", flush=True)
    conn, _ = s.accept()
    digest, total = hashlib.sha256(), 0
    while chunk := conn.recv(1 << 16):
        digest.update(chunk)
        total += len(chunk)
    print(total, digest.hexdigest(), flush=True)
"""

CLIENT: Final = """
import socket, sys
data = open(sys.argv[3], "rb").read()
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60) as s:
    s.sendall(data)
"""


def _counters(ns: Netns, ifname: str) -> dict[str, int]:
    out = {}
    for name in ("tx_packets", "tx_bytes", "rx_packets", "rx_bytes"):
        text = ns.run("cat", f"/sys/class/net/{ifname}/statistics/{name}").stdout
        out[name] = int(text.strip())
    return out


def _transfer(topo: TwoPeers, family: int) -> None:
    a, b = topo.a, topo.b
    address = b.tunnel4 if family == 4 else b.tunnel6
    port = 40000 + os.getpid() % 20000
    payload = os.urandom(SIZE)
    source = a.ns.workdir / "payload.bin"
    source.write_bytes(payload)
    server = b.ns.popen(sys.executable, "-c", SERVER, address, str(port), stdout=subprocess.PIPE)
    assert server.stdout is not None
    assert server.stdout.readline().strip() == b"listening"
    before = (_counters(a.ns, a.ifname), _counters(b.ns, b.ifname))
    a.ns.run(sys.executable, "-c", CLIENT, address, str(port), str(source), timeout=120)
    total, digest = server.stdout.readline().decode().split()
    assert server.wait(30) == 0
    assert (int(total), digest) == (SIZE, hashlib.sha256(payload).hexdigest())
    after = (_counters(a.ns, a.ifname), _counters(b.ns, b.ifname))
    sent = {k: after[0][k] - before[0][k] for k in after[0]}
    received = {k: after[1][k] - before[1][k] for k in after[1]}
    # the data went through the interfaces (not around them), with IP and TCP headers
    assert sent["tx_bytes"] >= SIZE and received["rx_bytes"] >= SIZE
    if a.daemon.command == WGPYD:
        # TSO: the kernel handed A's daemon super-packets (the average beats the MTU)
        assert sent["tx_bytes"] / sent["tx_packets"] > 2 * MTU, sent
    if b.daemon.command == WGPYD:
        # GRO: B's daemon wrote glued segments
        assert received["rx_bytes"] / received["rx_packets"] > 2 * MTU, received


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize(
    "pair", [("wgpyd", "wgpyd"), ("wgpyd", "go"), ("go", "wgpyd")], ids="-".join
)
def test_tcp_bytes_arrive_intact_with_offloads(
    netns_factory: Callable[[], Netns], pair: tuple[str, str], family: int
) -> None:
    pytest.importorskip("numpy")  # without it wgpyd asks for no TSO (see DESIGN.md)
    commands = {"wgpyd": WGPYD, "go": WIREGUARD_GO}
    topo = two_peer_topology(
        netns_factory(), netns_factory(), command_a=commands[pair[0]], command_b=commands[pair[1]]
    )
    wait_for(
        lambda: (
            topo.a.ns.run("ping", "-c", "1", "-W", "1", topo.b.tunnel4, check=False).returncode == 0
        ),
        20,
        0.2,
        "the first ping through the tunnel",
    )
    _transfer(topo, family)
