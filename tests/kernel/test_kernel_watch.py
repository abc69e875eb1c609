"""`wgpy watch`, `show`, `explain` and `lint` on the kernel's own WireGuard interface.

wgpy runs inside the guest (the host's root file system over 9p, chrooted) against the guest
kernel's wg0; the host side (wgpyd) produces the drops: a disallowed inner source, a
handshake initiation with a bad mac1, garbage and data for an unknown receiver index (which
the kernel does not log: not attributable), and the guest pings a destination no peer has.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import time
from collections.abc import Iterator
from typing import Any, Final

import pytest

from tests.kernel.image import REPO_ROOT
from tests.kernel.lab import GUEST_IF, GUEST_PORT, GUEST_UNDERLAY, HOST_TUNNEL, KernelTunnel
from tests.netns.harness import wait_for

pytestmark = [pytest.mark.kernel, pytest.mark.netns]

VENV_BIN: Final = REPO_ROOT / ".venv" / "bin"
WGPY: Final = str(VENV_BIN / "wgpy") if (VENV_BIN / "wgpy").exists() else "wgpy"
METRICS_PORT: Final = 9586
#: A state of the wireguard module's dynamic debug that the watch must put back: all off but
#: the callsites of one file.
PARTIAL_DEBUG: Final = "module wireguard -p\nfile drivers/net/wireguard/timers.c +p"


def _prepare_host_root(tunnel: KernelTunnel) -> None:
    """The mounts wgpy needs inside the chroot: proc, sys, dev and a writable /run (not /tmp:
    the checkout itself may live there)."""
    tunnel.guest.mount_host_root()
    mounts = (
        ("proc", "/host/proc", "-t proc proc"),
        ("sysfs", "/host/sys", "-t sysfs sys"),
        ("dev", "/host/dev", "--bind /dev"),
        ("run", "/host/run", "-t tmpfs run"),
    )
    script = "\n".join(
        f"grep -q ' {target} ' /proc/mounts || mount {how} {target}" for _, target, how in mounts
    )
    tunnel.guest.run(script)


def _wgpy(tunnel: KernelTunnel, *args: str, check: bool = True) -> Any:
    return tunnel.guest.run_in_host_root(shlex.join([WGPY, *args]), timeout=120, check=check)


def _show(tunnel: KernelTunnel) -> dict[str, Any]:
    views: list[dict[str, Any]] = json.loads(_wgpy(tunnel, "show", GUEST_IF, "--json").stdout)
    assert len(views) == 1
    return views[0]


def _watch_state(tunnel: KernelTunnel) -> dict[str, Any] | None:
    """The running watch's state file (read with cat: a Python start costs seconds under TCG)."""
    result = tunnel.guest.run_in_host_root(
        f"cat /run/wgpy/watch-*-{GUEST_IF}.json 2>/dev/null", check=False
    )
    if result.status != 0 or not result.stdout.strip():
        return None
    state: dict[str, Any] = json.loads(result.stdout)
    return state


def _debug_state(tunnel: KernelTunnel) -> str:
    return tunnel.guest.run(
        "grep -q ' /sys/kernel/debug ' /proc/mounts || mount -t debugfs none /sys/kernel/debug\n"
        "grep '\\[wireguard\\]' /sys/kernel/debug/dynamic_debug/control | sort"
    ).stdout


def _send_datagrams(tunnel: KernelTunnel, payloads: list[str]) -> None:
    """UDP datagrams (Python expressions for bytes) from the host namespace to the guest."""
    script = (
        "import os, socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"for payload in [{', '.join(payloads)}]:\n"
        f"    s.sendto(payload, ({GUEST_UNDERLAY[4]!r}, {GUEST_PORT}))\n"
    )
    tunnel.ns.run(sys.executable, "-c", script)


def _drops(view: dict[str, Any]) -> dict[tuple[str | None, str], int]:
    return {(d["peer"], d["reason"]): d["count"] for d in view["drops"] or []}


