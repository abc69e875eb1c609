"""``wgpy show``: the drops read at 80 columns and piped; addresses; ``--wide``; wg's wording."""

from __future__ import annotations

import io
import json
import re

from rich.console import Console

from wgpy.events import DROP_REASON_HELP, DropReason
from wgpy.tools.interface.show import (
    InterfaceView,
    PeerView,
    parse_stats,
    print_view,
    render_text,
    to_json,
)

ALICE = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
BOB = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="
LONG_V6 = "fd00:1234:5678:9abc:def0:1234:5678:9abc"


def stats() -> dict[str, object]:
    """A wgpy-stats answer: every reason once for bob, disallowed sources from alice."""
    drops: list[dict[str, object]] = [
        {"peer": BOB, "reason": reason.value, "count": 1} for reason in DropReason
    ]
    drops.append(
        {
            "peer": ALICE,
            "reason": "disallowed_source",
            "count": 1234567,
            "sources": [
                {"address": "10.100.0.99", "count": 1234000, "error": 0},
                *({"address": LONG_V6, "count": 100, "error": 3} for _ in range(4)),
            ],
            "destinations": [{"address": "10.100.0.1", "count": 1234567, "error": 0}],
        }
    )
    drops.append(
        {
            "peer": None,
            "reason": "no_peer",
            "count": 3,
            "sources": [{"address": "10.100.0.1", "count": 3, "error": 0}],
            "destinations": [{"address": "10.100.0.77", "count": 3, "error": 0}],
        }
    )
    owners = [
        {"peer": ALICE, "owner": None, "count": 1234000},
        {"peer": ALICE, "owner": BOB, "count": 567},
    ]
    return {"interface": "wg0", "drops": drops, "disallowed_owners": owners}


def view() -> InterfaceView:
    shown = InterfaceView("wg0", peers=[PeerView(ALICE), PeerView(BOB)])
    parse_stats(shown, stats())
    return shown


def printed(shown: InterfaceView, width: int, **options: bool) -> str:
    out = io.StringIO()
    print_view(shown, as_json=False, console=Console(file=out, width=width), **options)
    return out.getvalue()


def test_drops_fit_80_columns_with_every_meaning_and_nothing_truncated() -> None:
    text = printed(view(), 80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert "…" not in text, text
    flat = " ".join(text.split())
    for reason, meaning in DROP_REASON_HELP.items():
        assert f"{reason.value} ×1" in flat
        assert " ".join(meaning.split()) in flat, reason
    # keys and addresses whole, owners named in full, counts as given
    assert f"  peer {ALICE}" in lines and f"  peer {BOB}" in lines
    assert "disallowed_source ×1234567" in flat
    assert "from: 10.100.0.99 ×1234000," in flat and f"{LONG_V6} ≤100" in flat
    assert "to: 10.100.0.1 ×1234567" in flat
    assert f"sources held by: no peer ×1234000, {BOB} ×567" in flat
    assert "from: 10.100.0.1 ×3" in flat and "to: 10.100.0.77 ×3" in flat
    # no table of empty bordered rows: far fewer lines than the reasons' meanings would take
    assert not any(re.fullmatch(r"[│ …]*", line) and line.strip() for line in lines)


def test_drops_at_narrower_and_wider_widths() -> None:
    for width in (60, 100, 200):
        text = printed(view(), width)
        drops = text[text.index("wg0: packets not delivered") :]
        assert max(len(line) for line in drops.splitlines()) <= max(width, 44 + 4), width
        assert "…" not in text


def test_wide_is_one_table_with_nothing_truncated() -> None:
    text = printed(view(), 80, wide=True)
    assert "…" not in text
    assert "┃ peer" in text and "meaning" in text and "addresses" in text
    for meaning in DROP_REASON_HELP.values():
        assert meaning in text  # each on one line of the table
    assert f"sources held by no peer ×1234000, {BOB} ×567" in text


def test_kernel_lower_bounds_are_marked() -> None:
    shown = view()
    shown.kernel = {"link_counters": {}, "watch": True, "lower_bound": True}
    text = printed(shown, 80)
    assert "    disallowed_source ≥1234567\n" in text and "×≥" not in text, text


def test_json_has_the_addresses_of_each_drop() -> None:
    data = json.loads(json.dumps(to_json(view())))
    (entry,) = [d for d in data["drops"] if d["peer"] == ALICE]
    assert entry["sources"][0] == {"address": "10.100.0.99", "count": 1234000, "error": 0}
    assert entry["sources"][1] == {"address": LONG_V6, "count": 100, "error": 3}
    assert entry["destinations"] == [{"address": "10.100.0.1", "count": 1234567, "error": 0}]
    assert entry["owners"] == [{"owner": None, "count": 1234000}, {"owner": BOB, "count": 567}]
    (bob,) = [d for d in data["drops"] if d["peer"] == BOB and d["reason"] == "decryption_failed"]
    assert bob["sources"] == [] and bob["destinations"] == []


def test_latest_handshake_says_now_as_wg_does() -> None:
    shown = InterfaceView("wg0", peers=[PeerView(ALICE, latest_handshake=1000)])
    assert "  latest handshake: Now\n" in render_text(shown, now=1000.4)
    assert "  latest handshake: 5 seconds ago\n" in render_text(shown, now=1005)
    assert "System clock wound backward" in render_text(shown, now=990)


def test_each_reason_lists_what_explains_it_first() -> None:
    """no_peer drops are explained by their destinations (listed before the sources);
    disallowed_source drops by their sources."""
    flat = " ".join(printed(view(), 80).split())
    assert flat.index("to: 10.100.0.77 ×3") < flat.index("from: 10.100.0.1 ×3")
    assert flat.index("from: 10.100.0.99") < flat.index("to: 10.100.0.1 ×1234567")
