"""The smallest change that fixes a group of failing pairs, proven on the model.

For each cause the candidates are the edits a WireGuard user would make (a prefix added to a
peer's AllowedIPs, a route, forwarding switched on, a FORWARD accept rule, the missing peer).
Each candidate is applied to a copy of the network and every pair checked again: a fix must
make the group's pairs reachable without breaking a pair that was reachable. Among those
that qualify the first in preference order wins: for a relay (a hub) the interface's own
subnet before single addresses, since a hub layout wants the subnet; for a peer that owns the
address itself, that address alone. Each fix is said three ways: what changes, the commands
that change a running host, and the wg-quick line that keeps it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import ip_network
from pathlib import Path

from wgpy.net.check import Group, Outcome, Report, check
from wgpy.net.model import (
    Action,
    FilterRule,
    Firewall,
    Host,
    Interface,
    IPAddress,
    IPNetwork,
    Kind,
    Network,
    Origin,
    Route,
    WgPeer,
    assumed,
)
from wgpy.net.trace import CauseKind, Index, Trace

__all__ = ["Change", "ChangeKind", "Fix", "apply", "suggest", "suggest_all"]

#: at most this many candidates are proven per group
MAX_CANDIDATES = 8
#: the candidates of a group are drawn from (at most) its first this many pairs, traced
MAX_FIX_PAIRS = 2000
_FIXED = Origin(Kind.CONFIG, "the suggested fix")


class ChangeKind(Enum):
    ALLOWED_IP = "allowed_ip"
    ROUTE = "route"
    FORWARDING = "forwarding"
    FORWARD_ACCEPT = "forward_accept"
    PEER = "peer"
    ENDPOINT = "endpoint"


#: what a fix that gives a peer an Endpoint writes for it: the model knows keys and tunnel
#: addresses, not where a host is reachable from the other
ENDPOINT_PLACEHOLDER = "ADDRESS:PORT"


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    host: str
    interface: str | None = None
    peer: str | None = None
    prefixes: tuple[IPNetwork, ...] = ()
    version: int = 4
    in_iface: str | None = None
    out_iface: str | None = None


@dataclass
class Fix:
    changes: list[Change]
    summary: str
    commands: list[str]
    config: list[str]
    #: the group's pairs that become reachable
    fixes: int = 0
    #: all pairs that become reachable with it (the group's and others')
    reachable_after: int = 0
    notes: list[str] = field(default_factory=list)


def apply(network: Network, changes: Iterable[Change]) -> Network:
    """A copy of ``network`` with ``changes`` made: the hosts they change are copied, the
    others shared (never changed in place), so that a 10,000-host network is not copied
    for every candidate."""
    changes = list(changes)
    touched = {change.host for change in changes}
    changed = Network([copy.deepcopy(h) if h.name in touched else h for h in network.hosts])
    for change in changes:
        host = changed.host(change.host)
        if host is None:
            continue
        _apply(host, change)
    return changed


def _apply(host: Host, change: Change) -> None:
    interface = host.interface(change.interface) if change.interface else None
    if change.kind is ChangeKind.ALLOWED_IP and interface is not None:
        for peer in interface.peers:
            if peer.public_key == change.peer:
                peer.allowed_ips.extend(p for p in change.prefixes if p not in peer.allowed_ips)
            else:  # as `wg set`: a prefix given to one peer leaves any other
                peer.allowed_ips = [p for p in peer.allowed_ips if p not in change.prefixes]
        _route_allowed_ips(host, interface, change.prefixes)
    elif change.kind is ChangeKind.ROUTE:
        for prefix in change.prefixes:
            host.routes.append(Route(prefix, change.interface, _FIXED))
    elif change.kind is ChangeKind.FORWARDING:
        host.forwarding[change.version] = (True, _FIXED)
    elif change.kind is ChangeKind.FORWARD_ACCEPT:
        firewall = host.firewall.setdefault(
            change.version, Firewall(Action.ACCEPT, assumed("FORWARD policy ACCEPT"))
        )
        rule = FilterRule(
            Action.ACCEPT,
            _FIXED,
            _accept_rule(change),
            in_iface=change.in_iface,
            out_iface=change.out_iface,
            version=change.version,
        )
        firewall.forward.insert(0, rule)
    elif change.kind is ChangeKind.ENDPOINT and interface is not None:
        for peer in interface.peers:
            if peer.public_key == change.peer:
                peer.endpoint = ENDPOINT_PLACEHOLDER
    elif change.kind is ChangeKind.PEER and interface is not None and change.peer:
        interface.peers.append(WgPeer(change.peer, list(change.prefixes), _FIXED))
        _route_allowed_ips(host, interface, change.prefixes)


def _route_allowed_ips(host: Host, interface: Interface, prefixes: Iterable[IPNetwork]) -> None:
    """The routes wg-quick adds for new AllowedIPs prefixes (none on a snapshot host, where
    ``wg set`` adds no route and the route is a change of its own)."""
    table = interface.allowed_ips_table
    if table is not None:
        host.routes.extend(
            Route(prefix, interface.name, _FIXED, table=table) for prefix in prefixes
        )


def _accept_rule(change: Change) -> str:
    return f"-I FORWARD -i {change.in_iface} -o {change.out_iface} -j ACCEPT"


def _host_prefix(address: IPAddress) -> IPNetwork:
    return ip_network(address)


def _lan_or_host(network: Network, address: IPAddress) -> IPNetwork:
    for host in network.hosts:
        for lan in host.lans:
            if lan.representative == address:
                return lan.prefix
    return _host_prefix(address)


def _subnets(interface: Interface, addresses: set[IPAddress]) -> list[IPNetwork]:
    """The interface's own Address subnets that hold every one of ``addresses``."""
    found: list[IPNetwork] = []
    for own in interface.addresses:
        net = own.network
        if net.prefixlen < own.max_prefixlen and all(
            a.version == net.version and a in net for a in addresses
        ):
            found.append(net)
    return found


