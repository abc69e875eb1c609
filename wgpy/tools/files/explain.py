"""``wgpy explain``: what the AllowedIPs table does with one address, and why.

* ``to ADDR``: the peer an outgoing packet to ADDR is encrypted for, through which prefix, and
  which less specific prefixes of other peers it beat; for a live interface also whether the
  OS routes ADDR into the interface at all.
* ``from ADDR via PEER``: whether an inner packet with source ADDR that PEER's key decrypted is
  delivered (the longest match is PEER) or dropped (nobody, or another peer, owns ADDR).

The answer always comes from :class:`wgpy.allowedips.AllowedIPs` (``match`` for the winner,
``matches`` for the prefixes it beat), the table wgpyd itself uses; this module only renders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from wgpy.allowedips import AllowedIPs
from wgpy.config import Config
from wgpy.tools.interface.routes import RouteInfo

__all__ = ["ExplainError", "Source", "explain_from", "explain_to", "render_text"]


class ExplainError(ValueError):
    """The question cannot be answered (unknown peer, bad address)."""


@dataclass
class Source:
    """An AllowedIPs table with what is needed to talk about its peers."""

    kind: str  # "config" or "interface"
    name: str
    table: AllowedIPs[str]
    peers: list[str] = field(default_factory=list)  # public keys, in order
    names: dict[str, str] = field(default_factory=dict)  # public key -> name
    endpoints: dict[str, str | None] = field(default_factory=dict)
    # public key -> every name of its sections, when [Peer] sections share a key (merged by wg)
    aliases: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> Source:
        table = config.table()  # raises ConfigError with FILE:LINE
        peers: list[str] = []
        endpoints: dict[str, str | None] = {}
        for peer in config.peers:
            assert peer.public_key is not None  # checked by table()
            key = peer.public_key.text
            if key not in peers:
                peers.append(key)
            if peer.endpoint is not None:
                endpoints[key] = peer.endpoint.text
            else:
                endpoints.setdefault(key, None)
        aliases = {k: v for k, v in config.peer_name_lists().items() if len(v) > 1}
        return cls("config", config.filename, table, peers, config.peer_names(), endpoints, aliases)

    @classmethod
    def from_uapi(cls, ifname: str, pairs: list[tuple[str, str]]) -> Source:
        """From the key=value pairs of a UAPI ``get`` (wgpyd, wireguard-go, ...)."""
        from wgpy.tools.interface.show import parse_get

        view = parse_get(ifname, pairs)
        table: AllowedIPs[str] = AllowedIPs()
        for peer in view.peers:
            for prefix in peer.allowed_ips:
                table.insert(prefix, peer.public_key)
        return cls(
            "interface",
            ifname,
            table,
            [p.public_key for p in view.peers],
            {},
            {p.public_key: p.endpoint for p in view.peers},
        )

    def merged_note(self, key: str) -> str | None:
        """A reason line when ``key``'s [Peer] sections have several names (one peer to wg)."""
        names = self.aliases.get(key)
        if not names:
            return None
        return (
            f"the [Peer] sections named {' and '.join(names)} have the same PublicKey: "
            "wg merges them into one peer holding all their AllowedIPs (wgpy lint flags this)"
        )

    def label(self, key: str | None) -> str | None:
        if key is None:
            return None
        name = self.names.get(key)
        return f"{name} ({key})" if name else key

    def resolve_peer(self, text: str) -> str:
        """A peer given by public key, by ``# Name``, or by an unambiguous key prefix."""
        if text in self.peers:
            return text
        by_name = [k for k, n in self.names.items() if n == text or text in self.aliases.get(k, ())]
        if len(by_name) == 1:
            return by_name[0]
        if len(by_name) > 1:
            raise ExplainError(f"{len(by_name)} peers of {self.name} are named {text!r}")
        starting = [k for k in self.peers if len(text) >= 4 and k.startswith(text)]
        if len(starting) == 1:
            return starting[0]
        raise ExplainError(f"{self.name} has no peer {text!r} (give a public key or a # Name)")


def parse_address(text: str) -> IPv4Address | IPv6Address:
    try:
        return ip_address(text)
    except ValueError:
        raise ExplainError(f"{text!r} is not an IP address") from None


def _entry(source: Source, prefix: object, key: str) -> dict[str, Any]:
    return {"prefix": str(prefix), "peer": key, "peer_name": source.names.get(key)}


