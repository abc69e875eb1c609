"""Micro-benchmark for wgpy.allowedips lookups (not a test).

Loads N random prefixes (half IPv4 with lengths 0..32, half IPv6 with lengths 0..128,
uniformly, like wireguard-go's BenchmarkTrie) and measures lookups per second for random
addresses, for wgpy and, if it is importable, pytricia (not a dependency). Every figure is
the median of --runs runs.

    .venv/bin/python bench/bench_allowedips.py [--prefixes 100000] [--lookups 200000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from wgpy.allowedips import AllowedIPs, Prefix


def make_prefixes(rng: random.Random, count: int) -> list[Prefix]:
    out: list[Prefix] = []
    for i in range(count):
        width = 32 if i % 2 == 0 else 128
        length = rng.randint(0, width)
        value = rng.getrandbits(width) >> (width - length) << (width - length)
        out.append(IPv4Network((value, length)) if width == 32 else IPv6Network((value, length)))
    return out


def median_rate(fn: Callable[[], int], runs: int) -> float:
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def median_time(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def loop(lookup: Callable[[Any], object], addresses: Sequence[Any]) -> Callable[[], int]:
    def run() -> int:
        for a in addresses:
            lookup(a)
        return len(addresses)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefixes", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    prefixes = make_prefixes(rng, args.prefixes)
    peers = [object() for _ in range(100)]
    owners = [peers[i % len(peers)] for i in range(len(prefixes))]
    half = args.lookups // 2
    a4 = [rng.getrandbits(32) for _ in range(half)]
    a6 = [rng.getrandbits(128) for _ in range(half)]
    o4 = [IPv4Address(a) for a in a4]
    o6 = [IPv6Address(a) for a in a6]
    s4 = [str(a) for a in o4]
    s6 = [str(a) for a in o6]
    packed = [a.packed for pair in zip(o4, o6, strict=True) for a in pair]
    mixed_obj = [a for pair in zip(o4, o6, strict=True) for a in pair]
    mixed_str = [a for pair in zip(s4, s6, strict=True) for a in pair]

    print(
        f"{len(prefixes)} prefixes ({len(prefixes) - len(prefixes) // 2} IPv4, "
        f"{len(prefixes) // 2} IPv6), {args.lookups} lookups, median of {args.runs} runs"
    )

    table: AllowedIPs[object] = AllowedIPs()

    def load() -> None:
        table.clear()
        for prefix, owner in zip(prefixes, owners, strict=True):
            table.insert(prefix, owner)

    def build() -> None:
        load()
        table.lookup_v4(0)
        table.lookup_v6(0)

    t_load = median_time(load, args.runs)
    t_build = median_time(build, args.runs) - t_load
    print(
        f"wgpy     insert {len(prefixes) / t_load:12,.0f} prefixes/s "
        f"(+ {t_build:.2f} s to build the lookup structure)"
    )

    results = {
        "lookup_v4(int)": median_rate(loop(table.lookup_v4, a4), args.runs),
        "lookup_v6(int)": median_rate(loop(table.lookup_v6, a6), args.runs),
        "lookup(IPv4Address/IPv6Address)": median_rate(loop(table.lookup, mixed_obj), args.runs),
        "lookup(bytes 4/16)": median_rate(loop(table.lookup, packed), args.runs),
        "lookup(str)": median_rate(loop(table.lookup, mixed_str), args.runs),
    }
    for name, rate in results.items():
        print(f"wgpy     {name:34s} {rate:12,.0f} lookups/s")

    try:
        import pytricia  # type: ignore[import-not-found]
    except ImportError:
        print("pytricia not importable; skipped")
        return

    t4 = pytricia.PyTricia(32)
    t6 = pytricia.PyTricia(128)

    def load_tricia() -> None:
        for prefix, owner in zip(prefixes, owners, strict=True):
            (t4 if prefix.version == 4 else t6)[str(prefix)] = owner

    t_tricia = median_time(load_tricia, args.runs)
    print(f"pytricia insert {len(prefixes) / t_tricia:12,.0f} prefixes/s")
    for name, tree, addrs in (
        ("get(IPv4Address)", t4, o4),
        ("get(IPv6Address)", t6, o6),
        ("get(str v4)", t4, s4),
        ("get(str v6)", t6, s6),
    ):
        rate = median_rate(loop(tree.get, addrs), args.runs)
        print(f"pytricia {name:34s} {rate:12,.0f} lookups/s")


if __name__ == "__main__":
    main()
