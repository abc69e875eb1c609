"""``wgpy explain`` is held to the data path: for random tables and packets, explain's answer is
what the Device does (the property and its checks are in fuzz/explain_world.py; the fuzz target
fuzz/target_explain.py runs the same property for millions of inputs)."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.explain_world import PEERS, ExplainWorld, Op, OpKind, Probe, address_in
from wgpy.allowedips import AllowedIPs
from wgpy.tools.files.explain import Source

EXAMPLES = 2000
WORLD = ExplainWorld(seed=3)


@st.composite
def prefixes(draw: st.DrawFn, earlier: list[str]) -> str:
    """A prefix of either family and any length; often inside an earlier one, so that
    prefixes overlap and nest the way real tables do."""
    nested = draw(st.lists(st.sampled_from(earlier), max_size=4)) if earlier else []
    if nested and draw(st.integers(0, 2)) > 0:
        base = draw(st.sampled_from(nested))
        bits = 128 if ":" in base else 32
        length = draw(st.integers(int(base.split("/")[1]), bits))
        address = address_in(base, draw(st.integers(0, (1 << bits) - 1)), edge=0)
        return f"{address}/{length}"
    v6 = draw(st.booleans())
    bits = 128 if v6 else 32
    length = draw(st.integers(0, bits))
    address = address_in("::/0" if v6 else "0.0.0.0/0", draw(st.integers(0, (1 << bits) - 1)), 0)
    return f"{address}/{length}"


@st.composite
def addresses(draw: st.DrawFn, table: list[str]) -> str:
    """An address anywhere, inside a prefix of the table, or just outside one."""
    if table and draw(st.integers(0, 3)) > 0:
        prefix = draw(st.sampled_from(table))
        bits = 128 if ":" in prefix else 32
        host = draw(st.integers(0, (1 << bits) - 1))
        return address_in(prefix, host, edge=draw(st.sampled_from((0, 0, 1, 2))))
    v6 = draw(st.booleans())
    bits = 128 if v6 else 32
    return address_in("::/0" if v6 else "0.0.0.0/0", draw(st.integers(0, (1 << bits) - 1)), 0)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Op], list[Probe]]:
    ops: list[Op] = []
    table: list[str] = []
    for _ in range(draw(st.integers(0, 12))):
        kinds: tuple[OpKind, ...] = ("add", "add", "add", "remove", "replace", "remove_peer")
        kind = draw(st.sampled_from(kinds))
        peer = draw(st.integers(0, PEERS - 1))
        if kind == "remove_peer":
            ops.append(Op("remove_peer", peer))
            continue
        if kind == "remove" and table and draw(st.booleans()):
            prefix = draw(st.sampled_from(table))
        else:
            prefix = draw(prefixes(table))
        table.append(prefix)
        ops.append(Op(kind, peer, prefix))
    probe = st.builds(
        Probe,
        direction=st.sampled_from(("to", "from")),
        address=addresses(table),
        peer=st.integers(0, PEERS - 1),
    )
    return ops, draw(st.lists(probe, min_size=1, max_size=10))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_explain_says_what_the_device_does(scenario: tuple[list[Op], list[Probe]]) -> None:
    ops, probes = scenario
    WORLD.run(ops, probes)


def test_the_examples_reach_every_answer() -> None:
    """The property is not vacuous: one scenario gets every kind of answer, both ways."""
    world = ExplainWorld(seed=4)
    ops = [
        Op("add", 0, "10.0.0.0/8"),
        Op("add", 1, "10.1.0.0/16"),
        Op("add", 2, "10.1.2.0/24"),
        Op("add", 1, "10.1.2.0/24"),  # moved from peer 2 to peer 1
        Op("add", 3, "fd00::/8"),
        Op("add", 2, "fd00:1::/32"),
        Op("remove", 2, "fd00:1::/32"),
        Op("add", 2, "192.168.0.0/16"),
        Op("remove_peer", 2),
    ]
    probes = [
        Probe("to", "10.1.2.3"),  # peer 1 (moved /24)
        Probe("to", "10.2.0.1"),  # peer 0
        Probe("to", "fd00:1::1"),  # peer 3 (the /32 was removed)
        Probe("to", "192.168.1.1"),  # nobody: peer 2 was removed
        Probe("from", "10.1.2.3", 1),  # delivered
        Probe("from", "10.1.2.3", 0),  # dropped, owner peer 1
        Probe("from", "172.16.0.1", 3),  # dropped, no owner
        Probe("from", "fd00::5", 3),  # delivered
    ]
    world.run(ops, probes)
    assert (world.checked_to, world.checked_from) == (4, 4)
    assert world.hub.drop_counts.total() > 0


def test_a_wrong_explain_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explain that read the table without its most specific prefix (say, a parser that
    dropped the last allowed_ip line) is caught by the property."""
    world = ExplainWorld(seed=4)
    honest = ExplainWorld.source

    def without_last_prefix(self: ExplainWorld) -> Source:
        source = honest(self)
        table: AllowedIPs[str] = AllowedIPs()
        for key in source.peers:
            for prefix in source.table.entries(key):
                if str(prefix) != "10.1.2.0/24":
                    table.insert(prefix, key)
        source.table = table
        return source

    monkeypatch.setattr(ExplainWorld, "source", without_last_prefix)
    ops = [Op("add", 0, "10.0.0.0/8"), Op("add", 1, "10.1.2.0/24")]
    with pytest.raises(AssertionError, match=re.escape("explain: to 10.1.2.3 via peer 0")):
        world.run(ops, [Probe("to", "10.1.2.3")])
    with pytest.raises(AssertionError, match=re.escape("explain: from 10.1.2.3 via peer 1")):
        world.run(ops, [Probe("from", "10.1.2.3", 1)])
    key = base64.b64encode(world.keys[1]).decode()
    assert key in honest(world).peers
