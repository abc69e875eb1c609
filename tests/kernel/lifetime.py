"""Session lifetime between wgpyd and the kernel: rekey after REKEY_AFTER_TIME and expiry
after REJECT_AFTER_TIME, watched on several tunnels at once.

The protocol's timers take real time (120 s, 180 s), so every case gets a tunnel of its own
and all run side by side in the one guest: the guest has an interface `wgl<i>` per case, the
host namespace a wgpyd per case, each pair with its own ports and tunnel subnet
(10.101.<i>.0/24). One tcpdump on the tap sees every tunnel's datagrams, told apart by port.

    host namespace                                 guest (Debian's kernel in QEMU)
    wgpyd <unique>  10.101.i.1  port 51830+i  ==  wgl<i>  10.101.i.2  port 51850+i

Two kinds of case, each with wgpyd ("host") or the kernel ("guest") in each role:

- rekey: `initiator` makes the first handshake, then `sender` pings the other side every
  0.5 s for 150 s. The initiator of the current session starts a new handshake on its first
  send after REKEY_AFTER_TIME (the kernel's `keep_key_fresh` in send.c); the responder never
  rekeys by time on send. Ping replies are sends too, so the initiator rekeys whichever side
  pings.
- last-minute: `initiator` makes the first handshake, then the responder (`sender`) sends a
  persistent keepalive every 3 s and the initiator sends nothing at all (keepalives received
  do not call for a passive keepalive), so its send-side rekey never comes. Instead, the first
  packet it receives on a keypair older than REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT -
  REKEY_TIMEOUT (165 s) makes it initiate, once (receive.c's `keep_key_fresh`), before the
  responder's keypair expires at 180 s.
- expiry: `initiator` makes the first handshake, then the tunnel stays idle (after the
  passive keepalive) until both sides' keypairs are older than REJECT_AFTER_TIME; then
  `sender` pings. A keypair that old is not used to send: the packet waits for a new
  handshake, which `sender` initiates, whether it was the old session's initiator or not.

`run_lifetime` returns what each tunnel showed: its datagrams on the tap, the pings and which
were answered, `wg show` before and after on both sides, wgpyd's handshake events.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

from tests.kernel.lab import GUEST_UNDERLAY, HOST_UNDERLAY, KernelLab, Side, host_port, q
from tests.kernel.wire import Datagram, TapCapture
from tests.netns.dropkit import WGPYD
from tests.netns.harness import (
    PeerDump,
    WgDaemon,
    genkey,
    parse_wg_dump,
    pubkey,
    start_wg_daemon,
    unique_ifname,
    wait_for,
    wg,
    write_secret,
)
from wgpy.io.uapi_client import open_events

Kind = Literal["rekey", "last-minute", "expiry"]

INITIATION_SIZE: Final = 148
RESPONSE_SIZE: Final = 92

HOST_PORT_BASE: Final = 51830
GUEST_PORT_BASE: Final = 51850

PING_INTERVAL: Final = 0.5
REKEY_PINGS: Final = 300
"""150 s of pings at PING_INTERVAL: the rekey comes at 120 s and has time to settle."""

IDLE: Final = 183.0
"""Seconds from the first handshake's completion to the packet after the idle time: past
REJECT_AFTER_TIME (180 s) for both sides' keypairs, with a margin for the guest's clock."""

EXPIRY_PINGS: Final = 3
PING_WAIT: Final = 10.0
"""Seconds each ping waits for its reply (a handshake first, under TCG)."""


@dataclass(frozen=True)
class Case:
    """One tunnel's scenario (see the module docstring)."""

    kind: Kind
    initiator: Side
    sender: Side

    @property
    def name(self) -> str:
        who = {"host": "wgpyd", "guest": "kernel"}
        return f"{self.kind}-{who[self.initiator]}-initiates-{who[self.sender]}-sends"


CASES: Final = (
    *(Case("rekey", i, s) for i in ("host", "guest") for s in ("host", "guest")),
    Case("last-minute", "host", "guest"),
    Case("last-minute", "guest", "host"),
    *(Case("expiry", i, s) for i in ("host", "guest") for s in ("host", "guest")),
)
"""The tunnels' cases, in the order of their first handshakes: the expiry cases, which take
longest, last."""

