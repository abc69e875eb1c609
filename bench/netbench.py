"""Network-namespace figures for `python -m bench`: iperf3 throughput, ping RTT, `wg setconf`
load times, daemon RSS and handshake responses per second, wgpyd next to wireguard-go.

Built on tests/netns/harness.py (namespaces, veth pairs, daemons, the real `wg`). Daemons run
with LOG_LEVEL=error so neither logs per packet or per handshake.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.netns.harness import (
    WIREGUARD_GO,
    Netns,
    WgDaemon,
    genkey,
    pubkey,
    start_wg_daemon,
    unique_ifname,
    veth_pair,
    wait_for,
    wg,
    write_secret,
)
from wgpy import crypto, noise
from wgpy.cookie import CookieGenerator

WGPYD: tuple[str, ...] = (sys.executable, "-m", "wgpy.daemon", "-f")
#: wgpyd with its TUN opened without the virtio-net header: no TSO, no GRO
WGPYD_PLAIN: tuple[str, ...] = ("env", "WGPY_NO_TUN_OFFLOAD=1", *WGPYD)
GO: tuple[str, ...] = WIREGUARD_GO
FETCH_GO23 = Path(__file__).resolve().parents[1] / "scripts" / "fetch_wireguard_go_trixie.sh"
DAEMONS: dict[str, tuple[str, ...]] = {"wgpyd": WGPYD, "go": GO}
#: The anchors every daemon figure is measured against, oldest first: Debian bookworm's
#: wireguard-go 0.0.20220316 (installed) and, once :func:`add_modern_anchor` found it, trixie's
#: 0.0.20231211 with the 2023 TUN and UDP offloads ("go23").
ANCHORS: list[str] = ["go"]
ANCHOR_NAMES: dict[str, str] = {
    "go": "wireguard-go 0.0.20220316",
    "go23": "wireguard-go 0.0.20231211",
}
QUIET = {"LOG_LEVEL": "error"}
HS_SENDER = Path(__file__).with_name("hs_sender.py")


def add_modern_anchor() -> str | None:
    """Fetch (once) and register trixie's wireguard-go as the anchor "go23"; its path, or None
    with the reason printed when it cannot be had (no network, no mirror)."""
    path = os.environ.get("WGPY_BENCH_GO23")
    if not path:
        res = subprocess.run(
            ["bash", str(FETCH_GO23)], capture_output=True, text=True, timeout=600, check=False
        )
        if res.returncode != 0:
            progress(f"no modern wireguard-go anchor: {res.stderr.strip()[-500:]}")
            return None
        path = res.stdout.strip().splitlines()[-1]
    DAEMONS["go23"] = (path, "-f")
    if "go23" not in ANCHORS:
        ANCHORS.append("go23")
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report_json(result: object, path: Path | None) -> None:
    """Print ``result`` as JSON, and write it to ``path`` too when one is given (``--json``)."""
    text = json.dumps(result, indent=2)
    print(text)
    if path is not None:
        path.write_text(text + "\n")


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


# ---------------------------------------------------------------------------------------------
# topology


@dataclass
class Pair:
    """Two namespaces joined by veth (10.99.0.1 / .2), optionally a WireGuard tunnel
    (10.100.0.1 / .2) between daemons `cmd_a` and `cmd_b`."""

    name: str
    a: Netns
    b: Netns
    daemons: list[WgDaemon] = field(default_factory=list)
    server: subprocess.Popen[bytes] | None = None
    #: per iperf3 run: (bytes received, CPU seconds of daemon A, of daemon B)
    cpu: list[tuple[float, ...]] = field(default_factory=list)
    #: the same for the runs with PARALLEL_STREAMS streams
    cpu_parallel: list[tuple[float, ...]] = field(default_factory=list)

    @property
    def target(self) -> str:
        return "10.100.0.2" if self.daemons else "10.99.0.2"

    def close(self) -> None:
        for ns in (self.a, self.b):
            with contextlib.suppress(Exception):
                ns.close()


def make_pair(name: str, cmd_a: Sequence[str] | None, cmd_b: Sequence[str] | None) -> Pair:
    a, b = Netns(), Netns()
    pair = Pair(name, a, b)
    try:
        veth_pair(a, b, "10.99.0.1", "10.99.0.2", 24)
        if cmd_a is None or cmd_b is None:
            return pair
        nodes = []
        for ns, cmd, port in ((a, cmd_a, 51820), (b, cmd_b, 51821)):
            ifname = unique_ifname("wgb")
            daemon = start_wg_daemon(ns, ifname, cmd, env=QUIET)
            priv = genkey()
            nodes.append((ns, ifname, daemon, priv, pubkey(priv), port))
            pair.daemons.append(daemon)
        for i, (ns, ifname, _d, priv, _pub, port) in enumerate(nodes):
            other = nodes[1 - i]
            key = write_secret(ns, f"{ifname}.key", priv)
            me4, peer4 = f"10.100.0.{i + 1}", f"10.100.0.{2 - i}"
            wg(ns, "set", ifname, "private-key", str(key), "listen-port", str(port),
               "peer", other[4], "allowed-ips", f"{peer4}/32",
               "endpoint", f"10.99.0.{2 - i}:{other[5]}")  # fmt: skip
            ns.run("ip", "addr", "add", f"{me4}/24", "dev", ifname)
            ns.run("ip", "link", "set", ifname, "up")
    except BaseException:
        pair.close()
        raise
    return pair


@contextlib.contextmanager
def pairs(
    specs: Sequence[tuple[str, Sequence[str] | None, Sequence[str] | None]],
) -> Iterator[list[Pair]]:
    made: list[Pair] = []
    try:
        for name, cmd_a, cmd_b in specs:
            progress(f"setting up {name}")
            made.append(make_pair(name, cmd_a, cmd_b))
        yield made
    finally:
        for pair in made:
            pair.close()


def warm_up(pair: Pair) -> None:
    """Ping until the tunnel answers (the first ping triggers the handshake)."""

    def ok() -> bool:
        res = pair.a.run("ping", "-c", "1", "-W", "1", pair.target, check=False)
        return res.returncode == 0

    wait_for(ok, timeout=20, interval=0.1, what=f"ping through {pair.name}")


# ---------------------------------------------------------------------------------------------
# 1 + 2: iperf3 throughput


#: iperf3 ``-P`` of the parallel throughput figure
PARALLEL_STREAMS = 4


def iperf(pair: Pair, duration: float, streams: int = 1) -> float:
    """TCP throughput A -> B in Mbit/s (receiver side, all ``streams`` together: iperf3
    ``-P``), iperf3 client in A; the bytes received and each daemon's CPU seconds during the
    run go to ``pair.cpu`` (``pair.cpu_parallel`` with more than one stream)."""
    if pair.server is None:
        pair.server = pair.b.popen("iperf3", "-s", "-B", pair.target, "-p", "5201")
    last = ""
    for _ in range(50):
        before = [cpu_seconds(d.proc.pid) for d in pair.daemons]
        res = pair.a.run(
            "iperf3", "-c", pair.target, "-p", "5201", "-t", f"{duration:g}", "-J",
            "-P", str(streams), check=False, timeout=duration + 60,
        )  # fmt: skip
        try:
            data = json.loads(res.stdout)
            received = data["end"]["sum_received"]
            mbps = float(received["bits_per_second"]) / 1e6
            if pair.daemons:
                after = [cpu_seconds(d.proc.pid) for d in pair.daemons]
                (pair.cpu if streams == 1 else pair.cpu_parallel).append(
                    (float(received["bytes"]), *(b - a for a, b in zip(before, after, strict=True)))
                )
            return mbps
        except (ValueError, KeyError, TypeError):
            pass
        last = res.stdout[-800:] + res.stderr[-500:]
        progress(f"iperf3 {pair.name}: no result yet, retrying ({last[-200:]!r})")
        time.sleep(0.2)  # server not listening yet
    raise RuntimeError(f"iperf3 through {pair.name} failed: {last}")


def bench_throughput(
    runs: int, duration: float, with_tunnels: bool, with_veth: bool
) -> dict[str, list[float]]:
    """Mbit/s per run of each pair; with tunnels also ``NAME-cpu``: CPU seconds per GB
    received of daemon A, of daemon B, per run (A then B, flattened)."""
    specs: list[tuple[str, Sequence[str] | None, Sequence[str] | None]] = []
    if with_tunnels:
        for anchor in ANCHORS:
            specs.append((f"{anchor}-{anchor}", DAEMONS[anchor], DAEMONS[anchor]))
        specs.append(("wgpyd-wgpyd", WGPYD, WGPYD))
        # the same without TUN offloads: what they change, in the same run
        specs.append(("plain-plain", WGPYD_PLAIN, WGPYD_PLAIN))
        for anchor in ANCHORS:
            specs.append((f"wgpyd-{anchor}", WGPYD, DAEMONS[anchor]))
            specs.append((f"{anchor}-wgpyd", DAEMONS[anchor], WGPYD))
    if with_veth:
        specs.append(("veth", None, None))
    out: dict[str, list[float]] = {name: [] for name, _a, _b in specs}
    with pairs(specs) as made:
        for pair in made:
            if pair.daemons:
                warm_up(pair)
        # with PARALLEL_STREAMS streams too: wgpyd and the newest anchor, each with itself
        newest = ANCHORS[-1]
        parallel = [p for p in made if p.name in ("wgpyd-wgpyd", f"{newest}-{newest}")]
        for run in range(runs):
            for pair in made:  # interleaved, so background load hits every config alike
                progress(f"iperf3 {pair.name} run {run + 1}/{runs} ({duration:g} s)")
                out[pair.name].append(iperf(pair, duration))
            for pair in parallel:
                progress(f"iperf3 -P {PARALLEL_STREAMS} {pair.name} run {run + 1}/{runs}")
                out.setdefault(f"{pair.name}-P{PARALLEL_STREAMS}", []).append(
                    iperf(pair, duration, PARALLEL_STREAMS)
                )
        for pair in made:
            for suffix, samples in (("", pair.cpu), (f"-P{PARALLEL_STREAMS}", pair.cpu_parallel)):
                if samples:
                    out[f"{pair.name}{suffix}-cpu"] = [
                        cpu / (received / 1e9) for received, *cpus in samples for cpu in cpus
                    ]
    return out


# ---------------------------------------------------------------------------------------------
# 3: ping RTT

_RTT = re.compile(r"time=([0-9.]+) ms")


def bench_ping(runs: int, count: int, interval: float = 0.05) -> dict[str, list[float]]:
    """Median idle RTT in ms per run, through the tunnel A -> B."""
    specs: list[tuple[str, Sequence[str] | None, Sequence[str] | None]] = [
        (f"{anchor}-{anchor}", DAEMONS[anchor], DAEMONS[anchor]) for anchor in ANCHORS
    ]
    specs.append(("wgpyd-wgpyd", WGPYD, WGPYD))
    out: dict[str, list[float]] = {name: [] for name, _a, _b in specs}
    with pairs(specs) as made:
        for pair in made:
            warm_up(pair)
        for run in range(runs):
            for pair in made:
                progress(f"ping {pair.name} run {run + 1}/{runs} ({count} pings)")
                pair.a.run("ping", "-c", "1", "-W", "2", pair.target, check=False)
                res = pair.a.run(
                    "ping", "-c", str(count), "-i", f"{interval:g}", "-W", "2", pair.target,
                    check=False, timeout=count * (interval + 2) + 10,
                )  # fmt: skip
                rtts = [float(m) for m in _RTT.findall(res.stdout)]
                if len(rtts) < count // 2:
                    raise RuntimeError(f"ping through {pair.name}: {res.stdout[-500:]}")
                out[pair.name].append(statistics.median(rtts))
    return out


# ---------------------------------------------------------------------------------------------
# 5 + 6: wg setconf load time, RSS


def vm_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def random_public_keys(count: int) -> list[str]:
    return [b64(crypto.public_key(crypto.generate_private_key())) for _ in range(count)]


def many_prefixes_config(private_key: str, peer_key: str, outer: int, inner: int) -> str:
    """One peer with outer*inner IPv4 /24s and as many IPv6 /48s (outer=255, inner=256 gives the
    kernel netns.sh's 255×256×2 = 130,560)."""
    lines = ["[Interface]", f"PrivateKey = {private_key}", "ListenPort = 51820", "",
             "[Peer]", f"PublicKey = {peer_key}"]  # fmt: skip
    for i in range(1, outer + 1):
        v4 = [f"10.{i}.{j}.0/24" for j in range(inner)]
        v6 = [f"fd00:{i:x}:{j:x}::/48" for j in range(inner)]
        lines.append("AllowedIPs = " + ", ".join(v4 + v6))
    return "\n".join(lines) + "\n"


def many_peers_config(private_key: str, peer_keys: Sequence[str]) -> str:
    """Each peer k: two IPv4 /25s and two IPv6 /112s."""
    lines = ["[Interface]", f"PrivateKey = {private_key}", "ListenPort = 51820"]
    for k, key in enumerate(peer_keys):
        hi, lo = divmod(k, 256)
        lines += ["", "[Peer]", f"PublicKey = {key}",
                  f"AllowedIPs = 10.{hi}.{lo}.0/25, 10.{hi}.{lo}.128/25, "
                  f"fd00::{k:x}:0/112, fd00:1::{k:x}:0/112"]  # fmt: skip
    return "\n".join(lines) + "\n"


def count_allowed_ips(ns: Netns, ifname: str) -> int:
    out = wg(ns, "show", ifname, "allowed-ips", timeout=300)
    return sum(len(line.split("\t")[1].split()) for line in out.splitlines() if "\t" in line)


def timed_setconf(
    daemon_name: str, config: str, expect_prefixes: int, check: bool
) -> tuple[float, float]:
    """Start a fresh daemon, `wg setconf` the config; return (seconds, VmRSS MiB after)."""
    with Netns() as ns:
        ifname = unique_ifname("wgb")
        daemon = start_wg_daemon(ns, ifname, DAEMONS[daemon_name], env=QUIET)
        path = ns.workdir / "setconf.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(config)
        start = time.perf_counter()
        wg(ns, "setconf", ifname, str(path), timeout=600)
        seconds = time.perf_counter() - start
        rss = vm_rss_mib(daemon.proc.pid)
        if check:
            got = count_allowed_ips(ns, ifname)
            if got != expect_prefixes:
                raise RuntimeError(f"{daemon_name}: {got} allowed IPs, expected {expect_prefixes}")
        return seconds, rss


def bench_setconf(runs: int, outer: int, inner: int) -> dict[str, list[float]]:
    config = many_prefixes_config(genkey(), random_public_keys(1)[0], outer, inner)
    total = outer * inner * 2
    out: dict[str, list[float]] = {name: [] for name in (*ANCHORS, "wgpyd")}
    for run in range(runs):
        for name in out:
            progress(f"wg setconf {total:,} prefixes on {name}, run {run + 1}/{runs}")
            seconds, _rss = timed_setconf(name, config, total, check=run == 0)
            out[name].append(seconds)
    return out


def bench_peers(runs: int, peers: int) -> dict[str, list[float]]:
    progress(f"generating {peers:,} peer keys")
    config = many_peers_config(genkey(), random_public_keys(peers))
    names = (*ANCHORS, "wgpyd")
    out: dict[str, list[float]] = {f"{n}-{what}": [] for n in names for what in ("time", "rss")}
    for run in range(runs):
        for name in names:
            progress(f"wg setconf {peers:,} peers × 4 prefixes on {name}, run {run + 1}/{runs}")
            seconds, rss = timed_setconf(name, config, peers * 4, check=run == 0)
            out[f"{name}-time"].append(seconds)
            out[f"{name}-rss"].append(rss)
    return out


# ---------------------------------------------------------------------------------------------
# 7: handshake responses per second


def make_initiations(responder_public: bytes, count: int) -> tuple[list[str], bytes]:
    """`count` initiators (fresh keys) and one valid initiation from each, back to back."""
    gen = CookieGenerator(responder_public)
    keys: list[str] = []
    blob = bytearray()
    now = time.time()
    indices: set[int] = set()
    for _ in range(count):
        index = secrets.randbits(32)
        while index in indices:
            index = secrets.randbits(32)
        indices.add(index)
        priv = crypto.generate_private_key()
        pub = crypto.public_key(priv)
        static_static = crypto.dh(priv, responder_public)
        assert static_static is not None
        init = noise.create_initiation(
            noise.Handshake(),
            local_public=pub,
            peer_public=responder_public,
            static_static=static_static,
            ephemeral_private=crypto.generate_private_key(),
            sender_index=index,
            timestamp=crypto.tai64n(now),
        )
        assert init is not None
        message = gen.add_macs(init.pack_without_macs(), 0.0)
        assert len(message) == 148
        blob += message
        keys.append(b64(pub))
    return keys, bytes(blob)


def handshake_run(
    daemon_name: str, config: str, blob_path: Path, idle: float, mac2_responder: bytes | None
) -> dict[str, float]:
    """One burst against a fresh responder. With `mac2_responder` (its public key) the sender
    answers cookie replies with mac2 and uses a distinct source address per initiator."""
    a, b = Netns(), Netns()
    try:
        veth_pair(a, b, "10.99.0.1", "10.99.0.2", 24)
        extra: list[str] = []
        if mac2_responder is not None:
            a.run("ip", "route", "add", "local", "10.98.0.0/16", "dev", "lo")
            b.run("ip", "route", "add", "10.98.0.0/16", "via", "10.99.0.1")
            extra = ["--mac2", mac2_responder.hex(), "10.98.0.1"]
        ifname = unique_ifname("wgb")
        start_wg_daemon(b, ifname, DAEMONS[daemon_name], env=QUIET)
        conf = b.workdir / "hs.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(config)
        wg(b, "setconf", ifname, str(conf), timeout=300)
        b.run("ip", "addr", "add", "10.100.0.2/24", "dev", ifname)
        b.run("ip", "link", "set", ifname, "up")
        time.sleep(0.5)
        res = a.run(
            sys.executable, str(HS_SENDER), str(blob_path), "10.99.0.2", "51820", f"{idle:g}",
            *extra, timeout=300,
        )  # fmt: skip
        result: dict[str, float] = json.loads(res.stdout)
        return result
    finally:
        a.close()
        b.close()


def bench_handshake(runs: int, count: int, idle: float = 1.0) -> dict[str, list[dict[str, float]]]:
    progress(f"crafting {count:,} handshake initiations from {count:,} initiators")
    responder_private = crypto.generate_private_key()
    responder_public = crypto.public_key(responder_private)
    keys, blob = make_initiations(responder_public, count)
    lines = ["[Interface]", f"PrivateKey = {b64(responder_private)}", "ListenPort = 51820"]
    for key in keys:
        lines += ["", "[Peer]", f"PublicKey = {key}"]
    config = "\n".join(lines) + "\n"
    names = (*ANCHORS, "wgpyd")
    out: dict[str, list[dict[str, float]]] = {
        f"{name}{tail}": [] for name in names for tail in ("", "-mac2")
    }
    with tempfile.TemporaryDirectory(prefix="wgpy-bench-") as tmp:
        blob_path = Path(tmp) / "initiations.bin"
        blob_path.write_bytes(blob)
        for run in range(runs):
            for name in names:
                for mac2 in (False, True):
                    what = "with cookie round trips " if mac2 else ""
                    progress(f"handshake burst of {count:,} {what}to {name}, run {run + 1}/{runs}")
                    responder = responder_public if mac2 else None
                    r = handshake_run(name, config, blob_path, idle, responder)
                    span = r["seconds"] or float("nan")
                    r["responses_per_s"] = r["responses"] / span
                    r["cookies_per_s"] = r["cookies"] / span
                    out[f"{name}-mac2" if mac2 else name].append(r)
    return out
