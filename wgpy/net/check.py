"""Can every host reach every other, both ways? Answers for all ordered pairs, grouped by
cause, each cause with the smallest change that fixes it.

A pair (X, Y) is reachable when a packet from X's address reaches Y's and Y's reply reaches
X back (through the source NATs the request went through, undone by conntrack): a ping. The
addresses are every WireGuard interface's Address and one representative of every LAN behind
a host (:class:`~wgpy.net.model.Lan`), paired within one IP version, never with the same host.

Pairs that fail for the same reason — the same kind at the same host, interface and peer —
form one :class:`Group`, so that a 1,000-host network with one mistake prints one line.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from wgpy.net import intervals as iv
from wgpy.net.classes import PER_PAIR, Block, Endpoints, merge_blocks, run
from wgpy.net.model import Action, IPAddress, Network
from wgpy.net.trace import Cause, Index, Trace, Verdict, trace

__all__ = [
    "REACHABLE",
    "Endpoint",
    "Group",
    "Outcome",
    "PairResult",
    "Report",
    "check",
    "endpoints",
    "pairs",
    "per_pair",
    "ping",
]


@dataclass(frozen=True)
class Endpoint:
    """One address that sends and answers pings: a host's, or a LAN's representative."""

    host: str
    address: IPAddress
    #: set for a LAN's representative: the LAN's prefix as text
    lan: str | None = None

    @property
    def start(self) -> str:
        """Where its packets start: the host, or for a LAN the representative itself."""
        return str(self.address) if self.lan else self.host

    @property
    def label(self) -> str:
        if self.lan:
            return f"{self.host}'s LAN {self.lan} ({self.address})"
        return f"{self.host} ({self.address})"


@dataclass
class PairResult:
    source: Endpoint
    target: Endpoint
    request: Trace
    reply: Trace | None

    @property
    def reachable(self) -> bool:
        return self.reply is not None and self.reply.verdict is Verdict.DELIVERED

    @property
    def failed(self) -> Trace | None:
        """The leg that did not arrive, or None when the pair is reachable."""
        if self.request.verdict is not Verdict.DELIVERED:
            return self.request
        if self.reply is not None and self.reply.verdict is not Verdict.DELIVERED:
            return self.reply
        return None

    @property
    def unknown(self) -> bool:
        failed = self.failed
        return failed is not None and failed.verdict is Verdict.UNKNOWN


@dataclass(frozen=True)
class Outcome:
    """What one ping comes to: reachable, or the leg that died, how and why."""

    verdict: Verdict
    cause: Cause | None = None
    #: "request" or "reply": which leg of the ping died (None when reachable)
    leg: str | None = None

    @property
    def reachable(self) -> bool:
        return self.verdict is Verdict.DELIVERED

    @property
    def unknown(self) -> bool:
        return self.verdict is Verdict.UNKNOWN

    @classmethod
    def of(cls, result: PairResult) -> Outcome:
        failed = result.failed
        if failed is None:
            return REACHABLE
        leg = "request" if failed is result.request else "reply"
        return cls(failed.verdict, failed.cause, leg)


REACHABLE = Outcome(Verdict.DELIVERED)


class _Side:
    """The endpoints of one IP version: numbered in address order (:class:`Endpoints`) and
    as :class:`Endpoint` objects, with the report's blocks of pairs over them."""

    def __init__(self, found: list[Endpoint]) -> None:
        self.endpoints = sorted(found, key=lambda e: int(e.address))
        self.ends = Endpoints(
            [e.address for e in self.endpoints],
            [e.host for e in self.endpoints],
            [e.start for e in self.endpoints],
        )
        self.blocks: list[Block] = []

    def real_pairs(self, block: Block) -> Iterator[tuple[Endpoint, Endpoint]]:
        for n in iv.indices(block.sources):
            source = self.endpoints[n]
            for m in iv.indices(block.targets):
                target = self.endpoints[m]
                if source.host != target.host:
                    yield source, target


@dataclass
class Group:
    """The pairs whose ping dies the same way: the same leg, kind, host, interface, peer."""

    cause: Cause
    #: "request" or "reply": which leg of the ping died
    leg: str
    count: int = 0
    _report: Report | None = field(default=None, repr=False)
    _blocks: list[tuple[_Side, Block]] = field(default_factory=list, repr=False)
    _pairs: list[PairResult] | None = field(default=None, repr=False)

    def endpoint_pairs(self) -> Iterator[tuple[Endpoint, Endpoint]]:
        """Every pair of the group (source, target), without tracing them."""
        for side, block in self._blocks:
            yield from side.real_pairs(block)

    def sample(self, count: int) -> list[PairResult]:
        """The first ``count`` pairs of the group, traced."""
        assert self._report is not None
        return [self._report.ping(s, t) for s, t in itertools.islice(self.endpoint_pairs(), count)]

    @property
    def pairs(self) -> list[PairResult]:
        """Every pair of the group, traced: for small networks (a trace per pair)."""
        if self._pairs is None:
            self._pairs = self.sample(self.count)
        return self._pairs


