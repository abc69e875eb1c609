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
          + lost between (A's UDP SndbufErrors, veth drops, B's UDP InErrors) + unexplained
    B->A, in three stages, each measured at both ends:
          read by go (B's TUN TX) = data messages go sent + go's own drops
          data messages go sent (nft, B's output hook) = arrived at A (nft, A's input hook)
                                                         + lost on the veth
          arrived at A = written by wgpyd (A's TUN RX) + wgpyd's incoming drops of packets
                         + A's UDP InErrors + unexplained at wgpyd

"Data messages" are type-4 messages longer than a keepalive. wgpyd's incoming drops of packets
come from its event stream (``wgpy-events=1 follow=1``): drops of decrypted packets, and of
data messages with a packet before decryption; handshake messages and keepalives that wgpyd
drops are not packets any TUN counted. go's own drops are split into the packets it has no
peer for (nft counts them leaving B's stack into its interface: IPv6 MLD reports and the like)
and the rest (its queues; go counts neither).

wgpyd's VmRSS is sampled every 30 s; flat means the last sample is within 10 % of the sample
taken after the first two minutes (buffers warmed up).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.netbench import report_json
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
from wgpy.io.uapi_client import open_events, wgpy_stats

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


UDP_COUNTERS = ("InErrors", "RcvbufErrors", "SndbufErrors", "InCsumErrors", "NoPorts")


def udp_counters(ns: Netns) -> dict[str, int]:
    """The namespace's UDP error counters (/proc/net/snmp, IPv4 and IPv6 together)."""
    out = dict.fromkeys(UDP_COUNTERS, 0)
    rows = [line.split() for line in ns.run("cat", "/proc/net/snmp").stdout.splitlines()]
    udp = [row for row in rows if row and row[0] == "Udp:"]
    for name in UDP_COUNTERS:
        out[name] += int(udp[1][udp[0].index(name)])
    for line in ns.run("cat", "/proc/net/snmp6").stdout.splitlines():
        key, _, value = line.partition(" ")
        if key.startswith("Udp6") and key[4:] in out:
            out[key[4:]] += int(value)
    return out


def count_data_messages(ns: Netns, hook: str, port: int) -> str:
    """An nftables counter in ``ns`` of the WireGuard data messages that carry a packet
    (type 4, longer than a 32-byte keepalive) to UDP ``port``, at ``hook`` (``output``: as the
    sender's socket hands them over; ``input``: as they reach the receiver's socket). Returns
    the table name for :func:`counted`."""
    table = f"wgpysoak{hook}"
    rules = f"""
table inet {table} {{
    chain {hook} {{
        type filter hook {hook} priority 0; policy accept;
        udp dport {port} @th,64,32 0x04000000 udp length > 40 counter
    }}
}}
"""
    ns.run("nft", "-f", "-", input=rules)
    return table


def count_unroutable(ns: Netns, ifname: str, allowed4: str, allowed6: str) -> str:
    """An nftables counter in ``ns`` of the packets sent into ``ifname`` whose destination is
    none of the peer's AllowedIPs (the daemon has no peer for them: IPv6 MLD reports and the
    like)."""
    table = "wgpysoakunroutable"
    rules = f"""
table inet {table} {{
    chain output {{
        type filter hook output priority 0; policy accept;
        oifname "{ifname}" ip daddr != {allowed4} counter
        oifname "{ifname}" ip6 daddr != {allowed6} counter
    }}
}}
"""
    ns.run("nft", "-f", "-", input=rules)
    return table


def counted(ns: Netns, table: str) -> int:
    """The packets the counters of ``table`` counted, together."""
    listing = json.loads(ns.run("nft", "-j", "list", "table", "inet", table).stdout)
    return sum(
        int(expression["counter"]["packets"])
        for item in listing["nftables"]
        if "rule" in item
        for expression in item["rule"]["expr"]
        if "counter" in expression
    )


#: Drops of data messages before decryption: an inner packet unless the message is a
#: keepalive (32 bytes: header and tag only).
DATA_MESSAGE_REASONS = {"expired_keypair", "decryption_failed", "replayed_counter"}
KEEPALIVE_SIZE = 32


class DropRecorder(threading.Thread):
    """Follows wgpyd's event stream (``wgpy-events=1 follow=1 format=json``) and counts the
    incoming drops that were inner packets: decrypted ones (they carry inner addresses) and
    data messages with a packet dropped before decryption. Handshake messages and keepalives
    are not packets any TUN counted, so they stay out of the accounting."""

    def __init__(self, ifname: str) -> None:
        super().__init__(daemon=True)
        self.sock = open_events(ifname, follow=True, as_json=True)
        self.inner_packets: collections.Counter[str] = collections.Counter()
        self.not_packets: collections.Counter[str] = collections.Counter()
        self.lost = 0
        self.errors: list[str] = []

    def run(self) -> None:
        with self.sock.makefile("r") as lines:
            for line in lines:  # the recent events, before the stream starts
                if line.strip() == "errno=0":
                    next(lines, None)
                    break
            for line in lines:
                if line.strip():
                    try:
                        self.count(json.loads(line))
                    except (ValueError, KeyError) as error:
                        self.errors.append(f"{error!r}: {line[:200]}")

    def count(self, record: dict[str, Any]) -> None:
        if record["event"] == "events_lost":
            self.lost += record["count"]
            return
        if record["event"] != "packet_dropped" or record["direction"] != "in":
            return
        reason = record["reason"]
        data_message = reason in DATA_MESSAGE_REASONS or (
            reason == "unknown_index" and record.get("detail") == "data message"
        )
        if "inner_src" in record or (data_message and record["size"] > KEEPALIVE_SIZE):
            self.inner_packets[reason] += 1
        else:
            self.not_packets[reason] += 1

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.join(5)


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
        veth_start = link_stats(a, dut.veth), link_stats(b, go.veth)
        udp_a, udp_b = udp_counters(a), udp_counters(b)
        drops_before = drops(dut.ifname)
        recorder = DropRecorder(dut.ifname)
        recorder.start()
        # B->A at both ends of the wire (go sends one datagram per packet, no GSO)
        sent_table = count_data_messages(b, "output", dut.listen_port)
        arrived_table = count_data_messages(a, "input", dut.listen_port)
        unroutable_table = count_unroutable(b, go.ifname, dut.tunnel4, dut.tunnel6)
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
        veth_end = link_stats(a, dut.veth), link_stats(b, go.veth)
        sent_by_go, arrived_at_a = counted(b, sent_table), counted(a, arrived_table)
        unroutable_at_go = counted(b, unroutable_table)
        recorder.stop()
        dropped = {
            k: v - drops_before.get(k, 0)
            for k, v in drops(dut.ifname).items()
            if v != drops_before.get(k, 0)
        }
        udp_end_a, udp_end_b = udp_counters(a), udp_counters(b)
        kernel_a = {k: v - udp_a[k] for k, v in udp_end_a.items() if v != udp_a[k]}
        kernel_b = {k: v - udp_b[k] for k, v in udp_end_b.items() if v != udp_b[k]}
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
    veth_a = {k: veth_end[0][k] - veth_start[0][k] for k in veth_end[0]}
    veth_b = {k: veth_end[1][k] - veth_start[1][k] for k in veth_end[1]}
    outgoing = sum(v for k, v in dropped.items() if k in OUTGOING_REASONS)
    incoming = sum(recorder.inner_packets.values())
    # a datagram lost between the daemons: the sender's socket, the veth pair, the receiver's
    # socket (the kernel counts each, in the namespace where it happens)
    lost_a_to_b = (
        kernel_a.get("SndbufErrors", 0)
        + veth_a["tx_dropped"]
        + veth_b["rx_dropped"]
        + kernel_b.get("InErrors", 0)
    )
    a_to_b = {
        "read by wgpyd": d["tx"],
        "received by go": e["rx"],
        "wgpyd outgoing drops": outgoing,
        "lost between (socket, veth, socket)": lost_a_to_b,
    }
    a_to_b["unexplained"] = d["tx"] - e["rx"] - outgoing - lost_a_to_b
    # B->A in three stages, each measured at both of its ends: go (TUN read -> socket), the
    # wire (B's output hook -> A's input hook), wgpyd (A's socket -> TUN write or a drop)
    b_to_a = {
        "read by go": e["tx"],
        "data messages go sent (B output)": sent_by_go,
        "go's own drops (read, never sent)": e["tx"] - sent_by_go,
        "of which go has no peer for (nft in B)": unroutable_at_go,
        "arrived at A (A input)": arrived_at_a,
        "lost on the wire (veth)": sent_by_go - arrived_at_a,
        "lost in A's socket (InErrors)": kernel_a.get("InErrors", 0),
        "wgpyd incoming drops of packets": incoming,
        "written by wgpyd": d["rx"],
    }
    b_to_a["unexplained at wgpyd"] = arrived_at_a - kernel_a.get("InErrors", 0) - incoming - d["rx"]
    b_to_a["unexplained"] = b_to_a["unexplained at wgpyd"]
    warm = next((kib for t, kib in rss if t >= 120), rss[-1][1])
    return {
        "minutes": minutes,
        "throughput": throughput,
        "changes": len(changes),
        "handshakes seen": len(handshakes - {0}),
        "drops by reason": dropped,
        "incoming drops: packets / not packets (handshakes, keepalives)": (
            dict(recorder.inner_packets),
            dict(recorder.not_packets),
        ),
        "events lost by the recorder": recorder.lost,
        "records the recorder could not read": recorder.errors[:5],
        "kernel UDP counters (A, B)": (kernel_a, kernel_b),
        "veth drops (A rx/tx, B rx/tx)": (
            (veth_a["rx_dropped"], veth_a["tx_dropped"]),
            (veth_b["rx_dropped"], veth_b["tx_dropped"]),
        ),
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
    report_json(run(args.minutes, args.interval), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
