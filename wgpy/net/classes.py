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
:func:`wgpy.net.trace.trace` (:func:`decide`): deliver, drop with a cause, or hand it to the
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
from dataclasses import dataclass

from wgpy.net import intervals as iv
from wgpy.net.intervals import Ranges
from wgpy.net.model import Action, Host, IPAddress, IPNetwork, RouteKind
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

    def span(self, prefix: IPNetwork) -> tuple[int, int]:
        first = int(prefix.network_address)
        return (
            bisect_left(self.values, first),
            bisect_right(self.values, first + prefix.num_addresses - 1),
        )

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
    """One host's atoms over the endpoints: where destinations and sources are cut."""

    dst: list[int]
    src: list[int]


@dataclass
class _Owners:
    """One WireGuard interface's source check over the endpoints: the owner per atom."""

    bounds: list[int]
    owners: list[str | None]


# Decisions, as tuples for speed: (kind, ...).
_DELIVER = 0
_DROP = 1
_NEXT = 2
_NAT = 3
Decision = tuple[int, object, object]


def decide(
    index: Index, host: Host, in_iface: str | None, src: IPAddress, dst: IPAddress, state: str
) -> Decision:
    """One host's step for one packet, as :func:`wgpy.net.trace.trace` takes it (without
    the loop check, which the caller makes): deliver, drop with (verdict, cause), hand on to
    (the next interface, the sending key), or NAT (the caller traces those pairs one by one).
    """
    here = host.name
    if index.local.get(dst) == here:
        return (_DELIVER, None, None)
    version = dst.version
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
            return (_DROP, Verdict.DROPPED, cause)
    route = index.route(host, src, dst)
    if route is None:
        return (_DROP, Verdict.DROPPED, Cause(CauseKind.NO_ROUTE, here))
    if route.kind is not RouteKind.UNICAST or route.dev is None:
        cause = Cause(CauseKind.ROUTE_UNREACHABLE, here, detail=route.kind.value)
        return (_DROP, Verdict.DROPPED, cause)
    out = route.dev
    if in_iface is not None:
        verdict = _forward_chain(
            host.firewall.get(version), version, in_iface, out, src, dst, state
        )
        if verdict is not None:
            action, text, origin = verdict
            if action is Action.UNKNOWN:
                cause = Cause(CauseKind.UNKNOWN_RULE, here, out, detail=text)
                return (_DROP, Verdict.UNKNOWN, cause)
            if action in (Action.DROP, Action.REJECT):
                cause = Cause(
                    CauseKind.FORWARD_DROPPED,
                    here,
                    out,
                    detail=text,
                    in_interface=in_iface,
                    assumption=str(origin) if origin.assumed else None,
                )
                return (_DROP, Verdict.DROPPED, cause)
    nat = _postrouting(host, version, in_iface, out, src, dst, state)
    if nat is not None and nat != src:
        return (_NAT, None, None)
    wg = index.wg.get((here, out))
    if wg is None:
        interface = host.interface(out)
        lan_to = index.lans.get(dst)
        if lan_to is not None and lan_to.host == here and lan_to.interface == out:
            return (_DELIVER, None, None)
        cause = Cause(
            CauseKind.NOT_INTO_TUNNEL,
            here,
            out,
            detail=f"{route.prefix} dev {out} ({route.origin})"
            + ("" if interface is not None else ", an interface the model does not know"),
        )
        return (_DROP, Verdict.DROPPED, cause)
    if not wg.interface.up:
        return (_DROP, Verdict.DROPPED, Cause(CauseKind.INTERFACE_DOWN, here, out))
    peer_key = wg.table.lookup(dst)  # the owner of the longest match, as trace's match
    if peer_key is None:
        return (_DROP, Verdict.DROPPED, Cause(CauseKind.NO_PEER, here, out))
    nxt = index.by_key.get(peer_key)
    if nxt is None:
        cause = Cause(CauseKind.UNKNOWN_PEER, here, out, peer=peer_key)
        return (_DROP, Verdict.UNKNOWN, cause)
    sender_key = wg.interface.public_key
    if sender_key is None or sender_key not in nxt.keys:
        cause = Cause(CauseKind.NO_HANDSHAKE, nxt.host.name, nxt.interface.name, peer=sender_key)
        return (_DROP, Verdict.DROPPED, cause)
    return (_NEXT, nxt, sender_key)


