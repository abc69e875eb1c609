"""Which addresses were dropped, and the daemon's own event stream (issue 15).

wgpyd in namespace A, a core-based peer in B (tests/netns/dropkit.py) that sends packets with
sources outside its AllowedIPs. ``wgpy show IF --json`` must list the dropped inner source
addresses with their counts (``wgpy-stats=1``); ``wgpy events IF`` must return the drop
records from the daemon's ring of recent events, and ``--follow`` stream a drop produced after
it started.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Final

import pytest

from tests.netns.core_peer import icmp_echo
from tests.netns.dropkit import CorePeer, Dut, new_core_peer, start_dut
from tests.netns.harness import (
    Netns,
    kill_process,
    start_wireguard_go,
    unique_ifname,
    veth_pair,
    wait_for,
)

pytestmark = pytest.mark.netns

DUT_UNDERLAY: Final = "10.98.0.1"
PEER_UNDERLAY: Final = "10.98.0.2"
DUT_PORT: Final = 51820
DUT_TUNNEL: Final = "10.101.0.1"
PEER_TUNNEL: Final = "10.101.0.2"
SPOOFED: Final = ("10.101.0.99", "10.101.0.98")  # held by no peer


@dataclass
class Setup:
    a: Netns
    dut: Dut
    core: CorePeer

    def wgpy(self, *argv: str, env: dict[str, str] | None = None) -> str:
        return self.a.run(sys.executable, "-m", "wgpy.cli", *argv, env=env).stdout

    def disallowed(self) -> int:
        stats = self.dut.stats()
        return stats[(self.core.public_b64, "disallowed_source")]


@pytest.fixture
def setup(netns_factory: Callable[[], Netns]) -> Generator[Setup]:
    a, b = netns_factory(), netns_factory()
    veth_pair(a, b, DUT_UNDERLAY, PEER_UNDERLAY, 24)
    dut = start_dut(a, tunnel=f"{DUT_TUNNEL}/24", listen_port=DUT_PORT)
    core = new_core_peer(b, dut.public_key, (DUT_UNDERLAY, DUT_PORT), private_key=None)
    core.allow(f"{DUT_TUNNEL}/32")
    dut.add_peer(core.public_b64, f"{PEER_TUNNEL}/32")
    core.handshake()
    try:
        yield Setup(a, dut, core)
    finally:
        core.sock.close()


def test_show_lists_the_dropped_source_addresses(setup: Setup) -> None:
    for seq in range(3):
        setup.core.encrypt(icmp_echo(SPOOFED[0], DUT_TUNNEL, 0x51, seq))
    setup.core.encrypt(icmp_echo(SPOOFED[1], DUT_TUNNEL, 0x52, 0))
    wait_for(lambda: setup.disallowed() >= 4 or None, 5, what="4 disallowed_source drops")
    (shown,) = json.loads(setup.wgpy("show", setup.dut.ifname, "--json"))
    (entry,) = [d for d in shown["drops"] if d["reason"] == "disallowed_source"]
    assert entry["peer"] == setup.core.public_b64 and entry["count"] == 4, entry
    assert entry["sources"] == [
        {"address": SPOOFED[0], "count": 3, "error": 0},
        {"address": SPOOFED[1], "count": 1, "error": 0},
    ], entry
    assert entry["destinations"] == [{"address": DUT_TUNNEL, "count": 4, "error": 0}], entry
    # the text, as piped or at 80 columns: every line fits, nothing cut, addresses named
    text = setup.wgpy("show", setup.dut.ifname, env={"COLUMNS": "80"})
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "…" not in text, text
    flat = " ".join(text.split())
    assert f"disallowed_source ×4 from: {SPOOFED[0]} ×3, {SPOOFED[1]} ×1" in flat, text
    assert "sources held by: no peer ×4" in flat, text
    assert "not routed to the sending peer" in flat, text


def _drop_records(lines: list[str]) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in lines if line.strip()]
    return [r for r in records if r["event"] == "packet_dropped"]


def _read_lines(proc: subprocess.Popen[bytes], until: Callable[[list[str]], bool]) -> list[str]:
    """Lines from ``proc``'s stdout until ``until(lines)`` (or fail after 10 s)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    buffer, lines = b"", list[str]()
    deadline = time.monotonic() + 10
    while not until(lines):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out; got {lines!r}"
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 65536)
            assert chunk, f"the stream ended; got {lines!r}"
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            lines.extend(line.decode() for line in complete)
    return lines


def test_events_lists_recent_drops_and_follows_new_ones(setup: Setup) -> None:
    core_key = setup.core.public_b64
    for seq in range(2):
        setup.core.encrypt(icmp_echo(SPOOFED[0], DUT_TUNNEL, 0x53, seq))
    wait_for(lambda: setup.disallowed() >= 2 or None, 5, what="2 disallowed_source drops")

    records = _drop_records(setup.wgpy("events", setup.dut.ifname, "--json").splitlines())
    assert [(r["reason"], r["peer"], r["inner_src"], r["direction"]) for r in records] == [
        ("disallowed_source", core_key, SPOOFED[0], "in")
    ] * 2, records
    assert all(r["interface"] == setup.dut.ifname and r["inner_dst"] == DUT_TUNNEL for r in records)

    text = setup.wgpy("events", setup.dut.ifname).splitlines()
    drops = [line for line in text if " drop in disallowed_source " in line]
    assert len(drops) == 2, text
    assert all(f"peer={core_key}" in line and f"src={SPOOFED[0]} " in line for line in drops)
    assert any("Sending handshake response" in line for line in text), text

    follow = setup.a.popen(
        sys.executable,
        "-m",
        "wgpy.cli",
        "events",
        setup.dut.ifname,
        "--json",
        "--follow",
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        # the recent ones first (once they are out, the daemon streams to this client)
        _read_lines(follow, lambda lines: len(_drop_records(lines)) >= 2)
        setup.core.encrypt(icmp_echo(SPOOFED[1], DUT_TUNNEL, 0x54, 0))
        lines = _read_lines(
            follow, lambda lines: any(r["inner_src"] == SPOOFED[1] for r in _drop_records(lines))
        )
        (new,) = [r for r in _drop_records(lines) if r["inner_src"] == SPOOFED[1]]
        assert new["reason"] == "disallowed_source" and new["peer"] == core_key, new
        os.kill(follow.pid, signal.SIGINT)  # Ctrl-C ends it quietly
        assert follow.wait(5) == 0
    finally:
        kill_process(follow)


def test_events_without_wgpyd(netns_factory: Callable[[], Netns]) -> None:
    """No socket: the interface is named; wireguard-go (which closes the connection on an
    operation it does not know): said to be no wgpyd, with or without --follow."""
    ns = netns_factory()
    ifname = unique_ifname("wgg")
    start_wireguard_go(ns, ifname)
    for argv in (("events", "nosuch0"), ("events", ifname), ("events", ifname, "--follow")):
        result = ns.run(sys.executable, "-m", "wgpy.cli", *argv, check=False)
        assert result.returncode == 2, (argv, result.stdout)  # its input cannot be read
        assert result.stdout == "", argv
        if argv[1] == "nosuch0":
            assert "Unable to access interface nosuch0" in result.stderr, result.stderr
        else:
            assert "no event stream; it is not a wgpyd" in result.stderr, result.stderr