def _owner_of(network: Network, address: IPAddress) -> str | None:
    for host in network.hosts:
        if address in host.addresses() or any(lan.representative == address for lan in host.lans):
            return host.name
    return None


def _key_host(network: Network, key: str) -> Host | None:
    for host in network.hosts:
        for interface in host.wireguard():
            if interface.public_key == key:
                return host
    return None


def _versions(addresses: set[IPAddress]) -> list[int]:
    return sorted({a.version for a in addresses}) or [4]


def _host_name(network: Network, key: str) -> str | None:
    host = _key_host(network, key)
    return host.name if host else None


def _adder(host: str, interface: str) -> Callable[[str, tuple[IPNetwork, ...]], Change]:
    def add(peer: str, prefixes: tuple[IPNetwork, ...]) -> Change:
        return Change(ChangeKind.ALLOWED_IP, host, interface, peer, prefixes)

    return add


def _candidates(network: Network, group: Group) -> list[list[Change]]:
    cause = group.cause
    sample = group.sample(MAX_FIX_PAIRS)
    failed: list[Trace] = [f for f in (p.failed for p in sample) if f is not None]
    host = network.host(cause.host)
    if host is None:
        return []
    interface = host.interface(cause.interface) if cause.interface else None
    dsts = {f.last_dst for f in failed if f.last_dst is not None}
    srcs = {f.last_src for f in failed if f.last_src is not None}
    out: list[list[Change]] = []
    if cause.kind is CauseKind.NO_PEER and interface is not None:
        owners = {_owner_of(network, d) for d in dsts}
        direct = [
            p
            for p in interface.peers
            if (h := _key_host(network, p.public_key)) and h.name in owners
        ]
        relays = [p for p in interface.peers if p not in direct]
        singles = tuple(sorted({_lan_or_host(network, d) for d in dsts}, key=str))
        for peer in relays:
            for subnet in _subnets(interface, dsts):
                out.append(
                    [
                        Change(
                            ChangeKind.ALLOWED_IP,
                            host.name,
                            interface.name,
                            peer.public_key,
                            (subnet,),
                        )
                    ]
                )
        for peer in direct + relays:
            out.append(
                [Change(ChangeKind.ALLOWED_IP, host.name, interface.name, peer.public_key, singles)]
            )
    elif cause.kind is CauseKind.DISALLOWED_SOURCE and interface is not None and cause.peer:
        singles = tuple(sorted({_lan_or_host(network, s) for s in srcs}, key=str))
        sender = _key_host(network, cause.peer)
        owners = {_owner_of(network, s) for s in srcs}
        relay = sender is None or owners != {sender.name}
        subnet_changes = [
            [Change(ChangeKind.ALLOWED_IP, host.name, interface.name, cause.peer, (subnet,))]
            for subnet in _subnets(interface, srcs)
        ]
        single_change = [
            [Change(ChangeKind.ALLOWED_IP, host.name, interface.name, cause.peer, singles)]
        ]
        out.extend(subnet_changes + single_change if relay else single_change + subnet_changes)
    elif cause.kind in (CauseKind.NO_ROUTE, CauseKind.NOT_INTO_TUNNEL):
        singles = tuple(sorted({_lan_or_host(network, d) for d in dsts}, key=str))
        for wg in host.wireguard():
            for subnet in _subnets(wg, dsts):
                out.append([Change(ChangeKind.ROUTE, host.name, wg.name, prefixes=(subnet,))])
            out.append([Change(ChangeKind.ROUTE, host.name, wg.name, prefixes=singles)])
    elif cause.kind is CauseKind.FORWARDING_OFF:
        out.append([Change(ChangeKind.FORWARDING, host.name, version=v) for v in _versions(dsts)])
    elif cause.kind is CauseKind.FORWARD_DROPPED and cause.in_interface and cause.interface:
        out.append(
            [
                Change(
                    ChangeKind.FORWARD_ACCEPT,
                    host.name,
                    version=v,
                    in_iface=cause.in_interface,
                    out_iface=cause.interface,
                )
                for v in _versions(dsts)
            ]
        )
    elif cause.kind is CauseKind.NO_ENDPOINT and interface is not None and cause.peer:
        out.append([Change(ChangeKind.ENDPOINT, host.name, interface.name, cause.peer)])
    elif cause.kind is CauseKind.NO_HANDSHAKE and interface is not None and cause.peer:
        sender = _key_host(network, cause.peer)
        if sender is not None:
            prefixes = tuple(_host_prefix(a.ip) for w in sender.wireguard() for a in w.addresses)
            out.append([Change(ChangeKind.PEER, host.name, interface.name, cause.peer, prefixes)])
    return out[:MAX_CANDIDATES]


