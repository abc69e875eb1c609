"""The network check at scale (issue 23): a full mesh of N hosts (N·(N−1) ordered pairs) and
a hub with N spokes (about N² pairs), healthy and with one broken spoke. Each run is a child
process (``--one KIND N``) that builds the network (:mod:`bench.netgen`), times
:func:`wgpy.net.check.check`, compares a random sample of pairs with the per-pair trace
(:func:`wgpy.net.check.ping`, exact) and reports its own peak RSS (``ru_maxrss``).

    .venv/bin/python -m bench.bench_net [--mesh 1000] [--hub 10000] [--runs 3] [--sample 1000]
    .venv/bin/python -m bench --only net
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from bench import netgen
from wgpy.net.check import Outcome, check, endpoints, pairs


def one(kind: str, size: int, sample: int, seed: int = 1) -> dict[str, Any]:
    """Build, check and sample one network in this process."""
    t0 = time.perf_counter()
    network = netgen.mesh(size) if kind == "mesh" else netgen.hub(size, broken=kind == "broken")
    t1 = time.perf_counter()
    c1 = time.process_time()
    report = check(network)
    t2 = time.perf_counter()
    c2 = time.process_time()
    found = endpoints(network)
    rng = random.Random(seed)
    chosen: list[tuple[Any, Any]] = []
    while len(chosen) < sample:
        source, target = rng.choice(found), rng.choice(found)
        if source.host != target.host:
            chosen.append((source, target))
    if len(found) < 50:  # small: every pair
        chosen = list(pairs(found))
    wrong = sum(report.outcome(s, t) != Outcome.of(report.ping(s, t)) for s, t in chosen)
    counted = {(g.cause.kind.value, g.cause.host, g.leg): g.count for g in report.groups}
    return {
        "kind": kind,
        "size": size,
        "hosts": len(network.hosts),
        "pairs": report.total,
        "reachable": report.reachable,
        "groups": [f"{k} on {h} ({leg}): {n}" for (k, h, leg), n in counted.items()],
        "build_s": t1 - t0,
        "check_s": t2 - t1,
        "check_cpu_s": c2 - c1,
        "sampled": len(chosen),
        "sample_wrong": wrong,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child(kind: str, size: int, sample: int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.bench_net", "--one", kind, str(size)]
    argv += ["--sample", str(sample)]
    res = subprocess.run(argv, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(res.stdout)
    return result


def bench_net(runs: int, mesh: int, hub: int, sample: int) -> dict[str, list[dict[str, Any]]]:
    """``runs`` children per network: mesh, hub, hub with a broken spoke."""
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, size in (("mesh", mesh), ("hub", hub), ("broken", hub)):
        out[f"{kind}-{size}"] = [child(kind, size, sample) for _ in range(runs)]
    return out


def summary(raw: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = []
    for name, results in raw.items():
        first = results[0]
        check_s = statistics.median(r["check_s"] for r in results)
        cpu_s = statistics.median(r["check_cpu_s"] for r in results)
        runs = ", ".join(f"{r['check_s']:.1f}" for r in results)
        build_s = statistics.median(r["build_s"] for r in results)
        rss = max(r["rss_mib"] for r in results)
        wrong = sum(r["sample_wrong"] for r in results)
        sampled = sum(r["sampled"] for r in results)
        lines.append(
            f"{name}: {first['hosts']:,} hosts, {first['pairs']:,} pairs, "
            f"{first['reachable']:,} reachable; check {check_s:.2f} s (median of "
            f"{len(results)}: {runs}; CPU {cpu_s:.2f} s), build {build_s:.2f} s, "
            f"peak RSS {rss:.0f} MiB; sample "
            f"{sampled - wrong}/{sampled} equal to the per-pair trace; groups: "
            + ("; ".join(first["groups"]) or "none")
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--mesh", type=int, default=1000)
    parser.add_argument("--hub", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sample", type=int, default=1000)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.sample)))
        return
    for line in summary(bench_net(args.runs, args.mesh, args.hub, args.sample)):
        print(line)


if __name__ == "__main__":
    main()
