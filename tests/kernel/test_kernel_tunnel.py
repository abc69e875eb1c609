"""wgpyd against the kernel's WireGuard: handshakes from either side, traffic both ways over
every combination of outer and inner IP version, preshared keys that match and that do not.

Found (Debian 6.1.0 kernel, see docs/kernel-tests.md): wgpyd and the kernel handshake with
either as initiator, the responder learning the initiator's endpoint; ping, TCP and UDP pass
both ways for outer IPv4/IPv6 × inner IPv4/IPv6, and the two sides' transfer counters agree to
the byte (what one counts as sent the other counts as received). With mismatched preshared keys
no session forms: the initiator rejects the response (wgpyd counts `handshake_failed` for the
peer, the kernel logs "Invalid handshake response"), and neither side records a handshake.
wireguard-go is run through the initiator test for comparison and behaves the same.
"""

from __future__ import annotations

from typing import Final

import pytest

from tests.kernel.lab import (
    GUEST_PORT,
    GUEST_TUNNEL,
    GUEST_UNDERLAY,
    HOST_PORT,
    HOST_TUNNEL,
    HOST_UNDERLAY,
    Family,
    KernelTunnel,
    Side,
    TunnelFactory,
    TunnelOptions,
    host_port,
)
from tests.kernel.traffic import (
    tcp_guest_to_host,
    tcp_host_to_guest,
    udp_guest_to_host,
    udp_host_to_guest,
)
from tests.kernel.wire import TapCapture
from tests.netns.dropkit import WGPYD
from tests.netns.harness import WIREGUARD_GO, genpsk, wait_for

pytestmark = [pytest.mark.kernel, pytest.mark.netns]

DAEMONS: Final[dict[str, tuple[str, ...]]] = {"wgpyd": WGPYD, "wireguard-go": WIREGUARD_GO}
INITIATION_SIZE: Final = 148


@pytest.mark.parametrize("daemon", DAEMONS)
@pytest.mark.parametrize("initiator", ["host", "guest"])
def test_handshake_initiated_by_either_side(
    tunnel_factory: TunnelFactory, initiator: Side, daemon: str
) -> None:
    """Only the initiator knows the other's endpoint; the responder must learn it from the
    initiation and answer there, and traffic must then flow both ways on that session."""
    from_host = initiator == "host"
    options = TunnelOptions(host_knows_endpoint=from_host, guest_knows_endpoint=not from_host)
    tunnel = tunnel_factory(options, DAEMONS[daemon])
    with TapCapture(tunnel.ns, tunnel.lab.tap) as capture:
        tunnel.handshake(from_host=from_host)
        wire = capture.stop()
    initiations = [d for d in wire if d.length == INITIATION_SIZE]
    initiator_address = HOST_UNDERLAY[4] if from_host else GUEST_UNDERLAY[4]
    assert initiations and all(d.src == initiator_address for d in initiations), wire

    host_peer, guest_peer = tunnel.host_peer(), tunnel.guest_peer()
    assert host_peer.latest_handshake > 0 and guest_peer.latest_handshake > 0
    assert host_peer.endpoint == host_port(GUEST_UNDERLAY[4], GUEST_PORT)
    assert guest_peer.endpoint == host_port(HOST_UNDERLAY[4], HOST_PORT)
    assert tunnel.ping("guest", HOST_TUNNEL[4]).status == 0
    assert tunnel.ping("host", GUEST_TUNNEL[4]).status == 0


def _counters_agree(tunnel: KernelTunnel) -> bool:
    host, guest = tunnel.host_peer(), tunnel.guest_peer()
    return host.tx_bytes == guest.rx_bytes and host.rx_bytes == guest.tx_bytes


def _ping_tcp_udp_both_ways(tunnel: KernelTunnel, inner: Family) -> None:
    from_guest = tunnel.ping("guest", HOST_TUNNEL[inner])
    assert from_guest.status == 0, from_guest
    from_host = tunnel.ping("host", GUEST_TUNNEL[inner])
    assert from_host.status == 0, from_host
    sent, received = tcp_host_to_guest(tunnel, inner)
    assert sent == received, "TCP host -> guest: the guest received other bytes"
    sent, received = tcp_guest_to_host(tunnel, inner)
    assert sent == received, "TCP guest -> host: the host received other bytes"
    sent_udp, received_udp = udp_host_to_guest(tunnel, inner)
    assert sent_udp == received_udp, "UDP host -> guest"
    sent_udp, received_udp = udp_guest_to_host(tunnel, inner)
    assert sent_udp == received_udp, "UDP guest -> host"


@pytest.mark.parametrize("inner", [4, 6], ids=["inner4", "inner6"])
@pytest.mark.parametrize("outer", [4, 6], ids=["outer4", "outer6"])
def test_ping_tcp_udp_both_ways(
    tunnel_factory: TunnelFactory, outer: Family, inner: Family
) -> None:
    tunnel = tunnel_factory(TunnelOptions(outer=outer))
    _ping_tcp_udp_both_ways(tunnel, inner)
    assert tunnel.host_peer().endpoint == host_port(GUEST_UNDERLAY[outer], GUEST_PORT)
    assert tunnel.guest_peer().endpoint == host_port(HOST_UNDERLAY[outer], HOST_PORT)
    # what one side counts as sent the other counts as received (in flight: wait a little)
    wait_for(lambda: _counters_agree(tunnel), 5, interval=0.2, what="transfer counters to agree")


def test_preshared_key(tunnel_factory: TunnelFactory) -> None:
    tunnel = tunnel_factory(TunnelOptions.with_psk())
    _ping_tcp_udp_both_ways(tunnel, 4)
    assert tunnel.host_peer().preshared_key == tunnel.options.host_psk
    assert tunnel.guest_peer().preshared_key == tunnel.options.guest_psk


@pytest.mark.parametrize("initiator", ["host", "guest"])
def test_mismatched_preshared_key(tunnel_factory: TunnelFactory, initiator: Side) -> None:
    """The responder cannot tell (the initiation does not depend on the PSK); the initiator
    fails to open the response and no session forms on either side."""
    tunnel = tunnel_factory(TunnelOptions(host_psk=genpsk(), guest_psk=genpsk()))
    if initiator == "host":
        assert tunnel.ping("host", GUEST_TUNNEL[4], count=2, wait=1).status != 0
        failed = (tunnel.guest_public, "handshake_failed")
        wait_for(lambda: tunnel.drops()[failed] >= 1, 5, what=f"wgpyd to count {failed}")
        dmesg = tunnel.guest_dmesg()
        assert "Sending handshake response" in dmesg
    else:
        assert tunnel.ping("guest", HOST_TUNNEL[4], count=2, wait=1).status != 0
        wait_for(
            lambda: "Invalid handshake response from" in tunnel.guest_dmesg(),
            5,
            what="the kernel to log an invalid handshake response",
        )
        assert not any(reason == "handshake_failed" for _, reason in tunnel.drops())
    assert tunnel.host_peer().latest_handshake == 0
    assert tunnel.guest_peer().latest_handshake == 0
