"""One packet through the network, hop by hop, as each host's kernel would take it.

At every host: conntrack undoes a source NAT the request went through (replies only); a
packet for one of the host's addresses is delivered; a packet to forward needs the host's
forwarding switch on; the route lookup (``ip rule`` order, ``suppress_prefixlength``) picks
the outgoing interface; a forwarded packet passes the FORWARD chain; nat POSTROUTING may
rewrite its source. Into a WireGuard interface, the longest AllowedIPs match of the
destination picks the peer, the peer's key names the next host, that host must know the
sender's key (or no handshake completes) and its AllowedIPs must give the packet's source to
the sending key. Out of another interface, the packet reaches a LAN standing behind the host,
or leaves the network the model knows.

:class:`Index` holds the lookups of a :class:`~wgpy.net.model.Network` (every AllowedIPs
table is a :class:`wgpy.allowedips.AllowedIPs`, the one place that decides peers); build it
once and trace many packets through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from wgpy.allowedips import AllowedIPs
from wgpy.net.model import (
    Action,
    Firewall,
    Host,
    Interface,
    IPAddress,
    Lan,
    Network,
    Origin,
    Route,
    RouteKind,
    Rule,
    assumed,
)

__all__ = ["Cause", "CauseKind", "Index", "Step", "Trace", "Verdict", "trace"]

MAX_HOPS = 64
_LINUX_DEFAULT = assumed("Linux's default rules (lookup main, lookup default)")
_DEFAULT_RULES = (Rule(32766, "main", _LINUX_DEFAULT), Rule(32767, "default", _LINUX_DEFAULT))
_NO_FORWARDING = (False, assumed("forwarding off (Linux's default; no input says)"))


class Verdict(Enum):
    DELIVERED = "delivered"
    DROPPED = "dropped"
    UNKNOWN = "unknown"


class CauseKind(Enum):
    """Why a packet did not arrive; each has a meaning people can read in the docs."""

    NO_ROUTE = "no_route"  # no route for the destination (the sender gets ENETUNREACH)
    ROUTE_UNREACHABLE = "route_unreachable"  # a blackhole/unreachable/prohibit route
    NOT_INTO_TUNNEL = "not_into_tunnel"  # the route leads out of a non-WireGuard interface
    NO_PEER = "no_peer"  # no AllowedIPs prefix of the interface holds the destination
    UNKNOWN_PEER = "unknown_peer"  # the chosen peer's key is no input's interface
    NO_HANDSHAKE = "no_handshake"  # the next host has no peer with the sender's key
    NO_ENDPOINT = "no_endpoint"  # neither side has an Endpoint for the other: no handshake starts
    DISALLOWED_SOURCE = "disallowed_source"  # the receiver's AllowedIPs give the source elsewhere
    FORWARDING_OFF = "forwarding_off"  # ip_forward is off on the host that must forward
    FORWARD_DROPPED = "forward_dropped"  # the FORWARD chain drops or rejects it
    UNKNOWN_RULE = "unknown_rule"  # a firewall rule the model could not read may match
    INTERFACE_DOWN = "interface_down"
    LOOP = "loop"  # the packet came back where it was; TTL ends it


@dataclass(frozen=True)
class Cause:
    kind: CauseKind
    host: str
    interface: str | None = None
    #: the peer concerned (public key): the chosen one for no_handshake/unknown_peer, the
    #: sending one for disallowed_source
    peer: str | None = None
    #: who holds the address instead (disallowed_source), or the rule's text
    detail: str = ""
    #: the fact this rests on, when that fact was assumed rather than read
    assumption: str | None = None
    #: where a forwarded packet came in (forward_dropped)
    in_interface: str | None = None


@dataclass(frozen=True)
class Step:
    host: str
    what: str
    detail: str


@dataclass
class Trace:
    start: str
    src: IPAddress
    dst: IPAddress
    steps: list[Step] = field(default_factory=list)
    verdict: Verdict = Verdict.DROPPED
    cause: Cause | None = None
    #: the host (or LAN) that got the packet
    delivered_to: str | None = None
    #: source NAT on the way: (host, original source, new source)
    nat: list[tuple[str, IPAddress, IPAddress]] = field(default_factory=list)
    #: the packet's source when it arrived (after NAT)
    arrived_src: IPAddress | None = None
    #: the packet's addresses at the hop where it stopped (after NAT and its undoing)
    last_src: IPAddress | None = None
    last_dst: IPAddress | None = None


class _Wg:
    """One WireGuard interface of the network: its host, its peers' keys and (built on first
    use) its AllowedIPs table. Compared and hashed by identity."""

    __slots__ = ("_table", "endpoints", "host", "interface", "keys", "where")

    def __init__(self, host: Host, interface: Interface) -> None:
        self.host = host
        self.interface = interface
        self.keys = {p.public_key for p in interface.peers}
        #: the peers it has an Endpoint for (configured, or learned: a snapshot's endpoint)
        self.endpoints = {p.public_key for p in interface.peers if p.endpoint}
        #: (host name, interface name): where its received packets arrive
        self.where: tuple[str, str | None] = (host.name, interface.name)
        self._table: AllowedIPs[str] | None = None

    @property
    def table(self) -> AllowedIPs[str]:
        """The interface's AllowedIPs, built as ``wg setconf`` would: each peer's prefixes
        in order, a later peer taking a prefix an earlier one held."""
        table = self._table
        if table is None:
            table = AllowedIPs()
            for peer in self.interface.peers:
                table.insert_many(
                    ((p.version, int(p.network_address), p.prefixlen) for p in peer.allowed_ips),
                    peer.public_key,
                )
            self._table = table
        return table


def session_can_start(wg: _Wg, peer_key: str, nxt: _Wg, sender_key: str) -> bool:
    """Whether a session between two interfaces can ever begin: one of them must know where
    the other is (an Endpoint, configured or learned), or nobody sends the first initiation.
    (Which side starts matters from a cold start only; the model answers for a network whose
    pairs have all pinged, see docs/network.md.)"""
    return peer_key in wg.endpoints or sender_key in nxt.endpoints


def ordered_routes(routes: list[Route]) -> dict[str, list[Route]]:
    """A host's routes per table, in the order that makes the last route of a prefix the one
    the kernel uses (the lowest metric; among equal metrics, the last given)."""
    by_table: dict[str, list[Route]] = {}
    for route in sorted(routes, key=lambda r: -r.metric):
        by_table.setdefault(route.table, []).append(route)
    return by_table


class Index:
    """The lookups of a network: built once, then asked for every packet. A host's routing
    tables and an interface's AllowedIPs are built on first use (a check of a 1,000-host
    mesh never needs them; the per-pair trace of a few pairs needs a few)."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.hosts: dict[str, Host] = {h.name: h for h in network.hosts}
        self.by_key: dict[str, _Wg] = {}
        self.wg: dict[tuple[str, str], _Wg] = {}
        self.local: dict[IPAddress, str] = {}
        self.lans: dict[IPAddress, Lan] = {}
        self.routes: dict[tuple[str, str], AllowedIPs[Route]] = {}
        self._routed: set[str] = set()  # hosts whose tables are in self.routes
        self.rules: dict[str, list[Rule]] = {}
        for host in network.hosts:
            for interface in host.interfaces:
                for address in interface.addresses:
                    self.local.setdefault(address.ip, host.name)
                if not interface.wireguard:
                    continue
                wg = _Wg(host, interface)
                self.wg[(host.name, interface.name)] = wg
                if interface.public_key is not None:
                    self.by_key.setdefault(interface.public_key, wg)
            for lan in host.lans:
                self.lans[lan.representative] = lan
            self.rules[host.name] = sorted([*host.rules, *_DEFAULT_RULES], key=lambda r: r.priority)

    def _tables(self, host: Host) -> None:
        """Build the host's routing tables (once)."""
        if host.name in self._routed:
            return
        self._routed.add(host.name)
        for name, routes in ordered_routes(host.routes).items():
            lpm: AllowedIPs[Route] = AllowedIPs()
            for route in routes:  # the route of a prefix inserted last wins it
                lpm.insert(route.prefix, route)
            self.routes[(host.name, name)] = lpm

    def route(self, host: Host, src: IPAddress, dst: IPAddress) -> Route | None:
        """The route the host's policy routing picks for a packet without fwmark."""
        self._tables(host)
        for rule in self.rules[host.name]:
            if rule.fwmark is not None and not rule.invert:
                continue  # our packets carry no mark
            if rule.source is not None and (
                rule.source.version != src.version or src not in rule.source
            ):
                continue
            if rule.destination is not None and (
                rule.destination.version != dst.version or dst not in rule.destination
            ):
                continue
            table = self.routes.get((host.name, rule.table))
            if table is None:
                continue
            found = table.match(dst)
            if found is None:
                continue
            prefix, route = found
            if (
                rule.suppress_prefixlength is not None
                and prefix.prefixlen <= rule.suppress_prefixlength
            ):
                continue
            return route
        return None


