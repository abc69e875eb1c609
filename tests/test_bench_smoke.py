"""Smoke test of `python -m bench`: it runs and prints a table with numbers.

Benchmarks are not tests: nothing here asserts a timing, only that the figures were produced.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns.harness import require_netns

ROOT = Path(__file__).resolve().parents[1]
FIGURES = "allowedips,ping,setconf,handshake"


@pytest.mark.netns
def test_bench_quick_prints_a_table(tmp_path: Path) -> None:
    require_netns()
    out_json = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", FIGURES, "--json", str(out_json)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert (
        "| figure | wgpy side | wgpy | anchor side | anchor | ratio wgpy/anchor | target |" in lines
    )
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| figure")]
    assert len(rows) >= 5, proc.stdout
    for row in rows:
        wgpy_cell = row.split("|")[3]
        assert re.search(r"\d", wgpy_cell), row  # a number in the wgpy column
    data = json.loads(out_json.read_text())
    assert {"meta", "rows", "raw"} <= data.keys()
    for row in data["rows"]:
        assert isinstance(row["wgpy"], int | float), row
    for name in ("go-mac2", "wgpyd-mac2"):  # both daemons answered handshakes (cookie round trips)
        runs = data["raw"]["handshake"][name]
        assert runs and all(run["answered"] > 0 for run in runs), runs
    assert set(data["raw"]) == set(FIGURES.split(","))


@pytest.mark.netns
def test_flood_bench_runs(tmp_path: Path) -> None:
    """bench.flood on a small scale: both daemons answer the flood, the legitimate peer gets
    through before and after it, and RSS is sampled."""
    require_netns()
    out_json = tmp_path / "flood.json"
    command = [sys.executable, "-m", "bench.flood", "--peers", "60", "--rounds", "1"]
    proc = subprocess.run(
        [*command, "--runs", "1", "--json", str(out_json)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out_json.read_text())
    for name in ("go", "wgpyd"):
        (run,) = data["runs"][name]
        assert data["medians"][name]["legit_failed"] == 0
        assert run["handshake_responses"] > 0, run
        assert run["legit_handshake"]["before"]["failed"] == 0, run
        assert run["legit_handshake"]["after"]["failed"] == 0, run
        assert run["rss_mib"]["peak"] >= run["rss_mib"]["idle"] > 0, run