class Report:
    """The answer for every ordered pair, held as blocks of pairs with one outcome each
    (never one object per pair): counts, groups by cause, and any single pair on request."""

    def __init__(self, network: Network, index: Index, found: list[Endpoint]) -> None:
        self.network = network
        self.index = index
        self.endpoints = found
        self.sides: dict[int, _Side] = {}
        self.total = 0
        self.reachable = 0
        self.unknown = 0
        self.groups: list[Group] = []
        self._results: list[PairResult] | None = None

    def _side_of(self, source: Endpoint, target: Endpoint) -> tuple[_Side, int, int]:
        side = self.sides.get(source.address.version)
        if side is None or source.address.version != target.address.version:
            raise ValueError(f"no pair {source.label} → {target.label} in the report")
        number = side.ends.number
        if source.address not in number or target.address not in number:
            raise ValueError(f"no pair {source.label} → {target.label} in the report")
        return side, number[source.address], number[target.address]

    def outcome(self, source: Endpoint, target: Endpoint) -> Outcome:
        """The answer for one pair, from the blocks (no tracing)."""
        side, n, m = self._side_of(source, target)
        for block in side.blocks:
            if iv.contains(block.sources, n) and iv.contains(block.targets, m):
                assert isinstance(block.outcome, Outcome)
                return block.outcome
        raise ValueError(f"no pair {source.label} → {target.label} in the report")

    def ping(self, source: Endpoint, target: Endpoint) -> PairResult:
        """One pair traced hop by hop (the reference the blocks agree with)."""
        return ping(self.index, source, target)

    def pairs(self) -> Iterator[tuple[Endpoint, Endpoint, Outcome]]:
        """Every pair in the order of :func:`pairs`, with its outcome."""
        for source, target in pairs(self.endpoints):
            yield source, target, self.outcome(source, target)

    @property
    def results(self) -> list[PairResult]:
        """Every pair traced: for small networks (two traces per pair)."""
        if self._results is None:
            self._results = [self.ping(s, t) for s, t in pairs(self.endpoints)]
        return self._results

    def count(
        self,
        other: Report,
        mine: Callable[[Outcome], bool],
        theirs: Callable[[Outcome], bool],
        only: Group | None = None,
    ) -> int:
        """How many pairs have an outcome ``mine`` accepts here (among ``only``'s pairs, if
        given) and one ``theirs`` accepts in ``other``, a report on the same endpoints."""
        total = 0
        for version, side in self.sides.items():
            other_side = other.sides.get(version)
            if only is not None:
                own = [b for s, b in only._blocks if s is side]
            else:
                own = [b for b in side.blocks if mine(b.outcome)]  # type: ignore[arg-type]
            if other_side is None or other_side.ends.addresses != side.ends.addresses:
                raise ValueError("the reports are about different endpoints")
            for block in own:
                for their in other_side.blocks:
                    if not theirs(their.outcome):  # type: ignore[arg-type]
                        continue
                    sources = iv.intersect(block.sources, their.sources)
                    targets = iv.intersect(block.targets, their.targets) if sources else ()
                    if targets:
                        total += side.ends.pairs(sources, targets)
        return total


def endpoints(network: Network) -> list[Endpoint]:
    """Every WireGuard Address of every host, then every LAN's representative."""
    found: list[Endpoint] = []
    seen: set[IPAddress] = set()
    for host in network.hosts:
        for interface in host.wireguard():
            for address in interface.addresses:
                if address.ip not in seen:
                    seen.add(address.ip)
                    found.append(Endpoint(host.name, address.ip))
    for host in network.hosts:
        for lan in host.lans:
            if lan.representative not in seen:
                seen.add(lan.representative)
                found.append(Endpoint(host.name, lan.representative, str(lan.prefix)))
    return found


def ping(index: Index, source: Endpoint, target: Endpoint) -> PairResult:
    """The request from ``source`` to ``target`` and, if it arrived, the reply."""
    request = trace(index, source.start, source.address, target.address)
    if request.verdict is not Verdict.DELIVERED:
        return PairResult(source, target, request, None)
    arrived = request.arrived_src if request.arrived_src is not None else source.address
    unnat = {(host, new): original for host, original, new in request.nat}
    reply = trace(index, target.start, target.address, arrived, reply=True, unnat=unnat)
    return PairResult(source, target, request, reply)