def suggest(report: Report, group: Group, also: Iterable[list[Change]] = ()) -> Fix | None:
    """The first candidate (in preference order) that makes the most of the group's pairs
    reachable and breaks no pair that was reachable; None when none helps. ``also``: more
    candidates (other groups' fixes) tried when the group's own do not fix all its pairs —
    where a packet dies is not always where the mistake is. Each candidate is one check of
    the changed network, compared with ``report`` block by block (no set of pairs)."""
    wanted = group.count
    best: tuple[int, Fix] | None = None
    own = _candidates(report.network, group)
    for number, changes in enumerate([*own, *also]):
        if number >= len(own) and best is not None and best[0] == wanted:
            break
        after = check(apply(report.network, changes))
        broken = report.count(after, _reachable, _not_reachable)
        if broken:
            continue
        fixed = report.count(after, _reachable, _reachable, only=group)
        if fixed == 0:
            continue
        if best is None or fixed > best[0]:
            fix = describe(report.network, changes)
            fix.fixes = fixed
            fix.reachable_after = after.reachable
            best = (fixed, fix)
            if fixed == group.count:
                break
    return best[1] if best else None


def _reachable(outcome: Outcome) -> bool:
    return outcome.reachable


def _not_reachable(outcome: Outcome) -> bool:
    return not outcome.reachable


#: above this many pairs, fixes are searched for the largest groups only
FIX_PAIRS_LIMIT = 100_000
FIX_GROUPS_LIMIT = 5


def suggest_all(report: Report) -> dict[int, Fix | None]:
    """A fix for each group (by its index), each group also trying the fixes found for the
    groups before it. Above :data:`FIX_PAIRS_LIMIT` pairs only the :data:`FIX_GROUPS_LIMIT`
    largest groups get a search (each candidate is a check of the whole network)."""
    fixes: dict[int, Fix | None] = {}
    found: list[list[Change]] = []
    big = report.total > FIX_PAIRS_LIMIT
    for number, group in enumerate(report.groups):
        if big and number >= FIX_GROUPS_LIMIT:
            break
        fix = suggest(report, group, also=list(found))
        fixes[number] = fix
        if fix is not None and fix.changes not in found:
            found.append(fix.changes)
    return fixes


