"""The commands README.md and docs/ show work as written, in the environment a reader has after
the README's set-up: `wgpy` and `wgpyd` found by name, with no .venv/bin on PATH.

scripts/setup.sh puts them on PATH by linking them into /usr/local/bin
(scripts/link-commands.sh). Here the same script links them into a temporary directory instead,
and PATH is that directory and the system's own (/usr/sbin:/usr/bin:/sbin:/bin): so this
checkout is what runs, whichever checkout last linked /usr/local/bin on this machine, and the
host is left alone. tests/unit/test_link_commands.py checks that setup.sh links
/usr/local/bin and that root's PATH holds it.

The commands are read from the pages (not retyped) and run with bash, as printed, in a fresh
network namespace whose WireGuard interface is brought up by the README's own
`WG_QUICK_USERSPACE_IMPLEMENTATION=wgpyd wg-quick up ./wg0.conf`, with a wireguard-go peer in
a second namespace. The only change made to them: the interface name `wg0` (and so the file
`./wg0.conf`) becomes a name unique to this run, because /var/run/wireguard is shared by all
namespaces. Files they write (out.pcapng, private.key) go to a fresh working directory.

Every shell command of the docs is either run here or listed in NOT_RUN with the reason it
cannot run in a namespace without more set-up; a new command must be one or the other.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.netns.harness import (
    WG_RUN_DIR,
    Netns,
    genkey,
    pubkey,
    start_wireguard_go,
    unique_ifname,
    veth_pair,
    wait_for,
    wg,
    write_secret,
)
from tests.unit.test_docs import Block, blocks, shell_commands, shell_lines

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

NOT_RUN: dict[str, str] = {
    r"scripts/setup\.sh": "the set-up itself (its links are made here by link-commands.sh)",
    r"\.ci/run": "the whole CI run",
    r"\.venv/bin/(ruff|mypy)|-m pytest": "CI's own steps (.ci/run runs them)",
    r"pip install": "installs packages",
    r"-m bench": "benchmarks: minutes, their own namespaces (tests/test_bench_smoke.py runs "
    "the quick one)",
    r"-m fuzz": "fuzzing: minutes, or rewrites fuzz/corpus/ (tests/unit/test_fuzz_targets.py "
    "runs each target briefly)",
    r"examples/echo_server\.py": "a server until Ctrl-C (tests/netns/test_aio_example.py)",
    r"wgpy watch": "needs the kernel's wireguard module and host-wide debug switches "
    "(tests/kernel/)",
    r"debugfs|dynamic_debug|dmesg|sysctl": "the kernel module's host-wide settings, not a "
    "namespace's (tests/kernel/)",
    r"--follow": "runs until Ctrl-C",
    r"wgpy top wg0 +(#|--interval)": "full-screen until q (`wgpy top wg0 --once` is run)",
    r"wgpy web": "a web server until Ctrl-C (tests/netns/test_see_netns.py)",
    r"hub\.conf|spoke\d*\.conf|/etc/wireguard/": "reads the reader's own config files",
}
"""Commands not run here, by a pattern of their line: why."""

WG_QUICK_UP = "WG_QUICK_USERSPACE_IMPLEMENTATION=wgpyd wg-quick up ./wg0.conf"
FINDS_THINGS = re.compile(r"\bwgpy (explain|doctor|lint)\b")
"""Commands whose exit status 1 means 'found something' (README: exit status)."""


def _wgpyd_block() -> Block:
    """The shell block under the README's heading "Using wgpyd instead of wireguard-go"."""
    text = README.read_text()
    heading = text.index("\n## Using wgpyd instead of wireguard-go\n")
    line = text.count("\n", 0, heading) + 2
    after = [b for b in blocks(README) if b.line > line]
    assert after, "no block under the heading"
    return after[0]


def _excluded(line: str) -> str | None:
    return next((why for pattern, why in NOT_RUN.items() if re.search(pattern, line)), None)


def _other_commands(block: Block) -> list[tuple[Block, str]]:
    """Every other command of README.md and docs/ that can run here, in page order."""
    return [
        (b, line)
        for b, line in shell_commands()
        if (b.page, b.line) != (block.page, block.line) and _excluded(line) is None
    ]


def test_every_command_is_run_or_has_a_reason_not_to_be() -> None:
    block = _wgpyd_block()
    lines = shell_lines(block)
    assert lines[0].split("#")[0].strip() == WG_QUICK_UP, lines
    assert lines[-1].startswith("wg-quick down ./wg0.conf"), lines
    assert any(line.startswith("wg show wg0") for line in lines), lines
    assert any(line.startswith("wgpy show wg0") for line in lines), lines
    used = {
        pattern for pattern in NOT_RUN for _, line in shell_commands() if re.search(pattern, line)
    }
    assert used == set(NOT_RUN), f"patterns that match no command any more: {set(NOT_RUN) - used}"
    run = [line for _, line in _other_commands(block)]
    assert len(run) >= 15, run


def _unique(line: str, ifname: str) -> str:
    """The one substitution: the interface name (so also the file ./wg0.conf)."""
    return re.sub(r"\bwg0\b", ifname, line)


