"""A :class:`~wgpy.net.model.Network` from hosts read from files, joined by keys, with the
LANs behind them.

Hosts are joined by public keys: a peer's key is another input's WireGuard interface. Two
inputs claiming one key are refused (the answer would depend on which one is meant).

A LAN stands behind a host when other hosts' AllowedIPs send a subnet into the tunnel for
that host's key and the host does not send it on to a peer of its own: from a snapshot, the
subnet of one of its other interfaces; from a config file alone, the prefix itself, *assumed*
to be a LAN on an interface the host's PostUp rules name (or ``lan0``), whose hosts route back
through it. One representative address per LAN answers pings.
"""

from __future__ import annotations

from bisect import bisect_left
from ipaddress import IPv6Address, ip_address

from wgpy.allowedips import AllowedIPs
from wgpy.net.model import Host, Interface, IPAddress, IPNetwork, Lan, Network, Route, assumed

__all__ = ["BuildError", "build_network"]


class BuildError(ValueError):
    """Inputs that do not make one network (the message names the inputs)."""


def build_network(hosts: list[Host]) -> Network:
    names: dict[str, Host] = {}
    keys: dict[str, str] = {}
    for host in hosts:
        if host.name in names:
            raise BuildError(f"two inputs describe a host named {host.name!r}")
        names[host.name] = host
        for interface in host.wireguard():
            key = interface.public_key
            if key is None:
                continue
            if key in keys:
                raise BuildError(
                    f"{host.origin} and {keys[key]} both claim the public key {key}: "
                    "one key is one interface"
                )
            keys[key] = f"{host.origin}"
    network = Network(list(hosts))
    _add_lans(network)
    return network


def _key_hosts(network: Network) -> dict[str, tuple[Host, Interface]]:
    found: dict[str, tuple[Host, Interface]] = {}
    for host in network.hosts:
        for interface in host.wireguard():
            if interface.public_key:
                found[interface.public_key] = (host, interface)
    return found


def _overlay(network: Network) -> dict[int, list[int]]:
    """The overlay addresses as sorted integers per IP version."""
    found: dict[int, list[int]] = {4: [], 6: []}
    for host in network.hosts:
        for interface in host.wireguard():
            for address in interface.addresses:
                found[address.version].append(int(address.ip))
    return {version: sorted(values) for version, values in found.items()}


def _holds_overlay(prefix: IPNetwork, overlay: dict[int, list[int]]) -> bool:
    values = overlay[prefix.version]
    at = bisect_left(values, int(prefix.network_address))
    return at < len(values) and values[at] <= int(prefix.broadcast_address)


def _add_lans(network: Network) -> None:
    owners = _key_hosts(network)
    overlay = _overlay(network)
    claimed: dict[str, set[IPNetwork]] = {}
    for host in network.hosts:
        for interface in host.wireguard():
            for peer in interface.peers:
                target = owners.get(peer.public_key)
                if target is None or target[0] is host:
                    continue
                for prefix in peer.allowed_ips:
                    if prefix.prefixlen == 0 or _holds_overlay(prefix, overlay):
                        continue
                    claimed.setdefault(target[0].name, set()).add(prefix)
    for host in network.hosts:
        prefixes = claimed.get(host.name, set())
        if not prefixes:
            continue
        tables: list[AllowedIPs[str]] = []
        for interface in host.wireguard():
            table: AllowedIPs[str] = AllowedIPs()
            for peer in interface.peers:
                for prefix in peer.allowed_ips:
                    table.insert(prefix, peer.public_key)
            tables.append(table)
        for prefix in sorted(prefixes, key=lambda p: (p.version, p)):
            if any(t.lookup(prefix.network_address) is not None for t in tables):
                continue  # the host sends it on: not a LAN of its own
            lan = _known_lan(host, prefix) or _assumed_lan(host, prefix)
            if lan is not None and all(not _overlaps(lan.prefix, o.prefix) for o in host.lans):
                host.lans.append(lan)


def _overlaps(a: IPNetwork, b: IPNetwork) -> bool:
    return a.version == b.version and (a.subnet_of(b) or b.subnet_of(a))  # type: ignore[arg-type]


def _representative(prefix: IPNetwork, taken: set[IPAddress]) -> IPAddress | None:
    if prefix.num_addresses <= 2:
        first: IPAddress = prefix.network_address
        return None if first in taken else first
    for index, candidate in enumerate(prefix.hosts()):
        address = ip_address(int(candidate)) if prefix.version == 4 else IPv6Address(int(candidate))
        if address not in taken:
            return address
        if index > 16:
            break
    return None


def _known_lan(host: Host, prefix: IPNetwork) -> Lan | None:
    """The subnet of one of the host's own non-WireGuard interfaces that the prefix is in."""
    for interface in host.interfaces:
        if interface.wireguard:
            continue
        for address in interface.addresses:
            net = address.network
            if net.version == prefix.version and (prefix.subnet_of(net) or net.subnet_of(prefix)):  # type: ignore[arg-type]
                lan_prefix: IPNetwork = prefix if prefix.subnet_of(net) else net  # type: ignore[arg-type]
                rep = _representative(lan_prefix, set(host.addresses()))
                if rep is None:
                    return None
                return Lan(host.name, lan_prefix, rep, interface.name, interface.origin)
    return None


def _assumed_lan(host: Host, prefix: IPNetwork) -> Lan | None:
    if host.origin.kind.value == "snapshot":
        return None  # a snapshot says which interfaces there are: no LAN that it does not show
    name = _lan_interface_name(host)
    rep = _representative(prefix, set(host.addresses()))
    if rep is None:
        return None
    origin = assumed(
        f"{prefix} is a LAN on {host.name}'s {name} (other hosts' AllowedIPs send it to "
        f"{host.name}); its hosts route back through {host.name}"
    )
    interface = host.interface(name)
    if interface is None:
        interface = Interface(name, [], origin)
        host.interfaces.append(interface)
    if not any(r.prefix == prefix and r.dev == name for r in host.routes):
        host.routes.append(Route(prefix, name, origin))
    return Lan(host.name, prefix, rep, name, origin)


def _lan_interface_name(host: Host) -> str:
    """The one non-WireGuard interface the host's firewall rules name, else ``lan0``."""
    wg = {i.name for i in host.wireguard()}
    named: set[str] = set()
    for firewall in host.firewall.values():
        for rule in [*firewall.forward, *firewall.postrouting]:
            for name in (rule.in_iface, rule.out_iface):
                if name and name not in wg and not name.endswith("+"):
                    named.add(name)
    return named.pop() if len(named) == 1 else "lan0"
