"""``wgpy collect [-o FILE] [--host NAME]``: this host's snapshot for ``wgpy net check``.

The snapshot goes to stdout, or to FILE written atomically (a temporary file beside it, then
a rename): FILE is either the whole snapshot or untouched. Exit status (the README's table): 0
written; 1 FILE could not be written; 2 something the snapshot must hold could not be read
(one line on stderr either way, and FILE untouched).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from wgpy.exit_status import Exit
from wgpy.io.collect import CollectError, collect

__all__ = ["add_parser", "write_atomically"]


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` whole, or leave it as it was (raises OSError)."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # a snapshot holds no secret
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def cmd_collect(args: argparse.Namespace) -> int:
    try:
        snapshot = collect(args.host)
    except CollectError as error:
        sys.stderr.write(f"wgpy collect: {error}\n")
        return Exit.UNREADABLE
    text = json.dumps(snapshot, indent=2) + "\n"
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return Exit.OK
    try:
        write_atomically(Path(args.output), text)
    except OSError as error:
        sys.stderr.write(f"wgpy collect: cannot write {args.output}: {error.strerror or error}\n")
        return Exit.FAILED
    return Exit.OK


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "collect",
        help="this host's interfaces, peers, routes, rules, forwarding and firewall as one "
        "JSON snapshot for `wgpy net check` (no private or preshared key)",
        description="Read what decides forwarding on this host (in this network namespace) "
        "into one JSON snapshot. Gather the files from your hosts with what you already "
        "run (ssh, Ansible) and give them to `wgpy net check`.",
    )
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write the snapshot there (default: stdout)"
    )
    parser.add_argument(
        "--host",
        metavar="NAME",
        help="the host's name in the snapshot (default: the system's hostname; network "
        "namespaces share it)",
    )
    parser.set_defaults(func=cmd_collect)
