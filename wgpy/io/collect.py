"""What decides forwarding on this host, read for ``wgpy collect``: one snapshot in the form
:mod:`wgpy.net.snapshot` reads (its docstring is the schema).

Everything is read in the network namespace of the calling process, so ``ip netns exec NS
wgpy collect`` sees that namespace: links, addresses, routes and rules over rtnetlink
(pyroute2), the kernel's WireGuard interfaces over generic netlink (`kernel_wg`), wgpyd's and
wireguard-go's over their UAPI socket (`uapi_client`), the forwarding switches from /proc/sys
and the FORWARD and NAT rules as ``iptables-save`` prints them.

UAPI sockets live in /var/run/wireguard, which every namespace shares: a socket counts only
when a TUN device of its name exists here. The private key is read only to derive the public
key, and preshared keys are dropped: neither is ever in a snapshot. IPv6 link-local addresses
and their routes are left out (a link-local packet is never forwarded). What the model cannot
represent (a multipath or ``throw`` route, a rule matching on ``iif`` or a port, nftables chains
that iptables does not show) is listed under ``unsupported`` or the firewall's ``error``, so
that the answers touching it say "unknown" rather than guess.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

from wgpy import crypto
from wgpy.net.snapshot import FORMAT
from wgpy.uapi import socket_path

__all__ = ["CollectError", "collect"]

_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6
_IFF_UP = 0x1
_LOCAL_TABLE = 255
_TABLE_NAMES = {254: "main", 253: "default", _LOCAL_TABLE: "local"}
# rtm_type values the model reads (linux/rtnetlink.h); the rest are reported unsupported
_ROUTE_TYPES = {1: "unicast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}
_OTHER_ROUTE_TYPES = {2: "local", 3: "broadcast", 4: "anycast", 5: "multicast", 9: "throw"}
_FR_ACT_TO_TBL = 1
_FIB_RULE_INVERT = 0x2
_UNSET = 0xFFFFFFFF  # FRA_SUPPRESS_PREFIXLEN, FRA_SUPPRESS_IFGROUP and a full FRA_FWMASK
#: rule selectors the model has no field for (a rule using one is reported, not guessed)
_RULE_SELECTORS = {
    "FRA_IIFNAME": "iif",
    "FRA_OIFNAME": "oif",
    "FRA_UID_RANGE": "uidrange",
    "FRA_IP_PROTO": "ipproto",
    "FRA_SPORT_RANGE": "sport",
    "FRA_DPORT_RANGE": "dport",
    "FRA_L3MDEV": "l3mdev",
}
_LINK_LOCAL = IPv6Network("fe80::/10")
_SYSCTLS = {
    "net.ipv4.ip_forward": True,  # required
    "net.ipv6.conf.all.forwarding": False,  # absent when IPv6 is disabled
}
#: the tables iptables-nft keeps; chains of other nftables tables are not in its view
_IPTABLES_TABLES = {"filter", "nat", "mangle", "raw", "security"}
#: the hooks whose chains decide what the model reads (forwarding and source NAT)
_MODEL_HOOKS = {"forward", "postrouting"}
_RUN_TIMEOUT = 30.0


class CollectError(Exception):
    """Something the snapshot must hold could not be read; the message is one line."""


@dataclass(frozen=True)
class _Link:
    index: int
    name: str
    up: bool
    kind: str | None


def collect(host: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The snapshot of this host (``host`` names it; the system's hostname by default)."""
    from pyroute2 import IPRoute  # type: ignore[import-untyped]
    from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

    unsupported: list[str] = []
    try:
        with IPRoute() as ipr:
            links = _links(ipr)
            names = {link.index: link.name for link in links}
            addresses = _addresses(ipr)
            routes = _routes(ipr, names, unsupported)
            rules = _rules(ipr, unsupported)
    except (OSError, NetlinkError) as error:
        raise CollectError(f"cannot read links, addresses, routes and rules: {error}") from None
    interfaces = []
    for link in links:
        item: dict[str, Any] = {
            "name": link.name,
            "up": link.up,
            "addresses": addresses.get(link.index, []),
        }
        wireguard = _wireguard(link)
        if wireguard is not None:
            item["wireguard"] = wireguard
        interfaces.append(item)
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "wgpy_snapshot": FORMAT,
        "host": host or socket.gethostname(),
        "collected_at": stamp,
        "interfaces": interfaces,
        "routes": routes,
        "rules": rules,
        "sysctl": _sysctls(),
        "firewall": _firewall(),
        "unsupported": unsupported,
    }


# --------------------------------------------------------------------------- rtnetlink


def _links(ipr: Any) -> list[_Link]:
    found = []
    for message in ipr.get_links():
        info = message.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        found.append(
            _Link(
                int(message["index"]),
                str(message.get_attr("IFLA_IFNAME")),
                bool(int(message["flags"]) & _IFF_UP),
                None if kind is None else str(kind),
            )
        )
    return sorted(found, key=lambda link: link.index)


