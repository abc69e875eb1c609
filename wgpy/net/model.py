"""The facts of a WireGuard network that decide where a packet goes, host by host.

A :class:`Network` is hosts; a :class:`Host` is what the kernel consults when it sends,
receives or forwards an IP packet: its interfaces and addresses, its WireGuard interfaces'
peers and AllowedIPs, its routing tables and rules, its forwarding switches and its FORWARD
and NAT rules. Hosts are joined by keys: a peer's public key is another host's interface.

Every fact says where it came from (:class:`Origin`): read from a snapshot, implied by a
wg-quick file (with its file and line), or *assumed* — the Linux default where no input says,
always named, so that an answer resting on an assumption says so. Pure data: nothing here
reads a file or the system.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from typing import TypeAlias

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPNetwork: TypeAlias = IPv4Network | IPv6Network
IPInterface: TypeAlias = IPv4Interface | IPv6Interface

#: wg-quick's routing table and fwmark for a peer with a default route (51820 = 0xca6c)
WG_QUICK_TABLE = "51820"

__all__ = [
    "WG_QUICK_TABLE",
    "Action",
    "FilterRule",
    "Host",
    "IPAddress",
    "IPInterface",
    "IPNetwork",
    "Interface",
    "Lan",
    "Network",
    "Origin",
    "Route",
    "RouteKind",
    "Rule",
    "WgPeer",
]


class Kind(Enum):
    SNAPSHOT = "snapshot"
    CONFIG = "config"
    ASSUMED = "assumed"


@dataclass(frozen=True)
class Origin:
    """Where a fact came from: ``what`` names it for people (``hub.conf:3 Address``,
    ``snapshot of hub``, ``Linux default``)."""

    kind: Kind
    what: str

    @property
    def assumed(self) -> bool:
        return self.kind is Kind.ASSUMED

    def __str__(self) -> str:
        return f"assumed: {self.what}" if self.assumed else self.what


def assumed(what: str) -> Origin:
    return Origin(Kind.ASSUMED, what)


@dataclass
class WgPeer:
    public_key: str
    allowed_ips: list[IPNetwork]
    origin: Origin
    name: str | None = None
    endpoint: str | None = None
    persistent_keepalive: int = 0
    #: the line of each AllowedIPs prefix, for fixes that say where to edit
    prefix_origins: dict[IPNetwork, Origin] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or self.public_key[:8] + "…"


@dataclass
class Interface:
    name: str
    addresses: list[IPInterface]
    origin: Origin
    #: for a WireGuard interface: its public key (None when no input gives it) and peers
    wireguard: bool = False
    public_key: str | None = None
    peers: list[WgPeer] = field(default_factory=list)
    up: bool = True
    #: the wg-quick file this interface came from, for fixes written as config lines
    config_file: str | None = None
    #: the table wg-quick routes each AllowedIPs prefix into (``Table``: auto and main give
    #: "main"); None when AllowedIPs bring no route (``Table = off``, a snapshot: ``wg set``)
    allowed_ips_table: str | None = None


class RouteKind(Enum):
    UNICAST = "unicast"
    BLACKHOLE = "blackhole"
    UNREACHABLE = "unreachable"
    PROHIBIT = "prohibit"


@dataclass(frozen=True)
class Route:
    prefix: IPNetwork
    dev: str | None
    origin: Origin
    table: str = "main"
    via: IPAddress | None = None
    kind: RouteKind = RouteKind.UNICAST
    metric: int = 0


@dataclass(frozen=True)
class Rule:
    """An ``ip rule``: packets that match look up ``table``; ``suppress_prefixlength`` N
    ignores a found route whose prefix is N bits or shorter (wg-quick's main-table rule)."""

    priority: int
    table: str
    origin: Origin
    fwmark: int | None = None
    invert: bool = False
    suppress_prefixlength: int | None = None
    source: IPNetwork | None = None
    destination: IPNetwork | None = None


class Action(Enum):
    ACCEPT = "ACCEPT"
    DROP = "DROP"
    REJECT = "REJECT"
    RETURN = "RETURN"
    MASQUERADE = "MASQUERADE"
    SNAT = "SNAT"
    #: a rule the model could not read: a packet it may match gets an unknown answer
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class FilterRule:
    """One rule of the FORWARD chain or of nat POSTROUTING, in iptables' terms."""

    action: Action
    origin: Origin
    text: str
    in_iface: str | None = None
    out_iface: str | None = None
    in_invert: bool = False
    out_invert: bool = False
    source: IPNetwork | None = None
    destination: IPNetwork | None = None
    #: conntrack states the rule is limited to ({"NEW"}, {"ESTABLISHED", "RELATED"}), or None
    states: frozenset[str] | None = None
    to_source: IPAddress | None = None
    version: int | None = None  # 4 (iptables) or 6 (ip6tables); None: both (nft inet)

    def matches(
        self,
        version: int,
        in_iface: str | None,
        out_iface: str,
        src: IPAddress,
        dst: IPAddress,
        state: str,
    ) -> bool:
        if self.version is not None and self.version != version:
            return False
        if self.in_iface is not None and (_iface_match(self.in_iface, in_iface) == self.in_invert):
            return False
        if self.out_iface is not None and (
            _iface_match(self.out_iface, out_iface) == self.out_invert
        ):
            return False
        if self.source is not None and (self.source.version != version or src not in self.source):
            return False
        if self.destination is not None and (
            self.destination.version != version or dst not in self.destination
        ):
            return False
        return self.states is None or state in self.states


def _iface_match(pattern: str, name: str | None) -> bool:
    if name is None:
        return False
    if pattern.endswith("+"):
        return name.startswith(pattern[:-1])
    return pattern == name


@dataclass
class Firewall:
    """The FORWARD chain (filter) and nat POSTROUTING of one IP version."""

    forward_policy: Action
    policy_origin: Origin
    forward: list[FilterRule] = field(default_factory=list)
    postrouting: list[FilterRule] = field(default_factory=list)


@dataclass(frozen=True)
class Lan:
    """A subnet behind a host on a non-WireGuard interface (or implied by peers' AllowedIPs),
    stood for by one representative address that answers pings."""

    host: str
    prefix: IPNetwork
    representative: IPAddress
    interface: str
    origin: Origin


@dataclass
class Host:
    name: str
    origin: Origin
    interfaces: list[Interface] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    #: ip_forward per IP version and where that came from
    forwarding: dict[int, tuple[bool, Origin]] = field(default_factory=dict)
    firewall: dict[int, Firewall] = field(default_factory=dict)
    lans: list[Lan] = field(default_factory=list)
    #: facts the model could not read, each making the answers it touches unknown
    unknown: list[str] = field(default_factory=list)

    def interface(self, name: str) -> Interface | None:
        for interface in self.interfaces:
            if interface.name == name:
                return interface
        return None

    def addresses(self) -> list[IPAddress]:
        return [a.ip for i in self.interfaces for a in i.addresses]

    def wireguard(self) -> list[Interface]:
        return [i for i in self.interfaces if i.wireguard]


@dataclass
class Network:
    hosts: list[Host]

    def host(self, name: str) -> Host | None:
        for host in self.hosts:
            if host.name == name:
                return host
        return None
