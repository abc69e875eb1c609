"""`wgpy doctor` on the kernel's own WireGuard interface, with the drops a running `wgpy watch`
counts (issue 18): the host's wgpyd sends from an inner source the guest's wg0 does not allow
for it, and doctor in the guest names the host peer, the address and the fix.

wgpy runs chrooted in the guest against the guest kernel's wg0, as in test_kernel_watch.
"""

from __future__ import annotations

import json
import shlex
from typing import Any, Final

import pytest

from tests.kernel.lab import GUEST_IF, KernelTunnel
from tests.kernel.test_kernel_watch import WGPY, _drops, _prepare_host_root, _watch_state, _wgpy
from tests.netns.harness import wait_for

pytestmark = [pytest.mark.kernel, pytest.mark.netns]

SPOOFED: Final = "10.100.0.78"  # on the host's tunnel interface, outside the guest's AllowedIPs


def test_doctor_reports_a_disallowed_source_from_the_kernel_watch(tunnel: KernelTunnel) -> None:
    tunnel.handshake()
    _prepare_host_root(tunnel)
    guest = tunnel.guest
    watch = f"{WGPY} watch {GUEST_IF} --enable-debug --unthrottle"
    guest.run_in_host_root(
        f"setsid sh -c {shlex.quote(watch)} </dev/null >/run/watch-doctor.out 2>&1 &", timeout=30
    )
    try:
        wait_for(lambda: _watch_state(tunnel) is not None, 60, interval=0.5, what="the watch")
        tunnel.ns.run("ip", "addr", "add", f"{SPOOFED}/24", "dev", tunnel.host_if)
        tunnel.ping("host", "10.100.0.2", "-I", SPOOFED, count=2, wait=0.5)
        key = (tunnel.host_public, "disallowed_source")
        wait_for(
            lambda: _drops(_watch_state(tunnel) or {"drops": []}).get(key, 0) >= 1,
            30,
            interval=0.5,
            what="the watch to count the disallowed source",
        )
        result = _wgpy(tunnel, "doctor", GUEST_IF, "--json", check=False)
        assert result.status == 1, (result.status, result.stdout, result.stderr)
        findings: list[dict[str, Any]] = json.loads(result.stdout)
        found = [f for f in findings if f["code"] == "disallowed-source"]
        assert len(found) == 1, findings
        finding = found[0]
        assert finding["severity"] == "error" and finding["peer"] == tunnel.host_public, finding
        assert SPOOFED in finding["message"] and f"{SPOOFED}/32" in finding["fix"], finding
        (command,) = finding["commands"]
        assert command.startswith(f"wg set {GUEST_IF} peer {tunnel.host_public} allowed-ips ")
        assert command.endswith(f",{SPOOFED}/32"), command
        assert not [f for f in findings if f["code"] == "no-drop-counters"], findings
    finally:
        state = _watch_state(tunnel)
        if state is not None:
            guest.run(f"kill -TERM {int(state['pid'])}")
            wait_for(lambda: _watch_state(tunnel) is None, 30, interval=0.5, what="watch end")