def _addresses(ipr: Any) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for message in ipr.get_addr():
        # IFA_LOCAL is the address itself; IFA_ADDRESS is the far end on a point-to-point link
        address = message.get_attr("IFA_LOCAL") or message.get_attr("IFA_ADDRESS")
        if address is None:
            continue
        text = f"{address}/{int(message['prefixlen'])}"
        if _link_local(ip_network(text, strict=False)):
            continue
        found.setdefault(int(message["index"]), []).append(text)
    return found


def _link_local(prefix: IPv4Network | IPv6Network) -> bool:
    return isinstance(prefix, IPv6Network) and prefix.subnet_of(_LINK_LOCAL)


def _table(number: int) -> str:
    return _TABLE_NAMES.get(number, str(number))


def _dumps(ipr: Any, what: str) -> Iterator[tuple[int, Any]]:
    for family in (_AF_INET, _AF_INET6):
        for message in getattr(ipr, what)(family=family):
            yield family, message


def _routes(ipr: Any, names: dict[int, str], unsupported: list[str]) -> list[dict[str, Any]]:
    found = []
    for family, message in _dumps(ipr, "get_routes"):
        number = int(message.get_attr("RTA_TABLE") or message["table"])
        if number == _LOCAL_TABLE:
            continue
        dst = message.get_attr("RTA_DST") or ("0.0.0.0" if family == _AF_INET else "::")
        prefix = ip_network(f"{dst}/{int(message['dst_len'])}", strict=False)
        if _link_local(prefix):
            continue
        kind = _ROUTE_TYPES.get(int(message["type"]))
        where = f"{prefix} table {_table(number)}"
        if kind is None:
            name = _OTHER_ROUTE_TYPES.get(int(message["type"]), f"type {message['type']}")
            unsupported.append(f"route {name} {where}")
            continue
        if message.get_attr("RTA_MULTIPATH") is not None:
            unsupported.append(f"multipath route {where}")
            continue
        if int(message["src_len"]):
            unsupported.append(f"source-specific route {where}")
            continue
        oif = message.get_attr("RTA_OIF")
        gateway = message.get_attr("RTA_GATEWAY")
        found.append(
            {
                "table": _table(number),
                "dst": str(prefix),
                "dev": None if oif is None else names.get(int(oif)),
                "via": None if gateway is None else str(gateway),
                "type": kind,
                "metric": int(message.get_attr("RTA_PRIORITY") or 0),
            }
        )
    return found


def _rules(ipr: Any, unsupported: list[str]) -> list[dict[str, Any]]:
    """Every ``ip rule`` of both families, a rule both have (Linux's defaults) once: the
    model's rules are not per family, and a table without routes of a family finds none."""
    found: list[dict[str, Any]] = []
    for _, message in _dumps(ipr, "get_rules"):
        item: dict[str, Any] = {
            "priority": int(message.get_attr("FRA_PRIORITY") or 0),
            "table": _table(int(message.get_attr("FRA_TABLE") or message["table"])),
        }
        fwmark = message.get_attr("FRA_FWMARK")
        if fwmark is not None:
            item["fwmark"] = int(fwmark)
        if int(message["flags"]) & _FIB_RULE_INVERT:
            item["not"] = True
        suppress = message.get_attr("FRA_SUPPRESS_PREFIXLEN")
        if suppress is not None and int(suppress) & _UNSET != _UNSET:
            item["suppress_prefixlength"] = int(suppress)
        for key, attr, length in (("src", "FRA_SRC", "src_len"), ("dst", "FRA_DST", "dst_len")):
            value = message.get_attr(attr)
            if value is not None:
                item[key] = str(ip_network(f"{value}/{int(message[length])}", strict=False))
        why = _unsupported_rule(message)
        if why is not None:
            unsupported.append(f"rule priority {item['priority']}: {why}")
            continue
        if item not in found:
            found.append(item)
    return sorted(found, key=lambda rule: int(rule["priority"]))


def _unsupported_rule(message: Any) -> str | None:
    if int(message["action"]) != _FR_ACT_TO_TBL:
        return f"action {message['action']} (not a table lookup)"
    for attr, word in _RULE_SELECTORS.items():
        if message.get_attr(attr) is not None:
            return f"matches {word}"
    if int(message["tos"]):
        return "matches tos"
    mask = message.get_attr("FRA_FWMASK")
    if mask is not None and int(mask) != _UNSET:
        return "matches a masked fwmark"
    group = message.get_attr("FRA_SUPPRESS_IFGROUP")
    if group is not None and int(group) & _UNSET != _UNSET:
        return "suppress_ifgroup"
    return None


# --------------------------------------------------------------------------- WireGuard


