"""``wgpy doctor``: why a tunnel does not work, as findings ranked by severity.

Pure: :func:`diagnose` turns gathered facts (an
:class:`~wgpy.tools.interface.show.InterfaceView` with wgpyd's drop counters, OS route
lookups, lint findings) into :class:`Finding` s, each with its evidence and the change that
fixes it (a ``wg set`` command and the wg-quick line). The command line (``wgpy doctor``, in
:mod:`wgpy.tools.interface.doctor_cli`) gathers the facts.

Checks, most important first: each peer's handshake (never completed, failing as a preshared
key mismatch does, stale), the drops by reason with their top addresses, AllowedIPs that
nothing routes into the interface, the interface MTU against the path to each endpoint, a
missing keepalive behind NAT, then the lint findings of the interface's configuration.
Nothing here ever sees a private or preshared key: the view only says whether they are set.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wgpy import crypto
from wgpy.allowedips import AllowedIPs
from wgpy.config import Config, ConfigError, parse_key
from wgpy.events import explaining_address
from wgpy.tools.files import lint as lint_mod
from wgpy.tools.interface.routes import RouteInfo
from wgpy.tools.interface.show import AddressCount, InterfaceView, PeerView, ago

__all__ = [
    "Facts",
    "Finding",
    "diagnose",
    "endpoint_addresses",
    "endpoint_host",
    "exit_status",
    "from_lint",
    "peer_sides",
    "render_text",
]

ERROR, WARNING, INFO = "error", "warning", "info"
REKEY_AFTER_TIME = 120
REJECT_AFTER_TIME = 180
_RANK = {ERROR: 0, WARNING: 1, INFO: 2}


@dataclass(frozen=True)
class Finding:
    """One thing doctor found: what, the evidence, and how to fix it."""

    severity: str
    code: str
    message: str
    peer: str | None = None
    evidence: list[str] = field(default_factory=list)
    fix: str | None = None
    commands: list[str] = field(default_factory=list)  # ``wg set ...``, ``ip route ...``
    config: list[str] = field(default_factory=list)  # the wg-quick line(s)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Facts:
    """What doctor knows about one live interface."""

    view: InterfaceView
    now: float
    #: the same interface ``watch`` seconds earlier (None without ``--watch``)
    before: InterfaceView | None = None
    watch: float = 0.0
    #: route lookups by address (None: the interface is not in this namespace)
    routes: dict[str, RouteInfo] | None = None
    lint: list[lint_mod.Finding] = field(default_factory=list)
    #: the interface's MTU (None: unknown)
    mtu: int | None = None
    #: route lookups of the peers' endpoint hosts (:func:`endpoint_host`), for the path MTU
    endpoint_routes: dict[str, RouteInfo] = field(default_factory=dict)
    #: the interface's addresses with their prefix length (``10.0.0.1/24``; None: unknown)
    addresses: list[str] | None = None
    #: what the peers' own configs (files or ``wg showconf`` snapshots) say about this
    #: interface, by the peer's public key (:func:`peer_sides`); a peer not here is unseen
    peer_sides: dict[str, PeerSide] = field(default_factory=dict)


@dataclass(frozen=True)
class PeerSide:
    """A peer's own [Peer] section for this interface, from its config file."""

    file: str
    keepalive: int  # its PersistentKeepalive toward this interface (0: none)
    has_endpoint: bool  # whether it has an Endpoint for this interface (it initiates)


def peer_sides(view: InterfaceView, configs: list[Config]) -> dict[str, PeerSide]:
    """The configs that are this interface's peers (their PrivateKey gives a peer's public
    key) and hold a [Peer] for it, as :class:`PeerSide` by the peer's key."""
    found: dict[str, PeerSide] = {}
    for config in configs:
        iface = config.interface
        if iface is None or iface.private_key is None:
            continue
        try:
            raw = parse_key(iface.private_key)
        except ConfigError:
            continue
        key = base64.b64encode(crypto.public_key(raw)).decode()
        for section in config.peers:
            if section.public_key is None or section.public_key.text != view.public_key:
                continue
            value = section.value("PersistentKeepalive")
            keepalive = int(value.text) if value and value.text.isdigit() else 0
            found[key] = PeerSide(config.filename, keepalive, section.endpoint is not None)
    return found


