"""A host as ``wg-quick up FILE`` leaves it, from the file alone.

What wg-quick does, and so what the model takes from a config file:

* the interface (named after the file) gets each ``Address``, and the kernel a connected
  route for its subnet;
* unless ``Table = off``, a route into the interface for every peer's AllowedIPs prefix; a
  default route (``/0``) goes into table 51820 instead, with wg-quick's two rules (``not
  fwmark 51820 lookup 51820`` and ``lookup main suppress_prefixlength 0``); ``Table = N``
  puts the routes in table N and adds no rule;
* PostUp lines of the common forms are read: ``sysctl [-w] net.ipv4.ip_forward=1`` (and the
  IPv6 ``forwarding`` switches, and ``echo 1 > /proc/sys/...``), ``iptables``/``ip6tables``
  FORWARD and nat POSTROUTING rules, ``ip route add``. Other commands that could change
  forwarding (nft, firewall-cmd, ufw) make the host's firewall unknown.

What the file does not say is assumed, and named: forwarding off (Linux's default), an empty
FORWARD chain with policy ACCEPT, no other interfaces. The host's public key is derived from
``PrivateKey``.
"""

from __future__ import annotations

import re
import shlex
from ipaddress import ip_address, ip_interface, ip_network
from pathlib import Path

from wgpy import keys
from wgpy.config import Config, ConfigError, Value, parse_key, parse_prefix, peer_key
from wgpy.net import iptables
from wgpy.net.model import (
    WG_QUICK_TABLE,
    Action,
    Firewall,
    Host,
    Interface,
    IPNetwork,
    Kind,
    Origin,
    Route,
    Rule,
    WgPeer,
    assumed,
)

__all__ = ["host_from_config", "interface_name"]

_FORWARD_SYSCTLS = {
    "net.ipv4.ip_forward": 4,
    "net.ipv4.conf.all.forwarding": 4,
    "net.ipv6.conf.all.forwarding": 6,
    "net.ipv6.conf.default.forwarding": 6,
}
_MAYBE_FIREWALL = ("nft", "firewall-cmd", "ufw", "iptables-restore", "ip6tables-restore")
_HOOK_SPLIT = re.compile(r"\s*(?:;|&&|\|\|)\s*")


def interface_name(config: Config) -> str:
    """wg-quick's interface name: the file's name without ``.conf``."""
    return Path(config.filename).name.removesuffix(".conf")


def _origin(value: Value, what: str) -> Origin:
    return Origin(Kind.CONFIG, f"{Path(value.filename).name}:{value.line} {what}")


def host_from_config(config: Config) -> Host:
    """The host wg-quick makes of ``config``; raises ConfigError for what wg would refuse."""
    ifname = interface_name(config)
    section = config.interface
    if section is None:
        raise ConfigError(config.filename, None, "no [Interface] section")
    config.table()  # misspelt keys, invalid keys and prefixes: what wg would refuse
    file_origin = Origin(Kind.CONFIG, Path(config.filename).name)
    host = Host(name=ifname, origin=file_origin)
    private = section.private_key
    if private is None:
        raise ConfigError(config.filename, section.line, "[Interface] has no PrivateKey")
    public_key = keys.pubkey(private.text) if parse_key(private) else None
    addresses = []
    for value in section.addresses:
        try:
            addresses.append(ip_interface(value.text))
        except ValueError:
            raise value.error(f"invalid Address {value.text!r}") from None
    interface = Interface(
        name=ifname,
        addresses=addresses,
        origin=file_origin,
        wireguard=True,
        public_key=public_key,
        config_file=config.filename,
    )
    host.interfaces.append(interface)
    for value, address in zip(section.addresses, addresses, strict=True):
        if address.network.prefixlen < address.max_prefixlen:
            host.routes.append(
                Route(address.network, ifname, _origin(value, "Address (connected route)"))
            )
    for section_peer in config.peers:
        key = peer_key(section_peer)
        prefixes: list[IPNetwork] = []
        prefix_origins: dict[IPNetwork, Origin] = {}
        for value in section_peer.allowed_ips:
            prefix = parse_prefix(value)
            prefixes.append(prefix)
            prefix_origins[prefix] = _origin(value, f"AllowedIPs of {section_peer.label}")
        keepalive = section_peer.value("PersistentKeepalive")
        endpoint = section_peer.endpoint
        interface.peers.append(
            WgPeer(
                public_key=key,
                allowed_ips=prefixes,
                origin=_origin(Value("", section_peer.line, config.filename), "[Peer]"),
                name=section_peer.name,
                endpoint=endpoint.text if endpoint else None,
                persistent_keepalive=int(keepalive.text)
                if keepalive and keepalive.text.isdigit()
                else 0,
                prefix_origins=prefix_origins,
            )
        )
    _wg_quick_routes(host, interface, section.table)
    for version in (4, 6):
        host.forwarding[version] = (
            False,
            assumed(
                f"IPv{version} forwarding off (Linux's default; {file_origin} does not enable it)"
            ),
        )
        host.firewall[version] = Firewall(
            Action.ACCEPT,
            assumed(f"empty FORWARD chain, policy ACCEPT (Linux's default; IPv{version})"),
        )
    for value in section.hooks("PostUp"):
        _read_hook(host, ifname, value)
    return host