class Flow:
    """The packets of one IP version in one conntrack state ("NEW" for requests,
    "ESTABLISHED" for replies), pushed through the network as regions."""

    def __init__(self, index: Index, ends: Endpoints, version: int, state: str) -> None:
        self.index = index
        self.ends = ends
        self.version = version
        self.state = state
        self.views: dict[str, _View] = {}
        self.owners: dict[int, _Owners] = {}  # by id of the index's _Wg
        self.decisions: dict[tuple[str, str | None, int, int], Decision] = {}
        self.blocks: list[Block] = []

    # ------------------------------------------------------------------ atoms

    def _bounds(self, prefixes: Iterable[IPNetwork], points: Iterable[int]) -> list[int]:
        cuts = {0, len(self.ends.addresses)}
        span = self.ends.span
        for prefix in set(prefixes):
            if prefix.version == self.version:
                lo, hi = span(prefix)
                cuts.add(lo)
                cuts.add(hi)
        for n in points:
            cuts.add(n)
            cuts.add(n + 1)
        return sorted(cuts)

    def view(self, host: Host) -> _View:
        found = self.views.get(host.name)
        if found is not None:
            return found
        dst: list[IPNetwork] = [r.prefix for r in host.routes]
        src: list[IPNetwork] = []
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
        for interface in host.wireguard():
            for peer in interface.peers:
                dst.extend(peer.allowed_ips)
        number = self.ends.number
        points = [number[a] for a in host.addresses() if a in number]
        points.extend(
            number[a] for a, lan in self.index.lans.items() if lan.host == host.name and a in number
        )
        made = _View(self._bounds(dst, points), self._bounds(src, ()))
        self.views[host.name] = made
        return made

    def owner_map(self, wg: _Wg) -> _Owners:
        found = self.owners.get(id(wg))
        if found is not None:
            return found
        prefixes = [p for peer in wg.interface.peers for p in peer.allowed_ips]
        bounds = self._bounds(prefixes, ())
        owners: list[str | None] = []
        addresses = self.ends.addresses
        for k in range(len(bounds) - 1):
            if bounds[k] == bounds[k + 1]:
                owners.append(None)
                continue
            owners.append(wg.table.lookup(addresses[bounds[k]]))
        made = _Owners(bounds, owners)
        self.owners[id(wg)] = made
        return made

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
        index = self.index
        host = index.hosts[name]
        view = self.view(host)
        addresses = self.ends.addresses
        blocks = self.blocks
        decisions = self.decisions
        for src_atom, src_part in iv.split(sources, view.src):
            src = addresses[src_part[0][0]]
            # atoms decided alike travel on together: (kind, next interface or cause) → parts
            alike: dict[tuple[object, ...], tuple[Decision, list[tuple[int, int]]]] = {}
            for dst_atom, dst_part in iv.split(targets, view.dst):
                key = (name, in_iface, src_atom, dst_atom)
                decision = decisions.get(key)
                if decision is None:
                    dst = addresses[dst_part[0][0]]
                    decision = decide(index, host, in_iface, src, dst, self.state)
                    decisions[key] = decision
                kind = decision[0]
                same = (kind, id(decision[1]), decision[2]) if kind == _NEXT else decision
                entry = alike.get(same)
                if entry is None:
                    alike[same] = (decision, list(dst_part))
                else:
                    entry[1].extend(dst_part)
            for decision, parts in alike.values():
                dst_part = iv.union_all(parts)
                kind = decision[0]
                if kind == _NEXT:
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
        nxt = decision[1]
        sender = decision[2]
        assert isinstance(nxt, _Wg) and isinstance(sender, str)
        owners = self.owner_map(nxt)
        for atom, part in iv.split(sources, owners.bounds):
            owner = owners.owners[atom]
            if owner == sender:
                if first and len(targets) > 1:
                    part, targets_here = self.ends.widen(part, targets)
                else:
                    targets_here = targets
                after.setdefault((nxt.host.name, nxt.interface.name), []).append(
                    (part, targets_here)
                )
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
