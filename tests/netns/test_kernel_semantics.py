"""Where wgpyd behaves like the kernel module rather than like Debian's wireguard-go, as the
kernel's own selftest (tools/testing/selftests/wireguard/netns.sh) expects:

- the interface may be moved to another namespace after it was created (the UDP sockets stay
  where it was created); wgpyd keeps serving it there, follows up/down and MTU changes, and
  exits when it is deleted, also by deleting its namespace;
- nothing is sent (and no port is bound) while the interface is down; a peer with persistent
  keepalive sends at once when it comes up, or when a first private key arrives later;
- a sticky source address is dropped when the route to the peer moves to another interface.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import pytest

from tests.netns.dropkit import WGPYD
from tests.netns.harness import (
    WG_RUN_DIR,
    Netns,
    WgDaemon,
    genkey,
    ping,
    pubkey,
    start_wg_daemon,
    start_wireguard_go,
    unique_ifname,
    veth_pair,
    wait_for,
    wg,
    wg_dump,
    write_secret,
)

pytestmark = pytest.mark.netns

TUNNEL_OVERHEAD: Final = 32  # data message header (16) + Poly1305 tag (16)


def _udp_port_bound(ns: Netns, port: int) -> bool:
    out = ns.run("ss", "-Huln", f"sport = :{port}").stdout
    return bool(out.strip())


def _exited(daemon: WgDaemon) -> bool:
    return not daemon.alive


def _configure_pair(
    inner: Netns, ifname: str, peer_ns: Netns, peer_if: str, *, endpoint: str
) -> tuple[str, str]:
    """Keys, ports and tunnel addresses for wgpyd's interface (configured from ``inner``)
    and a peer; returns (wgpyd's public key, the peer's public key)."""
    key, peer_key = genkey(), genkey()
    wg(
        inner,
        "set",
        ifname,
        "private-key",
        str(write_secret(inner, f"{ifname}.key", key)),
        "listen-port",
        "51000",
        "peer",
        pubkey(peer_key),
        "allowed-ips",
        "10.201.0.2/32",
        "endpoint",
        endpoint,
    )
    wg(
        peer_ns,
        "set",
        peer_if,
        "private-key",
        str(write_secret(peer_ns, f"{peer_if}.key", peer_key)),
        "listen-port",
        "51001",
        "peer",
        pubkey(key),
        "allowed-ips",
        "10.201.0.1/32",
    )
    for ns, name, address in ((inner, ifname, "10.201.0.1"), (peer_ns, peer_if, "10.201.0.2")):
        ns.run("ip", "addr", "add", f"{address}/24", "dev", name)
        ns.run("ip", "link", "set", name, "up")
    return pubkey(key), pubkey(peer_key)


def test_interface_moved_to_another_namespace_is_served_there(
    netns_factory: Callable[[], Netns],
) -> None:
    home, inner, remote = netns_factory(), netns_factory(), netns_factory()
    veth_pair(home, remote, "10.99.0.1", "10.99.0.2")
    ifname, peer_if = unique_ifname(), unique_ifname()
    daemon = start_wg_daemon(home, ifname, WGPYD)
    start_wireguard_go(remote, peer_if)
    home.run("ip", "link", "set", ifname, "netns", inner.name)

    time.sleep(1.5)  # longer than one link poll: the move must not look like a deletion
    assert daemon.alive, daemon.log()
    assert home.run("ip", "link", "show", ifname, check=False).returncode != 0
    _configure_pair(inner, ifname, remote, peer_if, endpoint="10.99.0.2:51001")

    # the tunnel works both ways from the namespace the interface was moved to; the UDP
    # socket stayed in the one it was created in
    assert ping(inner, "10.201.0.2", count=3).returncode == 0
    assert ping(remote, "10.201.0.1", count=3).returncode == 0
    assert _udp_port_bound(home, 51000)
    assert not _udp_port_bound(inner, 51000)

    # down and up in the new namespace are followed: the port is closed while down
    inner.run("ip", "link", "set", ifname, "down")
    wait_for(lambda: not _udp_port_bound(home, 51000), 5, what="port closed while down")
    inner.run("ip", "link", "set", ifname, "up")
    wait_for(lambda: _udp_port_bound(home, 51000), 5, what="port bound again once up")
    assert ping(inner, "10.201.0.2", count=3).returncode == 0

    # the MTU is followed: a packet of exactly the MTU is padded to the MTU, not past it
    inner.run("ip", "link", "set", ifname, "mtu", "1281")
    time.sleep(0.5)
    before = wg_dump(inner, ifname).peers[wg_dump(remote, peer_if).public_key or ""].tx_bytes
    inner.run("ping", "-c", "1", "-W", "2", "-s", str(1281 - 28), "-M", "do", "10.201.0.2")
    after = wg_dump(inner, ifname).peers[wg_dump(remote, peer_if).public_key or ""].tx_bytes
    assert after - before == 1281 + TUNNEL_OVERHEAD

    # deleting the interface where it lives now ends the daemon and removes its socket
    inner.run("ip", "link", "del", ifname)
    wait_for(lambda: _exited(daemon), 10, what="wgpyd exiting after the interface is deleted")
    assert "interface removed" in daemon.log()
    assert not (WG_RUN_DIR / f"{ifname}.sock").exists()


def test_deleting_the_namespace_of_a_moved_interface_ends_wgpyd(
    netns_factory: Callable[[], Netns],
) -> None:
    home = netns_factory()
    target = Netns()
    try:
        ifname = unique_ifname()
        daemon = start_wg_daemon(home, ifname, WGPYD)
        home.run("ip", "link", "set", ifname, "netns", target.name)
        target.run("ip", "link", "set", ifname, "up")
        time.sleep(1.5)
        assert daemon.alive, daemon.log()
    finally:
        target.close()  # `ip netns del`: the kernel deletes the interface with the namespace
    wait_for(lambda: _exited(daemon), 10, what="wgpyd exiting with its interface's namespace")
    assert not (WG_RUN_DIR / f"{ifname}.sock").exists()


def _tx_bytes(ns: Netns, ifname: str) -> int:
    return sum(peer.tx_bytes for peer in wg_dump(ns, ifname).peers.values())


def test_nothing_is_sent_while_down_and_persistent_keepalive_goes_out_on_up(
    netns_factory: Callable[[], Netns],
) -> None:
    ns = netns_factory()
    ifname = unique_ifname()
    start_wg_daemon(ns, ifname, WGPYD)
    key_file = write_secret(ns, "key", genkey())
    peer = pubkey(genkey())
    wg(ns, "set", ifname, "private-key", str(key_file), "peer", peer)
    wg(ns, "set", ifname, "peer", peer, "endpoint", "127.0.0.1:1", "persistent-keepalive", "1")
    time.sleep(0.5)
    assert _tx_bytes(ns, ifname) == 0
    assert wg_dump(ns, ifname).listen_port == 0  # no port while down (none was asked for)
    ns.run("ip", "link", "set", ifname, "up")
    # no sleep: the initiation goes out as the interface comes up (netns.sh reads at once)
    assert _tx_bytes(ns, ifname) == 148
    assert wg_dump(ns, ifname).listen_port != 0


def test_keepalive_waiting_for_a_first_private_key_goes_out_when_it_is_set(
    netns_factory: Callable[[], Netns],
) -> None:
    ns = netns_factory()
    ifname = unique_ifname()
    start_wg_daemon(ns, ifname, WGPYD)
    peer = pubkey(genkey())
    wg(ns, "set", ifname, "peer", peer, "endpoint", "127.0.0.1:1", "persistent-keepalive", "1")
    assert _tx_bytes(ns, ifname) == 0
    ns.run("ip", "link", "set", ifname, "up")
    assert _tx_bytes(ns, ifname) == 0  # no key: no handshake can be made
    time.sleep(0.5)
    assert _tx_bytes(ns, ifname) == 0
    wg(ns, "set", ifname, "private-key", str(write_secret(ns, "key", genkey())))
    assert _tx_bytes(ns, ifname) == 148


def test_sticky_source_follows_a_route_to_another_interface(
    netns_factory: Callable[[], Netns],
) -> None:
    """netns.sh "another interface route takes precedence": once a route with another
    interface and source wins, the next datagram leaves from that source."""
    ns1, ns2 = netns_factory(), netns_factory()
    veth1, _ = veth_pair(ns1, ns2, "10.0.0.1", "10.0.0.2")
    veth3, veth4 = f"{veth1[:-1]}c", f"{veth1[:-1]}d"
    ns1.run("ip", "link", "add", veth3, "type", "veth", "peer", "name", veth4, "netns", ns2.name)
    ns1.run("ip", "addr", "add", "10.0.0.3/24", "dev", veth3)
    ns1.run("ip", "link", "set", veth3, "up")
    ns2.run("ip", "link", "set", veth4, "up")
    if1, if2 = unique_ifname(), unique_ifname()
    start_wg_daemon(ns1, if1, WGPYD)
    start_wireguard_go(ns2, if2)
    pub1, _ = _configure_pair(ns1, if1, ns2, if2, endpoint="10.0.0.2:51001")
    ns1.run("ip", "route", "flush", "dev", veth1)
    ns1.run("ip", "route", "flush", "dev", veth3)
    ns1.run("ip", "route", "add", "10.0.0.0/24", "dev", veth1, "src", "10.0.0.1", "metric", "2")
    assert ping(ns1, "10.201.0.2", count=1).returncode == 0
    assert wg_dump(ns2, if2).peers[pub1].endpoint == "10.0.0.1:51000"

    ns1.run("ip", "route", "add", "10.0.0.0/24", "dev", veth3, "src", "10.0.0.3", "metric", "1")
    for ns, conf in ((ns1, veth1), (ns2, veth4), (ns1, "all"), (ns2, "all")):
        ns.run("sysctl", "-qw", f"net.ipv4.conf.{conf}.rp_filter=0")
    assert ping(ns1, "10.201.0.2", count=1).returncode == 0
    assert wg_dump(ns2, if2).peers[pub1].endpoint == "10.0.0.3:51000"


def test_daemon_started_on_a_down_interface_reports_a_configured_port_without_binding_it(
    netns_factory: Callable[[], Netns],
) -> None:
    ns = netns_factory()
    ifname = unique_ifname()
    start_wg_daemon(ns, ifname, WGPYD)
    wg(ns, "set", ifname, "listen-port", "51777")
    assert wg_dump(ns, ifname).listen_port == 51777
    assert not _udp_port_bound(ns, 51777)
    ns.run("ip", "link", "set", ifname, "up")
    assert _udp_port_bound(ns, 51777)


@pytest.mark.parametrize("nat", [False, True], ids=["routed", "snat"])
def test_icmp_unreachable_comes_from_the_router_with_nat_undone(
    netns_factory: Callable[[], Netns], nat: bool
) -> None:
    """netns.sh's NAT case: a router forwards (and SNATs) a sender's packet into wg0 where no
    peer has the destination; the kernel undoes the NAT and answers from the router's own
    address facing the sender, which passes the sender's filter on error sources."""
    sender, router = netns_factory(), netns_factory()
    s_if, r_if = veth_pair(
        sender, router, "10.0.0.1", "10.0.0.100", addr6_a="fd10::1", addr6_b="fd10::100"
    )
    ifname = unique_ifname()
    start_wg_daemon(router, ifname, WGPYD)
    wg(router, "set", ifname, "private-key", str(write_secret(router, "key", genkey())))
    wg(router, "set", ifname, "peer", pubkey(genkey()), "allowed-ips", "192.168.241.9/32")
    router.run("ip", "addr", "add", "192.168.241.2/24", "dev", ifname)
    router.run("ip", "-6", "addr", "add", "fd00::2/112", "dev", ifname, "nodad")
    router.run("ip", "link", "set", ifname, "up")
    router.run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
    if nat:
        router.run(
            "nft", "-f", "-",
            input="table ip wgpyt_nat { chain post { type nat hook postrouting priority 100; "
            "ip saddr 10.0.0.0/24 ip daddr 192.168.241.0/24 snat to 192.168.241.2; }; }\n",
        )  # fmt: skip
    sender.run(
        "nft", "-f", "-",
        input=f"table inet wgpyt_filter {{ chain input {{ type filter hook input priority 0; "
        f'iifname "{s_if}" ip saddr != 10.0.0.0/24 drop; '
        f'iifname "{s_if}" ip6 saddr != fd10::/64 drop; }}; }}\n',
    )  # fmt: skip
    sender.run("ip", "route", "add", "192.168.241.1", "via", "10.0.0.100")
    sender.run("ip", "-6", "route", "add", "fd00::1", "via", "fd10::100")

    v4 = sender.run("ping", "-c", "1", "-W", "1", "192.168.241.1", check=False)
    assert "From 10.0.0.100 icmp_seq=1 Destination Host Unreachable" in v4.stdout, v4.stdout
    if not nat:
        # two tries: the first may wait for neighbour discovery after forwarding was enabled
        v6 = sender.run("ping", "-c", "2", "-i", "0.5", "-W", "2", "fd00::1", check=False)
        assert "From fd10::100 icmp_seq=" in v6.stdout, v6.stdout
        assert "Destination unreachable: Address unreachable" in v6.stdout, v6.stdout
    assert r_if  # the router's side of the link the error left through