def describe(network: Network, changes: list[Change]) -> Fix:
    """The summary, live commands and config lines of ``changes``."""
    summary: list[str] = []
    commands: list[str] = []
    config: list[str] = []
    index = Index(network)
    for change in changes:
        host = network.host(change.host)
        assert host is not None
        interface = host.interface(change.interface) if change.interface else None
        prefixes = ", ".join(str(p) for p in change.prefixes)
        if change.kind is ChangeKind.ALLOWED_IP and interface is not None:
            peer = next(p for p in interface.peers if p.public_key == change.peer)
            new = [*peer.allowed_ips, *(p for p in change.prefixes if p not in peer.allowed_ips)]
            summary.append(f"on {host.name}: add {prefixes} to the AllowedIPs of peer {peer.label}")
            commands.append(
                f"{host.name}# wg set {interface.name} peer {peer.public_key} allowed-ips "
                + ",".join(str(p) for p in new)
            )
            commands.extend(
                f"{host.name}# ip route add {p} dev {interface.name}"
                for p in change.prefixes
                if not _routed_into(index, host, p, interface.name)
            )
            listed = ", ".join(str(p) for p in new)
            config.append(_config_line(interface, peer, f"AllowedIPs = {listed}"))
            for other in interface.peers:
                moved = [p for p in change.prefixes if p in other.allowed_ips and other is not peer]
                if moved:
                    kept = ", ".join(str(p) for p in other.allowed_ips if p not in moved) or (
                        "(nothing left: delete the line)"
                    )
                    summary[-1] += f" (moving {', '.join(map(str, moved))} away from {other.label})"
                    config.append(_config_line(interface, other, f"AllowedIPs = {kept}"))
        elif change.kind is ChangeKind.ROUTE:
            summary.append(f"on {host.name}: route {prefixes} into {change.interface}")
            commands.extend(
                f"{host.name}# ip route add {p} dev {change.interface}" for p in change.prefixes
            )
            if interface is not None and interface.config_file:
                name = Path(interface.config_file).name
                config.extend(
                    f"{name} [Interface]: PostUp = ip route add {p} dev %i" for p in change.prefixes
                )
        elif change.kind is ChangeKind.FORWARDING:
            name = "net.ipv4.ip_forward" if change.version == 4 else "net.ipv6.conf.all.forwarding"
            summary.append(f"on {host.name}: turn IPv{change.version} forwarding on")
            commands.append(f"{host.name}# sysctl -w {name}=1")
            config.extend(_interface_lines(host, f"PostUp = sysctl -w {name}=1"))
        elif change.kind is ChangeKind.FORWARD_ACCEPT:
            tool = "iptables" if change.version == 4 else "ip6tables"
            summary.append(
                f"on {host.name}: let the FORWARD chain accept "
                f"{change.in_iface} → {change.out_iface}"
            )
            commands.append(f"{host.name}# {tool} {_accept_rule(change)}")
            wg_names = {w.name for w in host.wireguard()}
            rule = _accept_rule(change)
            for name in wg_names:
                rule = rule.replace(f" {name} ", " %i ")
            config.extend(_interface_lines(host, f"PostUp = {tool} {rule}"))
        elif change.kind is ChangeKind.ENDPOINT and interface is not None:
            peer = next(p for p in interface.peers if p.public_key == change.peer)
            remote = _key_host(network, peer.public_key)
            whose = f"{remote.name}'s" if remote else "the peer's"
            summary.append(
                f"on {host.name}: give peer {peer.label} an Endpoint ({whose} outer address and "
                "ListenPort), or the other side one for this host"
            )
            commands.append(
                f"{host.name}# wg set {interface.name} peer {peer.public_key} endpoint "
                f"{ENDPOINT_PLACEHOLDER}"
            )
            config.append(_config_line(interface, peer, f"Endpoint = {ENDPOINT_PLACEHOLDER}"))
        elif change.kind is ChangeKind.PEER and interface is not None:
            summary.append(f"on {host.name}: add the peer {change.peer} with AllowedIPs {prefixes}")
            commands.append(
                f"{host.name}# wg set {interface.name} peer {change.peer} allowed-ips "
                + ",".join(str(p) for p in change.prefixes)
            )
            if interface.config_file:
                config.append(
                    f"{Path(interface.config_file).name}: [Peer] PublicKey = {change.peer} / "
                    f"AllowedIPs = {prefixes}"
                )
    return Fix(changes, "; ".join(summary), commands, config)


def _routed_into(index: Index, host: Host, prefix: IPNetwork, interface: str) -> bool:
    """Whether the host already routes all of ``prefix`` into ``interface`` (its first and
    last address, which a route for a wider or equal prefix covers alike)."""
    ends = (prefix.network_address, prefix.broadcast_address)
    for address in ends:
        route = index.route(host, address, address)
        if route is None or route.dev != interface or route.prefix.prefixlen > prefix.prefixlen:
            return False
    return True


def _config_line(interface: Interface, peer: WgPeer, line: str) -> str:
    if interface.config_file is None:
        return f"({interface.name} has no config file) {line}"
    origins = list(peer.prefix_origins.values())
    where = origins[0].what.split()[0] if origins else Path(interface.config_file).name
    if not origins:
        where = f"{Path(interface.config_file).name} [Peer] {peer.label}"
    return f"{where}: {line}"


def _interface_lines(host: Host, line: str) -> list[str]:
    files = [w.config_file for w in host.wireguard() if w.config_file]
    return [f"{Path(f).name} [Interface]: {line}" for f in files[:1]]