#: WireGuard's outer overhead per data packet: IP header + UDP 8 + WireGuard 32 (header 16,
#: tag 16)
OVERHEAD = {4: 60, 6: 80}
#: where a peer's endpoint suggests NAT on the way (RFC 1918, shared CGNAT space, ULA)
_PRIVATE = [
    ipaddress.ip_network(text)
    for text in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
]


def endpoint_host(endpoint: str | None) -> str | None:
    """The address of an endpoint (``1.2.3.4:51820``, ``[fd00::1]:51820``), or None."""
    if not endpoint or ":" not in endpoint:
        return None
    host = endpoint.rsplit(":", 1)[0].strip("[]").split("%", 1)[0]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def route_addresses(view: InterfaceView) -> list[str]:
    """The addresses whose OS routes :func:`diagnose` wants: the first address of every peer
    prefix (but /0) and the top destinations of no_peer drops."""
    wanted: list[str] = []
    for peer in view.peers:
        for text in peer.allowed_ips:
            network = ipaddress.ip_network(text, strict=False)
            if network.prefixlen:
                wanted.append(str(network.network_address))
    for (_peer, reason), entries in view.destinations.items():
        if reason == "no_peer":
            wanted += [entry.address for entry in entries]
    return list(dict.fromkeys(wanted))


def endpoint_addresses(view: InterfaceView) -> list[str]:
    """The peers' endpoint hosts, whose routes give the path MTU."""
    hosts = [endpoint_host(peer.endpoint) for peer in view.peers]
    return list(dict.fromkeys(host for host in hosts if host is not None))


def _table(view: InterfaceView) -> AllowedIPs[str]:
    table: AllowedIPs[str] = AllowedIPs()
    for peer in view.peers:
        for text in peer.allowed_ips:
            table.insert(ipaddress.ip_network(text, strict=False), peer.public_key)
    return table


def _host(address: str) -> str:
    return f"{address}/{32 if ipaddress.ip_address(address).version == 4 else 128}"


def _allowed_fix(ifname: str, peer: PeerView, extra: str) -> tuple[list[str], list[str]]:
    """``wg set`` and the wg-quick line that give ``peer`` the prefix ``extra`` too (the
    prefixes of its list that ``extra`` covers dropped: wg set replaces the whole list)."""
    wider = ipaddress.ip_network(extra, strict=False)
    new = [text for text in peer.allowed_ips if not _covered(text, wider)] + [extra]
    return (
        [f"wg set {ifname} peer {peer.public_key} allowed-ips {','.join(new)}"],
        [f"AllowedIPs = {', '.join(new)}   # in the [Peer] with PublicKey = {peer.public_key}"],
    )