@pytest.mark.parametrize("moved", [False, True], ids=["in-place", "moved"])
def test_padding_follows_the_mtu_of_the_packets_route(
    netns_factory: Callable[[], Netns], moved: bool
) -> None:
    """netns.sh "route MTUs work with the padding": the kernel pads a packet to the MTU of
    its route (``ip route add ... dev wg0 mtu 1299``), not past it to the device's."""
    home, remote = netns_factory(), netns_factory()
    inner = netns_factory() if moved else home
    veth_pair(home, remote, "10.99.0.1", "10.99.0.2")
    ifname, peer_if = unique_ifname(), unique_ifname()
    start_wg_daemon(home, ifname, WGPYD)
    start_wireguard_go(remote, peer_if)
    if moved:
        home.run("ip", "link", "set", ifname, "netns", inner.name)
    _, peer_pub = _configure_pair(inner, ifname, remote, peer_if, endpoint="10.99.0.2:51001")
    inner.run("ip", "link", "set", ifname, "mtu", "1300")
    assert ping(inner, "10.201.0.2", count=1).returncode == 0

    def tx_for_one_ping() -> int:
        before = wg_dump(inner, ifname).peers[peer_pub].tx_bytes
        # 1297 bytes: padded to 1312 would pass the MTU; to the route's MTU when one is set
        inner.run("ping", "-c", "1", "-W", "2", "-s", "1269", "10.201.0.2")
        return wg_dump(inner, ifname).peers[peer_pub].tx_bytes - before

    assert tx_for_one_ping() == 1300 + TUNNEL_OVERHEAD
    inner.run("ip", "route", "add", "10.201.0.2/32", "dev", ifname, "mtu", "1299")
    assert tx_for_one_ping() == 1299 + TUNNEL_OVERHEAD  # no wait: the route's event is read first
    inner.run("ip", "route", "del", "10.201.0.2/32", "dev", ifname, "mtu", "1299")
    assert tx_for_one_ping() == 1300 + TUNNEL_OVERHEAD


