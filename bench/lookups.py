"""AllowedIPs lookups/s for `python -m bench`: wgpy against pytricia on the same prefixes and
random addresses (prefix generator shared with bench/bench_allowedips.py)."""

from __future__ import annotations

import importlib
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv6Address
from types import ModuleType
from typing import Any

from bench.bench_allowedips import make_prefixes
from wgpy.allowedips import AllowedIPs


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def ensure_pytricia() -> ModuleType | None:
    """Import pytricia, pip-installing it into the running interpreter's environment if missing
    (a benchmark-only anchor, not a wgpy dependency). None if that fails."""
    try:
        return importlib.import_module("pytricia")
    except ImportError:
        pass
    progress("pytricia missing; pip install pytricia")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "pytricia"],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        progress(f"pip install pytricia failed: {res.stderr.strip()[-300:]}")
        return None
    importlib.invalidate_caches()
    try:
        return importlib.import_module("pytricia")
    except ImportError:
        return None


def rate(pairs: Sequence[tuple[Callable[[Any], object], Sequence[Any]]]) -> float:
    """Lookups per second over all (function, addresses) pairs, timed together."""
    total = sum(len(addrs) for _fn, addrs in pairs)
    start = time.perf_counter()
    for fn, addrs in pairs:
        for a in addrs:
            fn(a)
    return total / (time.perf_counter() - start)


def bench_lookups(runs: int, prefixes: int, lookups: int, seed: int = 1) -> dict[str, list[float]]:
    rng = random.Random(seed)
    progress(f"AllowedIPs: loading {prefixes:,} prefixes into wgpy")
    table_prefixes = make_prefixes(rng, prefixes)
    peers = [object() for _ in range(100)]
    table: AllowedIPs[object] = AllowedIPs()
    for i, prefix in enumerate(table_prefixes):
        table.insert(prefix, peers[i % len(peers)])
    table.lookup_v4(0)  # build any lazy lookup structure outside the timed loops
    table.lookup_v6(0)
    half = lookups // 2
    a4 = [rng.getrandbits(32) for _ in range(half)]
    a6 = [rng.getrandbits(128) for _ in range(half)]
    o4 = [IPv4Address(a) for a in a4]
    o6 = [IPv6Address(a) for a in a6]
    mixed = [a for pair in zip(o4, o6, strict=True) for a in pair]

    variants: dict[str, Sequence[tuple[Callable[[Any], object], Sequence[Any]]]] = {
        "wgpy lookup_v4/v6(int)": [(table.lookup_v4, a4), (table.lookup_v6, a6)],
        "wgpy lookup(IPv4Address/IPv6Address)": [(table.lookup, mixed)],
    }
    pytricia = ensure_pytricia()
    if pytricia is not None:
        progress(f"AllowedIPs: loading {prefixes:,} prefixes into pytricia")
        t4 = pytricia.PyTricia(32)
        t6 = pytricia.PyTricia(128)
        for i, prefix in enumerate(table_prefixes):
            (t4 if prefix.version == 4 else t6)[str(prefix)] = peers[i % len(peers)]
        p6 = [a.packed for a in o6]
        s4 = [str(a) for a in o4]
        s6 = [str(a) for a in o6]
        variants |= {
            # pytricia takes an int only for IPv4, packed bytes for both families
            "pytricia get(int v4 / bytes v6)": [(t4.get, a4), (t6.get, p6)],
            "pytricia get(IPv4Address/IPv6Address)": [(t4.get, o4), (t6.get, o6)],
            "pytricia get(str)": [(t4.get, s4), (t6.get, s6)],
        }
    out: dict[str, list[float]] = {name: [] for name in variants}
    for run in range(runs):
        progress(f"AllowedIPs lookups run {run + 1}/{runs}")
        for name, pairs in variants.items():
            out[name].append(rate(pairs))
    return out
