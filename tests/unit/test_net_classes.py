"""The grouped network check against the per-pair reference: on random small networks (random
AllowedIPs, routes and rules, forwarding, FORWARD rules with states, NAT, LANs, IPv6, a
down interface, an unknown peer) every pair's answer from :func:`wgpy.net.check.check` is
the one :func:`wgpy.net.check.ping` traces for that pair, and the group counts add up."""

from __future__ import annotations

import json
from collections import Counter
from ipaddress import ip_address, ip_interface, ip_network
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import net_scenarios as ns
from wgpy.cli import main
from wgpy.net.check import Outcome, check, endpoints, pairs, ping
from wgpy.net.fixes import apply, suggest
from wgpy.net.model import (
    Action,
    FilterRule,
    Firewall,
    Host,
    Interface,
    IPNetwork,
    Kind,
    Lan,
    Network,
    Origin,
    Route,
    RouteKind,
    Rule,
    WgPeer,
)
from wgpy.net.trace import Index
from wgpy.tools.network import net_cli
from wgpy.tools.network.net_cli import load_network

ORIGIN = Origin(Kind.CONFIG, "test")
V4_POOL = [
    "10.0.0.0/24",
    "10.0.0.0/25",
    "10.0.0.128/25",
    "0.0.0.0/0",
    "192.168.0.0/16",
    "10.0.0.1/32",
    "10.0.0.2/32",
    "10.0.0.3/32",
    "10.0.0.130/32",
    "192.168.1.0/24",
    "192.168.2.0/24",
]
V6_POOL = ["fd00::/64", "fd00::1/128", "fd00::2/128", "::/0"]


def _prefixes(draw: st.DrawFn, version6: bool) -> list[IPNetwork]:
    pool = V4_POOL + (V6_POOL if version6 else [])
    chosen = draw(st.lists(st.sampled_from(pool), min_size=0, max_size=3))
    return [ip_network(p) for p in chosen]


@st.composite
def networks(draw: st.DrawFn) -> Network:
    count = draw(st.integers(2, 5))
    version6 = draw(st.booleans())
    names = [f"h{i}" for i in range(count)]
    keys = [f"{name}-key".ljust(44, "=") for name in names]
    hosts: list[Host] = []
    for i, name in enumerate(names):
        host = Host(name, ORIGIN)
        last = draw(st.sampled_from([i + 1, i + 1, 130 + i]))
        addresses = [ip_interface(f"10.0.0.{last}/{draw(st.sampled_from([24, 25, 32]))}")]
        if version6 and draw(st.booleans()):
            addresses.append(ip_interface(f"fd00::{i + 1}/64"))
        wg = Interface(
            "wg0",
            addresses,
            ORIGIN,
            wireguard=True,
            public_key=keys[i] if draw(st.integers(0, 9)) else None,
            up=draw(st.integers(0, 15)) > 0,
        )
        others = [j for j in range(count) if j != i]
        for j in draw(st.lists(st.sampled_from(others), unique=True)) if others else []:
            # mostly an Endpoint; sometimes none, so that some pairs can never start a session
            endpoint = "192.0.2.1:51820" if draw(st.integers(0, 3)) else None
            wg.peers.append(WgPeer(keys[j], _prefixes(draw, version6), ORIGIN, endpoint=endpoint))
        if draw(st.integers(0, 9)) == 0:
            wg.peers.append(WgPeer("ghost".ljust(44, "="), _prefixes(draw, version6), ORIGIN))
        host.interfaces.append(wg)
        for address in addresses:
            if draw(st.booleans()):
                host.routes.append(Route(address.network, "wg0", ORIGIN))
        for peer in wg.peers:
            for prefix in peer.allowed_ips:
                if draw(st.integers(0, 4)):
                    table = "51820" if prefix.prefixlen == 0 else "main"
                    host.routes.append(Route(prefix, "wg0", ORIGIN, table=table))
        for _ in range(draw(st.integers(0, 2))):
            extra = ip_network(draw(st.sampled_from(V4_POOL)))
            kind = draw(st.sampled_from(list(RouteKind)))
            dev = draw(st.sampled_from(["wg0", "eth0", None]))
            host.routes.append(Route(extra, dev, ORIGIN, kind=kind, metric=draw(st.integers(0, 2))))
        if draw(st.booleans()):
            host.rules.append(Rule(32764, "main", ORIGIN, suppress_prefixlength=0))
            host.rules.append(Rule(32765, "51820", ORIGIN, fwmark=0xCA6C, invert=True))
        for _ in range(draw(st.integers(0, 2))):
            source = draw(st.sampled_from([None, *V4_POOL]))
            destination = draw(st.sampled_from([None, *V4_POOL]))
            host.rules.append(
                Rule(
                    draw(st.integers(0, 40000)),
                    draw(st.sampled_from(["main", "51820", "7"])),
                    ORIGIN,
                    source=ip_network(source) if source else None,
                    destination=ip_network(destination) if destination else None,
                    suppress_prefixlength=draw(st.sampled_from([None, 0, 24])),
                )
            )
        for version in (4, 6):
            if draw(st.integers(0, 3)):
                host.forwarding[version] = (draw(st.booleans()), ORIGIN)
        if draw(st.booleans()):
            host.firewall[4] = _firewall(draw)
        if draw(st.integers(0, 2)) == 0:
            lan_prefix = ip_network(f"192.168.{i + 1}.0/24")
            lan_if = draw(st.sampled_from(["eth0", "lan0"]))
            host.interfaces.append(
                Interface(lan_if, [ip_interface(f"192.168.{i + 1}.254/24")], ORIGIN)
            )
            host.routes.append(Route(lan_prefix, lan_if, ORIGIN))
            host.lans.append(
                Lan(name, lan_prefix, ip_address(f"192.168.{i + 1}.1"), lan_if, ORIGIN)
            )
        hosts.append(host)
    return Network(hosts)