def _covered(text: str, wider: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    network = ipaddress.ip_network(text, strict=False)
    return network.version == wider.version and network != wider and network.subnet_of(wider)  # type: ignore[arg-type]


# --- 1. handshakes ---------------------------------------------------------------------------


def _handshakes(facts: Facts, out: list[Finding]) -> None:
    view = facts.view
    before = {p.public_key: p for p in facts.before.peers} if facts.before else {}
    for peer in view.peers:
        key = peer.public_key
        earlier = before.get(key)
        sent = peer.tx_bytes - earlier.tx_bytes if earlier else peer.tx_bytes
        received = peer.rx_bytes - earlier.rx_bytes if earlier else peer.rx_bytes
        window = f" in the last {facts.watch:g} s" if earlier else ""
        traffic = f"sent {sent} bytes, received {received} bytes{window}"
        if peer.latest_handshake == 0:
            if peer.endpoint is None:
                out.append(
                    Finding(
                        INFO,
                        "handshake-waiting",
                        f"peer {key} has no endpoint and has not connected yet: this side "
                        "waits for it to start the handshake",
                        key,
                        [traffic],
                        "if this side should connect, give the peer an endpoint",
                        [f"wg set {view.name} peer {key} endpoint HOST:PORT"],
                        ["Endpoint = HOST:PORT"],
                    )
                )
            elif failing := _failing(view, peer):
                out.append(failing)
            elif peer.tx_bytes == 0:
                out.append(
                    Finding(
                        INFO,
                        "handshake-not-tried",
                        f"peer {key}: no handshake attempted yet (nothing was sent to it); send "
                        "traffic or set a PersistentKeepalive, then run doctor again",
                        key,
                        [f"endpoint {peer.endpoint}", traffic],
                        "send traffic through the tunnel (e.g. ping an address in its "
                        "AllowedIPs), or keep the tunnel up",
                        [f"wg set {view.name} peer {key} persistent-keepalive 25"],
                        ["PersistentKeepalive = 25"],
                    )
                )
            else:
                out.append(
                    Finding(
                        ERROR,
                        "handshake-never",
                        f"peer {key}: the handshake never completed; handshake initiations "
                        f"went to {peer.endpoint} and no response came back",
                        key,
                        [f"endpoint tried: {peer.endpoint}", traffic, "latest handshake: never"],
                        "likely causes, in order: the endpoint address or port is wrong (it "
                        "must be the peer's address and ListenPort); the peer does not have "
                        f"this interface's public key {view.public_key} as a peer; a firewall "
                        "drops the UDP packets; the preshared keys differ",
                        [f"wg set {view.name} peer {key} endpoint HOST:PORT"],
                        ["Endpoint = HOST:PORT   # the peer's address and ListenPort"],
                    )
                )
            continue
        age = max(0, int(facts.now) - peer.latest_handshake)
        evidence = [f"latest handshake: {ago(age)} ago", traffic]
        if peer.endpoint:
            evidence.insert(0, f"endpoint {peer.endpoint}")
        if earlier is not None and sent > 0 and age > REKEY_AFTER_TIME:
            stale = age > REJECT_AFTER_TIME
            out.append(
                Finding(
                    ERROR if stale else WARNING,
                    "handshake-stale",
                    f"peer {key}: traffic is being sent but the latest handshake is {ago(age)} "
                    f"old (a session is renewed after {REKEY_AFTER_TIME} s and unusable after "
                    f"{REJECT_AFTER_TIME} s): the peer no longer answers handshakes",
                    key,
                    evidence,
                    "check that the peer is up and reachable at its endpoint and still has "
                    "this interface's public key",
                )
            )
        elif earlier is None and age > REJECT_AFTER_TIME:
            out.append(
                Finding(
                    INFO,
                    "handshake-ok",
                    f"peer {key}: latest handshake {ago(age)} ago: fine if the tunnel is idle "
                    "(sessions are renewed only when there is traffic); run with --watch while "
                    "traffic flows to check it",
                    key,
                    evidence,
                )
            )
        else:
            out.append(Finding(INFO, "handshake-ok", f"peer {key}: handshake fine", key, evidence))


def _failing(view: InterfaceView, peer: PeerView) -> Finding | None:
    """A handshake that reaches the peer and fails: this side's initiations are answered with
    responses that do not authenticate (``handshake_failed`` from the peer), or the peer's
    initiations are answered by this side and never confirmed. Both are what a preshared key
    mismatch looks like (psk2: only the response and what follows depend on it)."""
    key = peer.public_key
    failed = (view.drops or {}).get((key, "handshake_failed"), 0)
    if failed:
        evidence = [
            f"handshake_failed ×{failed} from this peer: its handshake responses reached "
            f"{view.name} and did not authenticate",
        ]
    elif peer.rx_bytes > 0 and peer.tx_bytes > 0:
        evidence = [
            f"the peer's handshake initiations arrived ({peer.rx_bytes} bytes received) and "
            f"were answered ({peer.tx_bytes} bytes sent), but the peer never confirmed a "
            "session"
        ]
    else:
        return None
    evidence += [f"endpoint {peer.endpoint}", "latest handshake: never"]
    evidence.append(f"preshared key on this side: {'set' if peer.preshared_key else 'none'}")
    return Finding(
        ERROR,
        "handshake-failing",
        f"the handshake with peer {key} fails: the most likely cause is a preshared key "
        "mismatch (or the peer has a different key for us)",
        key,
        evidence,
        "give both sides the same PresharedKey for each other (or none on both); check that "
        f"the peer's [Peer] for this interface has PublicKey = {view.public_key}"
        + ("" if failed else "; and that this side's responses reach the peer (a firewall)"),
        [f"wg set {view.name} peer {key} preshared-key FILE   # the file the peer uses"],
        ["PresharedKey = ...   # the same value in both sides' [Peer] sections"],
    )


# --- 2. drops --------------------------------------------------------------------------------

#: reason -> (severity, what it means, what to change)
_REASONS: dict[str, tuple[str, str, str]] = {
    "handshake_failed": (
        WARNING,
        "handshake messages that could not be authenticated: a sender that does not have this "
        "interface's right public key, is not one of its peers, or uses another preshared key",
        "compare the keys on both sides: the sender's [Peer] PublicKey must be this "
        "interface's public key, this interface must list the sender, and PresharedKey must "
        "match",
    ),
    "invalid_mac1": (
        WARNING,
        "packets whose mac1 is wrong: the sender uses another public key for this interface",
        "give the sender this interface's public key (its [Peer] PublicKey)",
    ),
    "decryption_failed": (
        WARNING,
        "data packets that did not decrypt under the session's keys (corrupted in transit, or "
        "keys that no longer match)",
        "if it keeps growing, restart the peer's tunnel; check the path for packet corruption",
    ),
    "replayed_counter": (
        INFO,
        "data packets seen twice or too late (a duplicating or heavily reordering path)",
        "usually harmless; if many, look for a path that duplicates packets",
    ),
    "replayed_initiation": (
        INFO,
        "handshake initiations replayed or older than one already seen",
        "harmless unless it grows: a replay or a peer whose clock went back",
    ),
    "cookie_required": (
        INFO,
        "handshake messages answered with a cookie because the interface is under load",
        "nothing to change unless it persists: the peer retries with the cookie",
    ),
    "invalid_cookie": (
        WARNING,
        "cookie replies that did not decrypt: a forged or stale cookie reply",
        "check for something on the path answering on the peer's behalf",
    ),
    "rate_limited": (
        WARNING,
        "handshake initiations refused by the rate limiter (a flood, or a peer in a loop)",
        "find the source of the flood of handshake initiations",
    ),
    "handshake_timeout": (
        ERROR,
        "packets discarded after the handshake gave up (no response for about 90 s)",
        "see the handshake finding for this peer: the endpoint or keys are wrong",
    ),
    "no_endpoint": (
        ERROR,
        "packets discarded because the peer has no endpoint to send a handshake to",
        "give the peer an Endpoint, or let it connect first (PersistentKeepalive on its side)",
    ),
    "send_failed": (
        WARNING,
        "datagrams the OS refused to send (no route to the endpoint, port unreachable, or "
        "too large for the path: EMSGSIZE)",
        "check the route to the endpoint, that the peer listens on that port, and the MTU "
        "(see an mtu-too-large finding)",
    ),
}


def _drops(facts: Facts, out: list[Finding]) -> None:
    view = facts.view
    if view.drops is None:
        return
    peers = {peer.public_key: peer for peer in view.peers}
    table = _table(view)
    for (key, reason), count in sorted(view.drops.items(), key=lambda item: -item[1]):
        if reason == "handshake_failed" and key in peers and not peers[key].latest_handshake:
            continue  # the evidence of this peer's handshake-failing finding
        if reason == "disallowed_source" and key in peers:
            _disallowed(view, peers[key], count, view.sources.get((key, reason), []), table, out)
        elif reason == "no_peer":
            entries = view.destinations.get((key, reason), [])
            _no_peer(facts, count, entries, table, out)
        else:
            severity, meaning, fix = _REASONS.get(
                reason, (INFO, f"packets dropped as {reason}", "see docs/drop-reasons.md")
            )
            who = f"from peer {key}" if key else "on the interface"
            out.append(
                Finding(
                    severity,
                    f"drop-{reason}",
                    f"{count} {reason} drops {who}: {meaning}",
                    key,
                    [f"{reason} ×{count} since the daemon started", *_top(view, (key, reason))],
                    fix,
                )
            )


def _top(view: InterfaceView, key: tuple[str | None, str]) -> list[str]:
    lines = []
    sides = [("sources", view.sources), ("destinations", view.destinations)]
    if explaining_address(key[1]) == "destination":
        sides.reverse()
    for label, entries in sides:
        if entries.get(key):
            lines.append(f"top {label}: " + ", ".join(_counted(e) for e in entries[key]))
    return lines


def _counted(entry: AddressCount) -> str:
    return f"{entry.address} ×{entry.count}" + (f" (±{entry.error})" if entry.error else "")


def _disallowed(
    view: InterfaceView,
    peer: PeerView,
    count: int,
    sources: list[AddressCount],
    table: AllowedIPs[str],
    out: list[Finding],
) -> None:
    key = peer.public_key
    if not sources:
        out.append(
            Finding(
                ERROR,
                "disallowed-source",
                f"{count} packets from peer {key} had an inner source outside its AllowedIPs",
                key,
                [f"disallowed_source ×{count}", f"AllowedIPs: {', '.join(peer.allowed_ips)}"],
                "add the source to the peer's AllowedIPs or fix the source on the peer's side",
            )
        )
        return
    for entry in sources:
        found = table.match(ipaddress.ip_address(entry.address))
        evidence = [
            f"disallowed_source ×{entry.count} with source {entry.address} from this peer",
            f"its AllowedIPs: {', '.join(peer.allowed_ips) or '(none)'}",
        ]
        if found is not None and found[1] == key:
            out.append(
                Finding(
                    INFO,
                    "disallowed-source-fixed",
                    f"peer {key} sent packets from {entry.address} that were dropped, but its "
                    f"AllowedIPs now hold {entry.address} (via {found[0]})",
                    key,
                    evidence,
                )
            )
            continue
        if found is not None:
            evidence.append(f"{entry.address} belongs to peer {found[1]} via {found[0]}")
        commands, config = _allowed_fix(view.name, peer, _host(entry.address))
        out.append(
            Finding(
                ERROR,
                "disallowed-source",
                f"peer {key} sends packets from {entry.address}, which its AllowedIPs on "
                f"{view.name} do not contain: they are dropped",
                key,
                evidence,
                f"add {_host(entry.address)} (or the right prefix) to the peer's AllowedIPs on "
                f"{view.name}, or fix the source address on the peer's side"
                + (f" (this takes it from peer {found[1]})" if found is not None else ""),
                commands,
                config,
            )
        )


def _no_peer(
    facts: Facts,
    count: int,
    destinations: list[AddressCount],
    table: AllowedIPs[str],
    out: list[Finding],
) -> None:
    name = facts.view.name
    if not destinations:
        destinations = [AddressCount("?", count)]
    for entry in destinations:
        evidence = [f"no_peer ×{entry.count} for destination {entry.address}"]
        if entry.address != "?":
            found = table.match(ipaddress.ip_address(entry.address))
            if found is not None:
                out.append(
                    Finding(
                        INFO,
                        "no-peer-fixed",
                        f"packets to {entry.address} were dropped (no peer), but peer "
                        f"{found[1]} now holds it via {found[0]}",
                        found[1],
                        evidence,
                    )
                )
                continue
        route = (facts.routes or {}).get(entry.address)
        routed = (
            f"it is routed into {name} by the OS ({_route_text(route)})"
            if route is not None
            else "the OS routes it into the interface"
        )
        if route is not None:
            evidence.append(f"ip route get {entry.address}: {_route_text(route)}")
        subnet = _own_subnet(facts.addresses, entry.address)
        if subnet is not None:
            evidence.append(f"{entry.address} is in {name}'s own subnet {subnet} (its Address)")
        fix, commands, config = _no_peer_fix(facts, entry.address, subnet)
        out.append(
            Finding(
                WARNING,
                "no-peer",
                f"no peer's AllowedIPs on {name} contains {entry.address}; {routed}, so "
                "those packets are dropped (the sender gets ICMP unreachable)",
                None,
                evidence,
                fix,
                commands,
                config,
            )
        )


def _own_subnet(
    addresses: list[str] | None, address: str
) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The subnet of the interface's Address that holds ``address`` (not a single host)."""
    target = ipaddress.ip_address(address)
    for text in addresses or []:
        network = ipaddress.ip_interface(text).network
        if network.version == target.version and network.num_addresses > 1 and target in network:
            return network
    return None


def _no_peer_fix(
    facts: Facts, address: str, subnet: ipaddress.IPv4Network | ipaddress.IPv6Network | None
) -> tuple[str, list[str], list[str]]:
    """(fix, ``wg set`` commands, wg-quick lines) for packets to ``address`` that no peer
    takes, as precise as the interface allows: its only peer by key and list; in a hub's
    layout both readings (a spoke's /32 here, or the subnet to the hub), and why."""
    view, name, host = facts.view, facts.view.name, _host(address)
    peers = view.peers
    stop = f"; or stop routing {address} into {name}"
    if len(peers) == 1:
        (peer,) = peers
        key = peer.public_key
        if subnet is not None:
            commands, config = _allowed_fix(name, peer, str(subnet))
            alt_commands, alt_config = _allowed_fix(name, peer, host)
            return (
                f"give peer {key}, the only peer of {name}, the whole subnet {subnet}: "
                f"{address} is in {name}'s own subnet, and with one peer this is a spoke whose "
                f"hub carries the subnet for every other spoke; or only {host}, if it is an "
                f"address of that peer itself (second command)" + stop,
                commands + alt_commands,
                config + alt_config,
            )
        commands, config = _allowed_fix(name, peer, host)
        fix = f"add {host} to the AllowedIPs of peer {key}, the only peer of {name}"
        if facts.addresses is None:
            fix += (
                f" (doctor could not read {name}'s addresses: if {address} is in its own "
                "tunnel subnet, give that peer the whole subnet instead, as a spoke's hub has)"
            )
        return fix + stop, commands, config
    if subnet is not None and peers and all(_hosts_only(p) for p in peers):
        return (
            f"{address} is in {name}'s own subnet {subnet} and every peer holds single "
            f"addresses, a hub's layout; doctor cannot tell from the interface which side this "
            f"is: on a hub, {address} is a spoke not configured here: add {host} to that "
            f"spoke's [Peer] (or add the spoke as a peer); on a spoke of a mesh whose hub is "
            f"among these peers, give that hub the subnet {subnet}" + stop,
            [
                f"wg set {name} peer SPOKE allowed-ips CURRENT,{host}   # on a hub: the spoke "
                f"using {address}",
                f"wg set {name} peer HUB allowed-ips CURRENT,{subnet}   # on a spoke: its hub",
            ],
            [
                f"AllowedIPs = CURRENT, {host}   # on a hub: in the spoke's [Peer]",
                f"AllowedIPs = CURRENT, {subnet}   # on a spoke: in the hub's [Peer]",
            ],
        )
    fix = (
        f"add {host} (or the prefix it belongs to) to the AllowedIPs of the peer that should "
        "receive it"
    )
    if facts.addresses is None:
        fix += (
            f" (doctor could not read {name}'s addresses: if {address} is in its own tunnel "
            "subnet, that is a spoke's /32 on a hub, or the whole subnet on a spoke's hub)"
        )
    return (
        fix + stop,
        [f"wg set {name} peer PEER allowed-ips CURRENT,{host}"],
        [f"AllowedIPs = CURRENT, {host}   # in that peer's [Peer]"],
    )


def _hosts_only(peer: PeerView) -> bool:
    return all(
        ipaddress.ip_network(text, strict=False).num_addresses == 1 for text in peer.allowed_ips
    )


def _route_text(route: RouteInfo) -> str:
    if route.device is None:
        return route.error or route.type
    text = f"dev {route.device}"
    if route.gateway:
        text = f"via {route.gateway} {text}"
    if route.table is not None and route.table != 254:
        text += f" table {route.table}"
    return text if route.type == "unicast" else f"{route.type} {text}"


# --- 3. AllowedIPs vs routes -----------------------------------------------------------------


def _routes(facts: Facts, out: list[Finding]) -> None:
    view = facts.view
    if facts.routes is None:
        out.append(
            Finding(
                INFO,
                "routes-skipped",
                f"{view.name} is not in this network namespace: the route check was skipped "
                "(run doctor inside its namespace, e.g. `ip netns exec NS wgpy doctor IF`)",
            )
        )
        return
    for peer in view.peers:
        for text in peer.allowed_ips:
            network = ipaddress.ip_network(text, strict=False)
            if not network.prefixlen:
                continue
            address = str(network.network_address)
            route = facts.routes.get(address)
            if route is None or route.device == view.name or route.type == "local":
                continue
            out.append(
                Finding(
                    WARNING,
                    "not-routed",
                    f"nothing routes {network} (AllowedIPs of peer {peer.public_key}) into "
                    f"{view.name}: the OS sends {address} to "
                    f"{route.device or 'nowhere'}, so this peer never gets that traffic",
                    peer.public_key,
                    [f"ip route get {address}: {_route_text(route)}"],
                    f"route the prefix into {view.name} (wg-quick does it unless Table = off)",
                    [f"ip route add {network} dev {view.name}"],
                    [f"PostUp = ip route add {network} dev %i   # only with Table = off"],
                )
            )


# --- 4. MTU -----------------------------------------------------------------------------------


def _mtu(facts: Facts, out: list[Finding]) -> None:
    view = facts.view
    if facts.mtu is None:
        return
    send_failed = (view.drops or {}).get((None, "send_failed"), 0)
    for peer in view.peers:
        host = endpoint_host(peer.endpoint)
        route = facts.endpoint_routes.get(host) if host else None
        if host is None or route is None or route.mtu is None:
            continue
        if route.device in (None, view.name):
            continue  # through the tunnel itself (wg-quick's fwmark table): nothing learned
        overhead = OVERHEAD[ipaddress.ip_address(host).version]
        fits = route.mtu - overhead
        if fits >= facts.mtu:
            continue
        key = peer.public_key
        evidence = [
            f"{view.name} MTU {facts.mtu}",
            f"ip route get {host}: {_route_text(route)} mtu {route.mtu}",
            f"outer overhead {overhead} bytes (IPv{ipaddress.ip_address(host).version} "
            "header, UDP 8, WireGuard 32)",
        ]
        if send_failed:
            evidence.append(
                f"send_failed ×{send_failed}: datagrams the OS refused to send, as it refuses "
                "ones too large for the path (EMSGSIZE)"
            )
        out.append(
            Finding(
                WARNING,
                "mtu-too-large",
                f"{view.name}'s MTU {facts.mtu} is larger than the path to peer {key}'s "
                f"endpoint {host} carries: {route.mtu} - {overhead} = {fits}; full-size "
                "packets are fragmented or dropped (pings work, large transfers stall)",
                key,
                evidence,
                f"lower the MTU of {view.name} to {fits} (or raise the path's MTU)",
                [f"ip link set {view.name} mtu {fits}"],
                [f"MTU = {fits}   # in [Interface]"],
            )
        )


# --- 5. keepalive behind NAT ---------------------------------------------------------------


def _keepalive(facts: Facts, out: list[Finding]) -> None:
    view = facts.view
    before = {p.public_key: p for p in facts.before.peers} if facts.before else {}
    for peer in view.peers:
        host = endpoint_host(peer.endpoint)
        if peer.persistent_keepalive or host is None or peer.latest_handshake == 0:
            continue
        key = peer.public_key
        earlier = before.get(key)
        roamed = earlier is not None and earlier.endpoint and earlier.endpoint != peer.endpoint
        address = ipaddress.ip_address(host)
        private = any(address in n for n in _PRIVATE if n.version == address.version)
        if not roamed and not private:
            continue
        side = facts.peer_sides.get(key)
        if side is not None and side.keepalive:
            continue  # the peer keeps the tunnel alive itself: nothing to do on either side
        if roamed:
            severity, code = WARNING, "keepalive-roaming"
            message = (
                f"peer {key} roamed from {earlier.endpoint if earlier else '?'} to "
                f"{peer.endpoint} during the {facts.watch:g} s watch and has no persistent "
                "keepalive here: behind NAT, the mapping changes or expires while the tunnel "
                "is idle and this side can no longer reach it"
            )
            evidence = [f"endpoint {earlier.endpoint if earlier else '?'} → {peer.endpoint}"]
        else:
            severity, code = INFO, "keepalive-nat"
            message = (
                f"peer {key} is at the private address {host} and has no persistent keepalive "
                "here: if either side is behind NAT, the tunnel stops answering after some "
                "idle time until that side sends again"
            )
            evidence = [f"endpoint {peer.endpoint}"]
        evidence.append("persistent keepalive on this side: off")
        fix, commands, config = _keepalive_fix(view, key, side)
        if side is None:
            message += (
                "; doctor cannot see the peer's side: whether it keeps the tunnel alive itself "
                "(a PersistentKeepalive for this interface in its config)"
            )
        else:
            evidence.append(
                f"{side.file}: no PersistentKeepalive for this interface, "
                + ("an Endpoint for it (the peer connects)" if side.has_endpoint else "no Endpoint")
            )
        out.append(Finding(severity, code, message, key, evidence, fix, commands, config))


def _keepalive_fix(
    view: InterfaceView, key: str, side: PeerSide | None
) -> tuple[str, list[str], list[str]]:
    """Where the keepalive goes: on the side behind NAT, the one that connects (has the
    Endpoint); with only this side seen, what to check instead of a blind command."""
    if side is None:
        return (
            "if the peer has no PersistentKeepalive for this interface, set one on the side "
            "behind NAT (usually the one with the Endpoint line, often the peer); to know, give "
            f"doctor the peer's config or a `wg showconf` snapshot of it: `wgpy doctor "
            f"{view.name} PEER.conf`",
            [],
            [],
        )
    if side.has_endpoint:
        ifname = Path(side.file).stem
        return (
            f"set a persistent keepalive on the peer's side ({side.file}), which connects to "
            "this interface and is the one behind NAT: it keeps the mapping open while the "
            "tunnel is idle",
            [
                f"wg set {ifname} peer {view.public_key} persistent-keepalive 25   # on the peer "
                f"({side.file})"
            ],
            [
                f"PersistentKeepalive = 25   # in {side.file}, in the [Peer] with PublicKey = "
                f"{view.public_key}"
            ],
        )
    return (
        "set a persistent keepalive on this side: the peer has no Endpoint for it and waits, "
        "so this side's NAT mapping must stay open",
        [f"wg set {view.name} peer {key} persistent-keepalive 25"],
        ["PersistentKeepalive = 25   # in the [Peer] section"],
    )


# --- 6. lint ---------------------------------------------------------------------------------


def from_lint(findings: list[lint_mod.Finding], *, live: bool = False) -> list[Finding]:
    """Lint findings as doctor findings (their file and line as evidence, lint's fix as the
    fix)."""
    result = []
    for finding in findings:
        where = finding.file if live or finding.line is None else f"{finding.file}:{finding.line}"
        result.append(
            Finding(
                finding.severity,
                f"lint-{finding.code}",
                finding.message,
                evidence=[f"{where} [{finding.code}]"],
                fix=finding.fix,
            )
        )
    return rank(result)


def rank(findings: list[Finding]) -> list[Finding]:
    """Errors first, then warnings, then info; stable within a severity."""
    return sorted(findings, key=lambda f: _RANK.get(f.severity, 3))


def diagnose(facts: Facts) -> list[Finding]:
    """Every finding about a live interface, ranked by severity (checks in priority order)."""
    out: list[Finding] = []
    checks: list[Callable[[Facts, list[Finding]], None]] = [
        _handshakes,
        _drops,
        _routes,
        _mtu,
        _keepalive,
    ]
    for check in checks:
        check(facts, out)
    if not facts.view.peers:
        out.append(Finding(WARNING, "no-peers", f"{facts.view.name} has no peers"))
    if not facts.view.has_private_key:
        out.append(
            Finding(
                ERROR,
                "no-private-key",
                f"{facts.view.name} has no private key: no handshake can happen",
                fix="set the interface's private key",
                commands=[f"wg set {facts.view.name} private-key FILE"],
                config=["PrivateKey = ...   # in [Interface]"],
            )
        )
    if facts.view.drops is None:
        name = facts.view.name
        out.append(
            Finding(
                INFO,
                "no-drop-counters",
                f"no `wgpy watch {name}` is running: the kernel's drops were not counted"
                if facts.view.kernel is not None
                else f"{name} is not served by wgpyd: no drop counters to check",
                fix=f"start `wgpy watch {name} --enable-debug` and run doctor again"
                if facts.view.kernel is not None
                else None,
            )
        )
    out += from_lint(facts.lint, live=True)
    return rank(out)


def exit_status(findings: list[Finding]) -> int:
    return 1 if any(f.severity in (ERROR, WARNING) for f in findings) else 0


def render_text(findings: list[Finding]) -> str:
    lines: list[str] = []
    for finding in findings:
        lines.append(f"{finding.severity}: {finding.message} [{finding.code}]")
        lines += [f"    evidence: {item}" for item in finding.evidence]
        if finding.fix:
            lines.append(f"    fix: {finding.fix}")
        lines += [f"      $ {command}" for command in finding.commands]
        lines += [f"      wg-quick: {line}" for line in finding.config]
    if not any(f.severity in (ERROR, WARNING) for f in findings):
        lines.append("no problem found")
    return "".join(f"{line}\n" for line in lines)
