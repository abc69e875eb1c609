"""A handshake flood against a daemon with many peers: RSS and a legitimate peer's handshake
latency, wgpyd next to wireguard-go in the same run (issue 16). Not in CI (a smoke run is).

    sudo .venv/bin/python -m bench.flood [--peers 10000] [--rounds 4] [--json FILE]

The responder (namespace S) has ``--peers`` peers with random keys, plus one legitimate peer: a
wireguard-go in namespace F. The flooder, also in F, holds the private keys of all those
random peers and sends valid initiations from them (``--rounds`` per peer, newer timestamps
each round), each peer from its own source address, answering every cookie reply with mac2
the way a real initiator under load does (bench/hs_sender.py ``--mac2``): the costliest flood
there is, because every initiation that passes the rate limiter is a full handshake and a new
session for the responder to keep. Meanwhile the legitimate peer forgets its session and pings
the responder through the tunnel, again and again; the time to the first reply is its handshake
latency (a responder under load answers with a cookie, and the initiator retries with mac2
after its 5 s retransmit timer: about 5 s is the protocol working, not the daemon failing).
The responder's VmRSS is sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.netbench import DAEMONS, HS_SENDER, QUIET, b64, progress, report_json, vm_rss_mib
from tests.netns.harness import (
    WIREGUARD_GO,
    Netns,
    genkey,
    pubkey,
    start_wg_daemon,
    unique_ifname,
    veth_pair,
    wg,
    write_secret,
)
from wgpy import crypto, noise
from wgpy.cookie import CookieGenerator

RESPONDER_PORT = 51820
CLIENT_PORT = 51821
FLOOD_SOURCES = "10.98.0.0/16"
FIRST_SOURCE = "10.98.0.1"


def _initiations(job: tuple[bytes, list[bytes], float, int]) -> bytes:
    """One initiation from each private key, stamped ``stamp``, sender indices from ``base``."""
    responder_public, privates, stamp, base = job
    macs = CookieGenerator(responder_public)
    blob = bytearray()
    for offset, private in enumerate(privates):
        static_static = crypto.dh(private, responder_public)
        assert static_static is not None
        message = noise.create_initiation(
            noise.Handshake(),
            local_public=crypto.public_key(private),
            peer_public=responder_public,
            static_static=static_static,
            ephemeral_private=crypto.generate_private_key(),
            sender_index=base + offset,
            timestamp=crypto.tai64n(stamp),
        )
        assert message is not None
        blob += macs.add_macs(message.pack_without_macs(), 0.0)
    return bytes(blob)


def make_rounds(responder_public: bytes, privates: list[bytes], rounds: int) -> list[bytes]:
    """``rounds`` blobs of one initiation per peer, each round with a newer timestamp."""
    now = time.time()
    chunk = 1000
    jobs = [
        (responder_public, privates[i : i + chunk], now + r, r * len(privates) + i + 1)
        for r in range(rounds)
        for i in range(0, len(privates), chunk)
    ]
    with multiprocessing.Pool() as pool:
        parts = pool.map(_initiations, jobs)
    per_round = len(parts) // rounds
    return [b"".join(parts[r * per_round : (r + 1) * per_round]) for r in range(rounds)]


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[float] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                self.samples.append(vm_rss_mib(self.pid))
            except (OSError, RuntimeError):
                return
            time.sleep(self.every)


def legit_handshake(
    f: Netns, ifname: str, responder_key: str, timeout: float = 30.0
) -> float | None:
    """Forget the session with the responder, then ping through the tunnel: seconds to the
    first reply (None if none within ``timeout``)."""
    # both daemons ignore a peer's initiation within 20 ms of its last one (a flood guard):
    # a sample must not be an artefact of the previous one
    time.sleep(0.05)
    wg(f, "set", ifname, "peer", responder_key, "remove")
    wg(f, "set", ifname, "peer", responder_key,
       "endpoint", f"10.99.0.2:{RESPONDER_PORT}", "allowed-ips", "10.100.0.2/32")  # fmt: skip
    start = time.perf_counter()
    result = f.run(
        "ping", "-c", "1", "-W", str(int(timeout)), "10.100.0.2", check=False, timeout=timeout + 5
    )
    return time.perf_counter() - start if result.returncode == 0 else None


def flood_one(name: str, config: str, responder_key: str, blobs: list[Path]) -> dict[str, Any]:
    with Netns() as s, Netns() as f:
        veth_pair(f, s, "10.99.0.1", "10.99.0.2", 24)
        f.run("ip", "route", "add", "local", FLOOD_SOURCES, "dev", "lo")
        s.run("ip", "route", "add", FLOOD_SOURCES, "via", "10.99.0.1")
        responder_if = unique_ifname("wgf")
        daemon = start_wg_daemon(s, responder_if, DAEMONS[name], env=QUIET)
        conf = write_secret(s, "flood.conf", config)
        started = time.perf_counter()
        wg(s, "setconf", responder_if, str(conf), timeout=600)
        setconf_s = time.perf_counter() - started
        # the legitimate peer: wireguard-go in F
        client_if = unique_ifname("wgc")
        start_wg_daemon(f, client_if, WIREGUARD_GO, env=QUIET)
        client_private = genkey()
        client_key = write_secret(f, "client.key", client_private)
        wg(f, "set", client_if, "private-key", str(client_key), "listen-port", str(CLIENT_PORT))
        f.run("ip", "addr", "add", "10.100.0.1/24", "dev", client_if)
        f.run("ip", "link", "set", client_if, "up")
        wg(s, "set", responder_if, "peer", pubkey(client_private), "allowed-ips", "10.100.0.1/32")
        s.run("ip", "addr", "add", "10.100.0.2/24", "dev", responder_if)
        s.run("ip", "link", "set", responder_if, "up")
        pid = daemon.proc.pid
        warm_up = legit_handshake(f, client_if, responder_key)  # neighbours resolved, etc.
        rss_idle = vm_rss_mib(pid)
        before = [legit_handshake(f, client_if, responder_key) for _ in range(3)]
        sampler = RssSampler(pid)
        sampler.start()
        during: list[float | None] = []
        floods: list[dict[str, Any]] = []
        rss_rounds: list[float] = []

        def flood() -> None:
            for blob in blobs:
                result = f.run(
                    sys.executable, str(HS_SENDER), str(blob), "10.99.0.2", str(RESPONDER_PORT),
                    "1", "--mac2", base64.b64decode(responder_key).hex(), FIRST_SOURCE,
                    timeout=900,
                )  # fmt: skip
                floods.append(json.loads(result.stdout))
                rss_rounds.append(round(vm_rss_mib(pid), 1))

        flooder = threading.Thread(target=flood)
        flood_start = time.perf_counter()
        flooder.start()
        while flooder.is_alive():
            during.append(legit_handshake(f, client_if, responder_key))
        flooder.join()
        flood_seconds = time.perf_counter() - flood_start
        after = [legit_handshake(f, client_if, responder_key) for _ in range(2)]
        sampler.running = False
        sampler.join()
        rss_end = vm_rss_mib(pid)
    answered = sum(run["responses"] for run in floods)

    def seconds(values: list[float | None]) -> dict[str, Any]:
        got = [v for v in values if v is not None]
        return {
            "samples": len(values),
            "failed": len(values) - len(got),
            "median_s": round(statistics.median(got), 3) if got else None,
            "max_s": round(max(got), 3) if got else None,
        }

    return {
        "setconf_s": round(setconf_s, 3),
        "flood_s": round(flood_seconds, 2),
        "initiations_sent": sum(run["sent"] for run in floods),
        "handshake_responses": answered,
        "responses_per_s": round(answered / flood_seconds, 1),
        "cookie_replies": sum(run["cookies"] for run in floods),
        "rss_mib": {
            "idle": round(rss_idle, 1),
            "peak": round(max(sampler.samples, default=rss_idle), 1),
            "end": round(rss_end, 1),
            "after_each_round": rss_rounds,
        },
        "legit_warm_up_s": None if warm_up is None else round(warm_up, 3),
        "legit_handshake": {
            "before": seconds(list(before)),
            "during": seconds(during),
            "after": seconds(list(after)),
        },
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over runs of the figures the docs quote."""

    def median(get: Any) -> float | None:
        values = [v for v in (get(run) for run in runs) if v is not None]
        return round(statistics.median(values), 3) if values else None

    return {
        "responses_per_s": median(lambda r: r["responses_per_s"]),
        "rss_idle_mib": median(lambda r: r["rss_mib"]["idle"]),
        "rss_peak_mib": median(lambda r: r["rss_mib"]["peak"]),
        "rss_after_first_round_mib": median(lambda r: r["rss_mib"]["after_each_round"][0]),
        "rss_after_last_round_mib": median(lambda r: r["rss_mib"]["after_each_round"][-1]),
        "legit_before_median_s": median(lambda r: r["legit_handshake"]["before"]["median_s"]),
        "legit_during_median_s": median(lambda r: r["legit_handshake"]["during"]["median_s"]),
        "legit_during_max_s": max(
            (r["legit_handshake"]["during"]["max_s"] or 0.0 for r in runs), default=None
        ),
        "legit_failed": sum(
            r["legit_handshake"][when]["failed"]
            for r in runs
            for when in ("before", "during", "after")
        ),
    }


