"""Where a wgpyd tunnel's time goes: `python -m bench.profile_path [--env VAR=VALUE ...]`.

One iperf3 TCP run through two wgpyd under cProfile (client in A, so A encrypts and B
decrypts), then per side: user and system CPU seconds per GB and per MSS-sized segment from
/proc/PID/stat, and the functions with the most own time. ``--env WGPY_NO_TUN_OFFLOAD=1``
profiles the path without TUN offloads. cProfile slows Python code (not syscalls or C), so read
its shares, not its absolute times; the CPU figures come from a run without it unless
``--cpu-under-profile`` is given.
"""

from __future__ import annotations

import argparse
import json
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import netbench

#: TCP payload per segment at the bench's MTU of 1420 (IPv4, timestamps): CPU per segment is
#: CPU per byte times this, however many segments a read or write carried.
MSS = 1420 - 20 - 32


def _stat(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = 100.0
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def _run(env: Sequence[str], seconds: float, profile_dir: Path | None) -> dict[str, object]:
    def command(side: str) -> tuple[str, ...]:
        prefix: tuple[str, ...] = ("env", *env) if env else ()
        if profile_dir is None:
            return (*prefix, *netbench.WGPYD)
        out = str(profile_dir / f"{side}.prof")
        return (*prefix, sys.executable, "-m", "cProfile", "-o", out, "-m", "wgpy.daemon", "-f")

    with netbench.pairs([("profile", command("A"), command("B"))]) as made:
        pair = made[0]
        netbench.warm_up(pair)
        pair.server = pair.b.popen("iperf3", "-s", "-B", pair.target, "-p", "5201")
        time.sleep(0.5)
        before = [_stat(d.proc.pid) for d in pair.daemons]
        res = pair.a.run("iperf3", "-c", pair.target, "-p", "5201", "-t", f"{seconds:g}", "-J",
                         check=False, timeout=seconds + 60)  # fmt: skip
        after = [_stat(d.proc.pid) for d in pair.daemons]
        end = json.loads(res.stdout)["end"]
        for daemon in pair.daemons:
            daemon.stop()  # SIGTERM: cProfile writes its file on the way out
    received = float(end["sum_received"]["bytes"])
    gigabytes = received / 1e9
    segments = received / MSS
    sides = {}
    for name, (u0, s0), (u1, s1) in zip("AB", before, after, strict=True):
        sides[name] = {
            "user_s_per_gb": (u1 - u0) / gigabytes,
            "sys_s_per_gb": (s1 - s0) / gigabytes,
            "us_per_segment": ((u1 - u0) + (s1 - s0)) / segments * 1e6,
        }
    return {
        "mbit_s": float(end["sum_received"]["bits_per_second"]) / 1e6,
        "retransmits": end["sum_sent"].get("retransmits"),
        "sides": sides,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_path", description=__doc__)
    p.add_argument("--env", action="append", default=[], help="VAR=VALUE for both daemons")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    plain = _run(args.env, args.seconds, None)
    print(f"without profiler: {json.dumps(plain)}")
    with tempfile.TemporaryDirectory(prefix="wgpy-profile-") as tmp:
        profiled = _run(args.env, args.seconds, Path(tmp))
        print(f"under cProfile: {profiled['mbit_s']:.0f} Mbit/s")
        for side in "AB":
            print(f"\n--- side {side} ({'encrypts' if side == 'A' else 'decrypts'}) ---")
            stats = pstats.Stats(str(Path(tmp) / f"{side}.prof"), stream=sys.stdout)
            stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
