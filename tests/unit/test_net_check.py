"""`wgpy net check` on wg-quick files alone: the forum scenarios' answers, their fixes proven
on the model, the issue's hub-and-spoke case end to end, and bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import net_scenarios as ns
from wgpy.cli import main
from wgpy.net.check import Endpoint, check
from wgpy.net.fixes import apply, suggest
from wgpy.net.model import Network
from wgpy.tools.network.net_cli import load_network


def _name(endpoint: Endpoint) -> str:
    return f"{endpoint.host}/lan" if endpoint.lan else endpoint.host


def _network(tmp_path: Path, scenario: ns.Scenario) -> Network:
    return load_network([str(p) for p in scenario.write(tmp_path)])


def _broken(network: Network) -> set[tuple[str, str]]:
    return {(_name(r.source), _name(r.target)) for r in check(network).results if not r.reachable}


@pytest.mark.parametrize("make", ns.ALL, ids=lambda f: f().name)
def test_offline_answers_match_the_scenario(
    tmp_path: Path, make: Callable[[], ns.Scenario]
) -> None:
    scenario = make()
    network = _network(tmp_path, scenario)
    known = {_name(r.source) for r in check(network).results}
    expected = {(a, b) for a, b in scenario.broken if a in known and b in known}
    assert _broken(network) == expected


@pytest.mark.parametrize("make", ns.ALL, ids=lambda f: f().name)
def test_applying_every_suggested_fix_makes_the_network_clean(
    tmp_path: Path, make: Callable[[], ns.Scenario]
) -> None:
    network = _network(tmp_path, make())
    for _ in range(6):
        report = check(network)
        if not report.groups:
            break
        fix = suggest(report, report.groups[0])
        assert fix is not None, report.groups[0].cause
        assert fix.commands and fix.summary
        before = report.reachable
        network = apply(network, fix.changes)
        assert check(network).reachable > before
    assert check(network).reachable == len(check(network).results)


def test_hub_and_spoke_mistake_names_both_directions_and_one_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(p) for p in ns.hub_and_spoke_mistake().write(tmp_path)]
    assert main(["net", "check", *paths, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    kinds = {(g["cause"]["kind"], g["cause"]["host"], g["leg"]) for g in out["groups"]}
    # a never encrypts for b; b's packets reach a through the hub and a drops them
    assert kinds == {("no_peer", "a", "request"), ("disallowed_source", "a", "request")}
    for group in out["groups"]:
        fix = group["fix"]
        assert fix["changes"] == [
            {
                "kind": "allowed_ip",
                "host": "a",
                "interface": "a",
                "peer": fix["changes"][0]["peer"],
                "prefixes": ["10.0.0.0/24"],
                "version": 4,
                "in_interface": None,
                "out_interface": None,
            }
        ]
        assert any(line.startswith("a.conf:") and "10.0.0.0/24" in line for line in fix["config"])
        assert any("wg set a peer" in c for c in fix["commands"])
    # the fix written into a.conf makes the whole network check clean
    a_conf = tmp_path / "a.conf"
    a_conf.write_text(
        a_conf.read_text().replace("AllowedIPs = 10.0.0.1/32", "AllowedIPs = 10.0.0.0/24")
    )
    assert main(["net", "check", *paths]) == 0
    assert "6 reachable, 0 not" in capsys.readouterr().out


def test_text_output_fits_80_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(p) for p in ns.forward_chain_drop().write(tmp_path)]
    assert main(["net", "check", *paths]) == 1
    out = capsys.readouterr().out
    assert "FORWARD chain drops" in out
    assert "iptables -I FORWARD -i hub -o hub -j ACCEPT" in out
    long = [line for line in out.splitlines() if len(line) > 80 and "# wg set" not in line]
    assert long == []


def test_forwarding_off_rests_on_a_named_assumption(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(p) for p in ns.forwarding_off_hub().write(tmp_path)]
    assert main(["net", "check", *paths]) == 1
    out = capsys.readouterr().out
    assert "IP forwarding is off" in out
    assert "rests on an assumption" in out and "Linux's default" in out
    assert "sysctl -w net.ipv4.ip_forward=1" in out


def test_trace_shows_each_hop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(p) for p in ns.hub_and_spoke_mistake().write(tmp_path)]
    assert main(["net", "trace", *paths, "from", "b", "to", "10.0.0.2"]) == 1
    out = capsys.readouterr().out
    hops = [line.split()[:2] for line in out.splitlines()[1:] if line.startswith("  ")]
    assert ["b", "AllowedIPs"] in hops and ["hub", "FORWARD"] in hops
    assert [h for h in hops if h[0].isupper()][-1][0] == "DROPPED:"
    assert ["a", "source"] in hops
    assert main(["net", "trace", *paths, "from", "hub", "to", "10.0.0.2", "--json"]) == 0
    out_json = json.loads(capsys.readouterr().out)
    assert out_json["reachable"] and out_json["reply"]["verdict"] == "delivered"


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda p: p.write_text('{"wgpy_snapshot": 99, "host": "x"}'), "format 99"),
        (lambda p: p.write_text('{"wgpy_snapshot": 1, "host": "x", "interf'), "not valid JSON"),
        (lambda p: p.write_text("[Interface]\nPrivatKey = x\n"), "PrivatKey"),
        (lambda p: p.unlink(), "No such file"),
    ],
    ids=["other-version", "truncated", "typo", "missing"],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mangle: Callable[[Path], object],
    message: str,
) -> None:
    paths = ns.healthy_hub(2).write(tmp_path)
    mangle(paths[1])
    assert main(["net", "check", *map(str, paths)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and message in lines[0] and paths[1].name in lines[0]


def test_two_inputs_claiming_one_key_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = ns.healthy_hub(2).write(tmp_path)
    twin = tmp_path / "twin.conf"
    twin.write_text(paths[1].read_text())
    assert main(["net", "check", *map(str, paths), str(twin)]) == 2
    err = capsys.readouterr().err
    assert "both claim the public key" in err and err.count("\n") == 1


def test_map_is_deterministic_and_colours_each_cause(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(p) for p in ns.hub_and_spoke_mistake().write(tmp_path)]
    out = tmp_path / "net.svg"
    assert main(["net", "map", *paths, "-o", str(out)]) == 0
    first = out.read_bytes()
    assert main(["net", "map", *paths, "-o", str(out)]) == 0
    assert out.read_bytes() == first
    svg = first.decode()
    from wgpy.tools.files.aipmap import PALETTE
    from wgpy.tools.network.netmap import REACHABLE

    cells = [line for line in svg.splitlines() if line.startswith("<rect") and "→" in line]
    assert len(cells) == 6
    assert sum(REACHABLE in c for c in cells) == 4
    assert {c.split('fill="')[1][:7] for c in cells if REACHABLE not in c} == set(PALETTE[:2])
    assert "no peer's AllowedIPs hold the destination" in svg
    assert "PrivateKey" not in svg and "private" not in svg.lower()
    assert main(["net", "map", *paths, "--format", "html"]) == 0
    assert capsys.readouterr().out.startswith("<!DOCTYPE html>")
    assert main(["net", "map", str(tmp_path / "missing.conf"), "-o", str(out)]) == 2
    assert out.read_bytes() == first  # nothing written on bad input


def test_lint_and_doctor_of_a_hub_and_its_spokes_see_the_relay_mistake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(p) for p in ns.hub_and_spoke_mistake().write(tmp_path)]
    assert main(["lint", *paths, "--json"]) == 1
    findings = [f for f in json.loads(capsys.readouterr().out) if f["code"] == "unreachable"]
    assert {(Path(f["file"]).name, f["severity"]) for f in findings} == {("a.conf", "error")}
    assert len(findings) == 2 and all("10.0.0.0/24" in f["fix"] for f in findings)
    assert main(["doctor", *paths]) == 1
    assert "cannot ping" in capsys.readouterr().out
    # a healthy hub and its spokes stay clean
    (tmp_path / "healthy").mkdir()
    healthy = [str(p) for p in ns.healthy_hub(3).write(tmp_path / "healthy")]
    assert main(["lint", *healthy]) == 0, capsys.readouterr().out


def test_lint_warns_when_the_answer_rests_on_an_assumption(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(p) for p in ns.forwarding_off_hub().write(tmp_path)]
    assert main(["lint", *paths, "--json"]) == 1
    findings = [f for f in json.loads(capsys.readouterr().out) if f["code"] == "unreachable"]
    assert findings and {f["severity"] for f in findings} == {"warning"}
    assert all("assumed" in f["message"] and "forwarding" in f["message"] for f in findings)


def test_a_group_that_dies_downstream_gets_the_fix_of_the_mistake_upstream(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two peers with one prefix on the hub: the hub's packets for s1 go to s2 and die there
    (forwarding off); enabling forwarding on s2 would not help — moving the prefix back does."""
    paths = [str(p) for p in ns.duplicate_prefix().write(tmp_path)]
    assert main(["net", "check", *paths, "--json"]) == 1
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert [g["cause"]["kind"] for g in groups] == ["disallowed_source", "forwarding_off"]
    assert groups[0]["fix"]["changes"] == groups[1]["fix"]["changes"]
    assert groups[0]["fix"]["changes"][0]["host"] == "hub"
    assert main(["net", "check", *paths]) == 1
    out = capsys.readouterr().out
    assert "the same change as above" in out
    assert "assumption: assumed" not in out


def test_no_session_starts_when_neither_side_has_an_endpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two peers that list each other but neither knows where the other is: no initiation
    is ever sent (the kernel: "Destination address required"), both directions fail, and the
    fix gives one side an Endpoint."""
    scenario = ns.no_endpoints()
    paths = [str(p) for p in scenario.write(tmp_path)]
    assert main(["net", "check", *paths, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["reachable"] == 0
    assert {g["cause"]["kind"] for g in out["groups"]} == {"no_endpoint"}
    fix = out["groups"][0]["fix"]
    assert fix["changes"][0]["kind"] == "endpoint" and "endpoint ADDRESS:PORT" in fix["commands"][0]
    # with one Endpoint (y knows where x is) every pair works, whoever started
    (tmp_path / "y.conf").write_text(
        (tmp_path / "y.conf")
        .read_text()
        .replace("AllowedIPs = 10.3.0.1/32", "AllowedIPs = 10.3.0.1/32\nEndpoint = 192.0.2.1:51820")
    )
    assert main(["net", "check", *paths]) == 0
    assert main(["net", "trace", *paths, "from", "x", "to", "10.3.0.2"]) == 0
    capsys.readouterr()
