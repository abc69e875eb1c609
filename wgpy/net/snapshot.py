"""A host from a ``wgpy collect`` snapshot: the JSON document, already parsed.

The document (``"wgpy_snapshot": 1``)::

    {"wgpy_snapshot": 1, "host": "hub", "collected_at": "2026-12-07T18:00:00Z",
     "interfaces": [{"name": "wg0", "up": true, "addresses": ["10.0.0.1/24"],
                     "wireguard": {"public_key": "...", "listen_port": 51820,
                                   "peers": [{"public_key": "...", "allowed_ips": ["10.0.0.2/32"],
                                              "endpoint": "192.0.2.2:51820",
                                              "persistent_keepalive": 0}]}},
                    {"name": "eth1", "up": true, "addresses": ["192.168.1.1/24"]}],
     "routes": [{"table": "main", "dst": "10.0.0.0/24", "dev": "wg0", "via": null,
                 "type": "unicast", "metric": 0}],
     "rules": [{"priority": 32766, "table": "main"}, ...
               {"priority": 32765, "table": "51820", "fwmark": 51820, "not": true},
               {"priority": 32764, "table": "main", "suppress_prefixlength": 0}],
     "sysctl": {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 0},
     "firewall": {"iptables_save": "...", "ip6tables_save": "...", "nft": null,
                  "error": null},
     "unsupported": ["multipath route 10.8.0.0/16 table main", ...]}

No private or preshared key is ever in it. ``routes`` holds every table but ``local``
(the model delivers to the host's own addresses itself). ``firewall`` holds what the host's
tools printed; when only an nftables ruleset that is not iptables' could be read, or
nothing, the firewall is unknown and the answers it touches say so. ``unsupported`` (optional)
names the routes and rules the host has but the model cannot represent (left out of
``routes`` and ``rules``); each is reported with the answers, as the firewall's ``error`` is.
"""

from __future__ import annotations

from ipaddress import ip_address, ip_interface, ip_network
from typing import Any

from wgpy.net import iptables
from wgpy.net.model import (
    Action,
    Firewall,
    Host,
    Interface,
    IPNetwork,
    Kind,
    Origin,
    Route,
    RouteKind,
    Rule,
    WgPeer,
)
from wgpy.net.wgquick import apply_iptables

__all__ = ["FORMAT", "SnapshotError", "host_from_snapshot"]

FORMAT = 1
_KEY_FIELDS = ("private_key", "preshared_key")


class SnapshotError(ValueError):
    """A document that is no snapshot this version of wgpy reads."""


def host_from_snapshot(data: Any, filename: str) -> Host:
    if not isinstance(data, dict) or "wgpy_snapshot" not in data:
        raise SnapshotError(f"{filename}: not a wgpy snapshot (no 'wgpy_snapshot' field)")
    version = data["wgpy_snapshot"]
    if version != FORMAT:
        raise SnapshotError(
            f"{filename}: snapshot format {version!r}; this wgpy reads format {FORMAT} "
            "(collect it again with this version)"
        )
    try:
        return _host(data, filename)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise SnapshotError(f"{filename}: malformed snapshot: {error}") from None


def _host(data: dict[str, Any], filename: str) -> Host:
    name = str(data["host"])
    origin = Origin(Kind.SNAPSHOT, f"snapshot {filename}")
    host = Host(name=name, origin=origin)
    for item in data.get("interfaces", []):
        wireguard = item.get("wireguard")
        interface = Interface(
            name=str(item["name"]),
            addresses=[ip_interface(a) for a in item.get("addresses", [])],
            origin=origin,
            wireguard=wireguard is not None,
            up=bool(item.get("up", True)),
        )
        if wireguard is not None:
            if any(k in wireguard for k in _KEY_FIELDS):
                raise SnapshotError(f"{filename}: holds a private or preshared key; refused")
            interface.public_key = wireguard.get("public_key")
            for peer in wireguard.get("peers", []):
                if any(k in peer for k in _KEY_FIELDS):
                    raise SnapshotError(f"{filename}: holds a preshared key; refused")
                interface.peers.append(
                    WgPeer(
                        public_key=str(peer["public_key"]),
                        allowed_ips=[ip_network(p) for p in peer.get("allowed_ips", [])],
                        origin=origin,
                        name=peer.get("name"),
                        endpoint=peer.get("endpoint"),
                        persistent_keepalive=int(peer.get("persistent_keepalive") or 0),
                    )
                )
        host.interfaces.append(interface)
    for item in data.get("routes", []):
        table = str(item.get("table", "main"))
        if table == "local":
            continue
        dst = item.get("dst", "default")
        via = item.get("via")
        kind = RouteKind(item.get("type", "unicast"))
        host.routes.append(
            Route(
                _destination(dst, via, item),
                item.get("dev"),
                origin,
                table=table,
                via=ip_address(via) if via else None,
                kind=kind,
                metric=int(item.get("metric") or 0),
            )
        )
    for item in data.get("rules", []):
        host.rules.append(
            Rule(
                int(item["priority"]),
                str(item.get("table", "main")),
                origin,
                fwmark=item.get("fwmark"),
                invert=bool(item.get("not", False)),
                suppress_prefixlength=item.get("suppress_prefixlength"),
                source=ip_network(item["src"]) if item.get("src") else None,
                destination=ip_network(item["dst"]) if item.get("dst") else None,
            )
        )
    sysctl = data.get("sysctl", {})
    for version, key in ((4, "net.ipv4.ip_forward"), (6, "net.ipv6.conf.all.forwarding")):
        if key in sysctl:
            host.forwarding[version] = (str(sysctl[key]) == "1", origin)
    _firewall(host, data.get("firewall") or {}, origin)
    for text in data.get("unsupported") or []:
        host.unknown.append(f"{name}: {text} (not in the model)")
    return host


def _destination(dst: str, via: str | None, item: dict[str, Any]) -> IPNetwork:
    """A route's destination; ``default`` is IPv6's when the route says family 6 or goes via
    an IPv6 gateway, else IPv4's."""
    if dst == "default":
        ipv6 = item.get("family") == 6 or (via is not None and ":" in via)
        return ip_network("::/0" if ipv6 else "0.0.0.0/0")
    return ip_network(dst, strict=False)


def _firewall(host: Host, data: dict[str, Any], origin: Origin) -> None:
    texts = {4: data.get("iptables_save"), 6: data.get("ip6tables_save")}
    for version, text in texts.items():
        if text is None:
            continue
        host.firewall[version] = Firewall(Action.ACCEPT, origin)
        for command in iptables.parse_save(str(text), version, origin):
            apply_iptables(host, command, version)
    if data.get("error"):
        host.unknown.append(f"firewall of {host.name}: {data['error']}")
    for version in (4, 6):
        if version not in host.firewall:
            host.firewall[version] = Firewall(
                Action.UNKNOWN,
                Origin(Kind.ASSUMED, f"the FORWARD chain of {host.name} could not be read"),
            )
