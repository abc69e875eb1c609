"""``wgpy explain`` against live hubs (wgpyd and wireguard-go): the packets explain talks about
are sent for real, and what the daemons do must match explain's verdict.

Topology and helpers are those of ``test_allowedips_netns`` (H = hub under test, spokes S1 with
10.100.0.0/16 and S2 with 10.100.5.0/24, all wireguard-go spokes). Outcomes are read from TUN
packet counters: a spoke's rx_packets grows when a packet reached it through the tunnel, the
hub's when it delivered a packet from a spoke, the hub's tx_packets when the OS routed a packet
into the hub's interface at all.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.netns.harness import Netns
from tests.netns.test_allowedips_netns import (
    H_ADDR,
    S1_ADDR,
    S2_ADDR,
    Node,
    Star,
    build_star,
    hub_daemon,
    ping,
    warm_up,
)

pytestmark = pytest.mark.netns

__all__ = ["hub_daemon"]  # the parametrized fixture (wgpyd, wireguard-go)


def explain(node: Node, *question: str) -> tuple[int, dict[str, Any]]:
    """Run ``wgpy explain IF ... --json`` inside the node's namespace."""
    argv = (sys.executable, "-m", "wgpy.cli", "explain", node.ifname, *question, "--json")
    proc = node.ns.run(*argv, check=False)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return proc.returncode, result


def test_explain_to_matches_what_the_hub_sends(
    netns_factory: Callable[[], Netns], hub_daemon: tuple[str, tuple[str, ...]]
) -> None:
    star: Star = build_star(netns_factory, hub_daemon)
    h, s1, s2 = star.h, star.s1, star.s2
    spokes = {s1.public_key: s1, s2.public_key: s2}
    # routed into H's interface but held by no peer
    h.ns.run("ip", "route", "add", "10.201.0.0/16", "dev", h.ifname)
    # held by S1 in the table, but the OS routes it to the underlay veth instead
    h.set("peer", s1.public_key, "allowed-ips", "10.100.0.0/16,10.250.0.0/16")
    veth = h.ns.run("ip", "-o", "route", "get", "10.99.1.2").stdout.split(" dev ")[1].split()[0]
    h.ns.run("ip", "route", "add", "10.250.0.0/16", "via", "10.99.1.2", "dev", veth)

    cases = {
        S2_ADDR: ("sent", s2.public_key),  # S2's /24 beats S1's /16
        "10.100.200.9": ("sent", s1.public_key),  # only S1's /16
        "10.201.0.9": ("not sent", None),  # into the interface, no peer
        "10.250.0.1": ("not sent", s1.public_key),  # S1 in the table, OS routes elsewhere
        "10.251.0.1": ("not sent", None),  # no route at all
    }
    for dest, (verdict, peer) in cases.items():
        status, result = explain(h, "to", dest)
        assert (result["verdict"], result["peer"]) == (verdict, peer), result
        assert status == (0 if verdict == "sent" else 1)
        if dest == S2_ADDR:
            assert [(b["prefix"], b["peer"]) for b in result["beaten"]] == [
                ("10.100.0.0/16", s1.public_key)
            ]
        route = result["route"]
        assert route is not None and route["into_interface"] == (
            dest not in ("10.250.0.1", "10.251.0.1")
        )
        if dest == "10.250.0.1":
            assert route["device"] == veth

        # now send it and see where it goes
        rx = {key: node.rx_packets() for key, node in spokes.items()}
        handed = h.tx_packets()
        ping(h.ns, dest)
        grew = [key for key, node in spokes.items() if node.rx_packets() > rx[key]]
        into_tunnel = h.tx_packets() > handed
        assert into_tunnel == route["into_interface"], (dest, result, star.diagnostics())
        expected = [result["peer"]] if verdict == "sent" else []
        assert grew == expected, (dest, result, star.diagnostics())


def test_explain_from_matches_what_the_hub_delivers(
    netns_factory: Callable[[], Netns], hub_daemon: tuple[str, tuple[str, ...]]
) -> None:
    star = build_star(netns_factory, hub_daemon)
    h, s1 = star.h, star.s1
    s1.ns.run("ip", "addr", "add", "10.150.0.7/32", "dev", s1.ifname)
    s1.ns.run("ip", "addr", "add", "10.100.5.9/32", "dev", s1.ifname)
    warm_up(star, s1.ns, H_ADDR, source=S1_ADDR)

    for source, verdict in (
        (S1_ADDR, "delivered"),
        ("10.100.5.9", "dropped"),  # S2's /24 is the longest match
        ("10.150.0.7", "dropped"),  # nobody's
        (S1_ADDR, "delivered"),
    ):
        status, result = explain(h, "from", source, "via", s1.public_key)
        assert result["verdict"] == verdict and status == (0 if verdict == "delivered" else 1)
        if source == "10.100.5.9":
            assert result["owner"] == star.s2.public_key and result["prefix"] == "10.100.5.0/24"
        delivered = h.rx_packets()
        ping(s1.ns, H_ADDR, source=source)
        actually = "delivered" if h.rx_packets() > delivered else "dropped"
        assert actually == verdict, (source, result, star.diagnostics())
