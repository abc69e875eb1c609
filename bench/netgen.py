"""Synthetic WireGuard networks for the network-check benchmark: a full mesh of N hosts and a
hub with N spokes (and a variant with one broken spoke).

The hosts are built directly as model :class:`~wgpy.net.model.Host` objects, the way
:func:`wgpy.net.wgquick.host_from_config` builds them from wg-quick files (the Address and
its connected route, a route into the interface for every AllowedIPs prefix, forwarding as
the file says or assumed off, the FORWARD chain assumed empty with policy ACCEPT); parsing
10,000 generated files would measure the parser, not the check. Keys are distinct 44-character
strings (the model joins hosts by key text and never does cryptography).

    .venv/bin/python -m bench.netgen mesh 4     # prints the hosts' peers, for a look
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from wgpy.net.build import build_network
from wgpy.net.model import (
    Action,
    Firewall,
    Host,
    Interface,
    IPNetwork,
    Kind,
    Network,
    Origin,
    Route,
    WgPeer,
    assumed,
)

__all__ = ["hub", "key", "mesh"]

_FILE = Origin(Kind.CONFIG, "generated")
_ROUTE = Origin(Kind.CONFIG, "generated AllowedIPs (route added by wg-quick)")
_CONNECTED = Origin(Kind.CONFIG, "generated Address (connected route)")
_FORWARD_ON = Origin(Kind.CONFIG, "generated PostUp = sysctl -w net.ipv4.ip_forward=1")
_FORWARD_OFF = assumed("IPv4 forwarding off (Linux's default; the file does not enable it)")
_POLICY = assumed("empty FORWARD chain, policy ACCEPT (Linux's default; IPv4)")


def key(number: int) -> str:
    """A distinct public-key-shaped string for host ``number``."""
    return base64.b64encode(number.to_bytes(32, "big")).decode()


def _host(
    name: str,
    address: IPv4Interface,
    peers: Sequence[tuple[int, Sequence[IPNetwork]]],
    forward: bool,
    endpoints: bool = True,
) -> Host:
    host = Host(name=name, origin=_FILE)
    interface = Interface(
        name=name,
        addresses=[address],
        origin=_FILE,
        wireguard=True,
        public_key=key(int(address.ip)),
        config_file=f"{name}.conf",
        allowed_ips_table="main",
    )
    host.interfaces.append(interface)
    host.routes.append(Route(address.network, name, _CONNECTED))
    for number, prefixes in peers:
        # an underlay address per host (198.18.0.0/15, the benchmarking range) as Endpoint
        endpoint = f"198.18.{number >> 8 & 255}.{number & 255}:51820" if endpoints else None
        interface.peers.append(WgPeer(key(number), list(prefixes), _FILE, endpoint=endpoint))
        host.routes.extend(Route(prefix, name, _ROUTE) for prefix in prefixes)
    host.forwarding[4] = (True, _FORWARD_ON) if forward else (False, _FORWARD_OFF)
    host.forwarding[6] = (False, _FORWARD_OFF)
    host.firewall[4] = Firewall(Action.ACCEPT, _POLICY)
    return host


def mesh(count: int) -> Network:
    """``count`` hosts in 10.1.0.0/16, each with every other as a peer (its /32)."""
    base = int(IPv4Address("10.1.0.1"))
    singles = [IPv4Network(base + i) for i in range(count)]
    hosts = []
    for i in range(count):
        peers = [(base + j, [singles[j]]) for j in range(count) if j != i]
        hosts.append(_host(f"m{i}", IPv4Interface((base + i, 16)), peers, forward=False))
    return build_network(hosts)


def hub(spokes: int, broken: bool = False) -> Network:
    """A hub at 10.0.0.1/16 with ``spokes`` spokes (their /32 each), every spoke's peer the
    hub with AllowedIPs 10.0.0.0/16. ``broken``: the middle spoke allows only the hub's /32
    (issue 23's canonical mistake), so it reaches no other spoke and drops their packets."""
    base = int(IPv4Address("10.0.0.1"))
    subnet = IPv4Network("10.0.0.0/16")
    hub_only = IPv4Network(base)
    spoke_peers = [(base + 1 + i, [IPv4Network(base + 1 + i)]) for i in range(spokes)]
    # the hub has no Endpoint for its spokes (they roam, keeping their tunnels alive): the
    # spokes', for the hub, are what lets every session start
    hosts = [_host("hub", IPv4Interface((base, 16)), spoke_peers, forward=True, endpoints=False)]
    wrong = spokes // 2 if broken else -1
    for i in range(spokes):
        allowed: list[IPNetwork] = [hub_only if i == wrong else subnet]
        hosts.append(
            _host(f"s{i}", IPv4Interface((base + 1 + i, 16)), [(base, allowed)], forward=False)
        )
    return build_network(hosts)


if __name__ == "__main__":
    kind, size = sys.argv[1], int(sys.argv[2])
    network = mesh(size) if kind == "mesh" else hub(size, broken=kind == "broken")
    for host in network.hosts:
        peers = ", ".join(f"{p.public_key[-8:]} {p.allowed_ips}" for p in host.wireguard()[0].peers)
        print(f"{host.name} {host.addresses()} ← {peers}")