LAST_MINUTE_KEEPALIVE: Final = 3


@dataclass(frozen=True)
class PingRun:
    """An iputils ping run: how many it sent and which `icmp_seq` were answered."""

    transmitted: int
    answered: frozenset[int]
    output: str

    @property
    def lost(self) -> list[int]:
        return [seq for seq in range(1, self.transmitted + 1) if seq not in self.answered]


SUMMARY: Final = re.compile(r"(\d+) packets transmitted")
REPLY: Final = re.compile(r"bytes from [0-9.]+: icmp_seq=(\d+) ")


def parse_ping(output: str) -> PingRun:
    summary = SUMMARY.search(output)
    transmitted = int(summary[1]) if summary else 0
    answered = frozenset(int(m[1]) for m in REPLY.finditer(output))
    return PingRun(transmitted, answered, output)


@dataclass
class Tunnel:
    """One case's pair of interfaces and what they showed."""

    index: int
    case: Case
    daemon: WgDaemon
    host_public: str
    guest_public: str
    handshake_at: float = 0.0
    """Host wall time when the first handshake was known to be complete."""
    host_before: PeerDump | None = None
    guest_before: PeerDump | None = None
    host_after: PeerDump | None = None
    guest_after: PeerDump | None = None
    ping: PingRun | None = None
    ping_started_at: float = 0.0
    datagrams: list[Datagram] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)
    """wgpyd's handshake_completed events for this tunnel, oldest first."""
    _host_ping: subprocess.Popen[bytes] | None = None

    @property
    def host_if(self) -> str:
        return self.daemon.ifname

    @property
    def guest_if(self) -> str:
        return f"wgl{self.index}"

    @property
    def host_port(self) -> int:
        return HOST_PORT_BASE + self.index

    @property
    def guest_port(self) -> int:
        return GUEST_PORT_BASE + self.index

    def address(self, side: Side) -> str:
        return f"10.101.{self.index}.{1 if side == 'host' else 2}"

    @property
    def ping_file(self) -> str:
        return f"/tmp/lifetime-ping-{self.index}.txt"

    def sent_by(self, side: Side) -> list[Datagram]:
        port = self.host_port if side == "host" else self.guest_port
        return [d for d in self.datagrams if d.sport == port]

    def initiations(self, side: Side) -> list[float]:
        return [d.time for d in self.sent_by(side) if d.length == INITIATION_SIZE]

    def responses(self, side: Side) -> list[float]:
        return [d.time for d in self.sent_by(side) if d.length == RESPONSE_SIZE]

    def handshakes(self) -> str:
        """Who sent initiations and responses, seconds after the first handshake."""
        parts = []
        sides: tuple[tuple[Side, str], ...] = (("host", "wgpyd"), ("guest", "kernel"))
        for side, name in sides:
            for what, times in (("init", self.initiations(side)), ("resp", self.responses(side))):
                if times:
                    stamps = ", ".join(f"{t - self.handshake_at:.1f}" for t in times)
                    parts.append(f"{name} {what} {stamps}")
        return "; ".join(parts)

    def wire(self, since: float = 0.0) -> str:
        """The tunnel's datagrams as lines, for assertion messages."""
        who = {self.host_port: "wgpyd ", self.guest_port: "kernel"}
        return "\n".join(
            f"  {d.time - self.handshake_at:8.2f} {who.get(d.sport, '?')} {d.length}"
            for d in self.datagrams
            if d.time >= since
        )


def _other(side: Side) -> Side:
    return "guest" if side == "host" else "host"


