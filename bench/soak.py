"""Soak: wgpyd next to wireguard-go for 10 minutes of iperf3 traffic while its configuration
keeps changing; at the end, inner-packet accounting and RSS flatness (issue 8). Not in CI.

    sudo .venv/bin/python -m bench.soak [--minutes 10] [--json FILE]

Namespace A runs wgpyd, B wireguard-go (tests/netns/harness.two_peer_topology). iperf3 runs a
bidirectional TCP test through the tunnel (server in A, client in B) for the whole run. Every
``--interval`` seconds one change is made to wgpyd with the real ``wg``, in turn:

* five dummy peers (random keys, no endpoint, AllowedIPs 10.200.N.0/24) are added;
* B's AllowedIPs 10.100.0.2/32 are moved to a dummy peer for two seconds, then back (packets
  to B are staged for the dummy and overflow; packets from B are disallowed sources);
* the dummy peers are removed (their staged packets are dropped as interface_down);
* a new preshared key is set on both sides (the next rekey uses it).

Sessions rekey by themselves every 120 s (REKEY_AFTER_TIME) and the script counts the
handshakes it sees. Accounting, per direction, in inner packets (the TUN counters of the kernel
on each side: TX = read by the daemon, RX = written by it):

    A->B: read by wgpyd = received by go (B's TUN RX) + wgpyd's outgoing drops
          + kernel UDP RcvbufErrors in B + unexplained (go's own drops, datagrams in flight)
    B->A: read by go    = written by wgpyd (A's TUN RX) + wgpyd's incoming drops
          + kernel UDP RcvbufErrors in A + unexplained (go's own drops)

wgpyd's VmRSS is sampled every 30 s; flat means the last sample is within 10 % of the sample
taken after the first two minutes (buffers warmed up).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tests.netns.harness import (
    Netns,
    genkey,
    genpsk,
    pubkey,
    two_peer_topology,
    wait_for,
    wg,
    write_secret,
)
from wgpy.io.uapi_client import wgpy_stats

WGPYD = (sys.executable, "-m", "wgpy.daemon", "-f")

OUTGOING_REASONS = {
    "no_peer",
    "no_endpoint",
    "no_identity",
    "invalid_peer_key",
    "staged_overflow",
    "handshake_timeout",
    "interface_down",
    "send_failed",
}


def link_stats(ns: Netns, ifname: str) -> dict[str, int]:
    data = json.loads(ns.run("ip", "-s", "-j", "link", "show", ifname).stdout)[0]["stats64"]
    return {
        "rx": data["rx"]["packets"],
        "tx": data["tx"]["packets"],
        "rx_dropped": data["rx"]["dropped"],
        "tx_dropped": data["tx"]["dropped"],
    }


def rcvbuf_errors(ns: Netns) -> int:
    rows = [line.split() for line in ns.run("cat", "/proc/net/snmp").stdout.splitlines()]
    udp = [row for row in rows if row and row[0] == "Udp:"]
    return int(udp[1][udp[0].index("RcvbufErrors")])


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def drops(ifname: str) -> dict[str, int]:
    stats = wgpy_stats(ifname)
    assert stats is not None
    out: dict[str, int] = {}
    for entry in stats["drops"]:  # type: ignore[attr-defined]
        out[entry["reason"]] = out.get(entry["reason"], 0) + int(entry["count"])
    return out


def run(minutes: float, interval: float) -> dict[str, Any]:
    duration = minutes * 60
    with Netns() as a, Netns() as b:
        topo = two_peer_topology(a, b, command_a=WGPYD)
        dut, go = topo.a, topo.b
        pid = dut.daemon.proc.pid
        wait_for(
            lambda: b.run("ping", "-c", "1", "-W", "1", dut.tunnel4, check=False).returncode == 0,
            20,
            what="tunnel",
        )
        server = a.popen("iperf3", "-s", "-B", dut.tunnel4)
        time.sleep(0.5)
        start_a, start_b = link_stats(a, dut.ifname), link_stats(b, go.ifname)
        rcvbuf_a, rcvbuf_b = rcvbuf_errors(a), rcvbuf_errors(b)
        drops_before = drops(dut.ifname)
        iperf_out = b.workdir / "iperf3.json"
        with iperf_out.open("wb") as out:
            client = b.popen(
                "iperf3", "-c", dut.tunnel4, "-t", str(int(duration)), "--bidir", "-J", stdout=out
            )
        started = time.monotonic()
        dummies: list[str] = []
        changes: list[str] = []
        rss: list[tuple[float, int]] = [(0.0, vm_rss_kib(pid))]
        handshakes: set[int] = set()
        step = 0
        next_change = started + interval
        next_rss = started + 30
        while client.poll() is None and time.monotonic() - started < duration + 30:
            now = time.monotonic()
            for peer in go.dump().peers.values():
                handshakes.add(peer.latest_handshake)
            if now >= next_rss:
                rss.append((now - started, vm_rss_kib(pid)))
                next_rss += 30
            if now < next_change or now - started > duration - 5:
                time.sleep(0.5)
                continue
            next_change += interval
            kind = step % 4
            step += 1
            if kind == 0:
                for n in range(5):
                    key = pubkey(genkey())
                    dummies.append(key)
                    wg(a, "set", dut.ifname, "peer", key, "allowed-ips", f"10.200.{n}.0/24")
                changes.append("add 5 peers")
            elif kind == 1 and dummies:
                wg(a, "set", dut.ifname, "peer", dummies[0], "allowed-ips", f"{go.tunnel4}/32")
                time.sleep(2)
                wg(
                    a,
                    "set",
                    dut.ifname,
                    "peer",
                    go.public_key,
                    "allowed-ips",
                    f"{go.tunnel4}/32,{go.tunnel6}/128",
                )
                changes.append("move AllowedIPs for 2 s")
            elif kind == 2:
                for key in dummies:
                    wg(a, "set", dut.ifname, "peer", key, "remove")
                changes.append(f"remove {len(dummies)} peers")
                dummies.clear()
            else:
                psk = genpsk()
                wg(
                    a,
                    "set",
                    dut.ifname,
                    "peer",
                    go.public_key,
                    "preshared-key",
                    str(write_secret(a, "soak.psk", psk)),
                )
                wg(
                    b,
                    "set",
                    go.ifname,
                    "peer",
                    dut.public_key,
                    "preshared-key",
                    str(write_secret(b, "soak.psk", psk)),
                )
                changes.append("new preshared key")
        if client.poll() is None:
            os.killpg(client.pid, signal.SIGINT)
        client.wait(30)
        for key in dummies:  # their staged packets are then counted (interface_down)
            wg(a, "set", dut.ifname, "peer", key, "remove")
        time.sleep(3)  # let queues drain
        rss.append((time.monotonic() - started, vm_rss_kib(pid)))
        end_a, end_b = link_stats(a, dut.ifname), link_stats(b, go.ifname)
        dropped = {
            k: v - drops_before.get(k, 0)
            for k, v in drops(dut.ifname).items()
            if v != drops_before.get(k, 0)
        }
        kernel_a, kernel_b = rcvbuf_errors(a) - rcvbuf_a, rcvbuf_errors(b) - rcvbuf_b
        os.killpg(server.pid, signal.SIGTERM)
        try:
            iperf = json.loads(iperf_out.read_text())
            sums = iperf["end"]
            throughput = {
                "B->A Mbit/s": round(sums["sum_sent"]["bits_per_second"] / 1e6, 1),
                "A->B Mbit/s": round(sums["sum_sent_bidir_reverse"]["bits_per_second"] / 1e6, 1),
            }
        except (ValueError, KeyError) as error:
            throughput = {"error": repr(error)}
    d = {k: end_a[k] - start_a[k] for k in end_a}
    e = {k: end_b[k] - start_b[k] for k in end_b}
    outgoing = sum(v for k, v in dropped.items() if k in OUTGOING_REASONS)
    incoming = sum(v for k, v in dropped.items() if k not in OUTGOING_REASONS)
    a_to_b = {
        "read by wgpyd": d["tx"],
        "received by go": e["rx"],
        "wgpyd outgoing drops": outgoing,
        "kernel RcvbufErrors in B": kernel_b,
    }
    a_to_b["unexplained"] = d["tx"] - e["rx"] - outgoing - kernel_b
    b_to_a = {
        "read by go": e["tx"],
        "written by wgpyd": d["rx"],
        "wgpyd incoming drops": incoming,
        "kernel RcvbufErrors in A": kernel_a,
    }
    b_to_a["unexplained"] = e["tx"] - d["rx"] - incoming - kernel_a
    warm = next((kib for t, kib in rss if t >= 120), rss[-1][1])
    return {
        "minutes": minutes,
        "throughput": throughput,
        "changes": len(changes),
        "handshakes seen": len(handshakes - {0}),
        "drops by reason": dropped,
        "A->B": a_to_b,
        "B->A": b_to_a,
        "kernel TUN queue drops (tx_dropped A, B)": (d["tx_dropped"], e["tx_dropped"]),
        "rss KiB (t s, VmRSS)": rss,
        "rss flat (last within 10 % of the 2-minute sample)": rss[-1][1] <= warm * 1.10,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between changes")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result = run(args.minutes, args.interval)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