def run(peers: int, rounds: int, daemons: list[str], runs: int = 1) -> dict[str, Any]:
    responder_private = genkey()
    responder_key = pubkey(responder_private)
    responder_public = base64.b64decode(responder_key)
    progress(f"generating {peers:,} peer keys")
    privates = [crypto.generate_private_key() for _ in range(peers)]
    lines = ["[Interface]", f"PrivateKey = {responder_private}", f"ListenPort = {RESPONDER_PORT}"]
    for k, private in enumerate(privates):
        hi, lo = divmod(k, 256)
        lines += ["", "[Peer]", f"PublicKey = {b64(crypto.public_key(private))}",
                  f"AllowedIPs = 10.{hi}.{lo}.0/25, fd00::{k:x}:0/112"]  # fmt: skip
    config = "\n".join(lines) + "\n"
    progress(f"crafting {rounds} rounds of {peers:,} initiations")
    out: dict[str, Any] = {"peers": peers, "rounds": rounds}
    with tempfile.TemporaryDirectory(prefix="wgpy-flood-") as tmp:
        blobs = []
        for r, blob in enumerate(make_rounds(responder_public, privates, rounds)):
            path = Path(tmp) / f"round{r}.bin"
            path.write_bytes(blob)
            blobs.append(path)
        raw: dict[str, list[dict[str, Any]]] = {name: [] for name in daemons}
        for number in range(runs):
            for name in daemons:
                progress(f"flooding {name}, run {number + 1}/{runs}")
                raw[name].append(flood_one(name, config, responder_key, blobs))
    out["medians"] = {name: summary(results) for name, results in raw.items()}
    out["runs"] = raw
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__)
    parser.add_argument("--peers", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--daemons", default="go,wgpyd")
    parser.add_argument("--runs", type=int, default=3, help="runs per daemon (medians)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    report_json(run(args.peers, args.rounds, args.daemons.split(","), args.runs), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
