"""``wgpy doctor IF`` on real tunnels (issue 18): wgpyd in namespace A, wireguard-go in B
(`two_peer_topology`: tunnel A 10.100.0.1, B 10.100.0.2, each allowed the other's /32 and
/128, so other addresses of 10.100.0.0/24 are routed into the interface but held by no peer).

Each case polls until the condition shows (generous timeouts, no fixed sleeps); no private or
preshared key may appear in any output.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest

from tests.netns.dropkit import WGPYD
from tests.netns.harness import (
    Netns,
    TwoPeers,
    WgNode,
    genpsk,
    ping,
    two_peer_topology,
    wait_for,
    wg,
    write_secret,
)

pytestmark = pytest.mark.netns

EXTRA: Final = "10.100.0.50"  # a second source address on B, outside A's AllowedIPs for B
NOBODY: Final = "10.100.0.77"  # routed into A's interface, held by no peer
WRONG_PORT: Final = 51899


def _doctor(node: WgNode, *extra: str, secrets: tuple[str, ...] = ()) -> tuple[int, Any]:
    result = node.ns.run(
        sys.executable, "-m", "wgpy.cli", "doctor", node.ifname, *extra, "--json", check=False
    )
    assert result.returncode in (0, 1), (result.returncode, result.stdout, result.stderr)
    for secret in (node.private_key, *secrets):
        assert secret not in result.stdout and secret not in result.stderr
    return result.returncode, json.loads(result.stdout)


def _with_code(findings: list[dict[str, Any]], code: str) -> list[dict[str, Any]]:
    return [f for f in findings if f["code"] == code]


def _topology(netns_factory: Callable[[], Netns], *, use_psk: bool = False) -> TwoPeers:
    return two_peer_topology(netns_factory(), netns_factory(), command_a=WGPYD, use_psk=use_psk)


def _pings(ns: Netns, dest: str, *source: str) -> bool:
    result = ns.run("ping", "-c", "1", "-W", "2", *source, dest, check=False, timeout=20)
    return result.returncode == 0


def test_healthy_pair_has_nothing_above_info(netns_factory: Callable[[], Netns]) -> None:
    topo = _topology(netns_factory, use_psk=True)
    wait_for(lambda: _pings(topo.a.ns, topo.b.tunnel4), 30, 0.2, what="a ping through the tunnel")
    assert ping(topo.a.ns, topo.b.tunnel6, count=1, wait=5).returncode == 0
    assert topo.psk is not None
    for node, other in ((topo.a, topo.b), (topo.b, topo.a)):  # wgpyd, then wireguard-go
        status, findings = _doctor(node, secrets=(topo.psk,))
        assert status == 0, findings
        assert {f["severity"] for f in findings} == {"info"}, findings
        (ok,) = _with_code(findings, "handshake-ok")
        assert ok["peer"] == other.public_key, ok
    text = topo.a.ns.run(sys.executable, "-m", "wgpy.cli", "doctor", topo.a.ifname).stdout
    assert "no problem found" in text and topo.psk not in text, text


def test_disallowed_source_names_peer_address_and_a_fix_that_works(
    netns_factory: Callable[[], Netns],
) -> None:
    topo = _topology(netns_factory)
    a, b = topo.a, topo.b
    b.ns.run("ip", "addr", "add", f"{EXTRA}/32", "dev", b.ifname)
    assert not _pings(b.ns, a.tunnel4, "-I", EXTRA)

    def dropped() -> dict[str, Any] | None:
        status, findings = _doctor(a)
        found = _with_code(findings, "disallowed-source")
        if not found:
            _pings(b.ns, a.tunnel4, "-I", EXTRA)
            return None
        assert status == 1, findings
        return found[0]

    finding = wait_for(dropped, 30, 0.2, what="a disallowed-source finding")
    assert finding["severity"] == "error" and finding["peer"] == b.public_key, finding
    assert EXTRA in finding["message"] and f"{EXTRA}/32" in finding["fix"], finding
    (command,) = finding["commands"]
    assert command.startswith(f"wg set {a.ifname} peer {b.public_key} allowed-ips "), command
    assert {"10.100.0.2/32", "fd00:100::2/128", f"{EXTRA}/32"} == set(
        command.rsplit(" ", 1)[1].split(",")
    ), command
    assert any(f"{EXTRA}/32" in line for line in finding["config"]), finding

    argv = shlex.split(command)
    assert argv[0] == "wg"
    wg(a.ns, *argv[1:])
    wait_for(lambda: _pings(b.ns, a.tunnel4, "-I", EXTRA), 30, 0.2, what="the ping after the fix")
    _status, after = _doctor(a)
    assert not _with_code(after, "disallowed-source"), after
    assert _with_code(after, "disallowed-source-fixed"), after


def test_wrong_endpoint_port_never_completes_a_handshake(
    netns_factory: Callable[[], Netns],
) -> None:
    topo = _topology(netns_factory)
    a, b = topo.a, topo.b
    endpoint = f"{b.underlay4}:{WRONG_PORT}"
    wg(a.ns, "set", a.ifname, "peer", b.public_key, "endpoint", endpoint)

    def never() -> dict[str, Any] | None:
        _pings(a.ns, b.tunnel4)
        status, findings = _doctor(a, "--watch", "1")
        found = _with_code(findings, "handshake-never")
        if found:
            assert status == 1, findings
        return found[0] if found else None

    finding = wait_for(never, 30, 0.2, what="a handshake-never finding")
    assert finding["severity"] == "error" and finding["peer"] == b.public_key, finding
    assert endpoint in finding["message"], finding
    assert f"endpoint tried: {endpoint}" in finding["evidence"], finding
    assert "port is wrong" in finding["fix"], finding


def test_destination_routed_in_but_held_by_no_peer(netns_factory: Callable[[], Netns]) -> None:
    topo = _topology(netns_factory)
    a, b = topo.a, topo.b

    def no_peer() -> dict[str, Any] | None:
        assert not _pings(a.ns, NOBODY)
        status, findings = _doctor(a)
        found = [f for f in _with_code(findings, "no-peer") if NOBODY in f["message"]]
        if found:
            assert status == 1, findings
        return found[0] if found else None

    finding = wait_for(no_peer, 30, 0.2, what="a no-peer finding")
    assert finding["severity"] == "warning" and finding["peer"] is None, finding
    assert f"ip route get {NOBODY}: dev {a.ifname}" in finding["evidence"], finding
    assert f"routed into {a.ifname}" in finding["message"], finding
    # A's only peer is B, and NOBODY is in A's own 10.100.0.0/24: B, as A's hub, gets the
    # subnet (replacing the /32 it covers), named by its key with its real list
    assert (
        f"{NOBODY} is in {a.ifname}'s own subnet 10.100.0.0/24 (its Address)"
        in (finding["evidence"])
    ), finding
    subnet, host = finding["commands"]
    prefix = f"wg set {a.ifname} peer {b.public_key} allowed-ips "
    assert subnet == prefix + "fd00:100::2/128,10.100.0.0/24", finding
    assert host == prefix + f"10.100.0.2/32,fd00:100::2/128,{NOBODY}/32", finding
    wg(a.ns, *shlex.split(subnet)[1:])
    _pings(a.ns, NOBODY)  # now sent to B (which has no such address)
    _status, after = _doctor(a)
    assert not _with_code(after, "no-peer"), after
    (fixed,) = _with_code(after, "no-peer-fixed")
    assert fixed["peer"] == b.public_key and "10.100.0.0/24" in fixed["message"], fixed


def test_unreadable_interface_exits_2(netns_factory: Callable[[], Netns]) -> None:
    ns = netns_factory()
    result = ns.run(sys.executable, "-m", "wgpy.cli", "doctor", "nosuch0", check=False)
    assert result.returncode == 2, result
    assert "Unable to access interface nosuch0" in result.stderr, result.stderr


def test_prefix_nothing_routes_in_gets_ip_route_add(netns_factory: Callable[[], Netns]) -> None:
    topo = _topology(netns_factory)
    a, b = topo.a, topo.b
    allowed = "10.100.0.2/32,fd00:100::2/128,192.168.7.0/24"
    wg(a.ns, "set", a.ifname, "peer", b.public_key, "allowed-ips", allowed)
    status, findings = _doctor(a)
    (finding,) = _with_code(findings, "not-routed")
    assert status == 1 and finding["severity"] == "warning", findings
    assert finding["peer"] == b.public_key and "192.168.7.0/24" in finding["message"], finding
    (command,) = finding["commands"]
    assert command == f"ip route add 192.168.7.0/24 dev {a.ifname}", command
    a.ns.run(*shlex.split(command))
    status, findings = _doctor(a)
    assert status == 0 and not _with_code(findings, "not-routed"), findings


def _psk_mismatch(netns_factory: Callable[[], Netns]) -> tuple[TwoPeers, str]:
    """B (wireguard-go) holds another preshared key for A (wgpyd) than A holds for B."""
    topo = _topology(netns_factory, use_psk=True)
    a, b = topo.a, topo.b
    other = genpsk()
    wg(b.ns, "set", b.ifname, "peer", a.public_key, "preshared-key",
       str(write_secret(b.ns, f"{b.ifname}.other.psk", other)))  # fmt: skip
    return topo, other


def _failing(topo: TwoPeers, other: str, pinger: WgNode, dest: str, evidence: str) -> Any:
    """Ping from ``pinger`` until doctor on A reports handshake-failing with ``evidence``."""

    def found() -> dict[str, Any] | None:
        status, findings = _doctor(topo.a, secrets=(topo.psk or "", other))
        failing = _with_code(findings, "handshake-failing")
        if failing and evidence in failing[0]["evidence"][0]:
            assert status == 1, findings
            assert not _with_code(findings, "handshake-never"), findings
            return failing[0]
        _pings(pinger.ns, dest)
        return None

    finding = wait_for(found, 45, 0.2, what=f"handshake-failing with {evidence!r}")
    assert finding["severity"] == "error" and finding["peer"] == topo.b.public_key, finding
    assert "preshared key mismatch" in finding["message"], finding
    assert "preshared key on this side: set" in finding["evidence"], finding
    command = finding["commands"][0]
    assert command.startswith(f"wg set {topo.a.ifname} peer {topo.b.public_key} preshared-key")
    result: dict[str, Any] = finding
    return result


def test_psk_mismatch_seen_by_the_responder(netns_factory: Callable[[], Netns]) -> None:
    """Only B initiates: A (wgpyd) answers B's initiations and is never confirmed. (One side
    initiating per test: a responder does not initiate within 5 s of its last response, so
    with B retrying every 5 s A's own initiations would race with B's.)"""
    topo, other = _psk_mismatch(netns_factory)
    finding = _failing(topo, other, topo.b, topo.a.tunnel4, "were answered")
    assert "firewall" in finding["fix"], finding


def test_psk_mismatch_seen_by_the_initiator(netns_factory: Callable[[], Netns]) -> None:
    """Only A (wgpyd) initiates: B's responses do not authenticate (handshake_failed)."""
    topo, other = _psk_mismatch(netns_factory)
    finding = _failing(topo, other, topo.a, topo.b.tunnel4, "handshake_failed ×")
    assert "did not authenticate" in finding["evidence"][0], finding
    _status, findings = _doctor(topo.a, secrets=(topo.psk or "", other))
    assert not _with_code(findings, "drop-handshake_failed"), findings