def start_ping(lab: KernelLab, tunnel: Tunnel, side: Side, count: int, interval: float) -> None:
    """`ping` from `side` to the other side's tunnel address in the background."""
    argv = ["ping", "-n", "-D", "-c", str(count), "-i", f"{interval:g}"]
    argv += ["-W", f"{PING_WAIT:g}", tunnel.address(_other(side))]
    tunnel.ping_started_at = time.time()
    if side == "host":
        with (lab.ns.workdir / f"lifetime-ping-{tunnel.index}.txt").open("wb") as out:
            tunnel._host_ping = lab.ns.popen(*argv, stdout=out, stderr=subprocess.STDOUT)
    else:
        lab.guest.run(f"{q(*argv)} >{tunnel.ping_file} 2>&1 </dev/null &")


def collect_ping(lab: KernelLab, tunnel: Tunnel, side: Side, timeout: float) -> PingRun:
    """Wait for a ping started by `start_ping` to finish; what it printed."""
    if side == "host":
        proc = tunnel._host_ping
        assert proc is not None
        proc.wait(timeout)
        path = lab.ns.workdir / f"lifetime-ping-{tunnel.index}.txt"
        return parse_ping(path.read_text(errors="replace"))

    def finished() -> str | None:
        out = lab.guest.run(f"cat {tunnel.ping_file}").stdout
        return out if SUMMARY.search(out) else None

    return parse_ping(wait_for(finished, timeout, interval=1.0, what="the guest's ping"))


def _configure_host(lab: KernelLab, tunnel: Tunnel, private_key: str) -> None:
    ns, ifname = lab.ns, tunnel.host_if
    key_file = write_secret(ns, f"{ifname}.key", private_key)
    endpoint = host_port(GUEST_UNDERLAY[4], tunnel.guest_port)
    argv = ["set", ifname, "private-key", str(key_file), "listen-port", str(tunnel.host_port)]
    argv += ["peer", tunnel.guest_public, "endpoint", endpoint]
    argv += ["allowed-ips", f"{tunnel.address('guest')}/32"]
    wg(ns, *argv)
    ns.run("ip", "addr", "add", f"{tunnel.address('host')}/24", "dev", ifname)
    ns.run("ip", "link", "set", ifname, "up")


def _guest_lines(tunnel: Tunnel, private_key: str) -> list[str]:
    name = tunnel.guest_if
    key_file = f"/tmp/{name}.key"
    argv = ["wg", "set", name, "private-key", key_file, "listen-port", str(tunnel.guest_port)]
    argv += ["peer", tunnel.host_public, "endpoint", host_port(HOST_UNDERLAY[4], tunnel.host_port)]
    argv += ["allowed-ips", f"{tunnel.address('host')}/32"]
    return [
        f"ip link del {name} 2>/dev/null || true",
        f"ip link add {name} type wireguard",
        f"echo {q(private_key)} >{key_file}",
        q(*argv),
        f"ip addr add {tunnel.address('guest')}/24 dev {name}",
        f"ip link set {name} up",
    ]


def _host_peer(lab: KernelLab, tunnel: Tunnel) -> PeerDump:
    dump = parse_wg_dump(wg(lab.ns, "show", tunnel.host_if, "dump"), tunnel.host_if)
    return dump.peers[tunnel.guest_public]


def _guest_peer(lab: KernelLab, tunnel: Tunnel) -> PeerDump:
    text = lab.guest.run(f"wg show {tunnel.guest_if} dump").stdout
    return parse_wg_dump(text, tunnel.guest_if).peers[tunnel.host_public]


