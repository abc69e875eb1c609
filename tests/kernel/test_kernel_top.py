"""`wgpy top --once` on the kernel's own WireGuard interface, with the drops a running
`wgpy watch` counts (issue 17): the host's wgpyd keeps sending from an inner source the guest's
wg0 does not allow for it while top reads wg0 twice, and the frame shows the host peer, the
drops per second under their reason and the dropped address.

wgpy runs chrooted in the guest against the guest kernel's wg0, as in test_kernel_watch.
"""

from __future__ import annotations

import subprocess
from typing import Final

import pytest
from rich.cells import cell_len

from tests.kernel.lab import GUEST_IF, KernelTunnel
from tests.kernel.test_kernel_watch import _wgpy, running_watch, wait_for_drops
from tests.netns.harness import kill_process

pytestmark = [pytest.mark.kernel, pytest.mark.netns]

SPOOFED: Final = "10.100.0.79"  # on the host's tunnel interface, outside the guest's AllowedIPs


def test_top_once_shows_kernel_drops_per_second(tunnel: KernelTunnel) -> None:
    tunnel.handshake()
    pinging: subprocess.Popen[bytes] | None = None
    with running_watch(tunnel, "watch-top.out"):
        try:
            tunnel.ns.run("ip", "addr", "add", f"{SPOOFED}/24", "dev", tunnel.host_if)
            # five spoofed pings a second for as long as top takes (Python is slow under TCG)
            pinging = tunnel.ns.popen(
                "ping", "-n", "-q", "-i", "0.2", "-c", "600", "-I", SPOOFED, "10.100.0.2"
            )
            wait_for_drops(tunnel, "disallowed_source")
            frame = _wgpy(tunnel, "top", GUEST_IF, "--once", "--interval", "4").stdout
            lines = frame.splitlines()
            assert len(lines) <= 24 and all(cell_len(line) <= 80 for line in lines), frame
            assert lines[0].startswith(f"wgpy top {GUEST_IF}: 1 peer, port "), frame
            (peer,) = [line for line in lines if line.startswith(tunnel.host_public[:10])]
            assert float(peer.split()[-1]) > 0, peer  # this peer's drops per second
            (drops,) = [line for line in lines if "disallowed_source" in line]
            rate, total = drops.split()[:2]
            # five a second sent; the watch refreshes its counts about once a second
            assert 1.0 <= float(rate) <= 10.0, drops
            assert int(total.lstrip("≥")) >= 1, drops
            assert f"from {SPOOFED}×" in drops, drops
            assert "need a running `wgpy watch" not in frame
        finally:
            if pinging is not None:
                kill_process(pinging)
            tunnel.ns.run("ip", "addr", "del", f"{SPOOFED}/24", "dev", tunnel.host_if, check=False)
