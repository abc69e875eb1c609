"""Persistent keepalive between wgpyd and the kernel, each direction on its own.

Only one side has a persistent keepalive at a time: any authenticated packet received re-arms
the kernel's persistent-keepalive timer, so with both sides at the same interval one side's
keepalives would suppress the other's. The tap capture shows each keepalive (a 32-byte data
message) and when it left; the receiver's rx counter shows it was accepted.

Found (Debian 6.1.0 kernel, see docs/kernel-tests.md): setting the keepalive on an idle,
established session sends one at once, then one every interval (2.0 s ± 0.1 s measured) —
the kernel and wgpyd alike — and each is counted as 32 received bytes by the other side.
"""

from __future__ import annotations

import itertools
import time
from typing import Final

import pytest

from tests.kernel.lab import GUEST_IF, GUEST_PORT, HOST_PORT, KernelTunnel, Side
from tests.kernel.wire import KEEPALIVE_SIZE, TapCapture
from tests.netns.harness import wg

pytestmark = [pytest.mark.kernel, pytest.mark.netns]

INTERVAL: Final = 2
WINDOW: Final = 7.0
"""Seconds watched after the keepalive is set: the first one at once, then three more."""
TOLERANCE: Final = 0.5
FIRST_WITHIN: Final = 1.0


def _set_keepalive(tunnel: KernelTunnel, sender: Side) -> None:
    if sender == "host":
        peer = tunnel.guest_public
        wg(tunnel.ns, "set", tunnel.host_if, "peer", peer, "persistent-keepalive", str(INTERVAL))
    else:
        peer = tunnel.host_public
        tunnel.guest.run(f"wg set {GUEST_IF} peer {peer} persistent-keepalive {INTERVAL}")


def _receiver_rx(tunnel: KernelTunnel, sender: Side) -> int:
    peer = tunnel.guest_peer() if sender == "host" else tunnel.host_peer()
    return peer.rx_bytes


@pytest.mark.parametrize("sender", ["host", "guest"])
def test_persistent_keepalive_interval(tunnel: KernelTunnel, sender: Side) -> None:
    # The sender pings, so that it is the sender that last received data: its own keepalives
    # then stand in for the passive keepalive, and the receiver has nothing to send.
    tunnel.handshake(from_host=sender == "host")
    time.sleep(0.3)
    rx_before = _receiver_rx(tunnel, sender)
    with TapCapture(tunnel.ns, tunnel.lab.tap) as capture:
        set_at = time.time()
        _set_keepalive(tunnel, sender)
        time.sleep(WINDOW)
        wire = capture.stop()
    rx_after = _receiver_rx(tunnel, sender)

    sender_port = HOST_PORT if sender == "host" else GUEST_PORT
    from_sender = [d for d in wire if d.sport == sender_port]
    keepalives = [d.time for d in from_sender if d.length == KEEPALIVE_SIZE]
    assert len(keepalives) == len(from_sender), f"the sender sent more than keepalives: {wire}"
    assert len(keepalives) >= 3, f"keepalives: {keepalives} (set at {set_at:.3f})"
    assert keepalives[0] - set_at < FIRST_WITHIN, f"first keepalive {keepalives[0] - set_at:.2f}s"
    gaps = [b - a for a, b in itertools.pairwise(keepalives)]
    assert all(abs(gap - INTERVAL) < TOLERANCE for gap in gaps), f"gaps: {gaps}"
    received = rx_after - rx_before
    assert KEEPALIVE_SIZE * len(keepalives) <= received <= KEEPALIVE_SIZE * (len(keepalives) + 1)