def pairs(found: list[Endpoint]) -> Iterable[tuple[Endpoint, Endpoint]]:
    for source in found:
        for target in found:
            if source.host != target.host and source.address.version == target.address.version:
                yield source, target


def per_pair(network: Network) -> Iterator[PairResult]:
    """Every ordered pair traced one by one: the reference the grouped check agrees with."""
    index = Index(network)
    for source, target in pairs(endpoints(network)):
        yield ping(index, source, target)


def _stateful(network: Network, version: int) -> bool:
    """Whether a reply can fare otherwise than a request the other way: a FORWARD rule
    limited to conntrack states, or a source NAT rule, on some host."""
    for host in network.hosts:
        firewall = host.firewall.get(version)
        if firewall is None:
            continue
        if any(rule.states is not None for rule in firewall.forward):
            return True
        if any(rule.action in (Action.MASQUERADE, Action.SNAT) for rule in firewall.postrouting):
            return True
    return False


def _answer(index: Index, side: _Side, network: Network, version: int) -> list[Block]:
    """The blocks of (source, target) of one version, each with the ping's outcome."""
    ends = side.ends
    requests = run(index, ends, version, "NEW")
    replies = run(index, ends, version, "ESTABLISHED") if _stateful(network, version) else requests
    out: list[Block] = []

    def one_by_one(block: Block) -> None:
        for source, target in side.real_pairs(block):
            n, m = ends.number[source.address], ends.number[target.address]
            out.append(Block(((n, n + 1),), ((m, m + 1),), Outcome.of(ping(index, source, target))))

    for block in requests:
        verdict: Verdict
        cause: Cause | None
        verdict, cause = block.outcome  # type: ignore[misc]
        if block.outcome == PER_PAIR:
            one_by_one(block)
        elif verdict is not Verdict.DELIVERED:
            out.append(Block(block.sources, block.targets, Outcome(verdict, cause, "request")))
            continue
        else:
            for reply in replies:  # a reply block is of (target, source)
                sources = iv.intersect(block.sources, reply.targets)
                targets = iv.intersect(block.targets, reply.sources) if sources else ()
                if not targets:
                    continue
                part = Block(sources, targets, REACHABLE)
                if reply.outcome == PER_PAIR:
                    one_by_one(part)
                    continue
                verdict, cause = reply.outcome  # type: ignore[misc]
                if verdict is not Verdict.DELIVERED:
                    part.outcome = Outcome(verdict, cause, "reply")
                out.append(part)
    return merge_blocks(ends, out)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a while: the walk makes millions of
    short-lived containers and no cycles, and every full collection would scan them and
    the whole network (a third of a 1,000-host mesh's time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def check(network: Network, only: Iterable[tuple[Endpoint, Endpoint]] | None = None) -> Report:
    """Every ordered pair (or ``only`` these, traced one by one), grouped by the cause of
    each failure."""
    index = Index(network)
    found = endpoints(network)
    report = Report(network, index, found)
    for version in sorted({e.address.version for e in found}):
        report.sides[version] = _Side([e for e in found if e.address.version == version])
    if only is not None:
        for source, target in only:
            side, n, m = report._side_of(source, target)
            outcome = Outcome.of(ping(index, source, target))
            side.blocks.append(Block(((n, n + 1),), ((m, m + 1),), outcome))
    else:
        with _collector_paused():
            for number, side in report.sides.items():
                side.blocks = _answer(index, side, network, number)
    groups: dict[tuple[Cause, str], Group] = {}
    for side in report.sides.values():
        for block in side.blocks:
            answer = block.outcome
            assert isinstance(answer, Outcome)
            outcome = answer
            count = side.ends.pairs(block.sources, block.targets)
            report.total += count
            if outcome.reachable:
                report.reachable += count
                continue
            if outcome.unknown:
                report.unknown += count
            if outcome.cause is None or outcome.leg is None:
                continue
            key = (outcome.cause, outcome.leg)
            group = groups.get(key)
            if group is None:
                group = groups[key] = Group(outcome.cause, outcome.leg, _report=report)
            group.count += count
            group._blocks.append((side, block))
    report.groups = sorted(
        groups.values(),
        key=lambda g: (-g.count, g.cause.host, g.cause.kind.value, g.leg, repr(g.cause)),
    )
    return report
