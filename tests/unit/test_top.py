"""``wgpy top``: one frame from two readings (golden), rates from differences, 80×24."""

from __future__ import annotations

import copy
import os
from pathlib import Path

from rich.cells import cell_len

from wgpy.tools.interface.show import AddressCount, InterfaceView, PeerView
from wgpy.tools.interface.top import Reading, render_frame

GOLDEN = Path(__file__).parent / "golden"
ALICE = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
BOB = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="
NOW = 1_800_000_000.0


def view(rx: int, tx: int, spoofed: int, no_peer: int) -> InterfaceView:
    result = InterfaceView("wg0", listen_port=51820)
    result.peers = [
        PeerView(ALICE, endpoint="192.0.2.7:51820", latest_handshake=int(NOW) - 65),
        PeerView(BOB, endpoint="[2001:db8::9]:40000", latest_handshake=0),
    ]
    result.peers[0].rx_bytes, result.peers[0].tx_bytes = rx, tx
    result.drops = {(ALICE, "disallowed_source"): spoofed, (None, "no_peer"): no_peer}
    result.sources[(ALICE, "disallowed_source")] = [
        AddressCount("10.100.0.99", spoofed - 1),
        AddressCount("10.100.0.98", 1),
    ]
    result.destinations[(None, "no_peer")] = [AddressCount("10.200.0.1", no_peer)]
    return result


def readings() -> tuple[Reading, Reading]:
    before = Reading(view(10_000, 5_000, 11, 3), 100.0, NOW - 2)
    after = Reading(view(10_000 + 4096, 5_000 + 1000, 31, 4), 102.0, NOW)
    return before, after


def test_frame_golden() -> None:
    frame = render_frame(*readings(), names={ALICE: "alice"})
    path = GOLDEN / "top-frame.txt"
    if os.environ.get("WGPY_UPDATE_GOLDEN") == "1":
        path.write_text(frame)
    assert frame == path.read_text()
    # docs/see-it.md shows this frame
    assert frame in (GOLDEN.parents[2] / "docs" / "see-it.md").read_text()


def test_rates_are_differences_over_the_time_between_readings() -> None:
    frame = render_frame(*readings(), names={ALICE: "alice"})
    (alice,) = [line for line in frame.splitlines() if line.startswith("alice")]
    # 4096 B and 1000 B in 2 s; 20 disallowed_source drops in 2 s; handshake 65 s ago
    assert "2.0 KiB/s" in alice and "500 B/s" in alice and "1m05s" in alice
    assert alice.split()[-1] == "10.0"
    (spoofed,) = [line for line in frame.splitlines() if "disallowed_source" in line]
    assert spoofed.split()[:2] == ["10.0", "31"]
    assert spoofed.endswith("from 10.100.0.99×30 +1")  # what fits in 80 columns
    wide = render_frame(*readings(), names={ALICE: "alice"}, width=120)
    assert "from 10.100.0.99×30, 10.100.0.98×1" in wide
    (no_peer,) = [line for line in frame.splitlines() if "no_peer" in line]
    assert no_peer.split()[:3] == ["0.5", "4", "(interface)"]
    assert "drops 10.5/s" in frame.splitlines()[0]


def test_first_frame_has_no_rates_yet() -> None:
    _before, after = readings()
    frame = render_frame(None, after)
    assert "rates from the next refresh" in frame
    (alice,) = [line for line in frame.splitlines() if line.startswith(ALICE[:10])]
    assert alice.split()[-3:] == ["-", "-", "-"]


def test_many_peers_fit_80_by_24() -> None:
    before, after = readings()
    for reading in (before, after):
        base = reading.view.peers[0]
        for index in range(40):
            peer = copy.copy(base)
            peer.public_key = f"{index:02d}" + ALICE[2:]
            reading.view.peers.append(peer)
            reading.view.drops[(peer.public_key, "handshake_failed")] = index  # type: ignore[index]
    frame = render_frame(before, after)
    lines = frame.splitlines()
    assert len(lines) <= 24
    assert all(cell_len(line) <= 80 for line in lines), frame
    assert any(line.startswith("… and ") and "more peers" in line for line in lines), frame
    assert lines[-1] == "q: quit"
    # the busiest drops (disallowed_source: 10/s) come first
    heading = lines.index(next(line for line in lines if line.lstrip().startswith("DROP/s")))
    assert "disallowed_source" in lines[heading + 1]


def test_not_a_wgpyd_and_a_kernel_without_watch_say_so() -> None:
    before, after = readings()
    after.view.drops = None
    assert "not a wgpyd interface" in render_frame(before, after)
    after.view.kernel = {"watch": False, "link_counters": {}}
    assert "need a running `wgpy watch wg0`" in render_frame(before, after)


def test_each_reason_shows_what_explains_it_first_at_80_columns() -> None:
    """no_peer drops are outgoing packets that no peer takes: their destinations explain them,
    so at 80 columns the destinations show even when the sources are known too;
    disallowed_source drops are explained by their sources."""
    before, after = readings()
    for reading in (before, after):
        reading.view.sources[(None, "no_peer")] = [
            AddressCount("10.100.0.1", 3),
            AddressCount("10.100.0.5", 1),
        ]
        reading.view.destinations[(ALICE, "disallowed_source")] = [AddressCount("10.100.0.1", 5)]
    frame = render_frame(before, after, names={ALICE: "alice"})
    (no_peer,) = [line for line in frame.splitlines() if "no_peer" in line]
    assert no_peer.split("no_peer", 1)[1].split() == ["to", "10.200.0.1×4", "+2"]
    wide = render_frame(before, after, names={ALICE: "alice"}, width=120)
    (no_peer,) = [line for line in wide.splitlines() if "no_peer" in line]
    assert no_peer.endswith("no_peer              to 10.200.0.1×4; from 10.100.0.1×3, 10.100.0.5×1")
    (spoofed,) = [line for line in frame.splitlines() if "disallowed_source" in line]
    assert spoofed.endswith("from 10.100.0.99×30 +2")


def test_once_prints_no_key_hint() -> None:
    """``--once`` prints one frame and leaves: there is nothing to quit, so no "q: quit"."""
    import io

    from wgpy.tools.interface.top import once

    first, second = readings()
    pending = [first, second]
    out = io.StringIO()
    once(lambda: pending.pop(0), 0.0, out, {ALICE: "alice"})
    frame = out.getvalue()
    assert frame.startswith("wgpy top wg0: 2 peers") and "no_peer" in frame
    assert "q: quit" not in frame and "quit" not in frame.splitlines()[-1]
    # the interactive frame keeps its hint
    assert render_frame(first, second).splitlines()[-1] == "q: quit"
