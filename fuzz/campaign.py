"""Run every fuzz target for N inputs, one after another, and print a Markdown table of what
each run did: inputs, wall time, CPU time, peak RSS, crashes (the table in docs/fuzzing.md).

    python -m fuzz.campaign -n 1000000 [--targets device,inner]

Each target runs in its own process (``python -m fuzz TARGET -n N``), so its peak RSS is its
own (``wait4``'s ``ru_maxrss``). A crash is a non-zero exit; libFuzzer then leaves the input in
fuzz/artifacts/.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fuzz.driver import available_targets, have_atheris

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    target: str
    inputs: int
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    exit_code: int

    def row(self) -> str:
        crashes = "0" if self.exit_code == 0 else f"1 (exit {self.exit_code})"
        return (
            f"| {self.target} | {self.inputs:,} | {self.seconds:,.0f} s | "
            f"{self.inputs / self.seconds:,.0f}/s | {self.cpu_seconds:,.0f} s | "
            f"{self.peak_rss_mib:,.0f} MiB | {crashes} |"
        )


def run_target(target: str, inputs: int) -> Run:
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fuzz", target, "-n", str(inputs)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - start
    done = re.findall(r"Done (\d+) runs", output)
    if proc.returncode != 0:
        sys.stderr.write(output[-4000:])
    return Run(
        target,
        int(done[-1]) if done else 0,
        elapsed,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        proc.returncode,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.campaign", description=__doc__)
    parser.add_argument("-n", "--inputs", type=int, default=1_000_000)
    parser.add_argument("--targets", default=",".join(available_targets()))
    args = parser.parse_args(argv)
    engine = "atheris (libFuzzer, coverage-guided)" if have_atheris() else "random mutator"
    print(f"engine: {engine}; load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    print("| target | inputs | wall time | rate | CPU time | peak RSS | crashes |")
    print("|---|---:|---:|---:|---:|---:|---|", flush=True)
    failed = False
    for target in args.targets.split(","):
        result = run_target(target, args.inputs)
        failed = failed or result.exit_code != 0
        print(result.row(), flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
