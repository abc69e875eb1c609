"""``wgpy doctor IF [PEER.conf...] [--json] [--watch SECONDS]`` and ``wgpy doctor CONF...``:
gather the facts (UAPI get, wgpy-stats drops, OS routes, lint; the peers' own configs when
given) and print :mod:`wgpy.tools.interface.doctor`'s findings.

Exit 0: nothing above info; 1: problems found; 2: the interface or a file could not be read.
No private or preshared key is ever printed: the output is checked for them before it is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from wgpy.config import Config, ConfigError, load
from wgpy.exit_status import interface_message
from wgpy.exit_status import unreadable as _error
from wgpy.tools.interface.doctor import (
    Facts,
    Finding,
    diagnose,
    exit_status,
    from_lint,
    peer_sides,
    render_text,
)
from wgpy.tools.interface.live import interface_view
from wgpy.tools.interface.show import InterfaceView, key_from_hex


def _secrets(pairs: list[tuple[str, str]]) -> set[str]:
    found = set()
    for key, value in pairs:
        if key in ("private_key", "preshared_key") and value.strip("0"):
            found |= {value, key_from_hex(value)}
    return found


def _routes(
    view: InterfaceView,
) -> tuple[dict[str, Any] | None, dict[str, Any], int | None, list[str] | None]:
    """Routes of the AllowedIPs and no_peer destinations (None: not in this namespace), routes
    of the endpoint hosts, the interface MTU and its addresses (None: unknown)."""
    from wgpy.tools.interface.doctor import endpoint_addresses, route_addresses
    from wgpy.tools.interface.routes import (
        interface_addresses,
        interface_exists,
        link_mtu,
        route_get,
    )

    try:
        if not interface_exists(view.name):
            return None, {}, None, None
        routes = {address: route_get(address) for address in route_addresses(view)}
        endpoints = {address: route_get(address) for address in endpoint_addresses(view)}
        addresses = [f"{address}/{length}" for address, length in interface_addresses(view.name)]
        return routes, endpoints, link_mtu(view.name), addresses
    except OSError as error:
        sys.stderr.write(f"wgpy: note: route lookup failed: {error}; route check skipped\n")
        return None, {}, None, None


def _interface(
    ifname: str, watch: float, others: list[Config]
) -> tuple[list[Finding], set[str]] | int:
    from wgpy.tools.files.lint import lint
    from wgpy.tools.interface.live import config_of_pairs

    try:
        before = None
        if watch > 0:
            before, _ = interface_view(ifname)
            time.sleep(watch)
        view, pairs = interface_view(ifname)
    except OSError as error:
        return _error(interface_message(ifname, error))
    try:
        lint_findings = lint([config_of_pairs(ifname, pairs)])
    except ConfigError as error:
        sys.stderr.write(f"wgpy: note: lint skipped: {error}\n")
        lint_findings = []
    routes, endpoint_routes, mtu, addresses = _routes(view)
    facts = Facts(
        view, time.time(), before, watch, routes, lint_findings, mtu, endpoint_routes, addresses
    )
    facts.peer_sides = peer_sides(view, others)
    return diagnose(facts), _secrets(pairs)


def _config_secrets(configs: list[Config]) -> set[str]:
    secrets: set[str] = set()
    for config in configs:
        iface = config.interface
        if iface is not None and iface.private_key is not None:
            secrets.add(iface.private_key.text)
        secrets |= {p.preshared_key.text for p in config.peers if p.preshared_key}
    return secrets


def cmd_doctor(args: argparse.Namespace) -> int:
    from wgpy.tools.interface.live import is_config_path

    targets: list[str] = args.targets
    secrets: set[str] = set()
    if all(is_config_path(t) for t in targets):
        try:
            configs = [load(path) for path in targets]
        except ConfigError as error:
            return _error(str(error))
        from wgpy.tools.files.lint import lint

        findings = from_lint(lint(configs))
        secrets = _config_secrets(configs)
    elif all(is_config_path(t) for t in targets[1:]):
        # an interface, and its peers' own configs (files or `wg showconf` snapshots)
        try:
            others = [load(path) for path in targets[1:]]
        except ConfigError as error:
            return _error(str(error))
        result = _interface(targets[0], args.watch, others)
        if isinstance(result, int):
            return result
        findings, secrets = result
        secrets |= _config_secrets(others)
    else:
        return _error(
            "doctor: give one interface (then its peers' config files), or wg-quick files"
        )
    if args.json:
        text = json.dumps([f.to_json() for f in findings], indent=2) + "\n"
    else:
        text = render_text(findings)
    for secret in secrets:
        text = text.replace(secret, "(hidden)")
    sys.stdout.write(text)
    return exit_status(findings)


def add_parser(sub: Any) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="why a tunnel does not work: findings ranked by severity, each with its fix",
        description="wgpy doctor IF [PEER.conf...] [--watch SECONDS]  |  wgpy doctor CONF... . "
        "PEER.conf: a peer's own config (or `wg showconf` snapshot), so the keepalive advice "
        "knows that side. Checks each "
        "peer's handshake, the drops by reason and address (wgpyd), AllowedIPs that nothing "
        "routes into the interface, and lint's findings. Exit 0 no problem, 1 problems found, "
        "2 could not read.",
    )
    doctor.add_argument(
        "targets",
        nargs="+",
        metavar="IF|CONF",
        help="interface (then its peers' config files), or wg-quick files",
    )
    doctor.add_argument("--json", action="store_true", help="the findings as a JSON list")
    doctor.add_argument(
        "--watch",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait SECONDS first so counters gather (compares traffic before and after)",
    )
    doctor.set_defaults(func=cmd_doctor)