def _wireguard(link: _Link) -> dict[str, Any] | None:
    """A WireGuard interface's keys, port and peers; None for any other link."""
    from wgpy.io.kernel_wg import kernel_get
    from wgpy.io.uapi_client import uapi_get

    if link.kind == "wireguard":
        try:
            return _wireguard_json(kernel_get(link.name))
        except OSError as error:
            raise CollectError(
                f"cannot read the kernel WireGuard interface {link.name}: {error.strerror or error}"
            ) from None
    path = Path(socket_path(link.name))
    if link.kind != "tun" or not path.is_socket():
        return None
    try:
        return _wireguard_json(uapi_get(link.name))
    except OSError as error:
        why = error.strerror or error
        raise CollectError(f"cannot read {link.name} over {path}: {why}") from None


def _key(hex_key: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_key)).decode()


def _wireguard_json(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """UAPI ``get`` pairs as the snapshot's ``wireguard`` object. The private key only gives
    the public key; preshared keys and counters are not kept."""
    out: dict[str, Any] = {"public_key": None, "listen_port": 0, "peers": []}
    peer: dict[str, Any] | None = None
    for key, value in pairs:
        if key == "public_key":
            peer = {
                "public_key": _key(value),
                "allowed_ips": [],
                "endpoint": None,
                "persistent_keepalive": 0,
            }
            out["peers"].append(peer)
        elif peer is None:
            if key == "private_key":
                out["public_key"] = _key(crypto.public_key(bytes.fromhex(value)).hex())
            elif key == "listen_port":
                out["listen_port"] = int(value)
        elif key == "allowed_ip":
            peer["allowed_ips"].append(value)
        elif key == "endpoint":
            peer["endpoint"] = value
        elif key == "persistent_keepalive_interval":
            peer["persistent_keepalive"] = int(value)
    return out


# --------------------------------------------------------------------------- sysctl, firewall


def _sysctls() -> dict[str, int]:
    found: dict[str, int] = {}
    for name, required in _SYSCTLS.items():
        path = Path("/proc/sys", *name.split("."))
        try:
            found[name] = int(path.read_text().strip())
        except FileNotFoundError:
            if required:
                raise CollectError(f"cannot read {path}: no such file") from None
        except (OSError, ValueError) as error:
            raise CollectError(f"cannot read {path}: {error}") from None
    return found


def _run(argv: list[str]) -> tuple[str | None, str]:
    """A command's stdout, or None and why it failed (its first line of stderr)."""
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=_RUN_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"{argv[0]} could not run ({error})"
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        detail = lines[0] if lines else f"exit status {result.returncode}"
        return None, f"{' '.join(argv)} failed: {detail}"
    return result.stdout, ""


def _firewall() -> dict[str, Any]:
    """``iptables-save`` and ``ip6tables-save`` as printed; when they cannot be read, or
    nftables holds forwarding chains they do not show, neither is kept (the loader then
    marks the firewall unknown) and ``nft -j list ruleset`` is kept instead, with the reason
    in ``error``."""
    out: dict[str, Any] = {"iptables_save": None, "ip6tables_save": None, "nft": None}
    problems: list[str] = []
    for key, program in (("iptables_save", "iptables-save"), ("ip6tables_save", "ip6tables-save")):
        path = shutil.which(program)
        if path is None:
            problems.append(f"{program} is not installed")
            continue
        text, why = _run([path])
        if text is None:
            problems.append(why)
        elif "incompatible, use 'nft'" in text or "legacy tables present" in text:
            problems.append(f"{program}: its tables are not all in iptables' view")
        else:
            out[key] = text
    nft = shutil.which("nft")
    if nft is not None:
        text, why = _run([nft, "-j", "list", "ruleset"])
        ruleset: Any = None
        if text is not None:
            try:
                ruleset = json.loads(text)
            except json.JSONDecodeError:
                why = "nft -j list ruleset printed no JSON"
        if ruleset is None:
            if problems:
                problems.append(why)
        else:
            foreign = _foreign_chains(ruleset)
            if foreign:
                problems.append(f"nftables chains iptables does not show: {', '.join(foreign)}")
            if problems:
                out["nft"] = ruleset
    elif problems:
        problems.append("nft is not installed")
    if problems:
        out["iptables_save"] = out["ip6tables_save"] = None
        out["error"] = "; ".join(problems) + " (the model reads only iptables' view)"
    else:
        out["error"] = None
    return out


def _foreign_chains(ruleset: Any) -> list[str]:
    """The base chains on the forward and postrouting hooks of nftables tables that are
    not iptables-nft's (``inet``, or another table name): iptables-save does not print them."""
    found = []
    items = ruleset.get("nftables", []) if isinstance(ruleset, dict) else []
    for item in items:
        chain = item.get("chain") if isinstance(item, dict) else None
        if not isinstance(chain, dict) or chain.get("hook") not in _MODEL_HOOKS:
            continue
        family, table = chain.get("family"), chain.get("table")
        if family in ("ip", "ip6") and table in _IPTABLES_TABLES:
            continue
        if family not in ("ip", "ip6", "inet"):
            continue  # bridge, arp, netdev: not on the IP forwarding path
        found.append(f"{family} {table} {chain.get('name')} (hook {chain.get('hook')})")
    return found