def _bash(
    ns: Netns, line: str, cwd: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ns.argv("bash", "-o", "pipefail", "-c", line),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _wgpyd_pids(ns: Netns) -> list[int]:
    found = []
    for pid in ns.pids():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "wgpyd":
                status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if status != "Z":
                    found.append(pid)
        except OSError:
            continue
    return found


def test_readme_and_docs_commands_run_as_written_after_setup(
    netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    if Path("/sys/module/wireguard").exists():
        pytest.skip("the wireguard kernel module is loaded, so wg-quick never runs wgpyd")
    if shutil.which("wg-quick") is None:
        pytest.fail("wg-quick is not installed; run scripts/setup.sh")

    # the README's set-up, as far as PATH goes: the links setup.sh makes, here in a temp dir
    bindir = tmp_path / "bin"
    bindir.mkdir()
    linked = subprocess.run(
        ["bash", str(REPO / "scripts" / "link-commands.sh"), str(bindir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert linked.returncode == 0, linked.stderr
    path = f"{bindir}:{SYSTEM_PATH}"
    assert str(Path(sys.executable).parent) not in path.split(":")
    env = {"PATH": path, "HOME": str(tmp_path), "LANG": "C.UTF-8", "TERM": "dumb"}

    ns_a, ns_b = netns_factory(), netns_factory()
    veth_pair(ns_a, ns_b, "10.99.0.1", "10.99.0.2", 24)
    # B: a wireguard-go peer, configured by wg
    go_if = unique_ifname("wgg")
    start_wireguard_go(ns_b, go_if)
    go_private, a_private = genkey(), genkey()
    wg(
        ns_b,
        *("set", go_if, "private-key", str(write_secret(ns_b, "go.key", go_private))),
        *("listen-port", "51821", "peer", pubkey(a_private)),
        *("allowed-ips", "10.100.0.1/32", "endpoint", "10.99.0.1:51820"),
    )
    ns_b.run("ip", "addr", "add", "10.100.0.2/24", "dev", go_if)
    ns_b.run("ip", "link", "set", go_if, "up")

    # A: the reader's wg0.conf, under this run's interface name, in a fresh working directory
    ifname = unique_ifname("wgr")
    cwd = Path(tempfile.mkdtemp(prefix=f"{ns_a.name}-cwd-", dir=tmp_path))
    conf = cwd / f"{ifname}.conf"
    conf.touch(mode=0o600)
    conf.write_text(
        "[Interface]\n"
        f"PrivateKey = {a_private}\n"
        "ListenPort = 51820\n"
        "Address = 10.100.0.1/24\n"
        "\n[Peer]\n"
        f"PublicKey = {pubkey(go_private)}\n"
        "AllowedIPs = 10.100.0.2/32, 10.1.2.0/24\n"
        "Endpoint = 10.99.0.2:51821\n"
    )
    socket = WG_RUN_DIR / f"{ifname}.sock"
    ns_a.add_cleanup(lambda: socket.unlink(missing_ok=True))

    block = _wgpyd_block()
    up, *middle, down = [_unique(line, ifname) for line in shell_lines(block)]
    ran: list[str] = []

    def run(line: str, where: str, allowed: frozenset[int] = frozenset({0})) -> str:
        result = _bash(ns_a, line, cwd, env)
        said = result.stdout + result.stderr
        assert result.returncode in allowed, (
            f"{where}: `{line}` exited {result.returncode}:\n{said}"
        )
        assert "Traceback" not in said, f"{where}: `{line}`:\n{said}"
        ran.append(line)
        return said

    said = run(up, block.where())
    # it was wgpyd that wg-quick ran (not a kernel interface), found by name on PATH
    assert f"[#] wgpyd {ifname}" in said, said
    assert socket.exists() and len(_wgpyd_pids(ns_a)) == 1, said
    # traffic: a handshake with B, and a packet no peer takes (a drop for `wgpy show`)
    ns_a.run("ping", "-c", "2", "-W", "2", "10.100.0.2")
    ns_a.run("ping", "-c", "1", "-W", "1", "10.100.0.77", check=False)
    ns_a.popen("ping", "-i", "0.5", "10.100.0.2")  # keeps packets flowing for capture and top

    outputs = [run(line, block.where()) for line in middle]
    assert any(f"interface: {ifname}" in out and "latest handshake" in out for out in outputs)
    assert any("packets not delivered" in out and "no_peer" in out for out in outputs), outputs

    for other, line in _other_commands(block):
        line = _unique(line, ifname)
        allowed = frozenset({0, 1}) if FINDS_THINGS.search(line) else frozenset({0})
        run(line, other.where(), allowed)
    assert (cwd / "out.pcapng").stat().st_size > 0  # `wgpy capture -w` wrote the packets

    run(down, block.where())
    wait_for(lambda: not socket.exists(), 5, what=f"wgpyd to remove {socket}")
    wait_for(lambda: not _wgpyd_pids(ns_a), 5, what="wgpyd to exit")
    assert len(ran) >= 19, ran
