"""``wgpy lint``: findings about wg-quick configs, each with file, line and severity.

Per file: unknown keys, invalid keys, low-order keys, the interface's own key as a peer,
duplicate public keys, bad endpoints and numbers, invalid prefixes and addresses, host bits in
AllowedIPs, the same prefix on two peers (naming the peer that loses it), peers with no
AllowedIPs or whose every prefix is shadowed by more specific prefixes of other peers,
0.0.0.0/0 without ::/0 (and the reverse), and with ``Table = off`` prefixes that nothing routes
into the interface.

Across files (a hub and its spokes, matched by public keys): each side's AllowedIPs for the
other covers the other's ``Address``, both sides know each other, preshared keys agree, and an
``Endpoint`` port matches the other side's ``ListenPort``.

Which peer owns what is always asked of :class:`wgpy.allowedips.AllowedIPs` built the way
``wg setconf`` builds it (:meth:`wgpy.config.Config.table` semantics).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import asdict, dataclass
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

from wgpy import crypto
from wgpy.allowedips import AllowedIPs, Prefix
from wgpy.config import (
    HOOK_KEYS,
    Config,
    ConfigError,
    PeerSection,
    Value,
    endpoint_ip,
    has_host_bits,
    parse_address,
    parse_endpoint,
    parse_int,
    parse_key,
    parse_prefix,
    unknown_key_message,
)
from wgpy.tools.files.calc import difference

__all__ = ["Finding", "lint", "render_text"]

ERROR, WARNING, INFO = "error", "warning", "info"

# any clamped scalar: X25519 with a small-order point gives all zeros for every private key
_PROBE_PRIVATE = crypto.clamp(bytes(range(1, 33)))

_V4_ALL = IPv4Network("0.0.0.0/0")
_V6_ALL = IPv6Network("::/0")


@dataclass(frozen=True)
class Finding:
    file: str
    line: int | None
    severity: str
    code: str
    message: str  # what is wrong
    fix: str | None = None  # what to change (``wgpy doctor`` shows it as the finding's fix)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        fix = f"; fix: {self.fix}" if self.fix else ""
        return f"{where}: {self.severity}: {self.message}{fix} [{self.code}]"


#: the fix of a finding whose own text gives none more precise, by code
_FIXES = {
    "no-interface": "add an [Interface] section with the interface's PrivateKey",
    "unknown-key": "correct the key or remove the line: wg-quick passes it to `wg setconf`, "
    "which rejects the file",
    "invalid-key": "use a key as `wg genkey`, `wg pubkey` or `wg genpsk` print it (44 "
    "characters of base64)",
    "no-private-key": "add PrivateKey = (the output of `wg genkey`) to [Interface]",
    "bad-value": "use a number in the range given",
    "invalid-address": "write it as ADDRESS/LENGTH, e.g. 10.0.0.1/24",
    "missing-public-key": "add the peer's PublicKey (`wg pubkey` of its private key)",
    "low-order-key": "use the peer's real public key (`wg pubkey` of its private key)",
    "own-key": "use the peer's public key here, not this interface's own",
    "duplicate-public-key": "merge the two [Peer] sections into one, or correct the key of one",
    "bad-endpoint": "write it as HOST:PORT (IPv6 as [ADDRESS]:PORT)",
    "empty-allowed-ips": "give the peer the addresses it uses, e.g. its tunnel address as /32",
    "invalid-prefix": "write it as ADDRESS/LENGTH, e.g. 10.0.0.2/32",
    "duplicate-prefix": "keep the prefix only on the peer that should receive that traffic",
    "shadowed-peer": "give the peer prefixes that no other peer holds more specifically, or "
    "remove it",
    "cross-allowed-ips": "make this side's AllowedIPs for that peer cover its Address (a /32), "
    "and no other peer's",
    "cross-psk": "use the same PresharedKey on both sides, or none on either",
    "cross-no-endpoint": "give the side that can reach the other (a spoke, for its hub) an "
    "Endpoint",
    "cross-endpoint": "make the Endpoint the other side's reachable address and its ListenPort",
}


class _Linter:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def add(
        self,
        where: Value | PeerSection | Config,
        severity: str,
        code: str,
        text: str,
        fix: str | None = None,
    ) -> None:
        fix = fix or _FIXES.get(code)
        line = None if isinstance(where, Config) else where.line
        self.findings.append(Finding(where.filename, line, severity, code, text, fix))

    def check(self, where: Value, severity: str, code: str, fn: Any, *args: Any) -> Any:
        """Run a typed parser; a ConfigError becomes a finding and None is returned."""
        try:
            return fn(where, *args)
        except ConfigError as error:
            self.add(where, severity, code, error.message)
            return None


@dataclass
class _Side:
    """What the cross-check needs of one linted config."""

    config: Config
    public_key: str | None
    table: AllowedIPs[str]
    peers: dict[str, PeerSection]  # public key -> its (last) [Peer] section
    listen_port: int | None
    addresses: list[tuple[Value, Any]]  # (value, host address)


def _lint_one(config: Config, out: _Linter) -> _Side:
    iface = config.interface
    own_public: str | None = None
    listen_port: int | None = None
    addresses: list[tuple[Value, Any]] = []
    connected: list[Prefix] = []
    table_off = False
    hooks_text = ""
    if iface is None:
        out.add(config, WARNING, "no-interface", "no [Interface] section")
    else:
        for entry in iface.unknown:
            if entry.key.lower() in _PEER_ONLY:
                text = f"unknown key {entry.key!r} (it belongs in a [Peer] section)"
            else:
                text = unknown_key_message(entry.key, interface=True)
            out.add(entry.value, ERROR, "unknown-key", text)
        if iface.private_key is not None:
            raw = out.check(iface.private_key, ERROR, "invalid-key", parse_key)
            if raw is not None:
                import base64

                own_public = base64.b64encode(crypto.public_key(raw)).decode()
        else:
            out.add(config, WARNING, "no-private-key", "[Interface] has no PrivateKey")
        if iface.listen_port is not None:
            listen_port = out.check(
                iface.listen_port, ERROR, "bad-value", parse_int, 0, 65535, "ListenPort"
            )
        for name, low, high in (("FwMark", 0, 2**32 - 1), ("MTU", 576, 65535)):
            value = iface.value(name)
            if value is not None and value.text.lower() != "off":
                out.check(value, ERROR, "bad-value", parse_int, low, high, name)
        for value in iface.addresses:
            parsed = out.check(value, ERROR, "invalid-address", parse_address)
            if parsed is not None:
                addresses.append((value, parsed[0]))
                connected.append(parsed[1])
        table_value = iface.table
        table_off = table_value is not None and table_value.text.lower() == "off"
        hooks_text = " ".join(v.text for key in HOOK_KEYS for v in iface.hooks(key))

    # peers
    first_seen: dict[str, PeerSection] = {}
    peers: dict[str, PeerSection] = {}
    prefix_lines: list[tuple[Prefix, Value, str, PeerSection]] = []
    for peer in config.peers:
        for entry in peer.unknown:
            if entry.key.lower() in _IFACE_ONLY:
                text = f"unknown key {entry.key!r} (it belongs in [Interface])"
            else:
                text = unknown_key_message(entry.key, interface=False)
            out.add(entry.value, ERROR, "unknown-key", text)
        key_value = peer.public_key
        key: str | None = None
        if key_value is None:
            out.add(peer, ERROR, "missing-public-key", "[Peer] has no PublicKey")
        elif out.check(key_value, ERROR, "invalid-key", parse_key) is not None:
            key = key_value.text
            raw = parse_key(key_value)
            if crypto.dh(_PROBE_PRIVATE, raw) is None:
                out.add(
                    key_value,
                    ERROR,
                    "low-order-key",
                    "PublicKey is a low-order point: no handshake can ever complete",
                )
            if key == own_public:
                out.add(
                    key_value,
                    ERROR,
                    "own-key",
                    "PublicKey is the interface's own key: wg ignores this peer",
                )
            if key in first_seen:
                out.add(
                    key_value,
                    ERROR,
                    "duplicate-public-key",
                    f"PublicKey also used by the [Peer] at line {first_seen[key].line}: "
                    "wg merges both sections into one peer",
                )
            else:
                first_seen[key] = peer
            peers[key] = peer
        if peer.preshared_key is not None:
            out.check(peer.preshared_key, ERROR, "invalid-key", parse_key)
        if peer.endpoint is not None:
            out.check(peer.endpoint, ERROR, "bad-endpoint", parse_endpoint)
        keepalive = peer.value("PersistentKeepalive")
        if keepalive is not None and keepalive.text.lower() != "off":
            out.check(keepalive, ERROR, "bad-value", parse_int, 0, 65535, "PersistentKeepalive")
        if not peer.allowed_ips:
            out.add(
                peer,
                WARNING,
                "empty-allowed-ips",
                f"peer {peer.label} has no AllowedIPs: nothing is sent to it and "
                "everything it sends is dropped",
            )
        for value in peer.allowed_ips:
            prefix = out.check(value, ERROR, "invalid-prefix", parse_prefix)
            if prefix is None:
                continue
            if has_host_bits(value):
                out.add(
                    value,
                    WARNING,
                    "host-bits",
                    f"{value.text} has host bits set: it means {prefix}",
                    f"write {prefix} if that is meant, or the single address as "
                    f"/{prefix.max_prefixlen}",
                )
            if key is not None:
                prefix_lines.append((prefix, value, key, peer))

    # the table wg setconf builds; it says who ends up owning what
    table: AllowedIPs[str] = AllowedIPs()
    for prefix, _value, key, _peer in prefix_lines:
        table.insert(prefix, key)
    holders: dict[Prefix, list[tuple[Value, str, PeerSection]]] = {}
    for prefix, value, key, peer in prefix_lines:
        holders.setdefault(prefix, []).append((value, key, peer))
    for prefix, held in holders.items():
        winner = table.owner(prefix)
        winner_value = next(v for v, k, _p in reversed(held) if k == winner)
        winner_peer = peers.get(winner) if winner is not None else None
        for value, key, peer in held:
            if key != winner:
                out.add(
                    value,
                    WARNING,
                    "duplicate-prefix",
                    f"{prefix} is also given to peer "
                    f"{winner_peer.label if winner_peer else winner} at line "
                    f"{winner_value.line}, which takes it: peer {peer.label} loses it",
                )

    _shadowing(table, peers, holders, out)

    # default routes of one family only
    prefixes = set(holders)
    has4, has6 = _V4_ALL in prefixes, _V6_ALL in prefixes
    if has4 != has6:
        present, missing = ("0.0.0.0/0", "::/0") if has4 else ("::/0", "0.0.0.0/0")
        value = next(v for v, _k, _p in holders[_V4_ALL if has4 else _V6_ALL])
        family = "IPv6" if has4 else "IPv4"
        out.add(
            value,
            WARNING,
            "half-default",
            f"{present} without {missing}: {family} traffic bypasses the tunnel",
            f"add {missing} to send it through, or block it",
        )

    # Table = off: wg-quick adds no routes; only connected subnets of Address reach the peer
    if table_off:
        for prefix, held in holders.items():
            if any(prefix.version == c.version and prefix.subnet_of(c) for c in connected):  # type: ignore[arg-type]
                continue
            if str(prefix) in hooks_text or _mentions(hooks_text, held):
                continue
            out.add(
                held[-1][0],
                WARNING,
                "no-route",
                f"Table = off and no route covers {prefix}: wg-quick adds none and it is "
                "outside the Address subnets, so the OS never sends this traffic to the "
                "interface",
                f"add a route in PostUp: PostUp = ip route add {prefix} dev %i",
            )

    return _Side(config, own_public, table, peers, listen_port, addresses)


def _mentions(hooks_text: str, held: list[tuple[Value, str, PeerSection]]) -> bool:
    return any(value.text in hooks_text for value, _k, _p in held)


_PEER_ONLY = {"publickey", "presharedkey", "allowedips", "endpoint", "persistentkeepalive"}
_IFACE_ONLY = {"privatekey", "listenport", "fwmark", "address", "dns", "mtu", "table"}


def _shadowing(
    table: AllowedIPs[str],
    peers: dict[str, PeerSection],
    holders: dict[Prefix, list[tuple[Value, str, PeerSection]]],
    out: _Linter,
) -> None:
    """Peers that never win a lookup: every prefix they own is covered by longer prefixes."""
    entries = [(p, k) for k in table.peers() for p in table.entries(k)]
    by_family: dict[int, list[tuple[int, int, Prefix]]] = {4: [], 6: []}
    for prefix, _key in entries:
        start = int(prefix.network_address)
        by_family[prefix.version].append((start, prefix.prefixlen, prefix))
    starts: dict[int, list[int]] = {}
    for version, items in by_family.items():
        items.sort(key=lambda item: (item[0], item[1]))
        starts[version] = [item[0] for item in items]
    for key, peer in peers.items():
        owned = table.entries(key)
        if not owned:
            if peer.allowed_ips and all(
                _valid(v) and table.owner(parse_prefix(v)) != key for v in peer.allowed_ips
            ):
                out.add(
                    peer,
                    WARNING,
                    "shadowed-peer",
                    f"peer {peer.label} keeps none of its AllowedIPs: later peers take them all",
                )
            continue
        winning = False
        for prefix in owned:
            items = by_family[prefix.version]
            first = int(prefix.network_address)
            last = first + prefix.num_addresses
            index = bisect.bisect_left(starts[prefix.version], first)
            longer: list[Prefix] = []
            while index < len(items) and items[index][0] < last:
                if items[index][1] > prefix.prefixlen:
                    longer.append(items[index][2])
                index += 1
            rest = difference([prefix], longer) if longer else [prefix]
            if rest:
                # the table itself confirms that this peer wins somewhere
                found = table.match(rest[0].network_address)
                if found is not None and found[1] == key:
                    winning = True
                    break
        if not winning:
            out.add(
                peer,
                WARNING,
                "shadowed-peer",
                f"peer {peer.label} never gets a packet: every address of its AllowedIPs "
                f"({', '.join(str(p) for p in owned)}) is held by more specific prefixes "
                "of other peers",
            )


def _label(peers: dict[str, PeerSection], key: str) -> str:
    peer = peers.get(key)
    return peer.label if peer else key


def _valid(value: Value) -> bool:
    try:
        parse_prefix(value)
    except ConfigError:
        return False
    return True


def _cross_check(sides: list[_Side], out: _Linter) -> None:
    by_key = {side.public_key: side for side in sides if side.public_key is not None}
    for side in sides:
        me = side.public_key
        for key, peer in side.peers.items():
            other = by_key.get(key)
            if other is None or other is side:
                continue
            name = other.config.filename
            # 1. my AllowedIPs for the other side cover its Address (the table decides)
            for value, host in other.addresses:
                found = side.table.match(host)
                if found is None:
                    out.add(
                        peer,
                        ERROR,
                        "cross-allowed-ips",
                        f"AllowedIPs of peer {peer.label} do not cover its Address {host} "
                        f"({name}:{value.line}): packets from it are dropped, none are sent to it",
                    )
                elif found[1] != key:
                    out.add(
                        peer,
                        ERROR,
                        "cross-allowed-ips",
                        f"{host}, the Address of peer {peer.label} ({name}:{value.line}), "
                        f"belongs to peer {_label(side.peers, found[1])} via {found[0]} here",
                    )
            # 2. the other side knows me, with the same preshared key
            back = other.peers.get(me) if me is not None else None
            if me is not None and back is None:
                out.add(
                    peer,
                    ERROR,
                    "cross-missing-peer",
                    f"{name} has no [Peer] with this interface's public key {me}",
                    f"add a [Peer] with PublicKey = {me} to {name}",
                )
            if back is not None:
                mine = peer.preshared_key.text if peer.preshared_key else None
                theirs = back.preshared_key.text if back.preshared_key else None
                if mine != theirs and id(side) < id(other):
                    out.add(
                        peer.preshared_key or peer,
                        ERROR,
                        "cross-psk",
                        f"PresharedKey differs from the one {name}:{back.line} uses for "
                        "this side: handshakes fail",
                    )
                if peer.endpoint is None and back.endpoint is None and id(side) < id(other):
                    out.add(
                        peer,
                        WARNING,
                        "cross-no-endpoint",
                        f"neither this config nor {name} has an Endpoint for the other: "
                        "they can never start a handshake",
                    )
            # 3. my Endpoint for the other side agrees with its ListenPort and is not in-tunnel
            if peer.endpoint is not None:
                try:
                    host, port = parse_endpoint(peer.endpoint)
                except ConfigError:
                    continue
                if other.listen_port is None:
                    out.add(
                        peer.endpoint,
                        WARNING,
                        "cross-endpoint",
                        f"Endpoint port {port}, but {name} sets no ListenPort (a random port)",
                        f"set ListenPort = {port} in {name}",
                    )
                elif other.listen_port != port:
                    out.add(
                        peer.endpoint,
                        ERROR,
                        "cross-endpoint",
                        f"Endpoint port {port}, but {name} listens on {other.listen_port}",
                        f"set the Endpoint port to {other.listen_port} (or ListenPort = {port} "
                        f"in {name})",
                    )
                ip = endpoint_ip(host)
                if ip is not None and any(ip == h for _v, h in other.addresses):
                    out.add(
                        peer.endpoint,
                        ERROR,
                        "cross-endpoint",
                        f"Endpoint {host} is {name}'s tunnel Address: it is only reachable "
                        "through the tunnel itself",
                    )


def lint(configs: list[Config]) -> list[Finding]:
    """Every finding about the configs, in file and line order per file."""
    out = _Linter()
    sides = [_lint_one(config, out) for config in configs]
    if len(sides) > 1:
        _cross_check(sides, out)
        if not any(f.severity == ERROR for f in out.findings):
            _reachability(configs, out)
    order = {config.filename: index for index, config in enumerate(configs)}
    return sorted(
        out.findings, key=lambda f: (order.get(f.file, 0), f.line if f.line is not None else 0)
    )


_CONFIG_LINE = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+): ")


def _reachability(configs: list[Config], out: _Linter) -> None:
    """Given a hub and its spokes (or any hosts joined by keys): every pair of their
    Addresses pinged both ways through the network model (``wgpy net check``); each cause of
    failure is one finding at the line its proven fix edits."""
    from wgpy.net.build import BuildError, build_network
    from wgpy.net.check import check
    from wgpy.net.fixes import suggest_all
    from wgpy.net.wgquick import host_from_config, interface_name
    from wgpy.tools.network.net_text import cause_text

    try:
        network = build_network([host_from_config(config) for config in configs])
    except (ConfigError, BuildError):
        return  # the findings above say why these files do not make one network
    report = check(network)
    by_name = {Path(c.filename).name: c for c in configs}
    by_host = {interface_name(c): c for c in configs}
    fixes = suggest_all(report)
    for number, group in enumerate(report.groups):
        fix = fixes[number]
        config = by_host.get(group.cause.host, configs[0])
        line = config.interface.line if config.interface is not None else None
        for entry in fix.config if fix else []:
            match = _CONFIG_LINE.match(entry)
            if match and match["file"] in by_name:
                config, line = by_name[match["file"]], int(match["line"])
                break
        count = len(group.pairs)
        first = group.pairs[0]
        example = f"{first.source.label} → {first.target.label}"
        more = f" and {count - 1} more pair{'s' if count > 2 else ''}" if count > 1 else ""
        text = f"{example}{more} cannot ping: {cause_text(group.cause, group.leg)}"
        where = "; proven on the model, see `wgpy net check`" if fix else ""
        # an answer resting on an assumption (forwarding off where no file says) or on a
        # fact the model could not read is a warning: the host may well be set up otherwise
        assumption = group.cause.assumption
        severity = WARNING if assumption or all(p.unknown for p in group.pairs) else ERROR
        if assumption:
            text += f" (assumed: {assumption.removeprefix('assumed: ')})"
        out.findings.append(
            Finding(
                config.filename,
                line,
                severity,
                "unreachable",
                text,
                (fix.summary + where) if fix else "see `wgpy net trace` for the hops",
            )
        )


def exit_status(findings: list[Finding]) -> int:
    return 1 if any(f.severity in (ERROR, WARNING) for f in findings) else 0


def render_text(findings: list[Finding]) -> str:
    return "".join(f"{finding}\n" for finding in findings)