@contextlib.contextmanager
def running_watch(tunnel: KernelTunnel, log: str) -> Iterator[None]:
    """`wgpy watch` on the guest's wg0 (chrooted, as above) from its first state file until
    the block ends; its output goes to /run/``log`` in the host root."""
    _prepare_host_root(tunnel)
    watch = f"{WGPY} watch {GUEST_IF} --enable-debug --unthrottle"
    tunnel.guest.run_in_host_root(
        f"setsid sh -c {shlex.quote(watch)} </dev/null >/run/{log} 2>&1 &", timeout=30
    )
    try:
        wait_for(lambda: _watch_state(tunnel) is not None, 60, interval=0.5, what="the watch")
        yield
    finally:
        state = _watch_state(tunnel)
        if state is not None:
            tunnel.guest.run(f"kill -TERM {int(state['pid'])}")
            wait_for(lambda: _watch_state(tunnel) is None, 30, interval=0.5, what="watch end")


def wait_for_drops(tunnel: KernelTunnel, reason: str, at_least: int = 1) -> None:
    """Until the running watch has counted ``at_least`` drops of the host peer for ``reason``."""
    key = (tunnel.host_public, reason)
    wait_for(
        lambda: _drops(_watch_state(tunnel) or {"drops": []}).get(key, 0) >= at_least,
        30,
        interval=0.5,
        what=f"the watch to count {reason}",
    )


def test_watch_attributes_kernel_drops_to_peers_and_reasons(tunnel: KernelTunnel) -> None:
    tunnel.handshake()
    _prepare_host_root(tunnel)
    guest = tunnel.guest
    guest.run(
        "grep -q ' /sys/kernel/debug ' /proc/mounts || mount -t debugfs none /sys/kernel/debug\n"
        + "\n".join(
            f"echo '{line}' > /sys/kernel/debug/dynamic_debug/control"
            for line in PARTIAL_DEBUG.splitlines()
        )
        + "\nsysctl -qw net.core.message_cost=5"
    )
    debug_before = _debug_state(tunnel)
    assert "=p" in debug_before and "=_" in debug_before

    # without a watch: the interface and its counters, and a plain word that none runs
    view = _show(tunnel)
    assert [p["public_key"] for p in view["peers"]] == [tunnel.host_public]
    assert view["kernel"]["watch"] is False and view["drops"] is None
    text = _wgpy(tunnel, "show", GUEST_IF).stdout
    assert f"no `wgpy watch {GUEST_IF}` is running" in text
    assert f"peer: {tunnel.host_public}" in text

    watch = (
        f"{WGPY} watch {GUEST_IF} --enable-debug --unthrottle --log-format json "
        f"--log-file /run/watch.jsonl --metrics {GUEST_UNDERLAY[4]}:{METRICS_PORT}"
    )
    guest.run_in_host_root(
        f"setsid sh -c {shlex.quote(watch)} </dev/null >/run/watch.out 2>&1 &", timeout=30
    )
    wait_for(lambda: _watch_state(tunnel) is not None, 60, interval=0.5, what="the watch")

    # 1. three packets from an inner source the guest does not allow for the host
    tunnel.ns.run("ip", "addr", "add", "10.100.0.77/24", "dev", tunnel.host_if)
    tunnel.ping("host", "10.100.0.2", "-I", "10.100.0.77", count=3, wait=0.5)
    # 2. three initiations with a bad mac1; garbage and data for an unknown index
    initiation = "b'\\x01\\x00\\x00\\x00' + os.urandom(144)"
    unknown_index = "b'\\x04\\x00\\x00\\x00' + os.urandom(44)"
    _send_datagrams(tunnel, [initiation] * 3 + ["os.urandom(77)", unknown_index])
    # 3. from the guest, two pings to a destination no peer has
    tunnel.ping("guest", "10.100.0.99", count=2, wait=0.5)

    expected = {
        (tunnel.host_public, "disallowed_source"): 3,
        (None, "invalid_mac1"): 3,
        (None, "no_peer"): 2,
    }

    def counted() -> bool:
        drops = _drops(_watch_state(tunnel) or {"drops": []})
        return all(drops.get(key, 0) >= n for key, n in expected.items())

    wait_for(counted, 30, interval=0.5, what=f"the watch to count {expected}")
    view = _show(tunnel)
    drops = _drops(view)
    for key, count in expected.items():
        assert drops[key] == count, (key, view)  # unthrottled: exact
    assert set(drops) == set(expected), view  # garbage and unknown indices are not logged
    kernel = view["kernel"]
    assert kernel["lower_bound"] is False
    assert kernel["link_counters"]["rx_errors"] >= 3
    assert kernel["link_counters"]["rx_frame_errors"] >= 3
    assert kernel["link_counters"]["tx_errors"] >= 2
    assert kernel["unrecognised"] == []
    owners = next(d for d in view["drops"] if d["reason"] == "disallowed_source")["owners"]
    assert owners == [{"owner": None, "count": 3}]  # no peer of the guest holds 10.100.0.77

    # the JSON log has the inner addresses
    records = [
        json.loads(line)
        for line in guest.run_in_host_root("cat /run/watch.jsonl").stdout.splitlines()
    ]
    disallowed = [r for r in records if r.get("reason") == "disallowed_source"]
    assert disallowed and disallowed[0]["inner_src"] == "10.100.0.77"
    assert disallowed[0]["peer"] == tunnel.host_public
    assert any(r.get("inner_dst") == "10.100.0.99" for r in records if r["reason"] == "no_peer")

    # the metrics endpoint serves the same counts
    url = f"http://{GUEST_UNDERLAY[4]}:{METRICS_PORT}/metrics"
    fetch = (
        f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    )
    metrics = tunnel.ns.run(sys.executable, "-c", fetch).stdout
    line = (
        f'wgpy_dropped_packets_total{{interface="{GUEST_IF}",peer="{tunnel.host_public}",'
        'reason="disallowed_source"} 3.0'
    )
    assert line in metrics, metrics

    # explain and lint read the kernel interface over netlink
    explained = json.loads(
        _wgpy(tunnel, "explain", GUEST_IF, "to", HOST_TUNNEL[4], "--no-route", "--json").stdout
    )
    assert explained["verdict"] == "sent"
    refused = _wgpy(
        tunnel, "explain", GUEST_IF, "from", "10.100.0.77", "via", tunnel.host_public, "--json",
        check=False,
    )  # fmt: skip
    assert refused.status == 1 and json.loads(refused.stdout)["verdict"] == "dropped"
    linted = _wgpy(tunnel, "lint", GUEST_IF, "--json", check=False)
    assert linted.status in (0, 1) and isinstance(json.loads(linted.stdout), list)

    # SIGTERM: the watch ends and puts dynamic debug and the rate limit back
    state = _watch_state(tunnel)
    assert state is not None
    guest.run(f"kill -TERM {int(state['pid'])}")
    wait_for(lambda: _watch_state(tunnel) is None, 30, interval=0.5, what="the watch to end")
    assert _debug_state(tunnel) == debug_before
    assert guest.run("sysctl -n net.core.message_cost").stdout.strip() == "5"


