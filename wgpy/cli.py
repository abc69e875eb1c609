"""The ``wgpy`` command line for people."""

from __future__ import annotations

import argparse
import base64
import binascii
import sys

from wgpy import __version__, crypto
from wgpy.exit_status import Exit, failed, run, unreadable, unreadable_interface


def _read_key(stream: str) -> bytes:
    try:
        key = base64.b64decode(stream.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ValueError("Key is not the correct length or format")
    return key


def cmd_genkey(_: argparse.Namespace) -> int:
    sys.stdout.write(base64.b64encode(crypto.generate_private_key()).decode() + "\n")
    return 0


def cmd_genpsk(_: argparse.Namespace) -> int:
    import os

    sys.stdout.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    return 0


def cmd_pubkey(_: argparse.Namespace) -> int:
    try:
        private = _read_key(sys.stdin.read())
    except ValueError as error:
        return failed(str(error))  # 1, as `wg pubkey`
    sys.stdout.write(base64.b64encode(crypto.public_key(private)).decode() + "\n")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from wgpy.demo import run_demo

    return run_demo(keep=args.keep)


def _interfaces() -> list[str]:
    from pathlib import Path

    from wgpy.uapi import SOCKET_DIRECTORY

    return sorted(p.stem for p in Path(SOCKET_DIRECTORY).glob("*.sock") if p.stem)


def cmd_show(args: argparse.Namespace) -> int:
    from wgpy.tools.interface.live import interface_view
    from wgpy.tools.interface.show import print_view, to_json

    names = [args.interface] if args.interface else _interfaces()
    views = []
    for name in names:
        try:
            # a userspace daemon's socket, or a kernel interface over netlink
            view, _ = interface_view(name)
        except OSError as error:
            if not args.interface:
                continue  # a stale or vanished socket, as `wg show` skips them
            return unreadable_interface(name, error)
        views.append(view)
    if args.json:
        import json

        sys.stdout.write(json.dumps([to_json(v) for v in views], indent=2) + "\n")
        return 0
    for index, view in enumerate(views):
        if index:
            sys.stdout.write("\n")
        print_view(view, as_json=False, wide=args.wide)
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    from wgpy.tools.interface import events

    try:
        sock = events.connect(args.interface, follow=args.follow, as_json=args.json)
        events.copy(args.interface, sock, sys.stdout, follow=args.follow)
    except events.EventsError as error:
        return unreadable(str(error))  # no such interface, or no event stream in it
    except BrokenPipeError:  # `wgpy events IF --follow | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    from wgpy.sinks.pcapng import PcapngError
    from wgpy.tools.interface import capture

    if args.read:
        try:
            with open(args.read, "rb") as stream:
                capture.print_file(stream)
        except OSError as error:
            return unreadable(f"{args.read}: {error.strerror or error}")
        except PcapngError as error:
            return unreadable(f"{args.read}: {error}")
        return Exit.OK
    if not args.interface or not args.write:
        return unreadable("capture: give IFNAME and -w FILE, or -r FILE")
    try:
        sock = capture.connect(args.interface)
    except capture.CaptureError as error:
        return unreadable(str(error))
    try:
        with open(args.write, "wb") as out:
            packets = capture.record(
                args.interface, out, count=args.count, duration=args.duration, sock=sock
            )
    except OSError as error:
        sock.close()
        return failed(f"capture on {args.interface}: {error.strerror or error}")
    sys.stderr.write(f"{packets} packets written to {args.write}\n")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from wgpy.tools.interface.watch import WatchOptions, run_watch

    json_log = None
    if args.log_format == "json":
        json_log = open(args.log_file, "a", buffering=1) if args.log_file else sys.stdout  # noqa: SIM115
    try:
        return run_watch(
            WatchOptions(
                args.interface,
                enable_debug=args.enable_debug,
                unthrottle=args.unthrottle,
                trace_drops=args.trace_drops,
                json_log=json_log,
                metrics=args.metrics,
                duration=args.duration,
            )
        )
    finally:
        if json_log is not None and json_log is not sys.stdout:
            json_log.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wgpy", description="WireGuard in Python with explainable AllowedIPs."
    )
    parser.add_argument("--version", action="version", version=f"wgpy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="a wgpyd tunnel between two namespaces, an AllowedIPs mistake, its drops "
        "explained and fixed (needs root)",
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="leave the namespaces and daemons running and print how to explore and remove them",
    )
    demo.set_defaults(func=cmd_demo)
    sub.add_parser("genkey", help="print a new private key (like `wg genkey`)").set_defaults(
        func=cmd_genkey
    )
    sub.add_parser("pubkey", help="read a private key on stdin, print its public key").set_defaults(
        func=cmd_pubkey
    )
    sub.add_parser("genpsk", help="print a new preshared key (like `wg genpsk`)").set_defaults(
        func=cmd_genpsk
    )
    show = sub.add_parser("show", help="like `wg show`, plus drop counters by peer and reason")
    show.add_argument("interface", nargs="?", help="interface (default: all userspace ones)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.add_argument(
        "--wide",
        action="store_true",
        help="the drops as one wide table (default: a compact layout that fits 80 columns)",
    )
    show.set_defaults(func=cmd_show)
    events = sub.add_parser(
        "events",
        help="a running wgpyd's recent events (drops with reason and addresses, handshakes...)",
    )
    events.add_argument("interface", help="a wgpyd interface")
    events.add_argument(
        "-f", "--follow", action="store_true", help="then print new events until Ctrl-C"
    )
    events.add_argument(
        "--json", action="store_true", help="JSON lines (the --log-format json records)"
    )
    events.set_defaults(func=cmd_events)
    cap = sub.add_parser(
        "capture", help="record inner packets with verdicts and drop reasons to pcapng"
    )
    cap.add_argument("interface", nargs="?", help="a wgpyd interface")
    cap.add_argument("-w", "--write", metavar="FILE", help="pcapng file to write")
    cap.add_argument("-r", "--read", metavar="FILE", help="print a capture instead")
    cap.add_argument("-c", "--count", type=int, help="stop after this many packets")
    cap.add_argument("-t", "--duration", type=float, help="stop after this many seconds")
    cap.set_defaults(func=cmd_capture)
    watch = sub.add_parser(
        "watch",
        help="attribute a kernel WireGuard interface's drops to peers and reasons "
        "(reads the module's debug messages; `wgpy show IF` shows the counts)",
    )
    watch.add_argument("interface", help="a kernel WireGuard interface in this namespace")
    watch.add_argument(
        "--enable-debug",
        action="store_true",
        help="turn the wireguard module's dynamic debug on (restored on exit)",
    )
    watch.add_argument(
        "--unthrottle",
        action="store_true",
        help="lift the kernel's message rate limit (net.core.message_cost=0; restored on exit)",
    )
    watch.add_argument(
        "--trace-drops",
        action="store_true",
        help="count the drops the module neither logs nor counts (bad size, unknown index, "
        "failed decryption, expired session) through kprobe events, for all of its "
        "interfaces (removed on exit)",
    )
    watch.add_argument("--log-format", choices=("text", "json"), default="text")
    watch.add_argument("--log-file", metavar="PATH", help="write the JSON log there")
    watch.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics")
    watch.add_argument("--duration", type=float, help=argparse.SUPPRESS)
    watch.set_defaults(func=cmd_watch)
    from wgpy.tools.files.aip_cli import add_parsers  # explain, lint, calc
    from wgpy.tools.interface.doctor_cli import add_parser as add_doctor
    from wgpy.tools.interface.see_cli import add_parsers as add_see  # top, map, web
    from wgpy.tools.network.collect_cli import add_parser as add_collect
    from wgpy.tools.network.net_cli import add_parser as add_net  # net check, net trace

    add_parsers(sub)
    add_doctor(sub)
    add_see(sub)
    add_net(sub)
    add_collect(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return run(args.func, args)


if __name__ == "__main__":
    raise SystemExit(main())
