"""The README's first command: `wgpy demo` builds two namespaces with a wgpyd tunnel, makes an
AllowedIPs mistake, shows the drops (`wgpy show`), the explanation (`wgpy explain`) and the fix,
in under 15 s, and cleans up after itself; `--keep` leaves it running with the commands to
explore and remove it. Its text fits the terminal: 80 columns when piped, $COLUMNS when set."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.netns.harness import require_netns

WG_RUN_DIR = Path("/var/run/wireguard")


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _tag(out: str) -> str:
    """The random tag of this run's names (its interfaces are wgdemoa<tag> and wgdemob<tag>).

    Only names with it are this run's: another demo (a parallel test run, someone's
    `wgpy demo --keep`) may be up on the machine at the same time, under another tag."""
    match = re.search(r"\bwgdemoa([0-9a-f]+)\b", out)
    assert match, out
    return match[1]


def _left_behind(tag: str) -> tuple[set[str], list[Path]]:
    """This run's namespaces and UAPI sockets that still exist."""
    namespaces = {f"wgpy-demo-a-{tag}", f"wgpy-demo-b-{tag}"} & _netns()
    sockets = [WG_RUN_DIR / f"wgdemo{side}{tag}.sock" for side in "ab"]
    return namespaces, [s for s in sockets if s.exists()]


KEY = re.compile(r"[A-Za-z0-9+/]{43}=")


def _demo(*args: str, columns: int | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the demo with its output piped (not a terminal), with COLUMNS unset or set."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "wgpy.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    return result, time.monotonic() - started


def _too_wide(out: str, width: int) -> list[str]:
    """Lines longer than `width`, but for one holding a 44-character key that cannot be cut
    (at 80 columns there must be none at all)."""
    return [line for line in out.splitlines() if len(line) > width and not KEY.search(line)]


def _trailing_commands(out: str) -> list[str]:
    """The commands the demo prints last (indented six, a `\\` continues one), as a shell
    would read them."""
    lines = out.rstrip("\n").splitlines()
    tail: list[str] = []
    while lines and lines[-1].startswith("      "):
        tail.insert(0, lines.pop())
    joined = "\n".join(tail).replace("\\\n", " ")
    return [" ".join(line.split()) for line in joined.split("\n")]


def _section(out: str, number: int) -> str:
    match = re.search(rf"^\[{number}\] .*?(?=^\[{number + 1}\] |\Z)", out, re.M | re.S)
    assert match, out
    return match[0]


def test_demo_shows_the_mistake_the_drops_the_explanation_and_the_fix() -> None:
    require_netns()
    result, elapsed = _demo()  # piped, no COLUMNS: 80 columns
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert elapsed < 15, f"the demo took {elapsed:.1f} s"
    wide = [line for line in out.splitlines() if len(line) > 80]
    assert not wide, "lines past 80 columns:\n" + "\n".join(wide)
    # plain words: inner and outer addresses, what AllowedIPs does, the mistake
    prose = " ".join(out.split())  # wrapped prose, read as words
    assert "OUTER addresses on it are 192.0.2.1 (alice) and 192.0.2.2 (bob)" in prose
    assert "INNER address: 10.88.0.1 for alice, 10.88.0.3 for bob" in prose
    assert "AllowedIPs works both ways" in prose
    assert "AllowedIPs = 10.88.0.2/32   <- should be 10.88.0.3/32" in out
    assert "over IPv6" not in out  # the old line that named no side of the tunnel
    bob_key = re.search(r"alice: \[Peer\] bob  PublicKey = (\S+)", out)
    assert bob_key, out
    # the packets the mistake drops
    traffic = " ".join(_section(out, 4).split())
    assert "bob pings alice (10.88.0.1): 0/3 replies" in traffic
    assert "alice pings bob (10.88.0.3): Destination Host Unreachable" in traffic
    # the drop table names the peer and the reason, with the address
    show = _section(out, 5)
    assert "$ wgpy show wgdemoa" in show
    drops = show.split("packets not delivered", 1)[-1]
    assert bob_key[1] in drops and "disallowed_source" in drops and "no_peer" in drops, show
    if "from:" in drops:  # the table lists the addresses dropped most
        assert "10.88.0.3" in drops, show
    # explain's answer before the fix, the fix, explain and pings after it
    explain = " ".join(_section(out, 6).split())
    assert "from 10.88.0.3 via peer " + bob_key[1] in explain
    assert ": DROPPED" in explain and ": NOT SENT" in explain
    fix = " ".join(_section(out, 7).split())
    assert "allowed-ips 10.88.0.3/32" in fix and ": DELIVERED" in fix
    assert "bob pings alice (10.88.0.1): 3/3 replies" in fix
    assert "alice pings bob (10.88.0.3): 3/3 replies" in fix
    assert "[8] Done: the tunnel works both ways" in out
    assert "wgpy demo --keep" in out
    # nothing left behind
    assert _left_behind(_tag(out)) == (set(), [])


def test_demo_keep_leaves_it_running_and_says_how_to_remove_it() -> None:
    require_netns()
    result, _ = _demo("--keep", columns=64)
    out = result.stdout
    commands = _trailing_commands(out)
    cleanup = commands if commands and commands[0].startswith("kill ") else None
    tag = _tag(out)
    try:
        assert result.returncode == 0, out + result.stderr
        assert cleanup, out
        assert not _too_wide(out, 64), _too_wide(out, 64)
        assert "ip netns del" in " ".join(cleanup), cleanup
        left, sockets = _left_behind(tag)
        assert len(left) == 2, out
        names = [s.stem for s in sockets if s.stem in out]
        assert len(names) == 2, (sockets, out)
        # the printed commands work: show and a ping inside the namespaces
        ns_a = next(ns for ns in left if "-a-" in ns)
        show = subprocess.run(
            [sys.executable, "-m", "wgpy.cli", "show", *[n for n in names if "wgdemoa" in n]],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert show.returncode == 0 and "allowed ips: 10.88.0.3/32" in show.stdout, show
        assert f"ip netns exec {ns_a} ping 10.88.0.3" in out
        ping = subprocess.run(
            ["ip", "netns", "exec", ns_a, "ping", "-c", "1", "-W", "2", "10.88.0.3"],
            capture_output=True,
            text=True,
        )
        assert ping.returncode == 0, ping.stdout
    finally:
        if cleanup:
            subprocess.run(["sh", "-c", "\n".join(cleanup)], timeout=30)
        else:  # never leave a failed run's daemons and namespaces behind (only this run's)
            for ns in _left_behind(tag)[0]:
                pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
                for pid in pids.stdout.split():
                    subprocess.run(["kill", pid], check=False)
                subprocess.run(["ip", "netns", "del", ns])
    deadline = time.monotonic() + 10
    while _left_behind(tag)[1] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _left_behind(tag)[1], "the printed clean-up left daemons"
    assert not _left_behind(tag)[0]
