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

from collections.abc import Iterable
from dataclasses import dataclass, field

from wgpy.net.model import IPAddress, Network
from wgpy.net.trace import Cause, Index, Trace, Verdict, trace

__all__ = ["Endpoint", "Group", "PairResult", "Report", "check", "endpoints", "ping"]


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


@dataclass
class Group:
    cause: Cause
    #: "request" or "reply": which leg of the ping died
    leg: str
    pairs: list[PairResult] = field(default_factory=list)


@dataclass
class Report:
    network: Network
    results: list[PairResult]
    groups: list[Group]

    @property
    def reachable(self) -> int:
        return sum(1 for r in self.results if r.reachable)

    @property
    def unknown(self) -> int:
        return sum(1 for r in self.results if r.unknown)


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


def check(network: Network, only: Iterable[tuple[Endpoint, Endpoint]] | None = None) -> Report:
    """Every ordered pair (or ``only`` these), grouped by the cause of each failure."""
    index = Index(network)
    todo = only if only is not None else pairs(endpoints(network))
    results = [ping(index, source, target) for source, target in todo]
    groups: dict[tuple[Cause, str], Group] = {}
    for result in results:
        failed = result.failed
        if failed is None or failed.cause is None:
            continue
        leg = "request" if failed is result.request else "reply"
        key = (failed.cause, leg)
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(failed.cause, leg)
        group.pairs.append(result)
    ordered = sorted(
        groups.values(), key=lambda g: (-len(g.pairs), g.cause.host, g.cause.kind.value)
    )
    return Report(network, results, ordered)
