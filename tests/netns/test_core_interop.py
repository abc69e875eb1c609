"""The sans-I/O core against the real wireguard-go, configured by the real wg.

No TUN on our side: tests/netns/core_peer.py is the core plus one UDP socket. wireguard-go has
its TUN with 10.0.0.1/24, so the kernel in its namespace answers our ICMP echoes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.netns.harness import (
    Netns,
    genkey,
    genpsk,
    ping,
    pubkey,
    start_wireguard_go,
    unique_ifname,
    wait_for,
    wg,
    wg_dump,
    write_secret,
)

REPO = Path(__file__).resolve().parents[2]
GO_PORT = 51820
CORE_PORT = 40000


def setup_go(
    ns: Netns, core_public: str, psk: str | None, *, core_endpoint: bool
) -> tuple[str, str]:
    ifname = unique_ifname("wgc")
    start_wireguard_go(ns, ifname)
    go_private = genkey()
    argv = ["set", ifname, "private-key", str(write_secret(ns, "go.key", go_private))]
    argv += ["listen-port", str(GO_PORT), "peer", core_public, "allowed-ips", "10.0.0.2/32"]
    if psk:
        argv += ["preshared-key", str(write_secret(ns, "go.psk", psk))]
    if core_endpoint:
        argv += ["endpoint", f"127.0.0.1:{CORE_PORT}"]
    wg(ns, *argv)
    ns.run("ip", "addr", "add", "10.0.0.1/24", "dev", ifname)
    ns.run("ip", "link", "set", ifname, "up")
    return ifname, pubkey(go_private)


def core_argv(private: str, go_public: str, psk: str | None, *extra: str) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "tests.netns.core_peer",
        "--private-key",
        private,
        "--peer",
        go_public,
        "--listen",
        f"127.0.0.1:{CORE_PORT}",
        "--address",
        "10.0.0.2",
        "--peer-address",
        "10.0.0.1",
        *extra,
    ]
    if psk:
        argv += ["--psk", psk]
    return argv


@pytest.mark.parametrize("use_psk", [False, True], ids=["no-psk", "psk"])
def test_core_initiates_handshake_with_wireguard_go(
    netns_factory: Callable[[], Netns], use_psk: bool
) -> None:
    ns = netns_factory()
    core_private = genkey()
    psk = genpsk() if use_psk else None
    ifname, go_public = setup_go(ns, pubkey(core_private), psk, core_endpoint=False)
    result = ns.run(
        *core_argv(
            core_private,
            go_public,
            psk,
            "--endpoint",
            f"127.0.0.1:{GO_PORT}",
            "--pings",
            "3",
            "--spoof-source",
            "10.0.0.3",
            "--duration",
            "15",
        ),
        env={"PYTHONPATH": str(REPO)},
        timeout=30,
    )
    report = json.loads(result.stdout)
    assert report["echo_replies"] == [0, 1, 2]
    assert report["handshakes"] == [{"initiator": True}]
    assert report["drops"] == []
    dump = wg_dump(ns, ifname)
    peer = dump.peers[pubkey(core_private)]
    assert peer.latest_handshake > time.time() - 60
    assert peer.endpoint == f"127.0.0.1:{CORE_PORT}"  # go learned our endpoint from the handshake
    # Byte counters agree exactly in both directions: same framing, same padding.
    assert peer.rx_bytes == report["tx_bytes"]
    assert peer.tx_bytes == report["rx_bytes"]
    # The echo with a spoofed inner source reached go and was dropped by its AllowedIPs check.
    wait_for(
        lambda: "disallowed source address" in ns.log_files()[0].read_text(),
        5,
        what="wireguard-go's log of the spoofed source",
    )


def test_core_responds_to_wireguard_go(netns_factory: Callable[[], Netns]) -> None:
    ns = netns_factory()
    core_private = genkey()
    psk = genpsk()
    ifname, go_public = setup_go(ns, pubkey(core_private), psk, core_endpoint=True)
    proc = subprocess.Popen(
        ns.argv(*core_argv(core_private, go_public, psk, "--duration", "6")),
        stdout=subprocess.PIPE,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    try:
        # the core must have bound its socket before go's first initiation: a loaded machine
        # starts Python slower than any fixed wait, and go retries only after 5 s
        wait_for(
            lambda: f":{CORE_PORT} " in ns.run("ss", "-Hunl", check=False).stdout,
            15,
            what="the core's UDP socket",
        )
        result = ping(ns, "10.0.0.2", count=3)
        stdout, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result.returncode == 0, result.stdout
    assert "3 received" in result.stdout
    report = json.loads(stdout)
    assert report["handshakes"] == [{"initiator": False}]
    assert report["echo_requests_answered"] == 3
    assert report["drops"] == []
    dump = wg_dump(ns, ifname)
    assert dump.peers[pubkey(core_private)].latest_handshake > 0
