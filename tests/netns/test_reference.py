"""Sanity test of the netns harness itself: two real wireguard-go peers configured with the real
`wg`, pinging each other over IPv4 and IPv6 through the tunnel.

The same topology runs against wgpyd by overriding the `wg_daemon_command` fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from tests.netns.harness import Netns, WgNode, ping, two_peer_topology

pytestmark = pytest.mark.netns


def _assert_handshake_and_traffic(me: WgNode, other: WgNode) -> None:
    dump = me.dump()
    assert dump.public_key == me.public_key
    assert dump.listen_port == me.listen_port
    peer = dump.peers[other.public_key]
    assert peer.latest_handshake > 0, f"{me.ifname}: no handshake with {other.ifname}: {peer}"
    assert peer.rx_bytes > 0 and peer.tx_bytes > 0, f"{me.ifname}: no transfer: {peer}"
    assert set(peer.allowed_ips) == {f"{other.tunnel4}/32", f"{other.tunnel6}/128"}


@pytest.mark.parametrize("underlay", [4, 6], ids=["ipv4-underlay", "ipv6-underlay"])
def test_two_peers_ping_through_tunnel(
    netns_factory: Callable[[], Netns], wg_daemon_command: Sequence[str], underlay: int
) -> None:
    assert underlay in (4, 6)
    topo = two_peer_topology(
        netns_factory(),
        netns_factory(),
        command_a=wg_daemon_command,
        command_b=wg_daemon_command,
        underlay=4 if underlay == 4 else 6,
    )
    a, b = topo.a, topo.b

    # the underlay itself works, both families
    ping(a.ns, b.underlay4, count=1, check=True)
    ping(a.ns, b.underlay6, count=1, check=True)

    for src, dst in ((a, b), (b, a)):
        for addr in (dst.tunnel4, dst.tunnel6):
            result = ping(src.ns, addr)
            assert result.returncode == 0, (
                f"ping {addr} from {src.ns.name} failed:\n{result.stdout}{result.stderr}\n"
                f"--- {src.ifname} log ---\n{src.daemon.log()}"
            )
            assert " 0% packet loss" in result.stdout, result.stdout

    _assert_handshake_and_traffic(a, b)
    _assert_handshake_and_traffic(b, a)
    endpoint = b.dump().peers[a.public_key].endpoint
    expected = a.underlay4 if underlay == 4 else f"[{a.underlay6}]"
    assert endpoint == f"{expected}:{a.listen_port}"


def test_destination_held_by_no_peer_gets_no_reply(
    netns_factory: Callable[[], Netns], wg_daemon_command: Sequence[str]
) -> None:
    topo = two_peer_topology(
        netns_factory(),
        netns_factory(),
        command_a=wg_daemon_command,
        command_b=wg_daemon_command,
    )
    a, b = topo.a, topo.b
    ping(a.ns, b.tunnel4, count=1, check=True)  # the tunnel is up
    before = a.dump().peers[b.public_key].tx_bytes

    # 10.100.0.3 and fd00:100::3 are routed into the interface (on-link /24 and /64) but no peer
    # holds a prefix containing them: AllowedIPs finds no peer, nothing is sent, no reply.
    for addr in ("10.100.0.3", "fd00:100::3"):
        result = ping(a.ns, addr, count=1, wait=1)
        assert result.returncode != 0, f"unexpected reply from {addr}:\n{result.stdout}"
        assert " 0 received" in result.stdout, result

    # and nothing went to the one peer there is
    after = a.dump().peers[b.public_key]
    assert after.tx_bytes == before, (before, after)