def _wg_quick_routes(host: Host, interface: Interface, table_value: Value | None) -> None:
    table = (table_value.text if table_value else "auto").strip()
    if table == "off":
        return
    interface.allowed_ips_table = "main" if table in ("auto", "main") else table
    default_added: set[int] = set()
    for peer in interface.peers:
        for prefix in peer.allowed_ips:
            origin = peer.prefix_origins[prefix]
            route_origin = Origin(origin.kind, f"{origin.what} (route added by wg-quick)")
            if table == "auto" and prefix.prefixlen == 0:
                host.routes.append(
                    Route(prefix, interface.name, route_origin, table=WG_QUICK_TABLE)
                )
                default_added.add(prefix.version)
            else:
                name = "main" if table in ("auto", "main") else table
                host.routes.append(Route(prefix, interface.name, route_origin, table=name))
    if default_added:
        how = Origin(Kind.CONFIG, f"wg-quick's rules for a default route via {interface.name}")
        host.rules.append(Rule(32764, "main", how, suppress_prefixlength=0))
        host.rules.append(Rule(32765, WG_QUICK_TABLE, how, fwmark=0xCA6C, invert=True))


def _read_hook(host: Host, ifname: str, value: Value) -> None:
    text = value.text.replace("%i", ifname)
    for part in _HOOK_SPLIT.split(text):
        if not part:
            continue
        try:
            argv = shlex.split(part)
        except ValueError:
            continue
        if not argv:
            continue
        program = Path(argv[0]).name
        origin = _origin(value, "PostUp")
        if program == "sysctl":
            _read_sysctl(host, argv[1:], origin)
        elif program == "echo" and ">" in part and "/proc/sys/" in part:
            _read_echo(host, part, origin)
        elif program in (
            "iptables",
            "ip6tables",
            "iptables-nft",
            "ip6tables-nft",
            "iptables-legacy",
            "ip6tables-legacy",
        ):
            version = 6 if program.startswith("ip6") else 4
            _read_iptables(host, argv[1:], version, origin)
        elif program == "ip":
            _read_ip(host, argv[1:], origin)
        elif program in _MAYBE_FIREWALL:
            host.unknown.append(
                f"{origin}: {part!r} may change forwarding; the model does not read {program}"
            )


def _read_sysctl(host: Host, args: list[str], origin: Origin) -> None:
    for arg in args:
        name, sep, setting = arg.partition("=")
        if not sep:
            continue
        name = name.replace("/", ".")
        version = _FORWARD_SYSCTLS.get(name)
        if version is not None:
            host.forwarding[version] = (setting.strip() == "1", origin)


def _read_echo(host: Host, part: str, origin: Origin) -> None:
    match = re.search(r"echo\s+(\d)\s*>\s*/proc/sys/(\S+)", part)
    if match:
        version = _FORWARD_SYSCTLS.get(match.group(2).replace("/", "."))
        if version is not None:
            host.forwarding[version] = (match.group(1) == "1", origin)


def _read_iptables(host: Host, args: list[str], version: int, origin: Origin) -> None:
    try:
        command = iptables.parse_command(args, version, origin)
    except iptables.IptablesError as error:
        host.unknown.append(f"{origin}: {error}")
        return
    if command is not None:
        apply_iptables(host, command, version)


def apply_iptables(host: Host, command: iptables.Command, version: int) -> None:
    """Put one parsed command into the host's firewall of ``version``."""
    firewall = host.firewall.setdefault(
        version, Firewall(Action.ACCEPT, assumed(f"FORWARD policy ACCEPT (IPv{version})"))
    )
    if command.op == "policy" and command.policy is not None:
        firewall.forward_policy = command.policy
        firewall.policy_origin = command.origin
        return
    if command.rule is None:
        return
    chain = firewall.forward if command.chain == "FORWARD" else firewall.postrouting
    if command.op == "insert":
        chain.insert(max(0, command.position - 1), command.rule)
    else:
        chain.append(command.rule)


def _read_ip(host: Host, args: list[str], origin: Origin) -> None:
    version: int | None = None
    while args and args[0] in ("-4", "-6"):
        version = int(args[0][1])
        args = args[1:]
    if len(args) < 3 or args[0] not in ("route", "r", "ro") or args[1] not in ("add", "replace"):
        return
    words = args[2:]
    try:
        prefix = (
            ip_network("0.0.0.0/0" if version != 6 else "::/0")
            if words[0] == "default"
            else ip_network(words[0], strict=False)
        )
    except ValueError:
        host.unknown.append(f"{origin}: cannot read route {shlex.join(args)!r}")
        return
    options = dict(zip(words[1::2], words[2::2], strict=False))
    via = options.get("via")
    host.routes.append(
        Route(
            prefix,
            options.get("dev"),
            origin,
            table=options.get("table", "main"),
            via=ip_address(via) if via else None,
        )
    )