def test_rate_limited_counts_are_lower_bounds(tunnel: KernelTunnel) -> None:
    """With the kernel's rate limit on (message_cost 5, burst 10), a burst of 40 packets from
    a disallowed source leaves fewer lines than drops: the watch's count is at most the
    truth, marked as a lower bound, while the interface counter has every one."""
    tunnel.handshake()
    _prepare_host_root(tunnel)
    guest = tunnel.guest
    guest.run("sysctl -qw net.core.message_cost=5 net.core.message_burst=10")
    before = tunnel.guest_link_stats()["rx_frame_errors"]
    watch = f"{WGPY} watch {GUEST_IF} --enable-debug"
    guest.run_in_host_root(
        f"setsid sh -c {shlex.quote(watch)} </dev/null >/run/watch.out 2>&1 &", timeout=30
    )
    wait_for(lambda: _watch_state(tunnel) is not None, 60, interval=0.5, what="the watch")
    tunnel.ns.run("ip", "addr", "add", "10.100.0.77/24", "dev", tunnel.host_if)
    tunnel.ns.run(
        "ping", "-q", "-c", "40", "-i", "0.01", "-W", "1", "-I", "10.100.0.77", "10.100.0.2",
        check=False,
    )  # fmt: skip
    wait_for(
        lambda: tunnel.guest_link_stats()["rx_frame_errors"] - before >= 40,
        20,
        interval=0.5,
        what="the kernel to count 40 frame errors",
    )
    time.sleep(1.5)  # a refresh of the watch's state
    state = _watch_state(tunnel)
    assert state is not None
    counted = _drops(state).get((tunnel.host_public, "disallowed_source"), 0)
    assert 1 <= counted < 40, state
    assert state["lower_bound"] is True
    assert state["link_counters"]["rx_frame_errors"] - before >= 40
    text = _wgpy(tunnel, "show", GUEST_IF).stdout
    assert f"≥{counted}" in text and "lower bounds" in text, text
    guest.run(f"kill -TERM {int(state['pid'])}")
    wait_for(lambda: _watch_state(tunnel) is None, 30, interval=0.5, what="the watch to end")