def handshake_events(ifname: str, timeout: float = 10.0) -> list[dict[str, object]]:
    """wgpyd's recent `handshake_completed` events (`wgpy events IF --json`), oldest first."""
    with contextlib.closing(open_events(ifname, follow=False, as_json=True)) as sock:
        sock.settimeout(timeout)
        data = b""
        while not data.endswith(b"errno=0\n\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    records = []
    for line in data.decode().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == "handshake_completed":
                records.append(record)
    return records


def _persistent_keepalive(lab: KernelLab, tunnel: Tunnel, side: Side, seconds: int) -> None:
    if side == "host":
        peer = tunnel.guest_public
        wg(lab.ns, "set", tunnel.host_if, "peer", peer, "persistent-keepalive", str(seconds))
    else:
        peer = tunnel.host_public
        lab.guest.run(f"wg set {tunnel.guest_if} peer {peer} persistent-keepalive {seconds}")


def _handshake(lab: KernelLab, tunnel: Tunnel) -> None:
    """The case's initiator pings once, until answered (which needs a handshake)."""
    side = tunnel.case.initiator
    argv = ["ping", "-n", "-c", "1", "-W", "2", tunnel.address(_other(side))]

    def answered() -> bool:
        if side == "host":
            return lab.ns.run(*argv, check=False, timeout=15).returncode == 0
        return lab.guest.run(q(*argv), timeout=15, check=False).status == 0

    wait_for(answered, 60, interval=0.2, what=f"{tunnel.case.name}: a first handshake")
    tunnel.handshake_at = time.time()


@contextlib.contextmanager
def lifetime_tunnels(lab: KernelLab, cases: tuple[Case, ...] = CASES) -> Iterator[list[Tunnel]]:
    """A wgpyd and a guest interface per case, configured (no handshake yet); removed after."""
    lab.reset()
    tunnels: list[Tunnel] = []
    guest_lines = ["set -e", "umask 077"]
    try:
        for index, case in enumerate(cases):
            daemon = start_wg_daemon(lab.ns, unique_ifname("wgl"), WGPYD)
            host_key, guest_key = genkey(), genkey()
            tunnel = Tunnel(index, case, daemon, pubkey(host_key), pubkey(guest_key))
            tunnels.append(tunnel)
            guest_lines += _guest_lines(tunnel, guest_key)
            _configure_host(lab, tunnel, host_key)
        lab.guest.run("\n".join(guest_lines), timeout=60)
        yield tunnels
    finally:
        for tunnel in tunnels:
            if tunnel._host_ping is not None:
                tunnel._host_ping.kill()
            tunnel.daemon.stop()
        names = " ".join(t.guest_if for t in tunnels)
        lab.guest.run(
            f"killall ping 2>/dev/null; for n in {names}; do ip link del $n 2>/dev/null; done",
            check=False,
        )


def run_lifetime(lab: KernelLab, tunnels: list[Tunnel]) -> None:
    """The whole schedule (about IDLE + 20 s): first handshakes, the rekey pings and the
    last-minute keepalives, the idle time, the pings after it; fills in each tunnel's
    observations. Every tunnel is watched for at least IDLE seconds after its first
    handshake."""
    rekey = [t for t in tunnels if t.case.kind == "rekey"]
    expiry = [t for t in tunnels if t.case.kind == "expiry"]
    with TapCapture(lab.ns, lab.tap) as capture:
        for tunnel in tunnels:
            _handshake(lab, tunnel)
            tunnel.host_before = _host_peer(lab, tunnel)
            tunnel.guest_before = _guest_peer(lab, tunnel)
            if tunnel.case.kind == "rekey":
                start_ping(lab, tunnel, tunnel.case.sender, REKEY_PINGS, PING_INTERVAL)
            elif tunnel.case.kind == "last-minute":
                _persistent_keepalive(lab, tunnel, tunnel.case.sender, LAST_MINUTE_KEEPALIVE)
        for tunnel in sorted(expiry, key=lambda t: t.handshake_at):
            time.sleep(max(0.0, tunnel.handshake_at + IDLE - time.time()))
            start_ping(lab, tunnel, tunnel.case.sender, EXPIRY_PINGS, 1.0)
        for tunnel in rekey + expiry:
            tunnel.ping = collect_ping(lab, tunnel, tunnel.case.sender, 200.0)
        time.sleep(max(0.0, max(t.handshake_at for t in tunnels) + IDLE - time.time()))
        wire = capture.stop()
    for tunnel in tunnels:
        ports = {tunnel.host_port, tunnel.guest_port}
        tunnel.datagrams = [d for d in wire if d.sport in ports and d.dport in ports]
        tunnel.host_after = _host_peer(lab, tunnel)
        tunnel.guest_after = _guest_peer(lab, tunnel)
        tunnel.events = handshake_events(tunnel.host_if)