def _firewall(draw: st.DrawFn) -> Firewall:
    firewall = Firewall(draw(st.sampled_from([Action.ACCEPT, Action.DROP])), ORIGIN)
    actions = [Action.ACCEPT, Action.DROP, Action.REJECT, Action.RETURN, Action.UNKNOWN]
    for _ in range(draw(st.integers(0, 3))):
        source = draw(st.sampled_from([None, *V4_POOL]))
        destination = draw(st.sampled_from([None, *V4_POOL]))
        firewall.forward.append(
            FilterRule(
                draw(st.sampled_from(actions)),
                ORIGIN,
                "rule",
                in_iface=draw(st.sampled_from([None, "wg0", "eth0", "wg+"])),
                out_iface=draw(st.sampled_from([None, "wg0", "eth0", "lan0"])),
                in_invert=draw(st.booleans()),
                source=ip_network(source) if source else None,
                destination=ip_network(destination) if destination else None,
                states=draw(
                    st.sampled_from([None, frozenset({"NEW"}), frozenset({"ESTABLISHED"})])
                ),
                version=draw(st.sampled_from([None, 4])),
            )
        )
    if draw(st.integers(0, 3)) == 0:
        action = draw(st.sampled_from([Action.MASQUERADE, Action.SNAT, Action.ACCEPT]))
        firewall.postrouting.append(
            FilterRule(
                action,
                ORIGIN,
                "nat",
                out_iface=draw(st.sampled_from([None, "wg0", "eth0", "lan0"])),
                source=ip_network(draw(st.sampled_from(V4_POOL))) if draw(st.booleans()) else None,
                to_source=ip_address("10.0.0.200") if action is Action.SNAT else None,
            )
        )
    return firewall


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks())
def test_grouped_check_equals_the_per_pair_trace(network: Network) -> None:
    report = check(network)
    index = Index(network)
    expected: Counter[tuple[object, str | None]] = Counter()
    total = reachable = unknown = 0
    for source, target in pairs(endpoints(network)):
        reference = ping(index, source, target)
        outcome = Outcome.of(reference)
        assert report.outcome(source, target) == outcome, (source, target)
        total += 1
        reachable += outcome.reachable
        unknown += outcome.unknown
        if not outcome.reachable and outcome.cause is not None:
            expected[(outcome.cause, outcome.leg)] += 1
    assert (report.total, report.reachable, report.unknown) == (total, reachable, unknown)
    assert {(g.cause, g.leg): g.count for g in report.groups} == dict(expected)
    for group in report.groups:
        for result in group.sample(2):
            failed = result.failed
            assert failed is not None and failed.cause == group.cause


