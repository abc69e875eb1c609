"""``wgpy net check`` and ``wgpy net trace``: the network model asked from the command line.

Inputs are ``wgpy collect`` snapshots (``.json``) and wg-quick files, in any mix; reading
them is this module's only I/O. Exit status (the README's table): 0 every pair reachable (check),
the packet and its reply delivered (trace), drawn (map); 1 some pair not, the packet lost, the
picture not written; 2 an input could not be read — then nothing is printed on stdout and
nothing is written.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import textwrap
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from wgpy.config import ConfigError, load
from wgpy.net.build import BuildError, build_network
from wgpy.net.check import Endpoint, PairResult, Report, check, endpoints, ping
from wgpy.net.fixes import Fix, suggest_all
from wgpy.net.model import Host, IPAddress, Network
from wgpy.net.snapshot import SnapshotError, host_from_snapshot
from wgpy.net.trace import Cause, Index, Trace, Verdict
from wgpy.net.wgquick import host_from_config
from wgpy.tools.network.net_text import cause_text
from wgpy.tools.termtext import terminal_width

__all__ = ["add_parser", "load_network"]

#: example pairs printed under a cause; the rest are counted
EXAMPLES = 3
#: up to this many pairs, the JSON lists every pair's answer ("results")
RESULTS_LIMIT = 10_000


class InputError(Exception):
    """An input that could not be read; the message is one line for people."""


def load_network(paths: list[str]) -> Network:
    hosts: list[Host] = []
    for path in paths:
        hosts.append(_load_host(path))
    try:
        return build_network(hosts)
    except BuildError as error:
        raise InputError(str(error)) from None


def _load_host(path: str) -> Host:
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as error:
        raise InputError(f"{path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file") from None
    if file.suffix == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
        try:
            return host_from_snapshot(data, file.name)
        except SnapshotError as error:
            raise InputError(str(error)) from None
    try:
        return host_from_config(load(path))
    except ConfigError as error:
        raise InputError(str(error)) from None


# --------------------------------------------------------------------------- words


def _pair_text(result: PairResult) -> str:
    return f"{result.source.label} → {result.target.label}"


def _wrap(text: str, indent: str, width: int) -> list[str]:
    return textwrap.wrap(
        text,
        width=width,
        initial_indent=indent,
        subsequent_indent=indent + "  ",
        break_on_hyphens=False,
    ) or [indent]


def render_check(report: Report, fixes: dict[int, Fix | None], width: int) -> str:
    total = report.total
    hosts = len(report.network.hosts)
    lines = [
        f"{hosts} hosts, {total} ordered pairs of addresses (a ping and its reply): "
        f"{report.reachable} reachable, {total - report.reachable} not"
        + (f" ({report.unknown} unknown)" if report.unknown else "")
    ]
    assumptions: set[str] = set()
    for number, group in enumerate(report.groups):
        count = group.count
        lines.append("")
        head = f"✗ {count} pair{'s' if count != 1 else ''}: {cause_text(group.cause, group.leg)}"
        lines.extend(_wrap(head, "", width))
        for result in group.sample(EXAMPLES):
            lines.extend(_wrap(_pair_text(result), "    ", width))
        if count > EXAMPLES:
            lines.append(f"    … and {count - EXAMPLES} more")
        if group.cause.assumption:
            assumptions.add(group.cause.assumption)
            assumption = group.cause.assumption.removeprefix("assumed: ")
            lines.extend(_wrap(f"(rests on an assumption: {assumption})", "  ", width))
        fix = fixes.get(number)
        if fix is None:
            if number in fixes:
                lines.append("  no single change found that fixes it without breaking a pair")
            continue
        if _repeats(fixes, number, fix):
            text = f"fix: the same change as above ({fix.summary}) fixes these too"
            lines.extend(_wrap(text, "  ", width))
            continue
        lines.append(
            f"  fix (checked on the model: {fix.fixes} of these pairs then reachable, none broken):"
        )
        lines.extend(_wrap(fix.summary, "    ", width))
        for command in fix.commands:
            lines.append(f"    {command}")
        for line in fix.config:
            lines.append(f"    {line}")
    unknown = sorted({u for h in report.network.hosts for u in h.unknown})
    if unknown:
        lines.append("")
        lines.append("not read (answers touching these are unknown):")
        for item in unknown:
            lines.extend(_wrap(item, "  ", width))
    return "\n".join(lines) + "\n"


def _repeats(fixes: dict[int, Fix | None], number: int, fix: Fix) -> bool:
    """Whether an earlier group's fix is the same change."""
    for earlier in range(number):
        other = fixes.get(earlier)
        if other is not None and other.changes == fix.changes:
            return True
    return False


def _cause_json(cause: Cause) -> dict[str, Any]:
    return {
        "kind": cause.kind.value,
        "host": cause.host,
        "interface": cause.interface,
        "in_interface": cause.in_interface,
        "peer": cause.peer,
        "detail": cause.detail,
        "assumption": cause.assumption,
    }


