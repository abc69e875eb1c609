"""`wgpy doctor` on the kernel's own WireGuard interface, with the drops a running `wgpy watch`
counts (issue 18): the host's wgpyd sends from an inner source the guest's wg0 does not allow
for it, and doctor in the guest names the host peer, the address and the fix.

wgpy runs chrooted in the guest against the guest kernel's wg0, as in test_kernel_watch.
"""

from __future__ import annotations

import json
from typing import Any, Final

import pytest

from tests.kernel.lab import GUEST_IF, KernelTunnel
from tests.kernel.test_kernel_watch import _wgpy, running_watch, wait_for_drops

pytestmark = [pytest.mark.kernel, pytest.mark.netns]

SPOOFED: Final = "10.100.0.78"  # on the host's tunnel interface, outside the guest's AllowedIPs


def test_doctor_reports_a_disallowed_source_from_the_kernel_watch(tunnel: KernelTunnel) -> None:
    tunnel.handshake()
    with running_watch(tunnel, "watch-doctor.out"):
        tunnel.ns.run("ip", "addr", "add", f"{SPOOFED}/24", "dev", tunnel.host_if)
        tunnel.ping("host", "10.100.0.2", "-I", SPOOFED, count=2, wait=0.5)
        wait_for_drops(tunnel, "disallowed_source")
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
