"""Benchmark of the AllowedIPs tools (not a test); every figure is the median of --runs runs.

* lint of a generated hub config with --peers peers (a /32 and a /128 each, names, PSKs,
  endpoints): read + parse + every finding;
* explain against an interface holding --prefixes prefixes (510 peers x 256 prefixes for the
  default 130,560, lengths /20, /22, /26, /32 so the table is in tree mode), loaded the ways
  explain loads them: from a config file (``Source.from_config``) and from UAPI ``get`` output
  (``Source.from_uapi``, what ``wgpy explain IF`` does with a live interface's answer); then
  ``explain_to`` / ``explain_from`` for random addresses on the loaded table;
* with --live (root): the same prefixes set into a real wgpyd in a fresh network namespace with
  ``wg setconf``, and ``wgpy explain IF to ADDR --json`` run end to end (a new process: UAPI
  get, table build, route lookup through pyroute2) inside that namespace.

    .venv/bin/python bench/bench_tools.py [--peers 2000] [--prefixes 130560] [--live]
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_allowedips import median_time
from wgpy import crypto
from wgpy.config import load
from wgpy.tools.files.explain import Source, explain_from, explain_to
from wgpy.tools.files.lint import lint

LENGTHS = (20, 22, 26, 32)


def key(rng: random.Random) -> str:
    return base64.b64encode(crypto.public_key(crypto.generate_private_key(rng.randbytes))).decode()


def hub_config(rng: random.Random, peers: int) -> str:
    private = base64.b64encode(crypto.generate_private_key(rng.randbytes)).decode()
    lines = [
        "[Interface]",
        f"PrivateKey = {private}",
        "ListenPort = 51820",
        "Address = 10.64.0.1/10, fd00:64::1/64",
        "PostUp = sysctl -w net.ipv4.ip_forward=1",
    ]
    psk = base64.b64encode(rng.randbytes(32)).decode()
    for i in range(peers):
        lines += [
            "",
            "[Peer]",
            f"# Name = spoke-{i}",
            f"PublicKey = {key(rng)}",
            f"PresharedKey = {psk}",
            f"AllowedIPs = {IPv4Address(0x0A400000 + 2 + i)}/32, fd00:64::{i + 2:x}/128",
            f"Endpoint = 192.0.2.{i % 250 + 1}:{40000 + i}",
            "PersistentKeepalive = 25",
        ]
    return "\n".join(lines) + "\n"


def big_prefixes(count: int) -> list[IPv4Network]:
    """Distinct prefixes, each inside its own 4096-address block from 16.0.0.0."""
    return [IPv4Network((0x10000000 + k * 4096, LENGTHS[k % len(LENGTHS)])) for k in range(count)]


def big_config(rng: random.Random, prefixes: list[IPv4Network], per_peer: int) -> str:
    lines = ["[Interface]", f"PrivateKey = {base64.b64encode(rng.randbytes(32)).decode()}"]
    for start in range(0, len(prefixes), per_peer):
        chunk = prefixes[start : start + per_peer]
        lines += ["", "[Peer]", f"PublicKey = {key(rng)}"]
        lines.append("AllowedIPs = " + ", ".join(str(p) for p in chunk))
    return "\n".join(lines) + "\n"


def uapi_pairs(config_source: Source) -> list[tuple[str, str]]:
    """What a UAPI get of that interface answers (hex keys, one allowed_ip per line)."""
    pairs: list[tuple[str, str]] = [("listen_port", "51820")]
    for peer in config_source.peers:
        pairs.append(("public_key", base64.b64decode(peer).hex()))
        pairs += [("allowed_ip", str(p)) for p in config_source.table.entries(peer)]
    return pairs


def live(prefixes: list[IPv4Network], conf_path: Path, queries: list[str], runs: int) -> None:
    from tests.netns.harness import Netns, start_wg_daemon, unique_ifname

    with Netns("bench") as ns:
        ifname = unique_ifname("wgb")
        start_wg_daemon(ns, ifname, (sys.executable, "-m", "wgpy.daemon", "-f"))
        stripped = ns.workdir / "setconf.conf"
        stripped.write_text(conf_path.read_text())
        t0 = time.perf_counter()
        ns.run("wg", "setconf", ifname, str(stripped), timeout=600)
        took = time.perf_counter() - t0
        print(f"  live wgpyd: wg setconf of {len(prefixes)} prefixes: {took:.2f} s")
        ns.run("ip", "link", "set", ifname, "up")
        ns.run("ip", "route", "add", "16.0.0.0/4", "dev", ifname)
        argv = (sys.executable, "-m", "wgpy.cli", "explain", ifname, "to", queries[0], "--json")
        t = median_time(lambda: ns.run(*argv, check=False, timeout=600), runs)
        print(f"  live wgpyd: `wgpy explain {ifname} to ADDR --json` end to end: {t:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=2000)
    parser.add_argument("--prefixes", type=int, default=130_560)
    parser.add_argument("--per-peer", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--live", action="store_true", help="also against a real wgpyd (root)")
    args = parser.parse_args()
    rng = random.Random(5)

    with tempfile.TemporaryDirectory() as tmp:
        hub_path = Path(tmp) / "hub.conf"
        hub_path.write_text(hub_config(rng, args.peers))
        findings: list[object] = []
        t = median_time(lambda: findings.extend(lint([load(hub_path)])), args.runs)
        print(f"lint of a {args.peers}-peer hub config: {t * 1000:.0f} ms (median of {args.runs})")

        prefixes = big_prefixes(args.prefixes)
        big_path = Path(tmp) / "big.conf"
        big_path.write_text(big_config(rng, prefixes, args.per_peer))
        peers = (len(prefixes) + args.per_peer - 1) // args.per_peer
        print(f"explain against {len(prefixes)} prefixes ({peers} peers), median of {args.runs}:")
        loaded: list[Source] = []
        t = median_time(lambda: loaded.append(Source.from_config(load(big_path))), args.runs)
        source = loaded[-1]
        assert len(source.table) == len(prefixes)
        print(f"  load from config (read, parse, build table): {t:.2f} s")
        pairs = uapi_pairs(source)
        t = median_time(lambda: Source.from_uapi("wgb", pairs), args.runs)
        print(f"  load from UAPI get output (parse_get, build table): {t:.2f} s")

        queries = [
            str(IPv4Address(int(p.network_address) + rng.randrange(p.num_addresses)))
            for p in rng.sample(prefixes, args.queries)
        ]
        via = source.peers[0]

        def ask() -> None:
            for address in queries:
                explain_to(source, address)
                explain_from(source, address, via)

        t = median_time(ask, args.runs)
        per = t / (2 * len(queries)) * 1e6
        print(f"  explain_to + explain_from on the loaded table: {per:.1f} µs per question")
        if args.live:
            if os.geteuid() != 0:
                print("  --live needs root; skipped")
            else:
                live(prefixes, big_path, queries, args.runs)


if __name__ == "__main__":
    main()
