"""``wgpy demo``: a WireGuard tunnel between two network namespaces, one deliberate AllowedIPs
mistake, the packets it drops, what ``wgpy show`` and ``wgpy explain`` say about them, and the fix.

Needs root, iproute2 (``ip``) and ``ping``; needs no configuration and takes a few seconds.
Its text is wrapped to the terminal (``$COLUMNS``), to 80 columns when it is not one.
Everything it creates (namespaces, veth, daemons) is removed on exit, also on Ctrl-C, unless
``--keep`` is given: then it is left running and the commands to explore and remove it are
printed.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from wgpy import crypto
from wgpy.exit_status import Exit
from wgpy.io.uapi_client import uapi_set
from wgpy.tools.termtext import fold_output, terminal_width, wrap_command, wrap_prose
from wgpy.uapi import socket_path

LISTEN_PORT = 51820
WRONG = "10.88.0.2"  # what alice's config says bob's inner address is: the mistake
INDENT = "    "
MAX_WIDTH = 100  # prose is wrapped to the terminal, but lines past this are hard to read


@dataclass
class Side:
    name: str
    netns: str
    ifname: str
    outer: str  # on the veth: where the encrypted UDP datagrams go
    inner: str  # on the tunnel interface: what programs use
    private_key: bytes = field(default_factory=crypto.generate_private_key)
    process: subprocess.Popen[bytes] | None = None

    @property
    def public_key(self) -> bytes:
        return crypto.public_key(self.private_key)

    @property
    def key(self) -> str:
        return b64(self.public_key)


def _run(
    argv: list[str], check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30, env=env)


def _in(
    side: Side, *argv: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return _run(["ip", "netns", "exec", side.netns, *argv], check=check, env=env)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def wgpy_command() -> str:
    """How to call wgpy from a shell: plain ``wgpy`` when that is the script beside this Python
    (scripts/setup.sh links it into /usr/local/bin), else that script's path, else ``-m``."""
    script = Path(sys.executable).with_name("wgpy")
    if script.exists():
        found = shutil.which("wgpy")
        if found is not None and os.path.realpath(found) == os.path.realpath(script):
            return "wgpy"
        return str(script)
    return f"{shlex.quote(sys.executable)} -m wgpy.cli"