def _router_between(netns_factory: Callable[[], Netns]) -> tuple[Netns, Netns]:
    """A -- router -- B, where the link between the router and B has an MTU of 1280."""
    a, router, b = netns_factory(), netns_factory(), netns_factory()
    veth_pair(a, router, "10.98.1.1", "10.98.1.2", addr6_a="fd98:1::1", addr6_b="fd98:1::2")
    b_side, to_b = veth_pair(
        b, router, "10.98.2.1", "10.98.2.2", addr6_a="fd98:2::1", addr6_b="fd98:2::2"
    )
    for ns, far, gateway4, gateway6 in (
        (a, "2", "10.98.1.2", "fd98:1::2"),
        (b, "1", "10.98.2.2", "fd98:2::2"),
    ):
        # (an IPv6 route covering its own gateway's subnet is not used: only the far /64)
        ns.run("ip", "route", "add", f"10.98.{far}.0/24", "via", gateway4)
        ns.run("ip", "-6", "route", "add", f"fd98:{far}::/64", "via", gateway6)
    router.run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
    router.run("ip", "link", "set", to_b, "mtu", "1280")
    b.run("ip", "link", "set", b_side, "mtu", "1280")
    for far in ("10.98.2.1", "fd98:2::1"):  # neighbour discovery on the router takes a second
        a.run("ping", "-c", "1", "-W", "5", far)
    return a, b


