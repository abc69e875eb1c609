"""Command lines of the AllowedIPs tools: ``wgpy explain``, ``wgpy lint``, ``wgpy calc``.

Exit statuses (:mod:`wgpy.exit_status`, the README's table):

* explain: 0 sent / delivered, 1 not sent / dropped, 2 could not read (file, interface, address)
* lint: 0 clean (info only), 1 warnings or errors, 2 a file could not be read or parsed
* calc: 0, 1 when nothing is left (EXCLUDE covers all of INCLUDE), 2 for a malformed prefix

No traceback for a bad file: every ConfigError prints as ``FILE:LINE: message``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from wgpy.config import ConfigError, load
from wgpy.exit_status import Exit, interface_message
from wgpy.exit_status import unreadable as _error
from wgpy.tools.interface.live import config_of_interface, is_config_path


def cmd_explain(args: argparse.Namespace) -> int:
    from wgpy.tools.files.explain import ExplainError, Source, explain_from, explain_to, render_text

    words: list[str] = args.question
    if len(words) == 2 and words[0] == "to":
        direction, address, peer = "to", words[1], None
    elif len(words) == 4 and words[0] == "from" and words[2] == "via":
        direction, address, peer = "from", words[1], words[3]
    else:
        return _error("explain: ask `IF|CONF to ADDR` or `IF|CONF from ADDR via PEER`")

    route = None
    try:
        if is_config_path(args.target):
            source = Source.from_config(load(args.target))
        else:
            from wgpy.io.uapi_client import interface_get

            try:
                # a userspace daemon's socket, or a kernel interface over netlink
                pairs, _ = interface_get(args.target)
            except OSError as error:
                return _error(interface_message(args.target, error))
            source = Source.from_uapi(args.target, pairs)
        if direction == "to":
            if source.kind == "interface" and not args.no_route:
                route = _route(args.target, address)
            result = explain_to(source, address, route)
        else:
            assert peer is not None
            result = explain_from(source, address, peer)
    except (ConfigError, ExplainError) as error:
        return _error(str(error))
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(render_text(result, source))
    return Exit.OK if result["verdict"] in ("sent", "delivered") else Exit.FOUND


def _route(ifname: str, address: str) -> Any:
    """The OS route lookup, or None (with a note on stderr) when it cannot be made here."""
    from ipaddress import ip_address

    from wgpy.tools.interface.routes import interface_exists, route_get

    try:
        ip_address(address)
        if not interface_exists(ifname):
            sys.stderr.write(
                f"wgpy: note: {ifname} is not in this network namespace; route check skipped "
                "(run inside its namespace, e.g. `ip netns exec NS wgpy explain ...`)\n"
            )
            return None
        return route_get(address)
    except ValueError:
        return None  # explain_to reports the bad address
    except OSError as error:
        sys.stderr.write(f"wgpy: note: route lookup failed: {error}; route check skipped\n")
        return None


def cmd_lint(args: argparse.Namespace) -> int:
    from wgpy.tools.files.lint import exit_status, lint, render_text

    configs = []
    for path in args.configs:
        try:
            if is_config_path(path):
                configs.append(load(path))
            else:
                configs.append(config_of_interface(path))
        except ConfigError as error:
            return _error(str(error))
        except OSError as error:
            return _error(interface_message(path, error))
    findings = lint(configs)
    if args.json:
        sys.stdout.write(json.dumps([f.to_json() for f in findings], indent=2) + "\n")
    else:
        sys.stdout.write(render_text(findings))
    return exit_status(findings)


def cmd_calc(args: argparse.Namespace) -> int:
    from wgpy.tools.files.calc import difference, parse_prefixes, to_allowed_ips

    warnings: list[str] = []
    try:
        include = parse_prefixes(args.include, warnings)
        exclude = parse_prefixes(args.exclude or [], warnings)
    except ValueError as error:
        return _error(f"calc: {error}")
    for warning in warnings:
        sys.stderr.write(f"wgpy: calc: warning: {warning}\n")
    result = difference(include, exclude)
    if args.json:
        sys.stdout.write(json.dumps([str(p) for p in result]) + "\n")
    elif result:
        sys.stdout.write(f"AllowedIPs = {to_allowed_ips(result)}\n")
    if not result:
        sys.stderr.write(
            "wgpy: calc: nothing is left: the excluded prefixes cover every included address "
            "(an empty AllowedIPs sends nothing to the peer and accepts nothing from it)\n"
        )
        return Exit.FOUND
    return Exit.OK


def add_parsers(sub: Any) -> None:
    """Add explain, lint, calc and doctor to ``wgpy``'s subcommand parsers."""
    explain = sub.add_parser(
        "explain",
        help="which peer gets an address, or whether a source from a peer is accepted, and why",
        description="wgpy explain IF|CONF to ADDR   |   wgpy explain IF|CONF from ADDR via PEER "
        "(PEER: public key, unambiguous key prefix, or # Name). Exit 0 sent/delivered, "
        "1 not sent/dropped, 2 could not read.",
    )
    explain.add_argument("target", metavar="IF|CONF", help="live interface or wg-quick file")
    explain.add_argument("question", nargs="+", metavar="to ADDR | from ADDR via PEER")
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    explain.add_argument(
        "--no-route", action="store_true", help="skip the OS route lookup for live interfaces"
    )
    explain.set_defaults(func=cmd_explain)

    lint_parser = sub.add_parser(
        "lint",
        help="find AllowedIPs, key and endpoint mistakes in wg-quick configs",
        description="Exit 0 clean, 1 findings, 2 could not read. Several configs (a hub and "
        "its spokes) are also checked against each other.",
    )
    lint_parser.add_argument(
        "configs", nargs="+", metavar="CONF|IF", help="wg-quick files or live interfaces"
    )
    lint_parser.add_argument("--json", action="store_true", help="machine-readable output")
    lint_parser.set_defaults(func=cmd_lint)

    calc = sub.add_parser(
        "calc",
        help="minimal AllowedIPs covering INCLUDE minus EXCLUDE (IPv4 and IPv6)",
        description="Exit 0 with a result, 1 when nothing is left, 2 for a malformed prefix.",
    )
    calc.add_argument("include", nargs="+", metavar="INCLUDE")
    calc.add_argument("--exclude", "-x", nargs="+", metavar="EXCLUDE", default=[])
    calc.add_argument("--json", action="store_true", help="a JSON list of prefixes")
    calc.set_defaults(func=cmd_calc)
