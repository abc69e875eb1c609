"""The ``wgpy`` command line for people."""

from __future__ import annotations

import argparse
import base64
import binascii
import sys

from wgpy import __version__, crypto


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
        sys.stderr.write(f"wgpy: {error}\n")
        return 1
    sys.stdout.write(base64.b64encode(crypto.public_key(private)).decode() + "\n")
    return 0


def cmd_demo(_: argparse.Namespace) -> int:
    from wgpy.demo import run_demo

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wgpy", description="WireGuard in Python with explainable AllowedIPs."
    )
    parser.add_argument("--version", action="version", version=f"wgpy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("demo", help="two namespaces, a wgpyd tunnel, pings (needs root)").set_defaults(
        func=cmd_demo
    )
    sub.add_parser("genkey", help="print a new private key (like `wg genkey`)").set_defaults(
        func=cmd_genkey
    )
    sub.add_parser("pubkey", help="read a private key on stdin, print its public key").set_defaults(
        func=cmd_pubkey
    )
    sub.add_parser("genpsk", help="print a new preshared key (like `wg genpsk`)").set_defaults(
        func=cmd_genpsk
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