def _endpoint_json(endpoint: Endpoint) -> dict[str, Any]:
    return {"host": endpoint.host, "address": str(endpoint.address), "lan": endpoint.lan}


def _fix_json(fix: Fix | None) -> dict[str, Any] | None:
    if fix is None:
        return None
    return {
        "summary": fix.summary,
        "commands": fix.commands,
        "config": fix.config,
        "fixes_pairs": fix.fixes,
        "changes": [
            {
                "kind": c.kind.value,
                "host": c.host,
                "interface": c.interface,
                "peer": c.peer,
                "prefixes": [str(p) for p in c.prefixes],
                "version": c.version,
                "in_interface": c.in_iface,
                "out_interface": c.out_iface,
            }
            for c in fix.changes
        ],
    }


def check_json(report: Report, fixes: dict[int, Fix | None]) -> dict[str, Any]:
    """The JSON of ``net check``: counts, groups (each with its first pairs as examples) and,
    up to :data:`RESULTS_LIMIT` pairs, every pair's answer ("results"; null above)."""
    out: dict[str, Any] = {
        "hosts": [h.name for h in report.network.hosts],
        "pairs": report.total,
        "reachable": report.reachable,
        "unknown": report.unknown,
        "groups": [
            {
                "cause": _cause_json(g.cause),
                "leg": g.leg,
                "text": cause_text(g.cause, g.leg),
                "pairs": g.count,
                "examples": [
                    {"from": _endpoint_json(s), "to": _endpoint_json(t)}
                    for s, t in itertools.islice(g.endpoint_pairs(), EXAMPLES)
                ],
                "fix": _fix_json(fixes.get(number)),
            }
            for number, g in enumerate(report.groups)
        ],
        "results": None,
    }
    if report.total <= RESULTS_LIMIT:
        group_of: dict[tuple[Cause, str | None], int] = {
            (g.cause, g.leg): number for number, g in enumerate(report.groups)
        }
        out["results"] = [
            {
                "from": _endpoint_json(source),
                "to": _endpoint_json(target),
                "reachable": outcome.reachable,
                "verdict": "reachable"
                if outcome.reachable
                else ("unknown" if outcome.unknown else "unreachable"),
                "group": group_of.get((outcome.cause, outcome.leg))
                if outcome.cause is not None
                else None,
            }
            for source, target, outcome in report.pairs()
        ]
    return out


def _trace_lines(title: str, result: Trace, columns: int) -> list[str]:
    """One line per step (host, what, detail), the detail wrapped under itself."""
    lines = [title]
    width = max((len(s.host) for s in result.steps), default=4)
    indent = " " * (2 + width + 2 + 13)
    for step in result.steps:
        head = f"  {step.host:<{width}}  {step.what:<12} "
        wrapped = textwrap.wrap(
            step.detail, width=max(20, columns - len(indent)), break_on_hyphens=False
        ) or [""]
        lines.append(head + wrapped[0])
        lines.extend(indent + rest for rest in wrapped[1:])
    if result.verdict is Verdict.DELIVERED:
        lines.append(f"  DELIVERED to {result.delivered_to}")
    elif result.cause is not None:
        state = "UNKNOWN" if result.verdict is Verdict.UNKNOWN else "DROPPED"
        lines.extend(_wrap(f"{state}: {cause_text(result.cause, 'packet')}", "  ", columns))
    return lines


def _trace_json(result: Trace) -> dict[str, Any]:
    return {
        "src": str(result.src),
        "dst": str(result.dst),
        "verdict": result.verdict.value,
        "delivered_to": result.delivered_to,
        "cause": _cause_json(result.cause) if result.cause else None,
        "steps": [{"host": s.host, "what": s.what, "detail": s.detail} for s in result.steps],
        "nat": [[h, str(a), str(b)] for h, a, b in result.nat],
    }


# --------------------------------------------------------------------------- commands


def _width() -> int:
    """The terminal's columns (``$COLUMNS`` first), at most 100; 80 when not a terminal."""
    return terminal_width(sys.stdout, maximum=100)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        network = load_network(args.inputs)
    except InputError as error:
        sys.stderr.write(f"wgpy net check: {error}\n")
        return 2
    report = check(network)
    fixes: dict[int, Fix | None] = {} if args.no_fixes else suggest_all(report)
    if args.json:
        sys.stdout.write(json.dumps(check_json(report, fixes), indent=2) + "\n")
    else:
        sys.stdout.write(render_check(report, fixes, _width()))
    return 0 if report.reachable == report.total else 1