def test_json_of_a_big_network_counts_groups_and_gives_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [str(p) for p in ns.hub_and_spoke_mistake().write(tmp_path)]
    assert main(["net", "check", *paths, "--json", "--no-fixes"]) == 1
    small = json.loads(capsys.readouterr().out)
    assert len(small["results"]) == small["pairs"] == 6
    monkeypatch.setattr(net_cli, "RESULTS_LIMIT", 5)
    assert main(["net", "check", *paths, "--json", "--no-fixes"]) == 1
    big = json.loads(capsys.readouterr().out)
    assert big["results"] is None and big["pairs"] == 6 and big["reachable"] == 4
    for group in big["groups"]:
        assert group["pairs"] == 1
        assert [(e["from"]["host"], e["to"]["host"]) for e in group["examples"]] in (
            [("a", "b")],
            [("b", "a")],
        )


def test_a_fix_copies_only_the_hosts_it_changes(tmp_path: Path) -> None:
    network = load_network([str(p) for p in ns.hub_and_spoke_mistake().write(tmp_path)])
    report = check(network)
    fix = suggest(report, report.groups[0])
    assert fix is not None and {c.host for c in fix.changes} == {"a"}
    changed = apply(network, fix.changes)
    for before, after in zip(network.hosts, changed.hosts, strict=True):
        assert (before is after) == (before.name != "a")
    assert check(network).reachable == 4  # the original is untouched
    assert check(changed).reachable == 6


def test_a_masquerading_gateways_own_address_decides_only_for_itself() -> None:
    """A gateway masquerades what it forwards into the tunnel, and its peer allows only the
    gateway's /32: its LAN reaches the peer only because of the NAT. The gateway's own
    address (first in address order) is not NATed (it already is the new source), so it
    must not stand for the LAN's source when the grouped check decides the LAN's packets."""
    gateway = Host("g", ORIGIN)
    wg_g = Interface("wg0", [ip_interface("10.0.0.1/24")], ORIGIN, wireguard=True)
    wg_g.public_key = "g-key".ljust(44, "=")
    wg_g.peers.append(
        WgPeer("h-key".ljust(44, "="), [ip_network("10.0.0.2/32")], ORIGIN, endpoint="h:1")
    )
    lan = Interface("lan0", [ip_interface("192.168.1.254/24")], ORIGIN)
    gateway.interfaces += [wg_g, lan]
    gateway.routes += [
        Route(ip_network("10.0.0.0/24"), "wg0", ORIGIN),
        Route(ip_network("192.168.1.0/24"), "lan0", ORIGIN),
    ]
    gateway.forwarding[4] = (True, ORIGIN)
    gateway.firewall[4] = Firewall(
        Action.ACCEPT,
        ORIGIN,
        postrouting=[FilterRule(Action.MASQUERADE, ORIGIN, "nat", out_iface="wg0")],
    )
    gateway.lans.append(
        Lan("g", ip_network("192.168.1.0/24"), ip_address("192.168.1.1"), "lan0", ORIGIN)
    )
    peer = Host("h", ORIGIN)
    wg_h = Interface("wg0", [ip_interface("10.0.0.2/24")], ORIGIN, wireguard=True)
    wg_h.public_key = "h-key".ljust(44, "=")
    wg_h.peers.append(WgPeer("g-key".ljust(44, "="), [ip_network("10.0.0.1/32")], ORIGIN))
    peer.interfaces.append(wg_h)
    peer.routes.append(Route(ip_network("10.0.0.0/24"), "wg0", ORIGIN))
    network = Network([gateway, peer])
    report = check(network)
    found = {(e.host, e.lan is not None): e for e in endpoints(network)}
    lan_to_peer = report.outcome(found[("g", True)], found[("h", False)])
    assert lan_to_peer == Outcome.of(ping(Index(network), found[("g", True)], found[("h", False)]))
    assert lan_to_peer.reachable
