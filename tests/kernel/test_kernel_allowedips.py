"""Cryptokey routing between wgpyd and the kernel: disallowed inner sources in each direction,
and what each side answers for a destination no peer holds.

Found (Debian 6.1.0 kernel, see docs/kernel-tests.md):

* The kernel sends whatever source its routing picks (AllowedIPs does not restrict a sender);
  wgpyd drops such packets and counts them as `disallowed_source` for the guest's peer.
* wgpyd sending from a source outside the guest's AllowedIPs for it: the kernel drops each
  packet, `rx_errors` and `rx_frame_errors` of wg0 rise by one per packet, `rx_packets` does
  not, and dmesg says "Packet has unallowed src IP (...) from peer".
* No peer for a destination, local sender: the kernel fails the send with ENOKEY (ping:
  "sendmsg: Required key not available") *and* answers ICMP host unreachable (IPv4 3/1, IPv6
  1/3) from its own address on wg0. wgpyd cannot fail a write to its TUN, so its local sender
  sees only the ICMP answer — same type, code and source choice (the host's address on the
  TUN); wireguard-go answers nothing.
* No peer, forwarded packet: both answer the same ICMP, from the address that faces the sender.
"""

from __future__ import annotations

import time
from typing import Final

import pytest

from tests.kernel.lab import (
    GUEST_IF,
    GUEST_TUNNEL,
    GUEST_UNDERLAY,
    HOST_TUNNEL,
    HOST_UNDERLAY,
    Family,
    KernelTunnel,
    TunnelFactory,
)
from tests.netns.dropkit import WGPYD
from tests.netns.harness import WIREGUARD_GO, wait_for

pytestmark = [pytest.mark.kernel, pytest.mark.netns]

EXTRA_GUEST_SOURCE: Final[dict[Family, str]] = {4: "10.100.0.99", 6: "fd00:100::99"}
EXTRA_HOST_SOURCE: Final[dict[Family, str]] = {4: "10.100.0.98", 6: "fd00:100::98"}
NO_PEER: Final[dict[Family, str]] = {4: "10.100.0.7", 6: "fd00:100::7"}
HOST_LENGTH: Final[dict[Family, int]] = {4: 32, 6: 128}
UNREACHABLE: Final[dict[Family, str]] = {
    4: "Destination Host Unreachable",  # iputils' words for ICMP type 3 code 1
    6: "Destination unreachable: Address unreachable",  # ICMPv6 type 1 code 3
}
ENOKEY: Final = "Required key not available"
PINGS: Final = 3


def _add_address(tunnel: KernelTunnel, where: str, address: str, family: Family) -> None:
    spec = f"{address}/{HOST_LENGTH[family]}"
    if where == "guest":
        nodad = " nodad" if family == 6 else ""
        tunnel.guest.run(f"ip addr add {spec} dev {GUEST_IF}{nodad}")
    else:
        nodad_args = ["nodad"] if family == 6 else []
        tunnel.ns.run("ip", "addr", "add", spec, "dev", tunnel.host_if, *nodad_args)


@pytest.mark.parametrize("family", [4, 6])
def test_disallowed_source_from_kernel_counted_by_wgpyd(
    tunnel: KernelTunnel, family: Family
) -> None:
    tunnel.handshake()
    source = EXTRA_GUEST_SOURCE[family]
    _add_address(tunnel, "guest", source, family)
    key = (tunnel.guest_public, "disallowed_source")
    before = tunnel.drops()[key]

    result = tunnel.ping("guest", HOST_TUNNEL[family], "-I", source, count=PINGS, wait=1)

    assert " 0 received" in result.output, result
    wait_for(
        lambda: tunnel.drops()[key] - before == PINGS,
        5,
        what=f"wgpyd to count {PINGS} {key}",
    )
    # (the kernel now picks the newest address as source: name the allowed one)
    allowed = tunnel.ping("guest", HOST_TUNNEL[family], "-I", GUEST_TUNNEL[family], count=1)
    assert allowed.status == 0, allowed


