"""Command lines of the tools that show an interface to look at: ``wgpy top``, ``wgpy map``,
``wgpy web``.

Exit statuses (:mod:`wgpy.exit_status`): 0 done; 1 failed after reading the input (the
interface went away during top, an output file or a listening port that cannot be had); 2 an
interface or file that could not be read or parsed (``FILE:LINE: message``, never a traceback),
or bad usage.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from wgpy.config import Config, ConfigError, load
from wgpy.exit_status import Exit, Failed, Unreadable, failed, unreadable_interface
from wgpy.exit_status import unreadable as _error
from wgpy.tools.interface.live import map_target


def _names(path: str | None) -> dict[str, str]:
    """Public key -> ``# Name =`` of a config file (raises ConfigError)."""
    return load(path).peer_names() if path else {}


def cmd_top(args: argparse.Namespace) -> int:
    from wgpy.tools.interface import top

    try:
        names = _names(args.names)
    except ConfigError as error:
        return _error(str(error))
    read = top.reader(args.interface)
    try:
        if args.once:
            top.once(read, args.interval, sys.stdout, names)
            return 0
        read()  # fail before taking the screen over
    except OSError as error:
        return unreadable_interface(args.interface, error)
    return top.run_top(read, args.interval, sys.stdout, names)


def cmd_map(args: argparse.Namespace) -> int:
    from wgpy.tools.files.aipmap import build_sides, render_html, render_svg

    configs: list[Config] = []
    extras: list[Any] = []
    try:
        names = _names(args.names)
    except ConfigError as error:
        return _error(str(error))
    for target in args.targets:
        try:
            config, live = map_target(target)
        except ConfigError as error:
            return _error(str(error))
        except OSError as error:
            return unreadable_interface(target, error)
        configs.append(config)
        extras.append(live)
    try:
        sides = build_sides(configs, extras, names)
    except ConfigError as error:
        return _error(str(error))
    kind = args.format or ("html" if (args.output or "").endswith((".html", ".htm")) else "svg")
    text = render_html(sides) if kind == "html" else render_svg(sides)
    if not args.output or args.output == "-":
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as error:
        return failed(f"{args.output}: {error.strerror or error}")
    return Exit.OK


def cmd_web(args: argparse.Namespace) -> int:
    try:
        from wgpy.tools.interface.web import WebError, serve
    except ImportError as error:
        return _error(f"web needs aiohttp ({error}): pip install 'wgpy[web]'")

    try:
        return serve(
            args.target, args.listen, token=args.token, names_file=args.names, net=args.net
        )
    except (WebError, ConfigError, Unreadable) as error:
        return _error(str(error))
    except Failed as error:
        return failed(str(error))


def add_parsers(sub: Any) -> None:
    """Add top, map and web to ``wgpy``'s subcommand parsers."""
    top = sub.add_parser(
        "top",
        help="a live view of an interface: peers, handshakes, rates, drops per second",
        description="Refreshes like top; q or Ctrl-C quits. Drops need wgpyd, or a running "
        "`wgpy watch IF` for a kernel interface.",
    )
    top.add_argument("interface", metavar="IF", help="a wgpyd, wireguard-go or kernel interface")
    top.add_argument(
        "-n", "--interval", type=float, default=1.0, help="seconds between refreshes (default 1)"
    )
    top.add_argument(
        "--once", action="store_true", help="print one frame (two readings --interval apart)"
    )
    top.add_argument("--names", metavar="CONF", help="peer names from a config's # Name = lines")
    top.set_defaults(func=cmd_top)

    map_parser = sub.add_parser(
        "map",
        help="draw the address space as AllowedIPs divide it (SVG or HTML)",
        description="One panel per config or live interface (a hub and its spokes are "
        "checked against each other, as lint does). Output is deterministic.",
    )
    map_parser.add_argument(
        "targets", nargs="+", metavar="CONF|IF", help="wg-quick files or live interfaces"
    )
    map_parser.add_argument(
        "-o", "--output", metavar="FILE", help="map.svg or map.html (default: SVG on stdout)"
    )
    map_parser.add_argument(
        "--format", choices=("svg", "html"), help="default: from the output's extension"
    )
    map_parser.add_argument(
        "--names", metavar="CONF", help="peer names from a config's # Name = lines (for IF)"
    )
    map_parser.set_defaults(func=cmd_map)

    web = sub.add_parser(
        "web",
        help="a small read-only web page: peers, drops, the map and an explain form",
        description="Listens on loopback by default. Another address needs --token, which "
        "every request must then carry (?token= or Authorization: Bearer).",
    )
    web.add_argument("target", metavar="IF|CONF", help="a live interface or a wg-quick file")
    web.add_argument(
        "--listen",
        default="127.0.0.1:8787",
        metavar="HOST:PORT",
        help="where to listen (default 127.0.0.1:8787; port 0 picks a free one)",
    )
    web.add_argument("--token", help="required on every request; needed for a non-loopback HOST")
    web.add_argument("--names", metavar="CONF", help="peer names from a config's # Name = lines")
    web.add_argument(
        "--net",
        nargs="+",
        metavar="INPUT",
        default=[],
        help="also show the network these wg-quick files or snapshots make (wgpy net map)",
    )
    web.set_defaults(func=cmd_web)