def _find_endpoint(network: Network, found: list[Endpoint], text: str) -> Endpoint:
    name, _, address = text.partition(":") if text.count(":") <= 1 else (text, "", "")
    host = network.host(name)
    if host is None:
        try:
            wanted = ip_address(text)
        except ValueError:
            names = ", ".join(h.name for h in network.hosts)
            raise InputError(f"no host {text!r} among the inputs ({names})") from None
        for endpoint in found:
            if endpoint.address == wanted:
                return endpoint
        raise InputError(f"{text} is no host's address or LAN")
    candidates = [e for e in found if e.host == host.name and not e.lan]
    if address:
        try:
            wanted = ip_address(address)
        except ValueError:
            raise InputError(f"{address!r} is not an IP address") from None
        for endpoint in candidates:
            if endpoint.address == wanted:
                return endpoint
        return Endpoint(host.name, wanted)
    if not candidates:
        raise InputError(f"{host.name} has no address in the tunnel")
    return candidates[0]


def cmd_trace(args: argparse.Namespace) -> int:
    words: list[str] = args.words
    if len(words) < 5 or words[-4] != "from" or words[-2] != "to":
        sys.stderr.write(
            "wgpy net trace: usage: wgpy net trace INPUT... from HOST[:ADDR] to ADDR\n"
        )
        return 2
    inputs, source_text, target_text = words[:-4], words[-3], words[-1]
    try:
        network = load_network(inputs)
        found = endpoints(network)
        source = _find_endpoint(network, found, source_text)
        target = _target(found, target_text)
    except InputError as error:
        sys.stderr.write(f"wgpy net trace: {error}\n")
        return 2
    if source.address.version != target.address.version:
        sys.stderr.write("wgpy net trace: the two addresses are of different IP versions\n")
        return 2
    result = ping(Index(network), source, target)
    if args.json:
        out = {
            "from": _endpoint_json(source),
            "to": _endpoint_json(target),
            "reachable": result.reachable,
            "request": _trace_json(result.request),
            "reply": _trace_json(result.reply) if result.reply else None,
        }
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        columns = _width()
        lines = _trace_lines(
            f"request {source.address} → {target.address} from {source.start}",
            result.request,
            columns,
        )
        if result.reply is not None:
            lines.append("")
            lines.extend(
                _trace_lines(
                    f"reply {result.reply.src} → {result.reply.dst} from {target.start}",
                    result.reply,
                    columns,
                )
            )
        sys.stdout.write("\n".join(lines) + "\n")
    return 0 if result.reachable else 1


def _target(found: list[Endpoint], text: str) -> Endpoint:
    try:
        wanted: IPAddress = ip_address(text)
    except ValueError:
        raise InputError(f"{text!r} is not an IP address") from None
    for endpoint in found:
        if endpoint.address == wanted:
            return endpoint
    raise InputError(f"{text} is no host's address or LAN representative in the inputs")


def cmd_map(args: argparse.Namespace) -> int:
    from wgpy.tools.network.collect_cli import write_atomically
    from wgpy.tools.network.netmap import render_html, render_svg

    try:
        network = load_network(args.inputs)
    except InputError as error:
        sys.stderr.write(f"wgpy net map: {error}\n")
        return 2
    report = check(network)
    kind = args.format or ("html" if (args.output or "").endswith((".html", ".htm")) else "svg")
    text = render_html(report) if kind == "html" else render_svg(report)
    if not args.output or args.output == "-":
        sys.stdout.write(text)
        return 0
    try:
        write_atomically(Path(args.output), text)
    except OSError as error:
        sys.stderr.write(f"wgpy net map: {args.output}: {error.strerror or error}\n")
        return 1
    return 0


def add_parser(sub: Any) -> None:
    net = sub.add_parser(
        "net",
        help="why a packet does not cross a WireGuard network, hop by hop",
        description="Ask the network model, built from `wgpy collect` snapshots and/or "
        "wg-quick files (joined by keys).",
    )
    commands = net.add_subparsers(dest="net_command", required=True, metavar="COMMAND")
    check_parser = commands.add_parser(
        "check", help="every ordered pair of addresses: reachable or not, why, and the fix"
    )
    check_parser.add_argument("inputs", nargs="+", metavar="INPUT")
    check_parser.add_argument("--json", action="store_true", help="everything, as JSON")
    check_parser.add_argument(
        "--no-fixes", action="store_true", help="skip the search for fixes (faster)"
    )
    check_parser.set_defaults(func=cmd_check)
    trace_parser = commands.add_parser(
        "trace",
        help="the hops of one ping and its reply",
        usage="wgpy net trace INPUT... from HOST[:ADDR] to ADDR [--json]",
    )
    trace_parser.add_argument("words", nargs="+", metavar="INPUT... from HOST[:ADDR] to ADDR")
    trace_parser.add_argument("--json", action="store_true", help="the hops as JSON")
    trace_parser.set_defaults(func=cmd_trace)
    map_parser = commands.add_parser(
        "map", help="the hosts as a graph and every pair's reachability, as SVG or HTML"
    )
    map_parser.add_argument("inputs", nargs="+", metavar="INPUT")
    map_parser.add_argument("-o", "--output", help="write to this file (default: stdout)")
    map_parser.add_argument(
        "--format", choices=("svg", "html"), help="default: from -o's suffix, else svg"
    )
    map_parser.set_defaults(func=cmd_map)