@pytest.mark.parametrize("family", [4, 6])
def test_disallowed_source_from_wgpyd_dropped_by_kernel(
    tunnel: KernelTunnel, family: Family
) -> None:
    tunnel.handshake()
    source = EXTRA_HOST_SOURCE[family]
    _add_address(tunnel, "host", source, family)
    before = tunnel.guest_link_stats()

    result = tunnel.ping("host", GUEST_TUNNEL[family], "-I", source, count=PINGS, wait=1)
    assert " 0 received" in result.output, result

    after = tunnel.guest_link_stats()
    rise = {name: after[name] - before[name] for name in after}
    assert rise["rx_errors"] == PINGS, rise
    assert rise["rx_frame_errors"] == PINGS, rise
    assert rise["rx_packets"] == 0, rise
    assert f"Packet has unallowed src IP ({source}) from peer" in tunnel.guest_dmesg()


EXPECTED_LOCAL_ANSWER: Final[dict[str, bool]] = {"wgpyd": True, "wireguard-go": False}
"""Whether a host daemon answers a local sender's packet for no peer with ICMP."""


@pytest.mark.parametrize("daemon", ["wgpyd", "wireguard-go"])
@pytest.mark.parametrize("family", [4, 6])
def test_no_peer_local_sender(tunnel_factory: TunnelFactory, family: Family, daemon: str) -> None:
    tunnel = tunnel_factory(command=WGPYD if daemon == "wgpyd" else WIREGUARD_GO)
    kernel = tunnel.ping("guest", NO_PEER[family], count=PINGS, wait=1).output
    assert ENOKEY in kernel, kernel
    assert f"From {GUEST_TUNNEL[family]} icmp_seq=1 {UNREACHABLE[family]}" in kernel, kernel

    host = tunnel.ping("host", NO_PEER[family], count=PINGS, wait=1).output
    assert ENOKEY not in host, host  # a TUN write cannot fail like the kernel's xmit
    if EXPECTED_LOCAL_ANSWER[daemon]:
        assert f"From {HOST_TUNNEL[family]} icmp_seq=1 {UNREACHABLE[family]}" in host, host
        assert tunnel.drops()[(None, "no_peer")] == PINGS
    else:
        assert "From " not in host, host


FORWARDED_TO_GUEST: Final[dict[Family, tuple[str, str]]] = {
    4: ("10.200.0.0/24", "10.200.0.5"),
    6: ("fd00:200::/64", "fd00:200::5"),
}
FORWARDED_TO_HOST: Final[dict[Family, tuple[str, str]]] = {
    4: ("10.201.0.0/24", "10.201.0.5"),
    6: ("fd00:201::/64", "fd00:201::5"),
}


@pytest.mark.parametrize("family", [4, 6])
def test_no_peer_forwarded(tunnel: KernelTunnel, family: Family) -> None:
    """Each side routes a prefix over the tap to the other, which forwards it into its
    WireGuard interface where no peer holds it: both answer the sender the same way."""
    tunnel.handshake()
    tunnel.lab.forwarding(family)
    via_guest, dest_via_guest = FORWARDED_TO_GUEST[family]
    via_host, dest_via_host = FORWARDED_TO_HOST[family]
    tunnel.ns.run("ip", "route", "add", via_guest, "via", GUEST_UNDERLAY[family])
    tunnel.ns.run("ip", "route", "add", via_host, "dev", tunnel.host_if)
    tunnel.guest.run(
        f"ip route add {via_host} via {HOST_UNDERLAY[family]}\n"
        f"ip route add {via_guest} dev {GUEST_IF}"
    )

    no_peer_before = _settled_no_peer(tunnel)

    kernel = tunnel.ping("host", dest_via_guest, count=PINGS, wait=1).output
    wgpyd = tunnel.ping("guest", dest_via_host, count=PINGS, wait=1).output

    assert f"From {GUEST_UNDERLAY[family]} icmp_seq=1 {UNREACHABLE[family]}" in kernel, kernel
    assert f"From {HOST_UNDERLAY[family]} icmp_seq=1 {UNREACHABLE[family]}" in wgpyd, wgpyd
    assert tunnel.drops()[(None, "no_peer")] - no_peer_before == PINGS


def _settled_no_peer(tunnel: KernelTunnel, quiet: float = 1.5, timeout: float = 10.0) -> int:
    """wgpyd's `no_peer` count once it has not moved for `quiet` seconds (the MLD reports
    that follow turning on IPv6 forwarding are sent over about a second)."""
    deadline = time.monotonic() + timeout
    count, since = tunnel.drops()[(None, "no_peer")], time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.2)
        again = tunnel.drops()[(None, "no_peer")]
        if again != count:
            count, since = again, time.monotonic()
    return count