def test_mtu_larger_than_the_underlay_allows_and_its_fix(
    netns_factory: Callable[[], Netns],
) -> None:
    topo = _topology(netns_factory)
    a, b = topo.a, topo.b
    a.ns.run("ip", "link", "set", a.veth, "mtu", "1400")  # the interfaces keep 1420
    status, findings = _doctor(a)
    (finding,) = _with_code(findings, "mtu-too-large")
    assert status == 1 and finding["severity"] == "warning", findings
    assert finding["peer"] == b.public_key and "1400 - 60 = 1340" in finding["message"], finding
    assert f"ip route get {b.underlay4}: dev {a.veth} mtu 1400" in finding["evidence"], finding
    (command,) = finding["commands"]
    assert command == f"ip link set {a.ifname} mtu 1340", command
    a.ns.run(*shlex.split(command))
    status, findings = _doctor(a)
    assert status == 0 and not _with_code(findings, "mtu-too-large"), findings


def test_keepalive_advice_knows_the_peers_side_from_its_snapshot(
    netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    """B's endpoint is a private address and A keeps no keepalive for it: from A alone doctor
    says what it cannot see (no blind command); given B's `wg showconf` snapshot, in which B
    keeps the tunnel alive itself, there is nothing to recommend."""
    topo = _topology(netns_factory)
    a, b = topo.a, topo.b
    wait_for(lambda: _pings(a.ns, b.tunnel4), 30, 0.2, what="a ping through the tunnel")
    _status, findings = _doctor(a)
    (blind,) = _with_code(findings, "keepalive-nat")
    assert blind["peer"] == b.public_key and "cannot see the peer's side" in blind["message"]
    assert blind["commands"] == [] and "PEER.conf" in blind["fix"], blind
    wg(b.ns, "set", b.ifname, "peer", a.public_key, "persistent-keepalive", "25")
    snapshot = tmp_path / f"{b.ifname}.conf"
    snapshot.write_text(wg(b.ns, "showconf", b.ifname))
    status, findings = _doctor(a, str(snapshot), secrets=(b.private_key,))
    assert status == 0 and not _with_code(findings, "keepalive-nat"), findings
    # B without its keepalive, and an Endpoint for A: B connects, so the fix goes on B's side
    wg(b.ns, "set", b.ifname, "peer", a.public_key, "persistent-keepalive", "0")
    snapshot.write_text(wg(b.ns, "showconf", b.ifname))
    _status, findings = _doctor(a, str(snapshot), secrets=(b.private_key,))
    (placed,) = _with_code(findings, "keepalive-nat")
    (command,) = placed["commands"]
    assert command.startswith(f"wg set {b.ifname} peer {a.public_key} persistent-keepalive 25")