def trace(
    index: Index,
    start: str,
    src: IPAddress,
    dst: IPAddress,
    *,
    reply: bool = False,
    unnat: Mapping[tuple[str, IPAddress], IPAddress] | None = None,
) -> Trace:
    """Follow a packet from ``src`` to ``dst`` sent by ``start`` (a host name, or a LAN's
    representative address as text). ``reply`` marks a reply of a flow whose request went
    through the source NATs in ``unnat`` ((host, NAT address) → original address)."""
    result = Trace(start, src, dst)
    steps = result.steps
    state = "ESTABLISHED" if reply else "NEW"
    lan = index.lans.get(src) if start not in index.hosts else None
    if lan is not None:
        host = index.hosts[lan.host]
        in_iface: str | None = lan.interface
        steps.append(Step(start, "send", f"{src} → {dst} to its router {host.name} ({lan.origin})"))
    else:
        host = index.hosts[start]
        in_iface = None
    seen: set[tuple[str, str | None, IPAddress, IPAddress]] = set()
    for _ in range(MAX_HOPS):
        here = host.name
        if unnat and (here, dst) in unnat:
            original = unnat[(here, dst)]
            steps.append(
                Step(here, "conntrack", f"undo source NAT: destination {dst} → {original}")
            )
            dst = original
        result.last_src, result.last_dst = src, dst
        key = (here, in_iface, src, dst)
        if key in seen:
            result.cause = Cause(CauseKind.LOOP, here, in_iface)
            steps.append(Step(here, "loop", "the packet is back where it was; its TTL runs out"))
            return result
        seen.add(key)
        if index.local.get(dst) == here:
            steps.append(Step(here, "deliver", f"{dst} is an address of {here}: local delivery"))
            result.verdict = Verdict.DELIVERED
            result.delivered_to = here
            result.arrived_src = src
            return result
        version = dst.version
        if in_iface is not None:
            enabled, origin = host.forwarding.get(version, _NO_FORWARDING)
            if not enabled:
                result.cause = Cause(
                    CauseKind.FORWARDING_OFF,
                    here,
                    in_iface,
                    detail=str(origin),
                    assumption=str(origin) if origin.assumed else None,
                )
                steps.append(Step(here, "drop", f"IPv{version} forwarding is off ({origin})"))
                return result
        route = index.route(host, src, dst)
        if route is None:
            result.cause = Cause(CauseKind.NO_ROUTE, here)
            steps.append(Step(here, "route", f"no route to {dst}: network unreachable"))
            return result
        steps.append(
            Step(
                here,
                "route",
                f"{route.prefix} dev {route.dev} table {route.table} ({route.origin})",
            )
        )
        if route.kind is not RouteKind.UNICAST or route.dev is None:
            result.cause = Cause(CauseKind.ROUTE_UNREACHABLE, here, detail=route.kind.value)
            steps.append(Step(here, "drop", f"{route.kind.value} route {route.prefix}"))
            return result
        out = route.dev
        if in_iface is not None:
            verdict = _forward_chain(
                host.firewall.get(version), version, in_iface, out, src, dst, state
            )
            if verdict is not None:
                action, text, origin = verdict
                if action is Action.UNKNOWN:
                    result.verdict = Verdict.UNKNOWN
                    result.cause = Cause(CauseKind.UNKNOWN_RULE, here, out, detail=text)
                    steps.append(Step(here, "FORWARD", f"unknown: the rule {text!r} may match"))
                    return result
                if action in (Action.DROP, Action.REJECT):
                    result.cause = Cause(
                        CauseKind.FORWARD_DROPPED,
                        here,
                        out,
                        detail=text,
                        in_interface=in_iface,
                        assumption=str(origin) if origin.assumed else None,
                    )
                    steps.append(Step(here, "FORWARD", f"{action.value}: {text} ({origin})"))
                    return result
                note = f" ({origin})" if origin.assumed else ""
                steps.append(Step(here, "FORWARD", f"ACCEPT {in_iface} → {out}: {text}{note}"))
        nat = _postrouting(host, version, in_iface, out, src, dst, state)
        if nat is not None and nat != src:
            steps.append(Step(here, "NAT", f"source {src} → {nat} (masquerade out of {out})"))
            result.nat.append((here, src, nat))
            src = nat
            result.last_src = src
        wg = index.wg.get((here, out))
        if wg is None:
            interface = host.interface(out)
            lan_to = index.lans.get(dst)
            if lan_to is not None and lan_to.host == here and lan_to.interface == out:
                steps.append(Step(here, "deliver", f"out of {out} to {dst} on {lan_to.prefix}"))
                result.verdict = Verdict.DELIVERED
                result.delivered_to = str(dst)
                result.arrived_src = src
                return result
            result.cause = Cause(
                CauseKind.NOT_INTO_TUNNEL,
                here,
                out,
                detail=f"{route.prefix} dev {out} ({route.origin})"
                + ("" if interface is not None else ", an interface the model does not know"),
            )
            steps.append(Step(here, "drop", f"leaves through {out}, not a WireGuard interface"))
            return result
        if not wg.interface.up:
            result.cause = Cause(CauseKind.INTERFACE_DOWN, here, out)
            steps.append(Step(here, "drop", f"{out} is down"))
            return result
        found = wg.table.match(dst)
        if found is None:
            result.cause = Cause(CauseKind.NO_PEER, here, out)
            steps.append(
                Step(here, "AllowedIPs", f"no peer of {out} has {dst}: Required key not available")
            )
            return result
        prefix, peer_key = found
        steps.append(Step(here, "AllowedIPs", f"{dst} in {prefix} → peer {_short(peer_key)}"))
        nxt = index.by_key.get(peer_key)
        if nxt is None:
            result.verdict = Verdict.UNKNOWN
            result.cause = Cause(CauseKind.UNKNOWN_PEER, here, out, peer=peer_key)
            steps.append(Step(here, "encrypt", f"to {_short(peer_key)}: no input has that key"))
            return result
        sender_key = wg.interface.public_key
        if sender_key is None or sender_key not in nxt.keys:
            result.cause = Cause(
                CauseKind.NO_HANDSHAKE, nxt.host.name, nxt.interface.name, peer=sender_key
            )
            steps.append(
                Step(
                    nxt.host.name,
                    "handshake",
                    f"{nxt.interface.name} has no peer with {here}'s key",
                )
            )
            return result
        if not session_can_start(wg, peer_key, nxt, sender_key):
            result.cause = Cause(CauseKind.NO_ENDPOINT, here, out, peer=peer_key)
            steps.append(
                Step(
                    here,
                    "handshake",
                    f"neither {here} nor {nxt.host.name} has an Endpoint for the other: "
                    "no handshake can start",
                )
            )
            return result
        owner = nxt.table.match(src)
        steps.append(Step(here, "encrypt", f"to {nxt.host.name} ({nxt.interface.name})"))
        if owner is None or owner[1] != sender_key:
            holder = "no peer" if owner is None else f"peer {_short(owner[1])}"
            result.cause = Cause(
                CauseKind.DISALLOWED_SOURCE,
                nxt.host.name,
                nxt.interface.name,
                peer=sender_key,
                detail=holder,
            )
            steps.append(
                Step(
                    nxt.host.name, "source check", f"{src} is held by {holder}, not {here}: dropped"
                )
            )
            return result
        steps.append(Step(nxt.host.name, "source check", f"{src} in {owner[0]} → {here}: accepted"))
        host = nxt.host
        in_iface = nxt.interface.name
    result.cause = Cause(CauseKind.LOOP, host.name, in_iface, detail=f"{MAX_HOPS} hops")
    return result


