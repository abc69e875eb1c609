"""Packet sizes at and above the tunnel MTU, sent by wgpyd and by the kernel.

Found (Debian 6.1.0 kernel, see docs/kernel-tests.md): both interfaces come up with MTU 1420;
a 1420-byte inner packet with DF (ping -s 1392 -M do) passes both ways; one byte more is
refused by the sender's own IP stack ("message too long, mtu=1420") on either side. With the
sender's MTU raised to 1500 and the receiver's left at 1420, a 1500-byte inner packet with DF
passes both ways, over IPv4 and IPv6 outside: the sender fragments the 1560/1580-byte outer
datagram (the tap's MTU is 1500), and the receiver delivers an inner packet larger than its
own interface's MTU — the kernel and wgpyd alike.
"""

from __future__ import annotations

from typing import Final

import pytest

from tests.kernel.lab import (
    GUEST_IF,
    GUEST_TUNNEL,
    HOST_TUNNEL,
    Family,
    KernelTunnel,
    PingResult,
    Side,
    TunnelFactory,
    TunnelOptions,
)

pytestmark = [pytest.mark.kernel, pytest.mark.netns]

MTU: Final = 1420
ICMP_OVERHEAD: Final = 28
"""IPv4 header + ICMP echo header: ping -s N sends an N + 28 byte IPv4 packet."""


def _ping_df(tunnel: KernelTunnel, sender: Side, payload: int) -> PingResult:
    """ping -M do -s PAYLOAD from one side to the other (IPv4 inside)."""
    dest = GUEST_TUNNEL[4] if sender == "host" else HOST_TUNNEL[4]
    return tunnel.ping(sender, dest, "-s", str(payload), "-M", "do", count=2)


def _mtu(tunnel: KernelTunnel, side: Side) -> int:
    if side == "host":
        out = tunnel.ns.run("cat", f"/sys/class/net/{tunnel.host_if}/mtu").stdout
    else:
        out = tunnel.guest.run(f"cat /sys/class/net/{GUEST_IF}/mtu").stdout
    return int(out)


def _set_mtu(tunnel: KernelTunnel, side: Side, mtu: int) -> None:
    if side == "host":
        tunnel.ns.run("ip", "link", "set", tunnel.host_if, "mtu", str(mtu))
    else:
        tunnel.guest.run(f"ip link set {GUEST_IF} mtu {mtu}")


def test_tunnel_mtu_both_ways(tunnel: KernelTunnel) -> None:
    assert _mtu(tunnel, "host") == _mtu(tunnel, "guest") == MTU
    tunnel.handshake()
    sides: tuple[Side, ...] = ("host", "guest")
    for side in sides:
        fits = _ping_df(tunnel, side, MTU - ICMP_OVERHEAD)
        assert fits.status == 0, f"{side}: {fits}"
        too_big = _ping_df(tunnel, side, MTU - ICMP_OVERHEAD + 1)
        assert f"message too long, mtu={MTU}" in too_big.output, f"{side}: {too_big}"


@pytest.mark.parametrize("outer", [4, 6], ids=["outer4", "outer6"])
def test_inner_packet_above_receiver_mtu(tunnel_factory: TunnelFactory, outer: Family) -> None:
    tunnel = tunnel_factory(TunnelOptions(outer=outer))
    tunnel.handshake()
    directions: tuple[tuple[Side, Side], ...] = (("host", "guest"), ("guest", "host"))
    for sender, receiver in directions:
        _set_mtu(tunnel, sender, 1500)
        result = _ping_df(tunnel, sender, 1500 - ICMP_OVERHEAD)
        assert result.status == 0, f"{sender} -> {receiver}: {result}"
        _set_mtu(tunnel, sender, MTU)
