"""``wgpy demo``: two network namespaces, a wgpyd tunnel between them, pings, and what happened.

Needs root and iproute2 (``ip``) and ``ping``; needs no configuration. Everything it creates
(namespaces, veth, daemons) is removed on exit, also on Ctrl-C.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import TextIO

from wgpy import crypto
from wgpy.daemon import socket_path
from wgpy.io.uapi_client import uapi_get, uapi_set

LISTEN_PORT = 51820


@dataclass
class Side:
    name: str
    netns: str
    ifname: str
    outer4: str
    outer6: str
    tunnel4: str
    tunnel6: str
    private_key: bytes = field(default_factory=crypto.generate_private_key)
    process: subprocess.Popen[bytes] | None = None
    log_path: str = ""

    @property
    def public_key(self) -> bytes:
        return crypto.public_key(self.private_key)


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


def _in(side: Side, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["ip", "netns", "exec", side.netns, *argv], check=check)


class Demo:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        tag = secrets.token_hex(2)
        self.tmp = tempfile.mkdtemp(prefix="wgpy-demo-")
        self.a = Side(
            "alice",
            f"wgpy-demo-a-{tag}",
            f"wgdemoa{tag}",
            "192.0.2.1",
            "fd00:192::1",
            "10.88.0.1",
            "fd00:88::1",
        )
        self.b = Side(
            "bob",
            f"wgpy-demo-b-{tag}",
            f"wgdemob{tag}",
            "192.0.2.2",
            "fd00:192::2",
            "10.88.0.2",
            "fd00:88::2",
        )

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def setup(self) -> None:
        a, b = self.a, self.b
        for side in (a, b):
            _run(["ip", "netns", "add", side.netns])
            _in(side, "ip", "link", "set", "lo", "up")
        _run(
            [
                "ip",
                "link",
                "add",
                "wgpydemo0",
                "netns",
                a.netns,
                "type",
                "veth",
                "peer",
                "name",
                "wgpydemo1",
                "netns",
                b.netns,
            ]
        )
        for side, veth in ((a, "wgpydemo0"), (b, "wgpydemo1")):
            _in(side, "ip", "addr", "add", f"{side.outer4}/24", "dev", veth)
            _in(side, "ip", "addr", "add", f"{side.outer6}/64", "dev", veth, "nodad")
            _in(side, "ip", "link", "set", veth, "up")
        self.say(
            f"[1] namespaces {a.netns} and {b.netns} joined by a veth pair "
            f"({a.outer4} <-> {b.outer4}, {a.outer6} <-> {b.outer6})"
        )
        for side in (a, b):
            side.log_path = os.path.join(self.tmp, f"{side.name}.log")
            with open(side.log_path, "wb") as log:
                side.process = subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        side.netns,
                        sys.executable,
                        "-m",
                        "wgpy.daemon",
                        "-f",
                        side.ifname,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "LOG_LEVEL": "verbose"},
                )
        deadline = time.monotonic() + 15
        while not all(os.path.exists(socket_path(s.ifname)) for s in (a, b)):
            if time.monotonic() > deadline or any(
                s.process is not None and s.process.poll() is not None for s in (a, b)
            ):
                raise RuntimeError("wgpyd did not start; see " + self.tmp)
            time.sleep(0.05)
        self.say(f"[2] wgpyd running in each namespace: {a.ifname}, {b.ifname}")
        for side, other, endpoint in (
            (a, b, f"{b.outer4}:{LISTEN_PORT}"),
            (b, a, f"[{a.outer6}]:{LISTEN_PORT}"),
        ):
            uapi_set(
                side.ifname,
                [
                    f"private_key={side.private_key.hex()}",
                    f"listen_port={LISTEN_PORT}",
                    f"public_key={other.public_key.hex()}",
                    f"endpoint={endpoint}",
                    "replace_allowed_ips=true",
                    f"allowed_ip={other.tunnel4}/32",
                    f"allowed_ip={other.tunnel6}/128",
                ],
            )
            _in(side, "ip", "addr", "add", f"{side.tunnel4}/24", "dev", side.ifname)
            _in(side, "ip", "-6", "addr", "add", f"{side.tunnel6}/64", "dev", side.ifname, "nodad")
            _in(side, "ip", "link", "set", side.ifname, "up")
        self.say(
            f"[3] configured over the UAPI socket: {a.name} {b64(a.public_key)} "
            f"<-> {b.name} {b64(b.public_key)}"
        )
        self.say(f"    {a.name} reaches {b.name} over IPv4, {b.name} reaches {a.name} over IPv6")

    def ping(self, side: Side, target: str, count: int = 3) -> tuple[int, int, str]:
        result = _in(side, "ping", "-c", str(count), "-i", "0.2", "-W", "2", target, check=False)
        match = re.search(r"(\d+) packets transmitted, (\d+) received", result.stdout)
        rtt = re.search(r"= [\d.]+/([\d.]+)/", result.stdout)
        sent, received = (int(match[1]), int(match[2])) if match else (count, 0)
        return sent, received, (rtt[1] + " ms" if rtt else "-")

    def run(self) -> int:
        self.setup()
        ok = True
        for label, side, target in (
            ("IPv4", self.a, self.b.tunnel4),
            ("IPv6", self.a, self.b.tunnel6),
            ("IPv4", self.b, self.a.tunnel4),
            ("IPv6", self.b, self.a.tunnel6),
        ):
            sent, received, rtt = self.ping(side, target)
            ok = ok and received == sent
            self.say(
                f"[4] ping {label} {side.name} -> {target}: {received}/{sent} replies, "
                f"avg rtt {rtt}"
            )
        result = _in(self.a, "ping", "-c", "1", "-W", "2", "10.88.0.99", check=False)
        unreachable = "Destination Host Unreachable" in result.stdout
        ok = ok and unreachable
        self.say(
            "[5] ping 10.88.0.99, which no peer has in its AllowedIPs: "
            + (
                "Destination Host Unreachable, answered by wgpy (ICMP type 3 code 1)"
                if unreachable
                else "no ICMP unreachable came back"
            )
        )
        for side in (self.a, self.b):
            self.say(f"[6] {side.ifname} ({side.name}):")
            peer_lines = summarise(uapi_get(side.ifname))
            for line in peer_lines:
                self.say("      " + line)
        self.say(
            "[7] "
            + (
                "tunnel works both ways over IPv4 and IPv6"
                if ok
                else "some pings failed: daemon logs are in " + self.tmp
            )
        )
        return 0 if ok else 1

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
        shutil.rmtree(self.tmp, ignore_errors=True)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def summarise(pairs: list[tuple[str, str]]) -> list[str]:
    lines = []
    for key, value in pairs:
        if key == "listen_port":
            lines.append(f"listening port: {value}")
        elif key == "public_key":
            lines.append(f"peer {b64(bytes.fromhex(value))}")
        elif key == "endpoint":
            lines.append(f"  endpoint: {value}")
        elif key == "allowed_ip":
            lines.append(f"  allowed ip: {value}")
        elif key in ("rx_bytes", "tx_bytes"):
            lines.append(f"  {key.replace('_', ' ')}: {value}")
        elif key == "last_handshake_time_sec" and value != "0":
            lines.append(f"  latest handshake: {int(time.time()) - int(value)} s ago")
    return lines


def run_demo(out: TextIO = sys.stdout) -> int:
    if os.geteuid() != 0:
        out.write("wgpy demo needs root (network namespaces and TUN devices)\n")
        return 2
    for tool in ("ip", "ping"):
        if shutil.which(tool) is None:
            out.write(f"wgpy demo needs `{tool}` (Debian: iproute2, iputils-ping)\n")
            return 2
    demo = Demo(out)
    try:
        return demo.run()
    except KeyboardInterrupt:
        out.write("interrupted, cleaning up\n")
        return 130
    except (RuntimeError, subprocess.SubprocessError, OSError) as error:
        out.write(f"demo failed: {error}\n")
        return 1
    finally:
        demo.cleanup()