@pytest.mark.parametrize("outer", [4, 6])
def test_outer_fragmentation_as_the_kernel(netns_factory: Callable[[], Netns], outer: int) -> None:
    """The kernel sends IPv4 datagrams without DF, so a router on a smaller-MTU path
    fragments them; an IPv6 datagram too big for the path is lost once (Packet Too Big) and
    then fragmented by the sender (seen on Debian's 6.1 kernel in QEMU)."""
    a, b = _router_between(netns_factory)
    ifname, peer_if = unique_ifname(), unique_ifname()
    start_wg_daemon(a, ifname, WGPYD)
    start_wireguard_go(b, peer_if)
    endpoint = "10.98.2.1:51001" if outer == 4 else "[fd98:2::1]:51001"
    _configure_pair(a, ifname, b, peer_if, endpoint=endpoint)
    assert ping(a, "10.201.0.2", count=1).returncode == 0
    big = ("ping", "-c", "3", "-i", "0.3", "-W", "1", "-M", "do", "-s", "1392", "10.201.0.2")
    result = a.run(*big, check=False)
    expected = "3 received" if outer == 4 else "2 received"
    assert expected in result.stdout, result.stdout


def test_routing_loop_between_two_interfaces_dies_out(netns_factory: Callable[[], Netns]) -> None:
    """netns.sh "routing loop": two interfaces whose endpoints are routed through each other.
    Each pass adds headers until the IPv6 datagram outgrows the path MTU and is dropped; it
    must not be fragmented into ever more packets."""
    n0, n1, n2 = netns_factory(), netns_factory(), netns_factory()
    outer_a, outer_b, inner_a, inner_b = (unique_ifname() for _ in range(4))
    keys = [genkey() for _ in range(4)]
    pubs = [pubkey(key) for key in keys]
    files = [str(write_secret(n0, f"k{i}", key)) for i, key in enumerate(keys)]
    # outer_a: created in n0 (its socket there), moved to n1; outer_b likewise into n2
    for name, target in ((outer_a, n1), (outer_b, n2)):
        start_wg_daemon(n0, name, WGPYD)
        n0.run("ip", "link", "set", name, "netns", target.name)
    n1.run("ip", "addr", "add", "fd00::5:1/112", "dev", outer_a)
    n2.run("ip", "addr", "add", "fd00::5:2/112", "dev", outer_b)
    wg(n1, "set", outer_a, "private-key", files[0], "listen-port", "1", "peer", pubs[1],
       "allowed-ips", "fd00::5:2/128", "endpoint", "127.0.0.1:2")  # fmt: skip
    wg(n2, "set", outer_b, "private-key", files[1], "listen-port", "2", "peer", pubs[0],
       "allowed-ips", "fd00::5:1/128", "endpoint", "127.0.0.1:1")  # fmt: skip
    # inner_a: created in n1 (socket there); inner_b in n2; tunnelled through the outer pair
    start_wg_daemon(n1, inner_a, WGPYD)
    start_wg_daemon(n2, inner_b, WGPYD)
    for ns, name, address in ((n1, inner_a, "192.168.241.1"), (n2, inner_b, "192.168.241.2")):
        ns.run("ip", "addr", "add", f"{address}/24", "dev", name)
        ns.run("ip", "link", "set", "mtu", "1340", "up", "dev", name)
    wg(n1, "set", inner_a, "listen-port", "5", "private-key", files[2], "peer", pubs[3],
       "allowed-ips", "192.168.241.2/32", "endpoint", "[fd00::5:2]:5")  # fmt: skip
    wg(n2, "set", inner_b, "listen-port", "5", "private-key", files[3], "peer", pubs[2],
       "allowed-ips", "192.168.241.1/32", "endpoint", "[fd00::5:1]:5")  # fmt: skip
    for ns, name in ((n1, outer_a), (n2, outer_b)):
        ns.run("ip", "link", "set", name, "up")
    assert ping(n1, "192.168.241.2", count=2).returncode == 0
    # move inner_a into n0, where outer_a's socket is, and point outer_a through it
    n1.run("ip", "link", "set", inner_a, "netns", n0.name)
    n0.run("ip", "addr", "add", "192.168.241.1/24", "dev", inner_a)
    n0.run("ip", "link", "set", "mtu", "1340", "up", "dev", inner_a)
    assert ping(n0, "192.168.241.2", count=1).returncode == 0
    wg(n1, "set", outer_a, "peer", pubs[1], "endpoint", "192.168.241.2:7")
    n2.run("ip", "link", "del", outer_b)
    n2.run("ip", "link", "del", inner_b)
    before = wg_dump(n0, inner_a).peers[pubs[3]].tx_bytes
    n0.run("ping", "-W", "1", "-c", "10", "-f", "192.168.241.2", check=False)
    time.sleep(1)
    after = wg_dump(n0, inner_a).peers[pubs[3]].tx_bytes
    # the kernel: ~50 kB for these ten pings (Debian's 6.1 in QEMU); netns.sh allows 70 kB
    assert after - before < 70000


