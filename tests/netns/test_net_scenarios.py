"""`wgpy net check` held to real pings: every scenario of tests/net_scenarios.py built in
namespaces (see netscene.py) and every ordered pair pinged; the model's answer equals the ping
for every pair it lists, the scenario's expectation for all. Then the suggested fixes run as
their `HOST# command` lines, and the pairs they fix ping.

The hosts' daemons alternate between wireguard-go and wgpyd (started by the real wg-quick),
so that every scenario with two or more hosts runs both. All pairs are pinged at once, and a
failed ping is tried again: the network in which every pair has pinged, whose sessions and
learned endpoints the model's answers assume (docs/network.md). The kernel's and wireguard-go's
behaviour is the truth: a mismatch is a fault of the model or of the scenario, never of
this test.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from tests import net_scenarios as ns
from tests.netns import netscene
from tests.netns.harness import Netns
from wgpy.net.check import Endpoint, Group, Report, check
from wgpy.net.fixes import Change, Fix, apply, suggest_all
from wgpy.net.model import Network
from wgpy.tools.network.net_cli import load_network

pytestmark = pytest.mark.netns

DAEMONS: Final = ("wireguard-go", "wgpyd")
Pair = tuple[str, str]


def _cli_check(paths: list[Path]) -> dict[str, Any]:
    """`wgpy net check --json` on ``paths``: the command itself, as users run it."""
    result = subprocess.run(
        [str(netscene.VENV_BIN / "wgpy"), "net", "check", "--json", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _name(layout: netscene.Layout, host: str, lan: object) -> str:
    return layout.short(host) + ("/lan" if lan else "")


def _json_verdicts(layout: netscene.Layout, data: dict[str, Any]) -> dict[Pair, bool]:
    return {
        (
            _name(layout, r["from"]["host"], r["from"]["lan"]),
            _name(layout, r["to"]["host"], r["to"]["lan"]),
        ): r["reachable"]
        for r in data["results"]
    }


def _addresses(layout: netscene.Layout, data: dict[str, Any]) -> set[tuple[str, str]]:
    """Each endpoint the model pairs, with its address (a LAN's representative)."""
    return {
        (_name(layout, r["from"]["host"], r["from"]["lan"]), r["from"]["address"])
        for r in data["results"]
    }


def _group_causes(layout: netscene.Layout, data: dict[str, Any]) -> set[tuple[str, str, str]]:
    """Each group's leg, cause kind and the host it names."""
    return {
        (g["leg"], g["cause"]["kind"], layout.short(g["cause"]["host"])) for g in data["groups"]
    }


def _label(layout: netscene.Layout, endpoint: Endpoint) -> str:
    return _name(layout, endpoint.host, endpoint.lan)


def _verdicts(layout: netscene.Layout, report: Report) -> dict[Pair, bool]:
    return {
        (_label(layout, r.source), _label(layout, r.target)): r.reachable for r in report.results
    }


def _causes(layout: netscene.Layout, report: Report) -> dict[Pair, str]:
    """Each unreachable pair's cause, for messages."""
    out: dict[Pair, str] = {}
    for group in report.groups:
        for result in group.pairs:
            pair = (_label(layout, result.source), _label(layout, result.target))
            out[pair] = f"{group.leg} dies on {group.cause.host}: {group.cause.kind.value}"
    return out


def _differences(
    predicted: dict[Pair, bool], real: dict[Pair, bool], causes: dict[Pair, str]
) -> list[str]:
    return [
        f"{a} → {b}: model {'reachable' if predicted[(a, b)] else causes.get((a, b), 'not')},"
        f" ping {'answered' if real[(a, b)] else 'unanswered'}"
        for a, b in sorted(predicted)
        if predicted[(a, b)] != real[(a, b)]
    ]


@pytest.mark.parametrize("number", range(len(ns.ALL)), ids=[make().name for make in ns.ALL])
def test_predictions_equal_real_pings_and_fixes_work(
    netns_factory: Callable[[], Netns], tmp_path: Path, number: int
) -> None:
    scenario = ns.ALL[number]()
    layout = netscene.lay_out(scenario, tmp_path)
    paths = [layout.paths[h.name] for h in scenario.hosts]

    # the model's answers, from the command and from the library (which the fixes use)
    data = _cli_check(paths)
    predicted = _json_verdicts(layout, data)
    network = load_network([str(p) for p in paths])
    report = check(network)
    assert _verdicts(layout, report) == predicted
    lan_hosts = {
        layout.short(r["from"]["host"]): r["from"]["address"]
        for r in data["results"]
        if r["from"]["lan"]
    }
    daemons = {h.name: DAEMONS[(number + i) % 2] for i, h in enumerate(scenario.hosts)}
    built = netscene.bring_up(layout, netns_factory, lan_hosts, daemons)
    assert set(predicted) <= set(built.pairs()), "the model lists an address nobody has"

    # every pair, listed by the model or not: the model on its pairs, the scenario on all
    real = built.ping_all(built.pairs())
    differences = _differences(predicted, real, _causes(layout, report))
    assert not differences, f"daemons {daemons}:\n" + "\n".join(differences)
    assert {p for p, ok in real.items() if not ok} == scenario.broken

    # what `wgpy collect` reads in each namespace gives the same answers as the files
    snapshots = netscene.parallel(
        lambda host: built.collect(host, tmp_path), [h.name for h in scenario.hosts]
    )
    from_snapshots = _cli_check(snapshots)
    assert _json_verdicts(layout, from_snapshots) == predicted
    assert _addresses(layout, from_snapshots) == _addresses(layout, data)
    assert _group_causes(layout, from_snapshots) == _group_causes(layout, data)

    # each group's fix alone, as the command lines `net check` prints, on a fresh build
    found = suggest_all(report)
    fixes = [found[number] for number in range(len(report.groups))]
    assert [f.commands if f else None for f in fixes] == [
        g["fix"]["commands"] if g["fix"] else None for g in data["groups"]
    ]
    start = _State(network, report, real)
    fresh = True
    tried: list[list[Change]] = []
    for group, fix in zip(report.groups, fixes, strict=True):
        if fix is None or fix.changes in tried:
            continue  # a group may share the fix of one before it
        tried.append(fix.changes)
        first = fresh
        if not fresh:
            built.close()
            built = netscene.bring_up(layout, netns_factory, lan_hosts, daemons)
        fresh = False
        state = _apply_fix(built, layout, start, group, fix)
        if first:
            # then the fixes of what is left, until the model and the pings are clean
            for _ in range(6):
                if not state.report.groups:
                    break
                left = suggest_all(state.report)
                chosen = next(
                    ((g, left[n]) for n, g in enumerate(state.report.groups) if left[n]), None
                )
                assert chosen is not None, "no fix for " + ", ".join(
                    f"{g.cause.kind.value} on {g.cause.host}" for g in state.report.groups
                )
                group_left, fix_left = chosen
                assert fix_left is not None
                state = _apply_fix(built, layout, state, group_left, fix_left)
            assert not state.report.groups and all(state.real.values())


@dataclass
class _State:
    """The model of the network as it stands, and what the pings said of its pairs."""

    network: Network
    report: Report
    real: dict[Pair, bool]


def _apply_fix(
    built: netscene.Built, layout: netscene.Layout, state: _State, group: Group, fix: Fix
) -> _State:
    """Run the fix's command lines, ping the pairs of the model with the fix applied: the
    pings equal its answers, the pairs it promises to fix ping, none that pinged stops."""
    for command in fix.commands:
        built.run_command(command)
    network = apply(state.network, fix.changes)
    report = check(network)
    predicted = _verdicts(layout, report)
    real = built.ping_all(predicted)
    differences = _differences(predicted, real, _causes(layout, report))
    assert not differences, f"after {fix.commands}:\n" + "\n".join(differences)
    wanted = {(_label(layout, r.source), _label(layout, r.target)) for r in group.pairs}
    fixed = {p for p in wanted if real[p]}
    assert len(fixed) == fix.fixes > 0, (fix.commands, wanted, fixed)
    pinged = {p for p, ok in state.real.items() if ok and p in predicted}
    assert pinged <= {p for p, ok in real.items() if ok}, f"{fix.commands} broke a pair"
    return _State(network, report, real)
