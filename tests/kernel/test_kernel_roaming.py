"""Roaming between wgpyd and the kernel: one side moves (new address, new listen port) and
the other follows after authenticated traffic from the new place.

Found (Debian 6.1.0 kernel, see docs/kernel-tests.md): when the host's underlay address is
replaced, wgpyd gives up the source address it had been sending from ("sticky source ...
forgotten" in its log), sends from the new one, and the kernel's `wg show wg0 endpoints`
follows at the first packet; the same after `wg set IFNAME listen-port`. In the other
direction wgpyd follows the kernel's new listen port.
"""

from __future__ import annotations

from typing import Final

import pytest

from tests.kernel.lab import (
    GUEST_IF,
    GUEST_PORT,
    GUEST_TUNNEL,
    GUEST_UNDERLAY,
    HOST_PORT,
    HOST_TUNNEL,
    HOST_UNDERLAY,
    UNDERLAY_PREFIX,
    Family,
    TunnelFactory,
    TunnelOptions,
    host_port,
)
from tests.netns.harness import wait_for, wg

pytestmark = [pytest.mark.kernel, pytest.mark.netns]

NEW_HOST_UNDERLAY: Final[dict[Family, str]] = {4: "10.99.0.3", 6: "fd99::3"}
NEW_PORT: Final = 51830


@pytest.mark.parametrize("outer", [4, 6], ids=["outer4", "outer6"])
def test_host_address_change_followed_by_kernel(
    tunnel_factory: TunnelFactory, outer: Family
) -> None:
    tunnel = tunnel_factory(TunnelOptions(outer=outer))
    tunnel.handshake()
    assert tunnel.guest_peer().endpoint == host_port(HOST_UNDERLAY[outer], HOST_PORT)

    prefix = UNDERLAY_PREFIX[outer]
    nodad = ["nodad"] if outer == 6 else []
    tap = tunnel.lab.tap
    tunnel.ns.run("ip", "addr", "del", f"{HOST_UNDERLAY[outer]}/{prefix}", "dev", tap)
    tunnel.ns.run("ip", "addr", "add", f"{NEW_HOST_UNDERLAY[outer]}/{prefix}", "dev", tap, *nodad)

    result = tunnel.ping("host", GUEST_TUNNEL[4])
    assert result.status == 0, f"{result}\n{tunnel.daemon.log()[-2000:]}"
    assert tunnel.guest_peer().endpoint == host_port(NEW_HOST_UNDERLAY[outer], HOST_PORT)


@pytest.mark.parametrize("outer", [4, 6], ids=["outer4", "outer6"])
def test_host_port_change_followed_by_kernel(tunnel_factory: TunnelFactory, outer: Family) -> None:
    tunnel = tunnel_factory(TunnelOptions(outer=outer))
    tunnel.handshake()

    wg(tunnel.ns, "set", tunnel.host_if, "listen-port", str(NEW_PORT))
    assert tunnel.host_dump().listen_port == NEW_PORT

    assert tunnel.ping("host", GUEST_TUNNEL[4]).status == 0
    assert tunnel.guest_peer().endpoint == host_port(HOST_UNDERLAY[outer], NEW_PORT)
    assert tunnel.ping("guest", HOST_TUNNEL[4]).status == 0


def test_guest_port_change_followed_by_wgpyd(tunnel_factory: TunnelFactory) -> None:
    tunnel = tunnel_factory()
    tunnel.handshake(from_host=False)
    assert tunnel.host_peer().endpoint == host_port(GUEST_UNDERLAY[4], GUEST_PORT)

    tunnel.guest.run(f"wg set {GUEST_IF} listen-port {NEW_PORT}")
    assert tunnel.ping("guest", HOST_TUNNEL[4]).status == 0

    wait_for(
        lambda: tunnel.host_peer().endpoint == host_port(GUEST_UNDERLAY[4], NEW_PORT),
        5,
        what="wgpyd's endpoint for the guest to follow its new port",
    )
    assert tunnel.ping("host", GUEST_TUNNEL[4]).status == 0
