"""Every ordered pair's packet at once: sets of (source, destination) pairs pushed through the
network, one decision per class of addresses that a host treats alike.

The endpoints of one IP version are numbered in address order, so every prefix is one range
of numbers. At each host, the prefixes the host consults for a destination (its routes, rule
and FORWARD destinations, its AllowedIPs) and its own and its LANs' addresses cut the numbers
into *atoms*: destinations in one atom take the same route, match the same rules and go to
the same peer — VeriFlow's equivalence classes, computed per host over the endpoints. Sources
are cut the same way by the prefixes a host matches sources against (rule and FORWARD
sources), and at the receiving interface by the AllowedIPs that decide its source check.

A *region* is a rectangle S × D of sources and destinations (:mod:`wgpy.net.intervals`) at a
host, arriving on an interface after some hops. A host splits it by its atoms and decides
each piece once, on one representative pair, with the same steps as
:func:`wgpy.net.trace.trace` (:meth:`Flow.decide`): deliver, drop with a cause, or hand it to the
next host, whose source check splits it again. Regions that meet at the same host, interface
and hop merge, so a hub's 10,000 spokes' packets are one region at the hub.

Pairs of a host with itself are never asked about; they are *don't care*, and regions may
include them when that keeps them rectangles (a spoke's packets to everything but itself
become packets to everything). Such a pair follows the same deterministic steps as any
other, so it never changes another pair's answer. Loops: a pair arriving again at a host and
interface it passed is the trace's loop (without NAT, a packet never changes on the way).
Source NAT changes a packet on the way: pieces that meet one are handed back for per-pair
tracing (:data:`PER_PAIR`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import TypeVar, cast

from wgpy.net import intervals as iv
from wgpy.net.intervals import Ranges
from wgpy.net.model import Action, Host, IPAddress, IPNetwork, Route, RouteKind
from wgpy.net.trace import (
    _NO_FORWARDING,
    MAX_HOPS,
    Cause,
    CauseKind,
    Index,
    Verdict,
    _forward_chain,
    _postrouting,
    _short,
    _Wg,
    ordered_routes,
    session_can_start,
)

__all__ = ["DELIVERED", "PER_PAIR", "Block", "Endpoints", "Flow", "run"]

#: the outcome of a leg that arrived; PER_PAIR: a piece that met source NAT
DELIVERED: tuple[Verdict, Cause | None] = (Verdict.DELIVERED, None)
PER_PAIR: tuple[Verdict, Cause | None] = (Verdict.UNKNOWN, None)

Outcome = tuple[Verdict, Cause | None]


@dataclass
class Block:
    """All pairs of ``sources`` × ``targets`` (but a host's with itself) share ``outcome``
    (a leg's (verdict, cause) here; a ping's :class:`wgpy.net.check.Outcome` in a report)."""

    sources: Ranges
    targets: Ranges
    outcome: Hashable


class Endpoints:
    """The endpoints of one IP version in address order, with their hosts."""

    def __init__(self, addresses: list[IPAddress], hosts: list[str], starts: list[str]) -> None:
        self.addresses = addresses
        self.values = [int(a) for a in addresses]
        self.hosts = hosts
        self.starts = starts
        self.number = {a: n for n, a in enumerate(addresses)}
        self.members: dict[str, list[int]] = {}
        for n, host in enumerate(hosts):
            self.members.setdefault(host, []).append(n)
        self.all: Ranges = ((0, len(addresses)),) if addresses else ()
        self.version = addresses[0].version if addresses else 0
        #: id of a prefix → (the prefix, :meth:`cut` of it)
        self.known: dict[int, tuple[IPNetwork, tuple[int, int, int] | None]] = {}

    def span(self, prefix: IPNetwork) -> tuple[int, int]:
        """The numbers of the endpoints in ``prefix`` (of this version): ``range(lo, hi)``."""
        first = int(prefix.network_address)
        return (
            bisect_left(self.values, first),
            bisect_right(self.values, first + prefix.num_addresses - 1),
        )

    def cut(self, prefix: IPNetwork) -> tuple[int, int, int] | None:
        """(lo, hi, prefix length) of ``prefix`` (its endpoints are ``range(lo, hi)``), or
        None for a prefix of the other IP version. Remembered per prefix object: a mesh's
        hosts share theirs, and every host's tables are cut by them several times."""
        found = self.known.get(id(prefix))
        if found is not None and found[0] is prefix:
            return found[1]
        made: tuple[int, int, int] | None = None
        if prefix.version == self.version:
            made = (*self.span(prefix), prefix.prefixlen)
        self.known[id(prefix)] = (prefix, made)  # holding the prefix keeps its id unique
        return made

    def host_of(self, ranges: Ranges) -> str | None:
        """The one host all of ``ranges`` belongs to (looked at only for small sets)."""
        if not ranges or iv.size(ranges) > 8:
            return None
        hosts = {self.hosts[n] for n in iv.indices(ranges)}
        return hosts.pop() if len(hosts) == 1 else None

    def same_host_pairs(self, sources: Ranges, targets: Ranges) -> int:
        """How many pairs of sources × targets are of one host (never asked about)."""
        small, other = (
            (sources, targets) if iv.size(sources) <= iv.size(targets) else (targets, sources)
        )
        count = 0
        for n in iv.indices(small):
            for m in self.members[self.hosts[n]]:
                if iv.contains(other, m):
                    count += 1
        return count

    def pairs(self, sources: Ranges, targets: Ranges) -> int:
        return iv.size(sources) * iv.size(targets) - self.same_host_pairs(sources, targets)

    def widen(self, sources: Ranges, targets: Ranges) -> tuple[Ranges, Ranges]:
        """The rectangle with don't-care pairs added where that makes it simpler: a source's
        own host's targets (or a target's own host's sources)."""
        host = self.host_of(sources)
        if host is not None:
            wider = iv.union_all([*targets, *((m, m + 1) for m in self.members[host])])
            if len(wider) < len(targets):
                targets = wider
        host = self.host_of(targets)
        if host is not None:
            wider = iv.union_all([*sources, *((m, m + 1) for m in self.members[host])])
            if len(wider) < len(sources):
                sources = wider
        return sources, targets


@dataclass
class _View:
    """One host's atoms over the endpoints: where destinations and sources are cut, and what
    the host's tables say per destination atom (each filled on first use)."""

    dst: list[int]
    src: list[int]
    #: a bound of ``dst`` → the number of the atom it starts
    at: dict[int, int]
    #: the host's routes per table, the winner of a prefix last (:func:`ordered_routes`)
    tables: dict[str, list[Route]]
    #: per routing table: the longest match (route, prefix length) per destination atom
    lpm: dict[str, list[tuple[Route, int] | None]] = field(default_factory=dict)
    #: per source atom: the route the host's rules pick per destination atom
    routes: dict[int, list[Route | None]] = field(default_factory=dict)
    #: per WireGuard interface: the peer whose AllowedIPs win each destination atom
    peers: dict[str, list[str | None]] = field(default_factory=dict)


@dataclass
class _Owners:
    """One WireGuard interface's source check over the endpoints: the owner per atom."""

    bounds: list[int]
    owners: list[str | None]


# Decisions, as tuples for speed: (kind, ...). Equal decisions are equal tuples (a _Wg
# compares by identity), so atoms decided alike are found by a dict of decisions.
_DELIVER = 0
_DROP = 1
_NEXT = 2
_NAT = 3
Decision = tuple[int, object, object]
_DELIVERED_HERE: Decision = (_DELIVER, None, None)
_NAT_HERE: Decision = (_NAT, None, None)

_V = TypeVar("_V")


def _by_length(entry: tuple[tuple[int, int, int], object]) -> int:
    return entry[0][2]


class Flow:
    """The packets of one IP version in one conntrack state ("NEW" for requests,
    "ESTABLISHED" for replies), pushed through the network as regions."""

    def __init__(self, index: Index, ends: Endpoints, version: int, state: str) -> None:
        self.index = index
        self.ends = ends
        self.version = version
        self.state = state
        self.views: dict[str, _View] = {}
        self.owners: dict[_Wg, _Owners] = {}
        #: per (host, interface arrived on, source atom): the decision per destination atom
        self.decisions: dict[tuple[str, str | None, int], list[Decision | None]] = {}
        self.blocks: list[Block] = []
        #: per endpoint number: the host it is an address of (the trace's ``index.local``)
        self.local = [index.local.get(a) for a in ends.addresses]
        self.lan_points: dict[str, list[int]] = {}
        for address, lan in index.lans.items():
            number = ends.number.get(address)
            if number is not None:
                self.lan_points.setdefault(lan.host, []).append(number)

    # ------------------------------------------------------------------ atoms

    def _bounds(self, prefixes: Iterable[IPNetwork], points: Iterable[int]) -> list[int]:
        cuts = {0, len(self.ends.addresses)}
        cut = self.ends.cut
        known = self.ends.known.get
        for prefix in prefixes:
            entry = known(id(prefix))
            found = entry[1] if entry is not None and entry[0] is prefix else cut(prefix)
            if found is not None:
                cuts.add(found[0])
                cuts.add(found[1])
        for n in points:
            cuts.add(n)
            cuts.add(n + 1)
        return sorted(cuts)

    def _paint(
        self, at: dict[int, int], size: int, entries: Iterable[tuple[IPNetwork, _V]]
    ) -> list[_V | None]:
        """Per atom, the value of the longest prefix that holds it (of equal prefixes, the
        last given): shorter prefixes painted first, longer ones over them. Every prefix
        of this version must be among the atoms' cuts."""
        out: list[_V | None] = [None] * size
        cut = self.ends.cut
        known = self.ends.known.get
        keyed = []
        for prefix, value in entries:
            entry = known(id(prefix))
            found = entry[1] if entry is not None and entry[0] is prefix else cut(prefix)
            if found is not None and found[0] < found[1]:
                keyed.append((found, value))
        keyed.sort(key=_by_length)  # stable: equal prefixes stay in the order given
        for (lo, hi, _), value in keyed:
            first, last = at[lo], at[hi]
            if last - first == 1:
                out[first] = value
            else:
                out[first:last] = [value] * (last - first)
        return out

    def view(self, host: Host) -> _View:
        found = self.views.get(host.name)
        if found is not None:
            return found
        dst: list[IPNetwork] = [r.prefix for r in host.routes]
        src: list[IPNetwork] = []
        src_points: list[int] = []
        number = self.ends.number
        for rule in host.rules:
            if rule.destination is not None:
                dst.append(rule.destination)
            if rule.source is not None:
                src.append(rule.source)
        for firewall in host.firewall.values():
            for filter_rule in [*firewall.forward, *firewall.postrouting]:
                if filter_rule.destination is not None:
                    dst.append(filter_rule.destination)
                if filter_rule.source is not None:
                    src.append(filter_rule.source)
                if filter_rule.to_source is not None and filter_rule.to_source in number:
                    src_points.append(number[filter_rule.to_source])
        for interface in host.wireguard():
            for peer in interface.peers:
                dst.extend(peer.allowed_ips)
        # own addresses: local delivery (destinations); a source NAT's new source is one,
        # and a packet that already has it is not changed (sources)
        points = [number[a] for a in host.addresses() if a in number]
        if any(firewall.postrouting for firewall in host.firewall.values()):
            src_points.extend(points)
        points.extend(self.lan_points.get(host.name, ()))
        bounds = self._bounds(dst, points)
        made = _View(
            bounds,
            self._bounds(src, src_points),
            {b: k for k, b in enumerate(bounds)},
            ordered_routes(host.routes),
        )
        self.views[host.name] = made
        return made

    def _lpm(self, host: Host, view: _View, table: str) -> list[tuple[Route, int] | None] | None:
        """The routing table's longest match per destination atom (None: no such table)."""
        found = view.lpm.get(table)
        if found is None:
            routes = view.tables.get(table)
            if routes is None:
                return None
            found = self._paint(
                view.at, len(view.dst) - 1, ((r.prefix, (r, r.prefix.prefixlen)) for r in routes)
            )
            view.lpm[table] = found
        return found

    def _routes(self, host: Host, view: _View, src_atom: int, src: IPAddress) -> list[Route | None]:
        """Per destination atom, the route :meth:`wgpy.net.trace.Index.route` picks for a
        packet from ``src`` (any source of ``src_atom``): the rules in order, each looking up
        its table for the atoms no earlier rule settled."""
        found = view.routes.get(src_atom)
        if found is not None:
            return found
        size = len(view.dst) - 1
        out: list[Route | None] = [None] * size
        settled = bytearray(size)
        for rule in self.index.rules[host.name]:
            if rule.fwmark is not None and not rule.invert:
                continue  # our packets carry no mark
            if rule.source is not None and (
                rule.source.version != src.version or src not in rule.source
            ):
                continue
            first, last = 0, size
            if rule.destination is not None:
                if rule.destination.version != self.version:
                    continue
                found_cut = self.ends.cut(rule.destination)
                if found_cut is None:
                    continue
                first, last = view.at[found_cut[0]], view.at[found_cut[1]]
            lpm = self._lpm(host, view, rule.table)
            if lpm is None:
                continue
            suppress = rule.suppress_prefixlength
            for atom in range(first, last):
                if settled[atom]:
                    continue
                match = lpm[atom]
                if match is None or (suppress is not None and match[1] <= suppress):
                    continue
                out[atom] = match[0]
                settled[atom] = 1
        view.routes[src_atom] = out
        return out

    def _peers(self, view: _View, wg: _Wg) -> list[str | None]:
        """Per destination atom of the host, the peer of ``wg`` that the longest AllowedIPs
        match picks (the table's own rule: of equal prefixes, the last peer's)."""
        found = view.peers.get(wg.interface.name)
        if found is None:
            found = self._paint(
                view.at,
                len(view.dst) - 1,
                ((p, peer.public_key) for peer in wg.interface.peers for p in peer.allowed_ips),
            )
            view.peers[wg.interface.name] = found
        return found

    def owner_map(self, wg: _Wg) -> _Owners:
        """The interface's source check: the owner per run of its host's destination atoms
        (the atoms cut at every AllowedIPs prefix of the host), runs of one owner joined."""
        found = self.owners.get(wg)
        if found is not None:
            return found
        view = self.view(wg.host)
        peers = self._peers(view, wg)
        bounds = [0]
        owners: list[str | None] = []
        for atom, owner in enumerate(peers):
            if owners and owners[-1] == owner:
                continue
            if atom:
                bounds.append(view.dst[atom])
            owners.append(owner)
        bounds.append(view.dst[-1])
        made = _Owners(bounds, owners or [None])
        self.owners[wg] = made
        return made

    # ------------------------------------------------------------------ decisions

    def decide(
        self,
        host: Host,
        view: _View,
        in_iface: str | None,
        routes: list[Route | None],
        src: IPAddress,
        atoms: Iterable[int],
        known: list[Decision | None],
    ) -> None:
        """One host's step, into ``known[atom]`` for each of ``atoms``, for the packets from
        a source atom (``src`` one of them, ``routes`` the routes :meth:`_routes` found for
        it) to the destination atom, as :func:`wgpy.net.trace.trace` takes it (without the
        loop check, which the caller makes): deliver, drop with (verdict, cause), hand on to
        (the next interface, the sending key), or NAT (the caller traces those pairs one by
        one). Decided on the atom's first endpoint; the route and peer come from the host's
        tables per atom (:meth:`_routes`, :meth:`_peers`)."""
        here = host.name
        index = self.index
        version = self.version
        state = self.state
        local = self.local
        addresses = self.ends.addresses
        starts = view.dst
        by_key = index.by_key
        firewall = host.firewall.get(version)
        # without nat rules (or for a reply), _postrouting finds nothing
        nat_rules = state == "NEW" and firewall is not None and bool(firewall.postrouting)
        not_forwarded: Decision | None = None
        if in_iface is not None:
            enabled, origin = host.forwarding.get(version, _NO_FORWARDING)
            if not enabled:
                cause = Cause(
                    CauseKind.FORWARDING_OFF,
                    here,
                    in_iface,
                    detail=str(origin),
                    assumption=str(origin) if origin.assumed else None,
                )
                not_forwarded = (_DROP, Verdict.DROPPED, cause)
        no_route: Decision = (_DROP, Verdict.DROPPED, Cause(CauseKind.NO_ROUTE, here))
        # per outgoing interface: its _Wg (None: not WireGuard) and its peer per atom (None:
        # down); per peer key: the decision to hand on to it
        outs: dict[str, tuple[_Wg | None, list[str | None] | None]] = {}
        nexts: dict[tuple[str, str | None], Decision] = {}
        for atom in atoms:
            n = starts[atom]
            if local[n] == here:
                known[atom] = _DELIVERED_HERE
                continue
            if not_forwarded is not None:
                known[atom] = not_forwarded
                continue
            route = routes[atom]
            if route is None:
                known[atom] = no_route
                continue
            out = route.dev
            if route.kind is not RouteKind.UNICAST or out is None:
                cause = Cause(CauseKind.ROUTE_UNREACHABLE, here, detail=route.kind.value)
                known[atom] = (_DROP, Verdict.DROPPED, cause)
                continue
            dst = addresses[n]
            if in_iface is not None:
                verdict = _forward_chain(firewall, version, in_iface, out, src, dst, state)
                if verdict is not None:
                    action, text, origin = verdict
                    if action is Action.UNKNOWN:
                        cause = Cause(CauseKind.UNKNOWN_RULE, here, out, detail=text)
                        known[atom] = (_DROP, Verdict.UNKNOWN, cause)
                        continue
                    if action in (Action.DROP, Action.REJECT):
                        cause = Cause(
                            CauseKind.FORWARD_DROPPED,
                            here,
                            out,
                            detail=text,
                            in_interface=in_iface,
                            assumption=str(origin) if origin.assumed else None,
                        )
                        known[atom] = (_DROP, Verdict.DROPPED, cause)
                        continue
            if nat_rules:
                nat = _postrouting(host, version, in_iface, out, src, dst, state)
                if nat is not None and nat != src:
                    known[atom] = _NAT_HERE
                    continue
            entry = outs.get(out)
            if entry is None:
                found = index.wg.get((here, out))
                entry = outs[out] = (
                    found,
                    self._peers(view, found) if found is not None and found.interface.up else None,
                )
            wg, peers = entry
            if wg is None:
                interface = host.interface(out)
                lan_to = index.lans.get(dst)
                if lan_to is not None and lan_to.host == here and lan_to.interface == out:
                    known[atom] = _DELIVERED_HERE
                    continue
                cause = Cause(
                    CauseKind.NOT_INTO_TUNNEL,
                    here,
                    out,
                    detail=f"{route.prefix} dev {out} ({route.origin})"
                    + ("" if interface is not None else ", an interface the model does not know"),
                )
                known[atom] = (_DROP, Verdict.DROPPED, cause)
                continue
            if peers is None:
                known[atom] = (_DROP, Verdict.DROPPED, Cause(CauseKind.INTERFACE_DOWN, here, out))
                continue
            peer_key = peers[atom]  # the owner of the longest match, as trace's
            decision = nexts.get((out, peer_key))
            if decision is None:
                decision = self._into(wg, out, peer_key, by_key)
                nexts[(out, peer_key)] = decision
            known[atom] = decision

    @staticmethod
    def _into(wg: _Wg, out: str, peer_key: str | None, by_key: dict[str, _Wg]) -> Decision:
        """Into ``wg`` (named ``out``) for ``peer_key``: hand on, or why not."""
        here = wg.host.name
        if peer_key is None:
            return (_DROP, Verdict.DROPPED, Cause(CauseKind.NO_PEER, here, out))
        nxt = by_key.get(peer_key)
        if nxt is None:
            cause = Cause(CauseKind.UNKNOWN_PEER, here, out, peer=peer_key)
            return (_DROP, Verdict.UNKNOWN, cause)
        sender_key = wg.interface.public_key
        if sender_key is None or sender_key not in nxt.keys:
            cause = Cause(
                CauseKind.NO_HANDSHAKE, nxt.host.name, nxt.interface.name, peer=sender_key
            )
            return (_DROP, Verdict.DROPPED, cause)
        if not session_can_start(wg, peer_key, nxt, sender_key):
            cause = Cause(CauseKind.NO_ENDPOINT, here, out, peer=peer_key)
            return (_DROP, Verdict.DROPPED, cause)
        return (_NEXT, nxt, sender_key)

    # ------------------------------------------------------------------ the walk

    def start(self, sources: Ranges, only: dict[int, Ranges] | None = None) -> None:
        """Push the packets of every source in ``sources`` to every target (or to the
        targets ``only`` gives it) until each is delivered or dropped."""
        ends = self.ends
        frontier: dict[tuple[str, str | None], list[tuple[Ranges, Ranges]]] = {}
        for n in iv.indices(sources):
            targets = ends.all if only is None else only.get(n, ())
            if not targets:
                continue
            address = ends.addresses[n]
            start = ends.starts[n]
            if start in self.index.hosts:
                where: tuple[str, str | None] = (start, None)
            else:
                lan = self.index.lans[address]
                where = (lan.host, lan.interface)
            frontier.setdefault(where, []).append((((n, n + 1),), targets))
        self._walk(frontier)

    def _walk(self, frontier: dict[tuple[str, str | None], list[tuple[Ranges, Ranges]]]) -> None:
        visited: dict[tuple[str, str | None], list[tuple[Ranges, Ranges]]] = {}
        first = True
        for _ in range(MAX_HOPS):
            if not frontier:
                return
            after: dict[tuple[str, str | None], list[tuple[Ranges, Ranges]]] = {}
            for where, regions in frontier.items():
                for sources, targets in _merge(regions):
                    pieces = [(sources, targets)]
                    if where[1] is not None:
                        pieces = self._loops(where, pieces, visited.setdefault(where, []))
                    for piece_sources, piece_targets in pieces:
                        self._step(where, piece_sources, piece_targets, after, first)
            frontier = after
            first = False
        for (host, in_iface), regions in frontier.items():
            cause = Cause(CauseKind.LOOP, host, in_iface, detail=f"{MAX_HOPS} hops")
            for sources, targets in regions:
                self.blocks.append(Block(sources, targets, (Verdict.DROPPED, cause)))

    def _loops(
        self,
        where: tuple[str, str | None],
        pieces: list[tuple[Ranges, Ranges]],
        seen: list[tuple[Ranges, Ranges]],
    ) -> list[tuple[Ranges, Ranges]]:
        """Pairs back at a host and interface they passed: the trace's loop."""
        cause = Cause(CauseKind.LOOP, where[0], where[1])
        for old_sources, old_targets in seen:
            left: list[tuple[Ranges, Ranges]] = []
            for sources, targets in pieces:
                both_s = iv.intersect(sources, old_sources)
                both_t = iv.intersect(targets, old_targets) if both_s else ()
                if not both_t:
                    left.append((sources, targets))
                    continue
                self.blocks.append(Block(both_s, both_t, (Verdict.DROPPED, cause)))
                rest_s = iv.subtract(sources, both_s)
                if rest_s:
                    left.append((rest_s, targets))
                rest_t = iv.subtract(targets, both_t)
                if rest_t:
                    left.append((both_s, rest_t))
            pieces = left
        seen.extend(pieces)
        return pieces

    def _step(
        self,
        where: tuple[str, str | None],
        sources: Ranges,
        targets: Ranges,
        after: dict[tuple[str, str | None], list[tuple[Ranges, Ranges]]],
        first: bool,
    ) -> None:
        name, in_iface = where
        host = self.index.hosts[name]
        view = self.view(host)
        addresses = self.ends.addresses
        blocks = self.blocks
        size = len(view.dst) - 1
        for src_atom, src_part in iv.split(sources, view.src):
            key = (name, in_iface, src_atom)
            known = self.decisions.get(key)
            if known is None:
                known = self.decisions[key] = [None] * size
            src = addresses[view.src[src_atom]]
            routes = self._routes(host, view, src_atom, src)
            pieces = iv.split(targets, view.dst)
            missing = [atom for atom, _ in pieces if known[atom] is None]
            if missing:
                self.decide(host, view, in_iface, routes, src, missing, known)
            # atoms decided alike travel on together: decision → their parts
            alike: dict[Decision, list[Ranges]] = {}
            for dst_atom, dst_part in pieces:
                decision = known[dst_atom]
                assert decision is not None
                parts = alike.get(decision)
                if parts is None:
                    alike[decision] = [dst_part]
                else:
                    parts.append(dst_part)
            for decision, parts in alike.items():
                dst_part = parts[0] if len(parts) == 1 else iv.union_all(chain(*parts))
                kind = decision[0]
                if kind == _NEXT:
                    nxt = cast(_Wg, decision[1])
                    owners = self.owners.get(nxt) or self.owner_map(nxt)
                    if len(src_part) == 1 and not (first and len(dst_part) > 1):
                        # the common case: one range of sources, in one atom of the owners
                        lo, hi = src_part[0]
                        bounds = owners.bounds
                        atom = bisect_right(bounds, lo) - 1
                        if hi <= bounds[atom + 1] and owners.owners[atom] == decision[2]:
                            arrivals = after.get(nxt.where)
                            if arrivals is None:
                                after[nxt.where] = [(src_part, dst_part)]
                            else:
                                arrivals.append((src_part, dst_part))
                            continue
                    self._hand_on(decision, src_part, dst_part, after, first)
                elif kind == _DELIVER:
                    blocks.append(Block(src_part, dst_part, DELIVERED))
                elif kind == _DROP:
                    blocks.append(Block(src_part, dst_part, (decision[1], decision[2])))
                else:
                    blocks.append(Block(src_part, dst_part, PER_PAIR))

    def _hand_on(
        self,
        decision: Decision,
        sources: Ranges,
        targets: Ranges,
        after: dict[tuple[str, str | None], list[tuple[Ranges, Ranges]]],
        first: bool,
    ) -> None:
        nxt = cast(_Wg, decision[1])
        sender = cast(str, decision[2])
        owners = self.owners.get(nxt) or self.owner_map(nxt)
        bounds = owners.bounds
        pieces: list[tuple[int, Ranges]]
        if len(sources) == 1:  # often one range in one atom: no cutting
            atom = bisect_right(bounds, sources[0][0]) - 1
            if sources[0][1] <= bounds[atom + 1]:
                pieces = [(atom, sources)]
            else:
                pieces = iv.split(sources, bounds)
        else:
            pieces = iv.split(sources, bounds)
        for atom, part in pieces:
            owner = owners.owners[atom]
            if owner == sender:
                if first and len(targets) > 1:
                    part, targets_here = self.ends.widen(part, targets)
                else:
                    targets_here = targets
                arrivals = after.get(nxt.where)
                if arrivals is None:
                    after[nxt.where] = [(part, targets_here)]
                else:
                    arrivals.append((part, targets_here))
                continue
            holder = "no peer" if owner is None else f"peer {_short(owner)}"
            cause = Cause(
                CauseKind.DISALLOWED_SOURCE,
                nxt.host.name,
                nxt.interface.name,
                peer=sender,
                detail=holder,
            )
            self.blocks.append(Block(part, targets, (Verdict.DROPPED, cause)))


def _merge(regions: list[tuple[Ranges, Ranges]]) -> list[tuple[Ranges, Ranges]]:
    """Regions with the same targets as one (their sources joined)."""
    if len(regions) == 1:
        return regions
    by_targets: dict[Ranges, list[tuple[int, int]]] = {}
    for sources, targets in regions:
        by_targets.setdefault(targets, []).extend(sources)
    return [(iv.union_all(pieces), targets) for targets, pieces in by_targets.items()]


def merge_blocks(ends: Endpoints, blocks: list[Block]) -> list[Block]:
    """Fewer, larger blocks with the same answers: pairs of no interest (a host with itself)
    dropped or added where that joins blocks of one outcome."""
    current: list[Block] = []
    for block in blocks:
        if ends.pairs(block.sources, block.targets) == 0:
            continue
        sources, targets = ends.widen(block.sources, block.targets)
        current.append(Block(sources, targets, block.outcome))
    for _ in range(3):
        by_targets: dict[tuple[Hashable, Ranges], list[tuple[int, int]]] = {}
        for block in current:
            by_targets.setdefault((block.outcome, block.targets), []).extend(block.sources)
        by_sources: dict[tuple[Hashable, Ranges], list[tuple[int, int]]] = {}
        for (outcome, joined), pieces in by_targets.items():
            by_sources.setdefault((outcome, iv.union_all(pieces)), []).extend(joined)
        merged = [
            Block(sources, iv.union_all(pieces), outcome)
            for (outcome, sources), pieces in by_sources.items()
        ]
        if len(merged) == len(current):
            return merged
        current = merged
    return current


def run(index: Index, ends: Endpoints, version: int, state: str) -> list[Block]:
    """Every source's packet to every target of one version: blocks of (source, target)."""
    flow = Flow(index, ends, version, state)
    flow.start(ends.all)
    return merge_blocks(ends, flow.blocks)
