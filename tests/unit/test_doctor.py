"""wgpy.tools.interface.doctor: facts in, ranked findings out (no I/O)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from wgpy import crypto
from wgpy.config import parse_config
from wgpy.tools.files.lint import lint
from wgpy.tools.interface.doctor import (
    Facts,
    Finding,
    diagnose,
    exit_status,
    from_lint,
    render_text,
)
from wgpy.tools.interface.routes import RouteInfo
from wgpy.tools.interface.show import AddressCount, InterfaceView, PeerView

NOW = 1_800_000_000
P1 = "A" * 43 + "="
P2 = "B" * 43 + "="


def _view(
    *peers: PeerView, drops: dict[tuple[str | None, str], int] | None = None
) -> InterfaceView:
    view = InterfaceView("wg0", public_key="C" * 43 + "=", has_private_key=True)
    view.peers = list(peers)
    view.drops = drops
    return view


def _peer(key: str, *allowed: str, handshake: int = NOW - 30, **kw: object) -> PeerView:
    base: dict[str, object] = {"endpoint": "192.0.2.1:51820", "tx_bytes": 1000, "rx_bytes": 900}
    base.update(kw)
    return PeerView(key, allowed_ips=list(allowed), latest_handshake=handshake, **base)  # type: ignore[arg-type]


def _routes(view: InterfaceView, device: str = "wg0") -> dict[str, RouteInfo]:
    from wgpy.tools.interface.doctor import route_addresses

    return {address: RouteInfo(device, "unicast", 254) for address in route_addresses(view)}


def _codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def test_the_usual_layout_is_healthy() -> None:
    view = _view(_peer(P1, "10.0.0.2/32"), _peer(P2, "10.0.0.3/32", "fd00::3/128"), drops={})
    findings = diagnose(Facts(view, NOW, routes=_routes(view)))
    assert {f.severity for f in findings} == {"info"}, findings
    assert _codes(findings) == ["handshake-ok", "handshake-ok"]
    assert exit_status(findings) == 0
    assert render_text(findings).endswith("no problem found\n")


def test_handshake_never_completed_names_the_endpoint_and_causes() -> None:
    view = _view(_peer(P1, "10.0.0.2/32", handshake=0, rx_bytes=0, tx_bytes=444), drops={})
    (finding,) = [f for f in diagnose(Facts(view, NOW, routes=_routes(view))) if f.peer == P1]
    assert (finding.severity, finding.code) == ("error", "handshake-never")
    assert "192.0.2.1:51820" in finding.message
    assert "endpoint tried: 192.0.2.1:51820" in finding.evidence
    assert finding.fix is not None and finding.fix.index("port") < finding.fix.index("firewall")
    assert finding.fix.index("firewall") < finding.fix.index("preshared")


def test_no_attempt_and_no_endpoint_are_info() -> None:
    view = _view(
        _peer(P1, "10.0.0.2/32", handshake=0, tx_bytes=0, rx_bytes=0),
        _peer(P2, "10.0.0.3/32", handshake=0, endpoint=None),
        drops={},
    )
    findings = diagnose(Facts(view, NOW, routes=_routes(view)))
    assert _codes(findings) == ["handshake-not-tried", "handshake-waiting"]
    assert exit_status(findings) == 0


def test_stale_handshake_needs_traffic_during_the_watch() -> None:
    old = NOW - 200
    before = _view(_peer(P1, "10.0.0.2/32", handshake=old, tx_bytes=1000))
    after = _view(_peer(P1, "10.0.0.2/32", handshake=old, tx_bytes=1500), drops={})
    (stale,) = diagnose(Facts(after, NOW, before, 5.0, _routes(after)))
    assert (stale.severity, stale.code) == ("error", "handshake-stale")
    assert "in the last 5 s" in stale.evidence[-1]
    rekey = _view(_peer(P1, "10.0.0.2/32", handshake=NOW - 150, tx_bytes=1500), drops={})
    (warned,) = diagnose(Facts(rekey, NOW, before, 5.0, _routes(rekey)))
    assert warned.severity == "warning"
    # an idle tunnel with an old handshake is fine
    idle = _view(_peer(P1, "10.0.0.2/32", handshake=old, tx_bytes=1000), drops={})
    assert _codes(diagnose(Facts(idle, NOW, before, 5.0, _routes(idle)))) == ["handshake-ok"]
    (unknown,) = diagnose(Facts(idle, NOW, routes=_routes(idle)))  # no --watch: cannot tell
    assert unknown.severity == "info" and "--watch" in unknown.message


def test_disallowed_source_gives_the_wg_set_and_wg_quick_fix() -> None:
    view = _view(
        _peer(P1, "10.0.0.2/32"), _peer(P2, "10.0.0.3/32"), drops={(P1, "disallowed_source"): 5}
    )
    view.sources[(P1, "disallowed_source")] = [
        AddressCount("10.9.9.9", 4),
        AddressCount("10.0.0.3", 1),
    ]
    findings = diagnose(Facts(view, NOW, routes=_routes(view)))
    first, second = [f for f in findings if f.code == "disallowed-source"]
    assert first.severity == "error" and first.peer == P1
    assert "10.9.9.9" in first.message
    assert first.commands == [f"wg set wg0 peer {P1} allowed-ips 10.0.0.2/32,10.9.9.9/32"]
    assert first.config[0].startswith("AllowedIPs = 10.0.0.2/32, 10.9.9.9/32")
    assert first.fix is not None and "fix the source address" in first.fix
    assert f"10.0.0.3 belongs to peer {P2} via 10.0.0.3/32" in second.evidence
    assert second.fix is not None and f"takes it from peer {P2}" in second.fix
    assert exit_status(findings) == 1


def test_disallowed_source_already_fixed_is_info() -> None:
    view = _view(_peer(P1, "10.0.0.2/32", "10.9.9.9/32"), drops={(P1, "disallowed_source"): 1})
    view.sources[(P1, "disallowed_source")] = [AddressCount("10.9.9.9", 1)]
    findings = diagnose(Facts(view, NOW, routes=_routes(view)))
    assert "disallowed-source-fixed" in _codes(findings) and exit_status(findings) == 0


def test_no_peer_names_the_destination_and_its_route() -> None:
    view = _view(_peer(P1, "10.0.0.2/32"), drops={(None, "no_peer"): 3})
    view.destinations[(None, "no_peer")] = [AddressCount("10.0.0.77", 3)]
    findings = diagnose(Facts(view, NOW, routes=_routes(view)))
    (finding,) = [f for f in findings if f.code == "no-peer"]
    assert finding.severity == "warning" and finding.peer is None
    assert "10.0.0.77" in finding.message and "routed into wg0" in finding.message
    assert "ip route get 10.0.0.77: dev wg0" in finding.evidence


def test_other_reasons_get_a_sentence() -> None:
    view = _view(
        _peer(P1, "10.0.0.2/32"),
        drops={
            (None, "handshake_failed"): 2,
            (None, "invalid_mac1"): 7,
            (P1, "replayed_counter"): 1,
        },
    )
    findings = diagnose(Facts(view, NOW, routes=_routes(view)))
    codes = _codes(findings)
    assert codes[:2] == ["drop-invalid_mac1", "drop-handshake_failed"]  # warnings, most first
    assert "drop-replayed_counter" in codes
    mac1 = findings[0]
    assert "7 invalid_mac1 drops on the interface" in mac1.message and mac1.fix


def test_prefix_routed_elsewhere_is_a_warning_with_ip_route_add() -> None:
    view = _view(_peer(P1, "10.0.0.2/32", "192.168.5.0/24", "0.0.0.0/0"), drops={})
    routes = _routes(view)
    routes["192.168.5.0"] = RouteInfo("eth0", "unicast", 254, "10.1.1.1")
    findings = diagnose(Facts(view, NOW, routes=routes))
    (finding,) = [f for f in findings if f.code == "not-routed"]
    assert finding.peer == P1 and finding.commands == ["ip route add 192.168.5.0/24 dev wg0"]
    assert "ip route get 192.168.5.0: via 10.1.1.1 dev eth0" in finding.evidence


def test_not_in_this_namespace_and_not_wgpyd_are_info() -> None:
    view = _view(_peer(P1, "10.0.0.2/32"))
    findings = diagnose(Facts(view, NOW))
    assert _codes(findings) == ["handshake-ok", "routes-skipped", "no-drop-counters"]


def _public(seed: int) -> str:
    return base64.b64encode(crypto.public_key(crypto.clamp(bytes([seed]) * 32))).decode()


def test_lint_findings_ranked_and_json() -> None:
    text = (
        "[Interface]\nPrivateKey = " + "E" * 43 + "=\n"
        "[Peer]\nPublicKey = " + _public(1) + "\nAllowedIPs = 0.0.0.0/0\n"
        "[Peer]\nPublicKey = " + _public(2) + "\nAllowedIPs = 10.0.0.0/8\nFooBar = 1\n"
    )
    findings = from_lint(lint([parse_config(text, "wg0.conf")]))
    assert [f.severity for f in findings] == ["error", "warning"]
    assert _codes(findings) == ["lint-unknown-key", "lint-half-default"]
    assert findings[1].evidence == ["wg0.conf:5 [half-default]"]
    assert json.loads(json.dumps([f.to_json() for f in findings]))[0]["severity"] == "error"
    assert "E" * 43 not in render_text(findings)


def test_cli_on_config_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wgpy.cli import main

    private = base64.b64encode(crypto.clamp(bytes([7]) * 32)).decode()
    psk = base64.b64encode(bytes([9]) * 32).decode()
    good = tmp_path / "good.conf"
    good.write_text(
        f"[Interface]\nPrivateKey = {private}\nAddress = 10.0.0.1/24\n"
        f"[Peer]\nPublicKey = {_public(1)}\nPresharedKey = {psk}\nAllowedIPs = 10.0.0.2/32\n"
    )
    assert main(["doctor", str(good)]) == 0
    assert "no problem found" in capsys.readouterr().out
    bad = tmp_path / "bad.conf"
    bad.write_text(good.read_text() + "AllowedIPs = 0.0.0.0/0\nPresharedKey = nonsense\n")
    assert main(["doctor", str(bad), "--json"]) == 1
    out = capsys.readouterr().out
    assert [f["code"] for f in json.loads(out)][-1] == "lint-half-default"
    assert private not in out and psk not in out
    assert main(["doctor", str(tmp_path / "missing.conf")]) == 2
    assert main(["doctor", str(good), "wg0"]) == 2


def test_live_interface_lint_findings_are_ranked_in() -> None:
    text = (
        "[Interface]\nPrivateKey = " + "E" * 43 + "=\n"
        "[Peer]\nPublicKey = " + _public(1) + "\nAllowedIPs = 10.0.0.2/32, 0.0.0.0/0\n"
    )
    view = _view(_peer(_public(1), "10.0.0.2/32", "0.0.0.0/0"), drops={})
    lint_findings = lint([parse_config(text, "wg0 (live interface)")])
    findings = diagnose(Facts(view, NOW, routes=_routes(view), lint=lint_findings))
    assert _codes(findings) == ["lint-half-default", "handshake-ok"]  # /0 has no route check
    assert findings[0].evidence == ["wg0 (live interface) [half-default]"]
    assert exit_status(findings) == 1


def test_responses_that_do_not_authenticate_are_a_psk_mismatch() -> None:
    view = _view(
        _peer(P1, "10.0.0.2/32", handshake=0, rx_bytes=0, tx_bytes=592, preshared_key=True),
        drops={(P1, "handshake_failed"): 3},
    )
    findings = diagnose(Facts(view, NOW, routes=_routes(view)))
    first = findings[0]
    assert (first.severity, first.code, first.peer) == ("error", "handshake-failing", P1)
    assert "preshared key mismatch" in first.message
    assert "handshake_failed ×3 from this peer" in first.evidence[0]
    assert "preshared key on this side: set" in first.evidence
    assert first.commands == [f"wg set wg0 peer {P1} preshared-key FILE   # the file the peer uses"]
    assert first.config[0].startswith("PresharedKey = ")
    assert "handshake-never" not in _codes(findings) and exit_status(findings) == 1
    assert "drop-handshake_failed" not in _codes(findings)  # folded into handshake-failing


def test_initiations_answered_but_never_confirmed_are_a_psk_mismatch() -> None:
    view = _view(_peer(P1, "10.0.0.2/32", handshake=0, rx_bytes=444, tx_bytes=276), drops={})
    (finding,) = diagnose(Facts(view, NOW, routes=_routes(view)))
    assert (finding.severity, finding.code) == ("error", "handshake-failing")
    assert "arrived (444 bytes received) and were answered (276 bytes sent)" in finding.evidence[0]
    assert finding.fix is not None and "firewall" in finding.fix


def _mtu_facts(view: InterfaceView, mtu: int, path: int, **kw: object) -> Facts:
    hosts = {"192.0.2.1": RouteInfo("eth0", "unicast", 254, mtu=path)}
    return Facts(view, NOW, routes=_routes(view), mtu=mtu, endpoint_routes=hosts, **kw)  # type: ignore[arg-type]


def test_mtu_larger_than_the_path_allows_is_a_warning_with_the_fix() -> None:
    view = _view(_peer(P1, "10.0.0.2/32"), drops={(None, "send_failed"): 4})
    findings = diagnose(_mtu_facts(view, 1420, 1400))
    (finding,) = [f for f in findings if f.code == "mtu-too-large"]
    assert finding.severity == "warning" and finding.peer == P1
    assert "1400 - 60 = 1340" in finding.message
    assert finding.commands == ["ip link set wg0 mtu 1340"]
    assert finding.config == ["MTU = 1340   # in [Interface]"]
    assert "ip route get 192.0.2.1: dev eth0 mtu 1400" in finding.evidence
    assert any("send_failed ×4" in line and "EMSGSIZE" in line for line in finding.evidence)
    # IPv6 outer: 80 bytes
    six = _view(_peer(P1, "10.0.0.2/32", endpoint="[2001:db8::1]:51820"), drops={})
    hosts = {"2001:db8::1": RouteInfo("eth0", "unicast", 254, mtu=1480)}
    facts = Facts(six, NOW, routes=_routes(six), mtu=1420, endpoint_routes=hosts)
    (v6,) = [f for f in diagnose(facts) if f.code == "mtu-too-large"]
    assert v6.commands == ["ip link set wg0 mtu 1400"]


def test_mtu_that_fits_or_a_path_through_the_tunnel_is_not_flagged() -> None:
    view = _view(_peer(P1, "10.0.0.2/32"), drops={})
    assert "mtu-too-large" not in _codes(diagnose(_mtu_facts(view, 1420, 1500)))
    assert "mtu-too-large" not in _codes(diagnose(_mtu_facts(view, 1420, 1480)))
    tunnel = {"192.0.2.1": RouteInfo("wg0", "unicast", 51820, mtu=1420)}
    facts = Facts(view, NOW, routes=_routes(view), mtu=1420, endpoint_routes=tunnel)
    assert _codes(diagnose(facts)) == ["handshake-ok"]


def test_roaming_without_keepalive_is_a_warning() -> None:
    before = _view(_peer(P1, "10.0.0.2/32", endpoint="198.51.100.7:40000"))
    after = _view(_peer(P1, "10.0.0.2/32", endpoint="198.51.100.7:40111"), drops={})
    findings = diagnose(Facts(after, NOW, before, 10.0, _routes(after)))
    (finding,) = [f for f in findings if f.code == "keepalive-roaming"]
    assert finding.severity == "warning" and finding.peer == P1
    assert "198.51.100.7:40000 → 198.51.100.7:40111" in finding.evidence[0]
    # one side only: whether the peer keeps the tunnel alive itself is not visible here, so
    # doctor says so rather than recommending a keepalive on this side
    assert "cannot see" in finding.message and finding.commands == [] and finding.config == []
    assert finding.fix is not None and "PEER.conf" in finding.fix
    kept = _view(
        _peer(P1, "10.0.0.2/32", endpoint="198.51.100.7:40111", persistent_keepalive=25), drops={}
    )
    assert "keepalive-roaming" not in _codes(diagnose(Facts(kept, NOW, before, 10.0, None)))


def test_private_endpoint_without_keepalive_is_info() -> None:  # one side only
    view = _view(
        _peer(P1, "10.0.0.2/32", endpoint="192.168.1.20:51820"),
        _peer(P2, "10.0.0.3/32", endpoint="100.64.3.4:51820", persistent_keepalive=25),
        drops={},
    )
    findings = diagnose(Facts(view, NOW, routes=_routes(view)))
    (finding,) = [f for f in findings if f.code == "keepalive-nat"]
    assert finding.severity == "info" and finding.peer == P1 and exit_status(findings) == 0


def test_kernel_interface_without_a_watch_says_to_start_one() -> None:
    view = _view(_peer(P1, "10.0.0.2/32"))
    view.kernel = {"watch": False, "link_counters": {}}
    (finding,) = [f for f in diagnose(Facts(view, NOW)) if f.code == "no-drop-counters"]
    assert "wgpy watch wg0" in finding.message and finding.fix is not None


def _no_peer_finding(view: InterfaceView, address: str, **kw: object) -> Finding:
    view.drops = {(None, "no_peer"): 3}
    view.destinations[(None, "no_peer")] = [AddressCount(address, 3)]
    findings = diagnose(Facts(view, NOW, routes=_routes(view), **kw))  # type: ignore[arg-type]
    (finding,) = [f for f in findings if f.code == "no-peer"]
    return finding


def test_no_peer_with_one_peer_names_it_and_its_list() -> None:
    """One peer and a destination outside the interface's subnet: the fix adds it to that
    peer, with its real key and current list (no PEER or CURRENT placeholder)."""
    view = _view(_peer(P1, "10.0.0.2/32", "fd00::2/128"))
    finding = _no_peer_finding(view, "192.168.9.4", addresses=["10.0.0.1/24"])
    assert finding.commands == [
        f"wg set wg0 peer {P1} allowed-ips 10.0.0.2/32,fd00::2/128,192.168.9.4/32"
    ]
    assert finding.config[0].startswith("AllowedIPs = 10.0.0.2/32, fd00::2/128, 192.168.9.4/32")
    assert finding.fix is not None and P1 in finding.fix and "only peer" in finding.fix
    assert "PEER" not in " ".join(finding.commands) and "CURRENT" not in " ".join(finding.config)


def test_no_peer_in_the_subnet_of_a_spoke_gives_its_hub_the_subnet() -> None:
    """A spoke (one peer, the hub, holding 10.0.0.1/32) pinging another spoke 10.0.0.3 of its
    own Address subnet: the hub should carry the whole subnet, which replaces the /32s it
    covers; the /32 alone is the alternative."""
    view = _view(_peer(P1, "10.0.0.1/32", "fd00::1/128"))
    finding = _no_peer_finding(view, "10.0.0.3", addresses=["10.0.0.2/24", "fd00::2/64"])
    assert finding.commands[0] == f"wg set wg0 peer {P1} allowed-ips fd00::1/128,10.0.0.0/24"
    assert (
        finding.commands[1]
        == f"wg set wg0 peer {P1} allowed-ips 10.0.0.1/32,fd00::1/128,10.0.0.3/32"
    )
    assert finding.config[0].startswith("AllowedIPs = fd00::1/128, 10.0.0.0/24")
    assert finding.fix is not None and "10.0.0.0/24" in finding.fix and "hub" in finding.fix


def test_no_peer_in_the_subnet_of_a_hub_says_both_and_why() -> None:
    """Several peers holding one address each (a hub's layout): the destination is most likely
    a spoke this interface does not know yet (its /32 on that spoke's [Peer]); if this
    interface is a spoke of a mesh whose hub is among the peers, the hub wants the subnet.
    doctor cannot tell which from the interface: it says both, and why."""
    view = _view(_peer(P1, "10.0.0.2/32"), _peer(P2, "10.0.0.3/32"))
    finding = _no_peer_finding(view, "10.0.0.9", addresses=["10.0.0.1/24"])
    assert finding.commands == [
        "wg set wg0 peer SPOKE allowed-ips CURRENT,10.0.0.9/32   # on a hub: the spoke using "
        "10.0.0.9",
        "wg set wg0 peer HUB allowed-ips CURRENT,10.0.0.0/24   # on a spoke: its hub",
    ]
    assert finding.fix is not None
    assert "10.0.0.9/32" in finding.fix and "10.0.0.0/24" in finding.fix
    assert "cannot tell" in finding.fix


def test_no_peer_with_unknown_addresses_says_both() -> None:
    """The interface's addresses could not be read (another namespace): with one peer the
    /32 is given, and the subnet named as the fix if the destination is in the tunnel's own
    subnet."""
    view = _view(_peer(P1, "10.0.0.1/32"))
    finding = _no_peer_finding(view, "10.0.0.3")
    assert finding.commands == [f"wg set wg0 peer {P1} allowed-ips 10.0.0.1/32,10.0.0.3/32"]
    assert finding.fix is not None and "could not read" in finding.fix and "subnet" in finding.fix


def test_lint_findings_carry_lints_own_fix() -> None:
    """Inside doctor a lint finding's fix is lint's own fix text, not a pointer to lint."""
    text = (
        "[Interface]\nPrivateKey = " + "E" * 43 + "=\nTable = off\n"
        "[Peer]\nPublicKey = " + _public(1) + "\nAllowedIPs = 0.0.0.0/0\n"
        "[Peer]\nPublicKey = " + _public(2) + "\nAllowedIPs = 10.0.0.0/8\nFooBar = 1\n"
    )
    findings = from_lint(lint([parse_config(text, "wg0.conf")]))
    by_code = {f.code: f for f in findings}
    half = by_code["lint-half-default"]
    assert half.message == "0.0.0.0/0 without ::/0: IPv6 traffic bypasses the tunnel"
    assert half.fix == "add ::/0 to send it through, or block it"
    assert by_code["lint-no-route"].fix is not None
    assert "PostUp = ip route add 10.0.0.0/8 dev %i" in by_code["lint-no-route"].fix
    assert by_code["lint-unknown-key"].fix is not None
    for finding in findings:
        assert finding.fix and "see `wgpy lint`" not in finding.fix, finding


def _spoke_file(tmp: Path, name: str, keepalive: int | None, endpoint: bool = True) -> Path:
    """A spoke's config with a [Peer] for the hub (wg0's key "C...=") as given."""
    private = base64.b64encode(crypto.clamp(bytes([5]) * 32)).decode()
    lines = ["[Interface]", f"PrivateKey = {private}", "Address = 10.0.0.2/24", "[Peer]"]
    lines += ["PublicKey = " + "C" * 43 + "=", "AllowedIPs = 10.0.0.0/24"]
    if endpoint:
        lines.append("Endpoint = 192.0.2.1:51820")
    if keepalive is not None:
        lines.append(f"PersistentKeepalive = {keepalive}")
    path = tmp / f"{name}.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_keepalive_advice_with_the_peers_own_config(tmp_path: Path) -> None:
    """A hub sees spokes at private addresses without a keepalive of its own: with a spoke's
    config doctor knows whether the spoke keeps the tunnel alive itself (nothing to do) or
    should (the fix goes in the spoke's file, on the side behind NAT, not on the hub)."""
    from wgpy.config import load
    from wgpy.tools.interface.doctor import peer_sides

    spoke = _public(5)
    view = _view(_peer(spoke, "10.0.0.2/32", endpoint="192.168.1.20:40000"), drops={})
    alive = peer_sides(view, [load(_spoke_file(tmp_path, "alive", 25))])
    assert set(alive) == {spoke}
    findings = diagnose(Facts(view, NOW, routes=_routes(view), peer_sides=alive))
    assert "keepalive-nat" not in _codes(findings), findings
    idle = peer_sides(view, [load(_spoke_file(tmp_path, "idle", None))])
    findings = diagnose(Facts(view, NOW, routes=_routes(view), peer_sides=idle))
    (finding,) = [f for f in findings if f.code == "keepalive-nat"]
    assert "idle.conf" in " ".join(finding.config) and finding.config[0].startswith(
        "PersistentKeepalive = 25"
    )
    assert finding.commands == [
        f"wg set idle peer {'C' * 43}= persistent-keepalive 25   # on the peer "
        f"({tmp_path / 'idle.conf'})"
    ]
    # a peer whose own config has no Endpoint for this side waits: the keepalive is this side's
    waiting = peer_sides(view, [load(_spoke_file(tmp_path, "waits", None, endpoint=False))])
    findings = diagnose(Facts(view, NOW, routes=_routes(view), peer_sides=waiting))
    (finding,) = [f for f in findings if f.code == "keepalive-nat"]
    assert finding.commands == [f"wg set wg0 peer {spoke} persistent-keepalive 25"]
    # without it: what doctor cannot see, and no blind recommendation
    (blind,) = [
        f for f in diagnose(Facts(view, NOW, routes=_routes(view))) if f.code == "keepalive-nat"
    ]
    assert "cannot see" in blind.message and blind.commands == []


def test_drop_evidence_lists_what_explains_the_reason_first() -> None:
    """Outgoing packets dropped waiting for a handshake are explained by where they went."""
    view = _view(_peer(P1, "10.0.0.2/32"), drops={(P1, "handshake_timeout"): 4})
    view.sources[(P1, "handshake_timeout")] = [AddressCount("10.0.0.1", 4)]
    view.destinations[(P1, "handshake_timeout")] = [AddressCount("10.0.0.2", 4)]
    (finding,) = [f for f in diagnose(Facts(view, NOW)) if f.code == "drop-handshake_timeout"]
    assert finding.evidence[1:] == ["top destinations: 10.0.0.2 ×4", "top sources: 10.0.0.1 ×4"]