def explain_to(source: Source, address: str, route: RouteInfo | None = None) -> dict[str, Any]:
    """Outgoing packet to ``address``: the verdict ``sent`` or ``not sent`` with its reasons.

    ``route`` is the OS route lookup for a live interface; when it does not lead into the
    interface, the packet never reaches the table and the verdict is ``not sent``.
    """
    addr = parse_address(address)
    matches = source.table.matches(addr)
    winner = source.table.match(addr)
    result: dict[str, Any] = {
        "direction": "to",
        "address": str(addr),
        source.kind: source.name,
        "peer": None,
        "peer_name": None,
        "prefix": None,
        "beaten": [],
        "also_matching": [],
        "route": None,
    }
    reasons: list[str] = []
    sent = winner is not None
    if winner is None:
        reasons.append(
            f"no peer's AllowedIPs contains {addr}: the packet is dropped "
            "(wgpyd and the kernel answer ICMP unreachable, wireguard-go drops silently)"
        )
    else:
        prefix, key = winner
        result.update(prefix=str(prefix), peer=key, peer_name=source.names.get(key))
        result["beaten"] = [_entry(source, p, k) for p, k in matches[1:] if k != key]
        result["also_matching"] = [_entry(source, p, k) for p, k in matches[1:] if k == key]
        reasons.append(f"longest matching prefix {prefix} belongs to peer {source.label(key)}")
        for entry in result["beaten"]:
            reasons.append(
                f"it beats the less specific {entry['prefix']} of peer "
                f"{source.label(entry['peer'])}"
            )
        if source.endpoints.get(key, "") is None:
            reasons.append("the peer has no endpoint yet: the packet waits for one")
        note = source.merged_note(key)
        if note:
            reasons.append(note)
    if route is not None:
        result["route"] = route.to_json()
        into = route.device == source.name
        result["route"]["into_interface"] = into
        if not into:
            sent = False
            if route.device is None:
                reasons.insert(0, f"the OS has no route to {addr} ({route.error or route.type})")
            elif route.type == "local":
                reasons.insert(0, f"{addr} is a local address of this host (device {route.device})")
            else:
                reasons.insert(
                    0,
                    f"the OS routes {addr} to {route.device}, not into {source.name}: "
                    "the AllowedIPs table is never asked",
                )
        else:
            reasons.insert(0, f"the OS routes {addr} into {source.name}")
    result["verdict"] = "sent" if sent else "not sent"
    result["reasons"] = reasons
    return result


def explain_from(source: Source, address: str, peer: str) -> dict[str, Any]:
    """Incoming inner packet with source ``address`` decrypted with ``peer``'s key."""
    addr = parse_address(address)
    key = source.resolve_peer(peer)
    winner = source.table.match(addr)
    own = [p for p, k in source.table.matches(addr) if k == key]
    result: dict[str, Any] = {
        "direction": "from",
        "address": str(addr),
        source.kind: source.name,
        "via": key,
        "via_name": source.names.get(key),
        "owner": None,
        "owner_name": None,
        "prefix": None,
        "via_prefixes": [str(p) for p in own],
    }
    reasons: list[str] = []
    if winner is None:
        delivered = False
        reasons.append(f"no peer's AllowedIPs contains {addr}: dropped (source not allowed)")
    else:
        prefix, owner = winner
        result.update(prefix=str(prefix), owner=owner, owner_name=source.names.get(owner))
        delivered = owner == key
        if delivered:
            reasons.append(f"{addr} is in {prefix}, the longest match, held by this peer")
        else:
            reasons.append(
                f"{addr} belongs to peer {source.label(owner)} via {prefix}: dropped "
                "(the source must be owned by the peer that sent it)"
            )
            if own:
                reasons.append(
                    f"{source.label(key)}'s own {', '.join(str(p) for p in own)} is less specific"
                )
    for who in dict.fromkeys([key, *([result["owner"]] if result["owner"] else [])]):
        note = source.merged_note(who)
        if note:
            reasons.append(note)
    result["verdict"] = "delivered" if delivered else "dropped"
    result["reasons"] = reasons
    return result


def render_text(result: dict[str, Any], source: Source) -> str:
    where = f"{source.kind} {source.name}"
    if result["direction"] == "to":
        head = f"to {result['address']} on {where}: {result['verdict'].upper()}"
        if result["peer"]:
            head += f" to peer {source.label(result['peer'])} via {result['prefix']}"
    else:
        head = (
            f"from {result['address']} via peer {source.label(result['via'])} on {where}: "
            f"{result['verdict'].upper()}"
        )
    return "\n".join([head, *(f"  - {reason}" for reason in result["reasons"])]) + "\n"
