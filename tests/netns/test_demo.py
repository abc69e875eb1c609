"""The README's first command: `wgpy demo` builds its namespaces, pings both ways over IPv4 and
IPv6 through two wgpyd, shows the ICMP unreachable, and cleans up after itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.netns.harness import require_netns

WG_RUN_DIR = Path("/var/run/wireguard")


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_demo_runs_and_cleans_up() -> None:
    require_netns()
    before = _netns()
    result = subprocess.run(
        [sys.executable, "-m", "wgpy.cli", "demo"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for line in ("ping IPv4 alice", "ping IPv6 alice", "ping IPv4 bob", "ping IPv6 bob"):
        assert f"{line}" in out and "3/3 replies" in out, out
    assert out.count("3/3 replies") == 4, out
    assert "Destination Host Unreachable, answered by wgpy" in out, out
    assert "[7] tunnel works both ways over IPv4 and IPv6" in out, out
    assert not {ns for ns in _netns() - before if ns.startswith("wgpy-demo-")}
    assert not list(WG_RUN_DIR.glob("wgdemo*.sock"))
