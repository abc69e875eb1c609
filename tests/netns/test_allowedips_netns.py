"""Cryptokey routing (AllowedIPs) in real network namespaces, checked against wireguard-go.

Topology (every test builds its own)::

    S1 (wireguard-go) ---veth 10.99.1.0/24--- H (hub) ---veth 10.99.2.0/24--- S2 (wireguard-go)

The hub daemon is parametrized over wgpyd and wireguard-go; the spokes always run wireguard-go.
Whatever passes against wireguard-go is the expected behaviour (docs/wireguard-behaviour.md §1).

Tunnel addressing:

* H: 10.100.0.1/16 on its wg interface (so 10.100.0.0/16 is routed into it); peers
  S1 = 10.100.0.0/16 and S2 = 10.100.5.0/24 (the more specific prefix).
* S1: 10.100.7.1/16 (inside S1's /16, outside S2's /24); peer H = 10.100.0.1/32.
* S2: 10.100.5.1/16 (inside S2's /24); peer H = 10.100.0.1/32.

Besides whether a ping is answered, the tests read the packet counters of the TUN devices:
the kernel counts a packet in a TUN's rx_packets when the daemon writes a decrypted packet to
it, and in tx_packets when it hands the daemon a packet to send. Keepalives and handshakes never
touch the TUN, so these counters tell exactly which daemon delivered which inner packets.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import pytest

from tests.netns.harness import (
    WIREGUARD_GO,
    Netns,
    WgDaemon,
    genkey,
    pubkey,
    start_wg_daemon,
    unique_ifname,
    veth_pair,
    wait_for,
    wg,
    wg_dump,
    write_secret,
)

pytestmark = pytest.mark.netns

WGPYD: Final[tuple[str, ...]] = (sys.executable, "-m", "wgpy.daemon", "-f")
HUB_DAEMONS: Final[dict[str, tuple[str, ...]]] = {"wgpyd": WGPYD, "wireguard-go": WIREGUARD_GO}

H_ADDR: Final = "10.100.0.1"
S1_ADDR: Final = "10.100.7.1"
S2_ADDR: Final = "10.100.5.1"
S1_PREFIX: Final = "10.100.0.0/16"
S2_PREFIX: Final = "10.100.5.0/24"


@pytest.fixture(params=list(HUB_DAEMONS))
def hub_daemon(request: pytest.FixtureRequest) -> tuple[str, tuple[str, ...]]:
    """(name, command) of the hub's daemon; the spokes always run wireguard-go."""
    name: str = request.param
    return name, HUB_DAEMONS[name]


# ---------------------------------------------------------------------------------------------
# topology


@dataclass
class Node:
    """One WireGuard interface: its namespace, daemon, keys and where peers reach it."""

    ns: Netns
    ifname: str
    daemon: WgDaemon
    private_key: str
    public_key: str
    port: int
    underlay: str

    def set(self, *args: str) -> str:
        """`wg set IFNAME ARGS...` in this node's namespace."""
        return wg(self.ns, "set", self.ifname, *args)

    def allowed_ips(self) -> dict[str, list[str]]:
        """`wg show IFNAME allowed-ips`, parsed: public key -> prefixes as printed."""
        return parse_allowed_ips(wg(self.ns, "show", self.ifname, "allowed-ips"))

    def tx_bytes(self) -> dict[str, int]:
        """tx_bytes per peer public key, from `wg show IFNAME dump`."""
        return {k: p.tx_bytes for k, p in wg_dump(self.ns, self.ifname).peers.items()}

    def rx_packets(self) -> int:
        """Inner packets the daemon has written to its TUN (delivered to this host)."""
        return link_stats(self.ns, self.ifname)[0]

    def tx_packets(self) -> int:
        """Inner packets the kernel has routed into the TUN (handed to the daemon)."""
        return link_stats(self.ns, self.ifname)[1]

    def diagnostics(self) -> str:
        dump = wg(self.ns, "show", self.ifname, "dump")
        log = self.daemon.log()[-4000:]
        return f"--- wg show {self.ifname} dump ---\n{dump}--- {self.ifname} log ---\n{log}"


