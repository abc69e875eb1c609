"""examples/echo_server.py (wgpy.aio, no TUN) reached by a real wireguard-go client, set up by wg.

Namespace A: wireguard-go with 10.200.0.2/24 and fd00:200::2/64 (plus 10.200.0.99, which the
server does not allow). Namespace B: the Python echo server on 10.99.0.2:51820 with tunnel
addresses 10.200.0.1 and fd00:200::1 that exist only inside the Python process.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from tests.netns.harness import (
    Netns,
    genkey,
    ping,
    pubkey,
    start_wireguard_go,
    unique_ifname,
    veth_pair,
    wait_for,
    wg,
    wg_dump,
    write_secret,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "echo_server.py"
PORT = 51820

UDP_ECHO_CLIENT = r"""
import socket, sys
for host in sys.argv[1:]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        message = ("hello " + host).encode()
        for _ in range(3):
            s.sendto(message, (host, 7))
            try:
                data, _ = s.recvfrom(2048)
                break
            except TimeoutError:
                continue
        else:
            sys.exit("no UDP echo from " + host)
        assert data == message, data
        print("echo ok", host)
"""


def test_wireguard_go_client_pings_and_udp_echoes_the_python_server(
    netns_factory: Callable[[], Netns],
) -> None:
    client, server = netns_factory(), netns_factory()
    veth_pair(client, server, "10.99.0.1", "10.99.0.2", 24, addr6_a="fd99::1", addr6_b="fd99::2")

    server_key, client_key = genkey(), genkey()
    key_file = write_secret(server, "server.key", server_key)
    out_path = server.workdir / "echo_server.log"
    with out_path.open("wb") as out:
        proc = server.popen(
            sys.executable,
            str(EXAMPLE),
            "--private-key-file",
            str(key_file),
            "--peer",
            pubkey(client_key),
            "--port",
            str(PORT),
            "--allowed-ips",
            "10.200.0.2/32,fd00:200::2/128",
            "--address",
            "10.200.0.1,fd00:200::1",
            stdout=out,
            stderr=out,
        )
    ready = wait_for(
        lambda: out_path.read_text().splitlines()[:1] or proc.poll() is not None,
        15,
        what="echo server's first line",
    )
    assert ready and proc.poll() is None, out_path.read_text()
    first = json.loads(out_path.read_text().splitlines()[0])
    assert first == {"public_key": pubkey(server_key), "port": PORT}

    ifname = unique_ifname("wga")
    start_wireguard_go(client, ifname)
    wg(
        client,
        "set",
        ifname,
        "private-key",
        str(write_secret(client, "client.key", client_key)),
        "peer",
        first["public_key"],
        "endpoint",
        f"10.99.0.2:{PORT}",
        "allowed-ips",
        "10.200.0.0/24,fd00:200::/64",
    )
    client.run("ip", "addr", "add", "10.200.0.2/24", "dev", ifname)
    client.run("ip", "addr", "add", "10.200.0.99/24", "dev", ifname)
    client.run("ip", "-6", "addr", "add", "fd00:200::2/64", "dev", ifname, "nodad")
    client.run("ip", "link", "set", ifname, "up")

    result = ping(client, "10.200.0.1", count=3, wait=3)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0% packet loss" in result.stdout
    result6 = ping(client, "fd00:200::1", count=3, wait=3)
    assert result6.returncode == 0, result6.stdout + result6.stderr

    udp = client.run(sys.executable, "-c", UDP_ECHO_CLIENT, "10.200.0.1", "fd00:200::1")
    assert udp.stdout.split("\n")[:2] == ["echo ok 10.200.0.1", "echo ok fd00:200::1"]

    # a source the server does not allow for this peer: dropped by the Python server
    bad = client.run("ping", "-c", "2", "-W", "1", "-I", "10.200.0.99", "10.200.0.1", check=False)
    assert bad.returncode != 0

    dump = wg_dump(client, ifname)
    peer = dump.peers[first["public_key"]]
    assert peer.latest_handshake > 0 and peer.rx_bytes > 0

    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    lines = out_path.read_text().splitlines()
    summary = json.loads(lines[-1])
    assert proc.returncode == 0, lines
    assert summary["handshakes"] >= 1
    assert summary["answered"] == 3 + 3 + 2
    assert summary["drops"] == {"disallowed_source": 2}
    assert summary["drop_counts"] == {"disallowed_source": 2}
    # what wireguard-go counted as sent is what the server counted as received, and back
    assert summary["rx_bytes"] == peer.tx_bytes
    assert summary["tx_bytes"] == peer.rx_bytes