class Demo:
    def __init__(self, out: TextIO, keep: bool = False) -> None:
        self.out = out
        self.keep = keep
        tag = secrets.token_hex(2)
        self.tmp = tempfile.mkdtemp(prefix="wgpy-demo-")
        self.a = Side("alice", f"wgpy-demo-a-{tag}", f"wgdemoa{tag}", "192.0.2.1", "10.88.0.1")
        self.b = Side("bob", f"wgpy-demo-b-{tag}", f"wgdemob{tag}", "192.0.2.2", "10.88.0.3")
        self.wgpy = wgpy_command()
        self.step = 0
        self.width = terminal_width(out, MAX_WIDTH)

    # ------------------------------------------------------------------------------ output

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def lines(self, lines: list[str]) -> None:
        self.say("\n".join(lines))

    def head(self, text: str) -> None:
        self.step += 1
        self.say()
        self.lines(wrap_prose(f"[{self.step}] {text}", self.width))

    def para(self, text: str) -> None:
        """Prose: each line of `text` is a paragraph or a ``- `` item, wrapped to the width."""
        self.lines(wrap_prose(text, self.width, INDENT))

    def command(self, shown: str) -> None:
        """A command as a user would type it (continued with ``\\`` when it is too long)."""
        self.lines(wrap_command(shown, self.width, INDENT))

    def shell(self, side: Side, shown: str, argv: list[str]) -> str:
        """Run wgpy in ``side``'s namespace, printing the command as a user would type it."""
        self.command(shown)
        indent = INDENT + "  "
        # wgpy lays its output out for COLUMNS; what is still too long is folded here
        env = {**os.environ, "COLUMNS": str(self.width - len(indent))}
        result = _in(side, sys.executable, "-m", "wgpy.cli", *argv, check=False, env=env)
        text = (result.stdout + result.stderr).rstrip("\n")
        self.lines(fold_output(text, self.width, indent))
        return text

    # ------------------------------------------------------------------------------- setup

    def setup(self) -> None:
        a, b = self.a, self.b
        for side in (a, b):
            _run(["ip", "netns", "add", side.netns])
            _in(side, "ip", "link", "set", "lo", "up")
        _run(
            [
                *("ip", "link", "add", "wgpydemo0", "netns", a.netns, "type", "veth"),
                *("peer", "name", "wgpydemo1", "netns", b.netns),
            ]
        )
        for side, veth in ((a, "wgpydemo0"), (b, "wgpydemo1")):
            _in(side, "ip", "addr", "add", f"{side.outer}/24", "dev", veth)
            _in(side, "ip", "link", "set", veth, "up")
        for side in (a, b):
            with open(os.path.join(self.tmp, f"{side.name}.log"), "wb") as log:
                side.process = subprocess.Popen(
                    [
                        *("ip", "netns", "exec", side.netns),
                        *(sys.executable, "-m", "wgpy.daemon", "-f", side.ifname),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "LOG_LEVEL": "verbose"},
                    start_new_session=True,  # with --keep they outlive the demo
                )
        deadline = time.monotonic() + 15
        while not all(os.path.exists(socket_path(s.ifname)) for s in (a, b)):
            if time.monotonic() > deadline or any(
                s.process is not None and s.process.poll() is not None for s in (a, b)
            ):
                raise RuntimeError("wgpyd did not start; its logs are in " + self.tmp)
            time.sleep(0.05)
        # the mistake: alice gives bob 10.88.0.2, but bob's inner address is 10.88.0.3
        for side, other, allowed in ((a, b, WRONG), (b, a, a.inner)):
            uapi_set(
                side.ifname,
                [
                    f"private_key={side.private_key.hex()}",
                    f"listen_port={LISTEN_PORT}",
                    f"public_key={other.public_key.hex()}",
                    f"endpoint={other.outer}:{LISTEN_PORT}",
                    "replace_allowed_ips=true",
                    f"allowed_ip={allowed}/32",
                ],
            )
            _in(side, "ip", "addr", "add", f"{side.inner}/24", "dev", side.ifname)
            _in(side, "ip", "link", "set", side.ifname, "up")
        # wgpyd binds its port when it sees the link go up (as the kernel does); the first ping
        # must not race it, or the first handshake is lost and retried only after 5 s
        deadline = time.monotonic() + 10
        while not all(self.port_bound(side) for side in (a, b)):
            if time.monotonic() > deadline:
                raise RuntimeError("wgpyd did not bind its port; its logs are in " + self.tmp)
            time.sleep(0.05)

    @staticmethod
    def port_bound(side: Side) -> bool:
        listing = _in(side, "ss", "-Hlnu", f"sport = :{LISTEN_PORT}", check=False).stdout
        return bool(listing.strip())

    def ping(self, side: Side, target: str, count: int = 3) -> tuple[int, int, str]:
        wait = "2" if count > 1 else "1"
        result = _in(side, "ping", "-c", str(count), "-i", "0.2", "-W", wait, target, check=False)
        match = re.search(r"(\d+) packets transmitted, (\d+) received", result.stdout)
        sent, received = (int(match[1]), int(match[2])) if match else (count, 0)
        if "Destination Host Unreachable" in result.stdout:
            return sent, received, "unreachable"
        rtt = re.search(r"= [\d.]+/([\d.]+)/", result.stdout)
        return sent, received, (f"avg rtt {rtt[1]} ms" if rtt else "")

    # --------------------------------------------------------------------------------- run

    def run(self) -> int:
        a, b = self.a, self.b
        self.lines(
            wrap_prose(
                "wgpy demo: a WireGuard tunnel, one AllowedIPs mistake, and what wgpy says "
                "about it",
                self.width,
            )
        )
        self.head("Two machines and the network between them")
        self.para(
            "WireGuard is a VPN: it carries IP packets between machines inside encrypted UDP "
            "datagrams. "
            f"Two network namespaces stand in for two machines, {a.name} and {b.name}, joined "
            f"by a virtual cable. Their OUTER addresses on it are {a.outer} ({a.name}) and "
            f"{b.outer} ({b.name}): WireGuard's encrypted UDP datagrams (port {LISTEN_PORT}) "
            "travel between these."
        )
        started = time.monotonic()
        self.setup()
        self.head("A tunnel: wgpyd on each machine")
        self.para(
            f"Each runs wgpyd, which creates a tunnel interface ({a.ifname} on {a.name}, "
            f"{b.ifname} on {b.name}) with an INNER address: {a.inner} for {a.name}, "
            f"{b.inner} for {b.name}. Programs use inner addresses: a "
            f"ping from {a.name} to {b.inner} enters {a.name}'s tunnel interface, is encrypted, "
            f"and leaves as a UDP datagram from {a.outer} to {b.outer}; {b.name}'s wgpyd "
            "decrypts it and hands the inner packet on. "
            f"(wgpyd started in {time.monotonic() - started:.1f} s.)"
        )
        self.head("AllowedIPs, and the mistake")
        self.para(
            "Each side knows the other as a peer: a public key, an endpoint (outer address and "
            "port) and AllowedIPs, the inner addresses that belong to that peer. AllowedIPs "
            "works both ways:\n"
            "  - sending: a packet to one of them is encrypted for that peer (to no peer: "
            "dropped);\n"
            "  - receiving: a packet decrypted with that peer's key is accepted only if its "
            "inner source is one of them (anything else is dropped, even though it decrypted "
            "fine).\n"
            f"The mistake: {a.name}'s config says {b.name} is {WRONG}, but {b.name}'s inner "
            f"address is {b.inner}."
        )
        # the two [Peer] sections, a setting a line: the settings aligned under the first one
        # where that fits (it does at 80 columns, with a 44-character key), else indented two
        wrong = f"AllowedIPs = {WRONG}/32   <- should be {b.inner}/32"
        pad = " " * max(len(f"{a.name}: [Peer] {b.name}  "), len(f"{b.name}: [Peer] {a.name}  "))
        if len(INDENT + pad + wrong) > self.width:
            pad = "  "
        snippet = [
            f"{a.name}: [Peer] {b.name}  PublicKey = {b.key}",
            f"{pad}Endpoint = {b.outer}:{LISTEN_PORT}",
            f"{pad}{wrong}",
            f"{b.name}: [Peer] {a.name}  PublicKey = {a.key}",
            f"{pad}Endpoint = {a.outer}:{LISTEN_PORT}",
            f"{pad}AllowedIPs = {a.inner}/32",
        ]
        self.lines(fold_output("\n".join(snippet), self.width, INDENT))

        self.head("What the mistake does to traffic")
        sent, received, _ = self.ping(b, a.inner)
        broken_in = received == 0
        self.para(
            f"{b.name} pings {a.name} ({a.inner}): {received}/{sent} replies. The handshake "
            f"works and {a.name} decrypts {b.name}'s packets, but their inner source "
            f"{b.inner} is not in {b.name}'s AllowedIPs on {a.name}: "
            f"{a.name} drops every one (reason disallowed_source)."
        )
        sent, received, note = self.ping(a, b.inner, count=1)
        broken_out = received == 0
        self.para(
            f"{a.name} pings {b.name} ({b.inner}): "
            + (
                "Destination Host Unreachable. No peer of "
                f"{a.name} has {b.inner} in its AllowedIPs, so wgpyd does not know whom to "
                "encrypt for: it drops the packet (reason no_peer) and answers with ICMP "
                "unreachable, as the kernel module does."
                if note == "unreachable"
                else f"{received}/{sent} replies, no ICMP unreachable came back."
            )
        )
        self.para(
            "The kernel module and wireguard-go drop such packets silently or as bare error "
            "counts. wgpy says which peer, which reason, which addresses:"
        )
        self.head(f"`wgpy show` on {a.name}: the drops, per peer and reason")
        shown = self.shell(a, f"wgpy show {a.ifname}", ["show", a.ifname])
        self.head(f"`wgpy explain` on {a.name}: why {b.inner} from {b.name} is dropped")
        via = b.key[:8]
        self.para(f"(a peer is named by its public key or its start, here {via})")
        explained = self.shell(
            a,
            f"wgpy explain {a.ifname} from {b.inner} via {via}",
            ["explain", a.ifname, "from", b.inner, "via", via],
        )
        self.shell(
            a,
            f"wgpy explain {a.ifname} to {b.inner}",
            ["explain", a.ifname, "to", b.inner],
        )

        self.head(f"The fix: {b.name}'s AllowedIPs on {a.name} becomes {b.inner}/32")
        self.command(f"wg set {a.ifname} peer {b.key} allowed-ips {b.inner}/32")
        self.para("(the demo sends the same request to wgpyd's UAPI socket, as `wg` does)")
        uapi_set(
            a.ifname,
            [
                f"public_key={b.public_key.hex()}",
                "update_only=true",
                "replace_allowed_ips=true",
                f"allowed_ip={b.inner}/32",
            ],
        )
        fixed = self.shell(
            a,
            f"wgpy explain {a.ifname} from {b.inner} via {via}",
            ["explain", a.ifname, "from", b.inner, "via", via],
        )
        results = []
        for side, other in ((b, a), (a, b)):
            sent, received, rtt = self.ping(side, other.inner)
            results.append(received == sent)
            self.para(
                f"{side.name} pings {other.name} ({other.inner}): {received}/{sent} replies, {rtt}"
            )
        works = all(results)
        ok = (
            broken_in
            and broken_out
            and "disallowed_source" in shown
            and "DROPPED" in explained
            and "DELIVERED" in fixed
            and works
        )
        self.head(
            "Done: the tunnel works both ways"
            if ok
            else "Something did not go as described: the daemons' logs are in " + self.tmp
        )
        if self.keep:
            self.print_keep()
        else:
            self.para("Everything is removed now. `wgpy demo --keep` leaves it running to explore.")
        return Exit.OK if ok else Exit.FAILED

    def print_keep(self) -> None:
        a, b = self.a, self.b
        wgpy = self.wgpy
        pids = " ".join(str(s.process.pid) for s in (a, b) if s.process is not None)

        def commands(*lines: str) -> None:
            for line in lines:
                self.lines(wrap_command(line, self.width, INDENT, prompt="  "))

        self.para("Left running (--keep). To explore:")
        commands(
            f"{wgpy} show {a.ifname}",
            f"{wgpy} show {b.ifname}",
            f"ip netns exec {a.netns} {wgpy} explain {a.ifname} to {b.inner}",
            f"wg show {a.ifname}",
        )
        self.para("(the standard wg tool works too). Capture while pinging in another shell:")
        commands(
            f"{wgpy} capture {a.ifname} -w demo.pcapng -t 10",
            f"ip netns exec {b.netns} ping {a.inner}",
            f"ip netns exec {a.netns} ping {b.inner}",
        )
        self.para(
            f"The daemons' logs are in {self.tmp}. To remove it all (SIGTERM makes a wgpyd "
            "delete its interface and socket; each namespace goes with its last process):"
        )
        commands(
            f"kill {pids}",
            f"ip netns del {a.netns}",
            f"ip netns del {b.netns}",
            f"rm -rf {self.tmp}",
        )

    def cleanup(self) -> None:
        for side in (self.a, self.b):
            if side.process is not None and side.process.poll() is None:
                side.process.terminate()
                try:
                    side.process.wait(5)
                except subprocess.TimeoutExpired:
                    side.process.kill()
            _run(["ip", "netns", "del", side.netns], check=False)
            with contextlib.suppress(OSError):
                os.unlink(socket_path(side.ifname))


def run_demo(out: TextIO = sys.stdout, keep: bool = False) -> int:
    if os.geteuid() != 0:
        out.write("wgpy demo needs root (network namespaces and TUN devices)\n")
        return Exit.FAILED
    for tool in ("ip", "ping"):
        if shutil.which(tool) is None:
            out.write(f"wgpy demo needs `{tool}` (Debian: iproute2, iputils-ping)\n")
            return Exit.FAILED
    demo = Demo(out, keep=keep)
    status: int = Exit.FAILED
    finished = False  # run() returned: with --keep, everything is left as printed
    try:
        status = demo.run()
        finished = True
    except KeyboardInterrupt:
        out.write("interrupted, cleaning up\n")
        status = 130
    except (RuntimeError, subprocess.SubprocessError, OSError) as error:
        out.write(f"demo failed: {error}\n")
    finally:
        if not (keep and finished):
            demo.cleanup()
            if status == 0:
                shutil.rmtree(demo.tmp, ignore_errors=True)
    return status