def test_icmp_unreachable_to_a_local_sender_comes_from_its_own_address(
    netns_factory: Callable[[], Netns],
) -> None:
    """On the kernel (Debian's 6.1 in QEMU) a local ping to an address no peer has prints
    "From 10.77.0.1 icmp_seq=1 Destination Host Unreachable" (and ENOKEY from sendmsg, which
    a TUN cannot give): the error comes from the interface's own address."""
    ns = netns_factory()
    ifname = unique_ifname()
    start_wg_daemon(ns, ifname, WGPYD)
    wg(ns, "set", ifname, "private-key", str(write_secret(ns, "key", genkey())))
    ns.run("ip", "addr", "add", "10.77.0.1/24", "dev", ifname)
    ns.run("ip", "-6", "addr", "add", "fd77::1/64", "dev", ifname, "nodad")
    ns.run("ip", "link", "set", ifname, "up")
    v4 = ns.run("ping", "-c", "1", "-W", "1", "10.77.0.5", check=False)
    assert "From 10.77.0.1 icmp_seq=1 Destination Host Unreachable" in v4.stdout, v4.stdout
    v6 = ns.run("ping", "-c", "1", "-W", "1", "fd77::5", check=False)
    assert "From fd77::1 icmp_seq=1 Destination unreachable: Address unreachable" in v6.stdout, (
        v6.stdout
    )