def _short(key: str) -> str:
    return key[:8] + "…"


def _forward_chain(
    firewall: Firewall | None,
    version: int,
    in_iface: str,
    out: str,
    src: IPAddress,
    dst: IPAddress,
    state: str,
) -> tuple[Action, str, Origin] | None:
    if firewall is None:
        return None
    for rule in firewall.forward:
        if rule.action is Action.UNKNOWN:
            if rule.version in (None, version):
                return Action.UNKNOWN, rule.text, rule.origin
            continue
        if rule.matches(version, in_iface, out, src, dst, state):
            if rule.action is Action.RETURN:
                break
            return rule.action, rule.text, rule.origin
    return (
        firewall.forward_policy,
        f"policy {firewall.forward_policy.value}",
        firewall.policy_origin,
    )


def _postrouting(
    host: Host,
    version: int,
    in_iface: str | None,
    out: str,
    src: IPAddress,
    dst: IPAddress,
    state: str,
) -> IPAddress | None:
    if state != "NEW":
        return None  # only a connection's first packet meets nat rules; replies are un-NATed
    firewall = host.firewall.get(version)
    if firewall is None:
        return None
    for rule in firewall.postrouting:
        if rule.matches(version, in_iface, out, src, dst, state) or (
            rule.in_iface is None and rule.matches(version, None, out, src, dst, state)
        ):
            if rule.action is Action.MASQUERADE:
                interface = host.interface(out)
                if interface is None:
                    return None
                for address in interface.addresses:
                    if address.version == version:
                        return address.ip
                return None
            if rule.action is Action.SNAT and rule.to_source is not None:
                return rule.to_source
            if rule.action in (Action.ACCEPT, Action.RETURN):
                return None
    return None