@dataclass
class Star:
    h: Node
    s1: Node
    s2: Node
    hub_name: str

    def diagnostics(self) -> str:
        return "\n".join(n.diagnostics() for n in (self.h, self.s1, self.s2))


def parse_allowed_ips(text: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, prefixes = line.partition("\t")
        result[key] = [p for p in prefixes.split() if p != "(none)"]
    return result


def link_stats(ns: Netns, ifname: str) -> tuple[int, int]:
    """(rx_packets, tx_packets) of a link, from `ip -j -s link show`."""
    out = ns.run("ip", "-j", "-s", "link", "show", "dev", ifname).stdout
    stats = json.loads(out)[0]["stats64"]
    return int(stats["rx"]["packets"]), int(stats["tx"]["packets"])


def start_node(ns: Netns, command: Sequence[str], port: int, underlay: str) -> Node:
    ifname = unique_ifname("wga")
    daemon = start_wg_daemon(ns, ifname, command)
    priv = genkey()
    node = Node(ns, ifname, daemon, priv, pubkey(priv), port, underlay)
    key_file = write_secret(ns, f"{ifname}.key", priv)
    node.set("private-key", str(key_file), "listen-port", str(port))
    return node


def add_peer(node: Node, other: Node, allowed_ips: str) -> None:
    node.set(
        "peer",
        other.public_key,
        "allowed-ips",
        allowed_ips,
        "endpoint",
        f"{other.underlay}:{other.port}",
    )


def addr_up(node: Node, *addrs: str) -> None:
    # No IPv6 link-local address (wgpyd and the kernel's wg device do the same): otherwise the
    # kernel sends router solicitations over the TUN at random moments, which would show up in
    # the packet counters the tests compare.
    node.ns.run("sysctl", "-qw", f"net.ipv6.conf.{node.ifname}.addr_gen_mode=1")
    for addr in addrs:
        node.ns.run("ip", "addr", "add", addr, "dev", node.ifname)
    node.ns.run("ip", "link", "set", node.ifname, "up")


def build_star(netns_factory: Callable[[], Netns], hub_daemon: tuple[str, tuple[str, ...]]) -> Star:
    """H (hub daemon under test) with spokes S1 and S2 (wireguard-go), handshakes done."""
    h_ns, s1_ns, s2_ns = netns_factory(), netns_factory(), netns_factory()
    veth_pair(h_ns, s1_ns, "10.99.1.1", "10.99.1.2")
    veth_pair(h_ns, s2_ns, "10.99.2.1", "10.99.2.2")
    name, command = hub_daemon
    # H is reached at 10.99.1.1 by S1 but at 10.99.2.1 by S2: the spokes set their endpoints
    # for H explicitly below instead of using h.underlay.
    h = start_node(h_ns, command, 51820, "10.99.1.1")
    s1 = start_node(s1_ns, WIREGUARD_GO, 51821, "10.99.1.2")
    s2 = start_node(s2_ns, WIREGUARD_GO, 51822, "10.99.2.2")
    add_peer(h, s1, S1_PREFIX)
    add_peer(h, s2, S2_PREFIX)
    s1.set("peer", h.public_key, "allowed-ips", f"{H_ADDR}/32", "endpoint", "10.99.1.1:51820")
    s2.set("peer", h.public_key, "allowed-ips", f"{H_ADDR}/32", "endpoint", "10.99.2.1:51820")
    addr_up(h, f"{H_ADDR}/16")
    addr_up(s1, f"{S1_ADDR}/16")
    addr_up(s2, f"{S2_ADDR}/16")
    star = Star(h, s1, s2, name)
    for dest in (S1_ADDR, S2_ADDR):
        warm_up(star, h.ns, dest)
    return star


def ping_argv(dest: str, count: int, source: str | None) -> list[str]:
    argv = ["ping", "-n", "-c", str(count), "-W", "1", "-i", "0.2"]
    if source is not None:
        argv += ["-I", source]
    return [*argv, dest]


def ping(ns: Netns, dest: str, *, count: int = 2, source: str | None = None) -> str:
    """Ping and return ping's output (stdout + stderr); never raises on a missing reply."""
    result = ns.run(*ping_argv(dest, count, source), check=False, timeout=count * 1.5 + 10)
    return result.stdout + result.stderr


def answered(output: str) -> bool:
    return " 0 received" not in output and " received" in output


def warm_up(star: Star, ns: Netns, dest: str, source: str | None = None) -> None:
    """Ping until a reply comes (the first packet waits for a handshake)."""
    outputs: list[str] = []

    def one() -> bool:
        outputs.append(ping(ns, dest, count=1, source=source))
        return answered(outputs[-1])

    try:
        wait_for(one, timeout=10, interval=0.1, what=f"a reply from {dest}")
    except TimeoutError as exc:
        raise AssertionError(
            f"[{star.hub_name}] no reply from {dest}:\n{outputs[-1]}\n{star.diagnostics()}"
        ) from exc


def assert_answered(star: Star, ns: Netns, dest: str, source: str | None = None) -> str:
    out = ping(ns, dest, source=source)
    assert answered(out), f"[{star.hub_name}] no reply from {dest}:\n{out}\n{star.diagnostics()}"
    return out


def assert_unanswered(star: Star, ns: Netns, dest: str, source: str | None = None) -> str:
    out = ping(ns, dest, source=source)
    assert " 0 received" in out, (
        f"[{star.hub_name}] unexpected reply from {dest} (source {source}):\n{out}\n"
        f"{star.diagnostics()}"
    )
    return out


# ---------------------------------------------------------------------------------------------
# 1. longest prefix match on the destination


def test_longest_prefix_of_destination_picks_the_peer(
    netns_factory: Callable[[], Netns], hub_daemon: tuple[str, tuple[str, ...]]
) -> None:
    star = build_star(netns_factory, hub_daemon)
    h, s1, s2 = star.h, star.s1, star.s2

    # 10.100.5.1 is in both S1's /16 and S2's /24: the /24 wins. Only S2 owns the address
    # (S1 does not forward), so a reply proves it went to S2.
    rx1, rx2 = s1.rx_packets(), s2.rx_packets()
    assert_answered(star, h.ns, S2_ADDR)
    assert s1.rx_packets() == rx1, "S1 received a packet meant for S2's /24"
    assert s2.rx_packets() >= rx2 + 2

    # 10.100.7.1 is in S1's /16 and outside S2's /24: S1.
    rx1, rx2 = s1.rx_packets(), s2.rx_packets()
    assert_answered(star, h.ns, S1_ADDR)
    assert s2.rx_packets() == rx2, "S2 received a packet meant for S1's /16"
    assert s1.rx_packets() >= rx1 + 2

    # Addresses nobody owns: which spoke's TUN sees the echo requests.
    for dest, winner, loser in (("10.100.5.77", s2, s1), ("10.100.200.9", s1, s2)):
        rx_win, rx_lose = winner.rx_packets(), loser.rx_packets()
        assert_unanswered(star, h.ns, dest)
        assert winner.rx_packets() == rx_win + 2, f"{dest} did not reach the longest match"
        assert loser.rx_packets() == rx_lose, f"{dest} went to the shorter/other prefix"


# ---------------------------------------------------------------------------------------------
# 2. no peer for the destination


def test_destination_held_by_no_peer_is_not_sent(
    netns_factory: Callable[[], Netns], hub_daemon: tuple[str, tuple[str, ...]]
) -> None:
    star = build_star(netns_factory, hub_daemon)
    h, s1, s2 = star.h, star.s1, star.s2
    # routed into the interface, held by no peer
    h.ns.run("ip", "route", "add", "10.201.0.0/16", "dev", h.ifname)
    assert_answered(star, h.ns, S1_ADDR)  # sessions with both spokes are fresh
    assert_answered(star, h.ns, S2_ADDR)

    tx_before = h.tx_bytes()
    handed = h.tx_packets()
    rx1, rx2 = s1.rx_packets(), s2.rx_packets()
    out = assert_unanswered(star, h.ns, "10.201.0.9")
    assert h.tx_packets() >= handed + 2, "the echo requests never reached the hub daemon"
    assert h.tx_bytes() == tx_before, f"a datagram left H for a destination no peer holds: {out}"
    assert (s1.rx_packets(), s2.rx_packets()) == (rx1, rx2)

    if star.hub_name == "wgpyd":
        # like the kernel module: ICMP type 3 code 1 back to the sender
        assert "Destination Host Unreachable" in out, out
    else:
        # wireguard-go drops silently
        assert "Unreachable" not in out, out


# ---------------------------------------------------------------------------------------------
# 3. source address filter on receive


def test_inner_source_outside_sending_peer_allowed_ips_is_dropped(
    netns_factory: Callable[[], Netns], hub_daemon: tuple[str, tuple[str, ...]]
) -> None:
    star = build_star(netns_factory, hub_daemon)
    h, s1 = star.h, star.s1
    # 10.150.0.7: H holds it for nobody (but routes it into the tunnel, so H would answer if
    # it accepted the packet). 10.100.5.9: inside S1's /16, but S2's /24 is the longest match.
    s1.ns.run("ip", "addr", "add", "10.150.0.7/32", "dev", s1.ifname)
    s1.ns.run("ip", "addr", "add", "10.100.5.9/32", "dev", s1.ifname)
    h.ns.run("ip", "route", "add", "10.150.0.0/16", "dev", h.ifname)

    # control: the legitimate source is delivered and answered
    delivered = h.rx_packets()
    warm_up(star, s1.ns, H_ADDR, source=S1_ADDR)
    assert h.rx_packets() > delivered

    for spoofed in ("10.150.0.7", "10.100.5.9"):
        delivered = h.rx_packets()
        assert_unanswered(star, s1.ns, H_ADDR, source=spoofed)
        assert h.rx_packets() == delivered, (
            f"[{star.hub_name}] H delivered packets from S1 with source {spoofed}\n"
            f"{star.diagnostics()}"
        )

    # and the legitimate source still works afterwards
    delivered = h.rx_packets()
    assert_answered(star, s1.ns, H_ADDR, source=S1_ADDR)
    assert h.rx_packets() >= delivered + 2


# ---------------------------------------------------------------------------------------------
# 4. a prefix set on another peer moves to it


def test_prefix_set_on_second_peer_moves_to_it(
    netns_factory: Callable[[], Netns], hub_daemon: tuple[str, tuple[str, ...]]
) -> None:
    star = build_star(netns_factory, hub_daemon)
    h, s1, s2 = star.h, star.s1, star.s2
    # an address of S2 inside S1's /16 but outside S2's /24
    moved_addr = "10.100.9.2"
    s2.ns.run("ip", "addr", "add", f"{moved_addr}/32", "dev", s2.ifname)
    assert_unanswered(star, h.ns, moved_addr)  # still goes to S1, which does not own it

    h.set("peer", s2.public_key, "allowed-ips", f"{S2_PREFIX},{S1_PREFIX}")
    listing = h.allowed_ips()
    assert listing[s2.public_key] == [S2_PREFIX, S1_PREFIX], listing
    assert listing[s1.public_key] == [], listing

    rx1, rx2 = s1.rx_packets(), s2.rx_packets()
    assert_answered(star, h.ns, moved_addr)  # now S2
    assert_unanswered(star, h.ns, S1_ADDR)  # S1 holds nothing any more
    assert s1.rx_packets() == rx1
    assert s2.rx_packets() >= rx2 + 4

    # the move applies to the source filter too: S1's own address now belongs to S2
    delivered = h.rx_packets()
    assert_unanswered(star, s1.ns, H_ADDR, source=S1_ADDR)
    assert h.rx_packets() == delivered


# ---------------------------------------------------------------------------------------------
# 5. AllowedIPs add no routes


def _routes(ns: Netns) -> dict[str, list[str]]:
    def lines(*argv: str) -> list[str]:
        out = ns.run(*argv).stdout.splitlines()
        # IPv6 link-local and multicast routes of the interfaces may appear late; they are not
        # what AllowedIPs could add anyway
        return sorted(ln for ln in out if "fe80::" not in ln and "ff00::" not in ln)

    return {
        "ipv4": lines("ip", "-4", "route", "show", "table", "all"),
        "ipv6": lines("ip", "-6", "route", "show", "table", "all"),
        "rules4": lines("ip", "-4", "rule", "show"),
        "rules6": lines("ip", "-6", "rule", "show"),
    }


def test_allowed_ips_add_no_routes(
    netns_factory: Callable[[], Netns], hub_daemon: tuple[str, tuple[str, ...]]
) -> None:
    star = build_star(netns_factory, hub_daemon)
    h, s1, s2 = star.h, star.s1, star.s2
    before = _routes(h.ns)
    assert any(h.ifname in ln and "10.100.0.0/16" in ln for ln in before["ipv4"]), before

    h.set(
        "peer",
        s1.public_key,
        "allowed-ips",
        f"{S1_PREFIX},10.160.0.0/16,fd00:160::/48",
        "peer",
        s2.public_key,
        "allowed-ips",
        f"{S2_PREFIX},0.0.0.0/0,::/0",
    )
    listing = h.allowed_ips()
    assert "10.160.0.0/16" in listing[s1.public_key], listing
    assert "0.0.0.0/0" in listing[s2.public_key], listing
    assert_answered(star, h.ns, S1_ADDR)  # give a daemon time to do something wrong
    assert _routes(h.ns) == before
    for dest in ("10.160.0.1", "10.33.0.1"):
        got = h.ns.run("ip", "route", "get", dest, check=False)
        assert got.returncode != 0 and "unreachable" in got.stderr, (dest, got)


# ---------------------------------------------------------------------------------------------
# 6. no destination filter on receive


def test_receiver_does_not_filter_destinations(
    netns_factory: Callable[[], Netns], hub_daemon: tuple[str, tuple[str, ...]]
) -> None:
    star = build_star(netns_factory, hub_daemon)
    h, s1, s2 = star.h, star.s1, star.s2

    # (a) a local address of H on another interface (a veth to a 4th namespace X), not H's
    # tunnel address; (b) X itself, behind H: H forwards (X routes everything back via H)
    x_ns = netns_factory()
    veth_pair(h.ns, x_ns, "10.200.0.1", "10.200.0.2")
    x_ns.run("ip", "route", "add", "default", "via", "10.200.0.1")
    h.ns.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    s1.set("peer", h.public_key, "allowed-ips", f"{H_ADDR}/32,10.200.0.0/24,{S2_PREFIX}")
    s1.ns.run("ip", "route", "add", "10.200.0.0/24", "dev", s1.ifname)
    for dest in ("10.200.0.1", "10.200.0.2"):
        out = assert_answered(star, s1.ns, dest)
        assert f"from {dest}" in out, out

    # (c) forwarded by H to another peer: S1 -> H -> S2 and back (hub and spoke)
    s2.set("peer", h.public_key, "allowed-ips", f"{H_ADDR}/32,10.100.7.0/24")
    rx2 = s2.rx_packets()
    out = assert_answered(star, s1.ns, S2_ADDR)
    assert f"from {S2_ADDR}" in out, out
    assert s2.rx_packets() >= rx2 + 2


# ---------------------------------------------------------------------------------------------
# 7. the same prefix on two interfaces


def test_two_interfaces_may_hold_the_same_prefix(
    netns_factory: Callable[[], Netns], hub_daemon: tuple[str, tuple[str, ...]]
) -> None:
    """Each wgpyd/wireguard-go process has its own table, so this fails only for an
    implementation that shares cryptokey routing state between interfaces (or refuses or steals
    a prefix another interface holds)."""
    h_ns, s1_ns, s2_ns = netns_factory(), netns_factory(), netns_factory()
    veth_pair(h_ns, s1_ns, "10.99.1.1", "10.99.1.2")
    veth_pair(h_ns, s2_ns, "10.99.2.1", "10.99.2.2")
    name, command = hub_daemon
    # two hub interfaces (two daemons) in H; S1 peers with ha, S2 with hb
    ha = start_node(h_ns, command, 51820, "10.99.1.1")
    hb = start_node(h_ns, command, 51830, "10.99.2.1")
    s1 = start_node(s1_ns, WIREGUARD_GO, 51821, "10.99.1.2")
    s2 = start_node(s2_ns, WIREGUARD_GO, 51822, "10.99.2.2")
    add_peer(ha, s1, S1_PREFIX)
    add_peer(hb, s2, S1_PREFIX)
    add_peer(s1, ha, "10.100.0.1/32")
    add_peer(s2, hb, "10.100.0.2/32")
    addr_up(ha, "10.100.0.1/32")
    addr_up(hb, "10.100.0.2/32")
    addr_up(s1, f"{S1_ADDR}/16")
    addr_up(s2, f"{S2_ADDR}/16")
    h_ns.run("ip", "route", "add", f"{S1_ADDR}/32", "dev", ha.ifname, "src", "10.100.0.1")
    h_ns.run("ip", "route", "add", f"{S2_ADDR}/32", "dev", hb.ifname, "src", "10.100.0.2")
    star = Star(ha, s1, s2, name)
    star_b = Star(hb, s1, s2, name)

    assert ha.allowed_ips() == {s1.public_key: [S1_PREFIX]}
    assert hb.allowed_ips() == {s2.public_key: [S1_PREFIX]}
    warm_up(star, h_ns, S1_ADDR)
    warm_up(star_b, h_ns, S2_ADDR)
    assert_answered(star, s1_ns, "10.100.0.1")
    assert_answered(star_b, s2_ns, "10.100.0.2")
    rx1, rx2 = s1.rx_packets(), s2.rx_packets()
    assert_answered(star, h_ns, S1_ADDR)
    assert_answered(star_b, h_ns, S2_ADDR)
    assert s1.rx_packets() >= rx1 + 2 and s2.rx_packets() >= rx2 + 2
    # neither interface took the prefix from the other
    assert ha.allowed_ips() == {s1.public_key: [S1_PREFIX]}
    assert hb.allowed_ips() == {s2.public_key: [S1_PREFIX]}


# ---------------------------------------------------------------------------------------------
# 8. host bits are masked


def test_allowed_ips_host_bits_are_masked(
    netns_factory: Callable[[], Netns], hub_daemon: tuple[str, tuple[str, ...]]
) -> None:
    star = build_star(netns_factory, hub_daemon)
    h, s1, s2 = star.h, star.s1, star.s2
    h.set(
        "peer",
        s1.public_key,
        "allowed-ips",
        "10.100.0.5/16,fd00:100::5/64",
        "peer",
        s2.public_key,
        # the same /24 twice with different host bits is one entry; /0 masks everything
        "allowed-ips",
        "10.100.5.77/24,10.100.5.200/24,1.2.3.4/0,fd00::1/0,10.9.8.7/32",
    )
    listing = h.allowed_ips()
    assert listing[s1.public_key] == ["10.100.0.0/16", "fd00:100::/64"], listing
    assert listing[s2.public_key] == [S2_PREFIX, "0.0.0.0/0", "::/0", "10.9.8.7/32"], listing
    dump = wg_dump(h.ns, h.ifname)
    assert dump.peers[s1.public_key].allowed_ips == ("10.100.0.0/16", "fd00:100::/64")

    # and routing follows the masked prefixes
    assert_answered(star, h.ns, S1_ADDR)
    assert_answered(star, h.ns, S2_ADDR)
