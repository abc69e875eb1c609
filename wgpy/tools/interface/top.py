"""``wgpy top IF``: a live view of an interface, refreshed like ``top``.

Per peer its endpoint, handshake age and receive/transmit rates; below, the drops per peer and
reason per second with the addresses dropped most. Rates are differences of two readings of
:func:`wgpy.tools.interface.live.interface_view` (wgpyd's counters, or a kernel interface's with a
running ``wgpy watch``), so a frame needs two readings; ``--once`` takes them ``--interval``
apart and prints one frame.

:func:`render_frame` is pure (readings and the time in, text out) and fits the lines it is
given in ``width`` columns and ``height`` rows: 80×24 shows a header, up to eight peers and the
busiest drops. The loop around it owns the terminal: alternate screen, no echo, ``q`` or
Ctrl-C to leave, the terminal restored whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TextIO

from rich.cells import cell_len, set_cell_size

from wgpy.events import explaining_address
from wgpy.exit_status import Exit
from wgpy.tools.interface.show import DropKey, InterfaceView, PeerView, short_key

__all__ = ["Reading", "rates", "render_frame", "run_top"]


@dataclass(frozen=True)
class Reading:
    """An interface as read at ``monotonic`` (for rates) and ``wall`` (for handshake ages)."""

    view: InterfaceView
    monotonic: float
    wall: float


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    whole = int(seconds)
    if whole < 0:
        return "clock?"
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _rate(per_second: float | None) -> str:
    if per_second is None:
        return "-"
    value = max(per_second, 0.0)
    if value < 1024:
        return f"{value:.0f} B/s"
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}/s"


def _per_second(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` terminal cells, with … where it was cut."""
    if cell_len(text) <= width:
        return text
    return set_cell_size(text, max(width - 1, 0)) + "…"


def _cell(text: str, width: int, right: bool = False) -> str:
    text = _fit(text, width)
    pad = " " * (width - cell_len(text))
    return pad + text if right else text + pad


def _peer_label(key: str, names: dict[str, str]) -> str:
    name = names.get(key)
    return f"{name} {key[:6]}…" if name else short_key(key)


def rates(
    before: Reading | None, now: Reading
) -> tuple[float | None, dict[str, tuple[float, float]], dict[DropKey, float]]:
    """(seconds between the readings, peer -> (rx, tx) bytes/s, drop key -> drops/s)."""
    if before is None or now.monotonic <= before.monotonic:
        return None, {}, {}
    span = now.monotonic - before.monotonic
    old = {p.public_key: p for p in before.view.peers}
    traffic: dict[str, tuple[float, float]] = {}
    for peer in now.view.peers:
        was = old.get(peer.public_key)
        if was is not None:
            traffic[peer.public_key] = (
                max(peer.rx_bytes - was.rx_bytes, 0) / span,
                max(peer.tx_bytes - was.tx_bytes, 0) / span,
            )
    old_drops = before.view.drops or {}
    drops = {
        key: max(count - old_drops.get(key, 0), 0) / span
        for key, count in (now.view.drops or {}).items()
    }
    return span, traffic, drops


def _addresses(view: InterfaceView, key: DropKey, room: int) -> str:
    """The addresses dropped most under ``key`` in at most ``room`` cells: as many as fit,
    the side that explains the reason first (no_peer: destinations; disallowed_source:
    sources; :func:`wgpy.events.explaining_address`), the number left out as ``+N``."""
    sources = [("from", e) for e in view.sources.get(key, [])[:3]]
    destinations = [("to", e) for e in view.destinations.get(key, [])[:3]]
    if explaining_address(key[1]) == "destination":
        items = destinations + sources
    else:
        items = sources + destinations
    text = ""
    label = ""
    for index, (direction, entry) in enumerate(items):
        word = f"{entry.address}×{entry.count}"
        piece = (f"{direction} " if direction != label else "") + word
        joined = piece if not text else text + (", " if direction == label else "; ") + piece
        rest = len(items) - index - 1
        if cell_len(joined) + (len(f" +{rest}") if rest else 0) > room and text:
            return f"{text} +{len(items) - index}"
        text, label = joined, direction
    return text


PEER_COLUMNS = ((19, "PEER"), (21, "ENDPOINT"), (9, "HANDSHAKE"), (10, "RX"), (10, "TX"))


def _peer_row(
    peer: PeerView,
    reading: Reading,
    traffic: tuple[float, float] | None,
    drops_per_second: float | None,
    names: dict[str, str],
    width: int,
) -> str:
    age = reading.wall - peer.latest_handshake if peer.latest_handshake else None
    rx, tx = traffic if traffic is not None else (None, None)
    cells = [
        _cell(_peer_label(peer.public_key, names), 19),
        _cell(peer.endpoint or "(none)", 21),
        _cell(_age(age), 9, right=True),
        _cell(_rate(rx), 10, right=True),
        _cell(_rate(tx), 10, right=True),
        _cell(_per_second(drops_per_second), max(width - 74, 5), right=True),
    ]
    return " ".join(cells)


def render_frame(
    before: Reading | None,
    now: Reading,
    *,
    width: int = 80,
    height: int = 24,
    names: dict[str, str] | None = None,
    footer: str | None = "q: quit",
) -> str:
    """One screen of ``wgpy top``: at most ``height`` lines of at most ``width`` cells, the
    last one ``footer`` (the key hint of the live view; None for ``--once``)."""
    width = max(width, 79)
    height = max(height, 12)
    names = names or {}
    view = now.view
    span, traffic, drops = rates(before, now)
    header = (
        f"wgpy top {view.name}: {len(view.peers)} peer{'s' if len(view.peers) != 1 else ''}, "
        f"port {view.listen_port or '-'}"
    )
    if span is not None:
        header += f", rates over {span:.1f} s"
    else:
        header += ", rates from the next refresh"
    total_drops = sum(drops.values()) if span is not None else None
    header += f", drops {_per_second(total_drops)}/s"
    lines = [_fit(header, width)]
    columns = [_cell(t, w, right=i >= 2) for i, (w, t) in enumerate(PEER_COLUMNS)]
    lines.append(" ".join([*columns, _cell("DROP/s", max(width - 74, 5), right=True)]))
    per_peer_drops: dict[str, float] = {}
    for (sender, _reason), per_second in drops.items():
        if sender is not None:
            per_peer_drops[sender] = per_peer_drops.get(sender, 0.0) + per_second

    def busy(peer: PeerView) -> tuple[float, float, int, str]:
        rx, tx = traffic.get(peer.public_key, (0.0, 0.0))
        drop_rate = per_peer_drops.get(peer.public_key, 0.0)
        return (-drop_rate, -(rx + tx), -peer.latest_handshake, peer.public_key)

    peers = sorted(view.peers, key=busy)
    drop_keys = sorted(
        (view.drops or {}).items(),
        key=lambda item: (-drops.get(item[0], 0.0), -item[1], item[0][0] or "", item[0][1]),
    )
    notes = _kernel_notes(view)
    # header, column names, blank, drops heading, footer and notes are fixed; the drops get
    # the rows the peers (up to 8) leave, at least 3, the peers the rest
    room = height - 5 - len(notes)
    drop_rows = min(len(drop_keys), max(room - min(max(len(peers), 1), 8), 3))
    more_drops = 1 if len(drop_keys) > drop_rows else 0
    peer_rows = max(room - drop_rows - more_drops, 1)
    shown = peers if len(peers) <= peer_rows else peers[: peer_rows - 1]
    span_known = span is not None
    for peer in shown:
        lines.append(
            _fit(
                _peer_row(
                    peer,
                    now,
                    traffic.get(peer.public_key) if span_known else None,
                    per_peer_drops.get(peer.public_key, 0.0) if span_known else None,
                    names,
                    width,
                ),
                width,
            )
        )
    if len(peers) > len(shown):
        lines.append(_fit(f"… and {len(peers) - len(shown)} more peers", width))
    if not peers:
        lines.append("(no peers)")
    lines.append("")
    if view.drops is None and view.kernel is None:
        lines.append(_fit("drops: not a wgpyd interface (no drop counters)", width))
    elif not drop_keys:
        lines.append(_fit("drops: none", width))
    else:
        lines.append(
            _fit(f"{'DROP/s':>6} {'TOTAL':>7} {'PEER':<14} {'REASON':<20} TOP ADDRESSES", width)
        )
        lower = view.kernel is not None and view.kernel.get("lower_bound")
        for key, count in drop_keys[:drop_rows]:
            sender, reason = key
            shown_rate = _per_second(drops.get(key)) if span_known else "-"
            total = f"≥{count}" if lower else str(count)
            who = "(interface)" if sender is None else _peer_label(sender, names)
            line = f"{shown_rate:>6} {total:>7} {_cell(who, 14)} {_cell(reason, 20)} "
            line += _addresses(view, key, width - cell_len(line))
            lines.append(_fit(line.rstrip(), width))
        if len(drop_keys) > drop_rows:
            lines.append(_fit(f"  … {len(drop_keys) - drop_rows} more (wgpy show)", width))
    lines.extend(_fit(note, width) for note in notes)
    if footer is not None:
        lines = lines[: height - 1]
        lines.append(_fit(footer, width))
    else:
        lines = lines[:height]
    return "\n".join(lines) + "\n"


def _kernel_notes(view: InterfaceView) -> list[str]:
    if view.kernel is None:
        return []
    if not view.kernel.get("watch"):
        return [
            f"kernel interface: drop reasons need a running `wgpy watch {view.name}`",
        ]
    if view.kernel.get("lower_bound"):
        return ["kernel interface: counts are lower bounds (≥; messages are rate-limited)"]
    return []


# ----------------------------------------------------------------------------- the loop


Read = Callable[[], Reading]


def reader(ifname: str) -> Read:
    """A function that reads ``ifname`` now (raises OSError when it is gone)."""
    from wgpy.tools.interface.live import interface_view

    def read() -> Reading:
        view, _pairs = interface_view(ifname)
        return Reading(view, time.monotonic(), time.time())

    return read


def once(read: Read, interval: float, out: TextIO, names: dict[str, str]) -> None:
    """Two readings ``interval`` apart, one frame of the terminal's size (80×24 when not a
    terminal), without the key hint: nothing waits for a key."""
    first = read()
    time.sleep(interval)
    second = read()
    size = shutil.get_terminal_size((80, 24))
    frame = render_frame(
        first, second, width=size.columns, height=size.lines, names=names, footer=None
    )
    out.write(frame)


@contextlib.contextmanager
def _screen(out: TextIO) -> Iterator[int | None]:
    """The alternate screen without cursor, and stdin without echo or line buffering when it
    is a terminal (yields its fd, or None); everything restored on the way out."""
    import termios
    import tty

    fd: int | None = sys.stdin.fileno() if sys.stdin.isatty() else None
    saved = termios.tcgetattr(fd) if fd is not None else None
    out.write("\x1b[?1049h\x1b[?25l")
    out.flush()
    try:
        if fd is not None:
            tty.setcbreak(fd)
        yield fd
    finally:
        if fd is not None and saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        out.write("\x1b[?25h\x1b[?1049l")
        out.flush()


def run_top(read: Read, interval: float, out: TextIO, names: dict[str, str]) -> int:
    """Refresh every ``interval`` seconds until q, Ctrl-C or the interface goes away."""
    before: Reading | None = None
    gone: str | None = None
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` leaves the terminal as Ctrl-C does
    try:
        with _screen(out) as fd:
            while True:
                try:
                    now = read()
                except OSError as error:
                    gone = str(error.strerror or error)
                    break
                size = shutil.get_terminal_size((80, 24))
                frame = render_frame(
                    before, now, width=size.columns, height=size.lines, names=names
                )
                out.write("\x1b[H\x1b[2J" + frame.rstrip("\n"))
                out.flush()
                before = now
                if _wait_for_quit(fd, interval):
                    break
    except KeyboardInterrupt:
        pass
    if gone is not None:
        sys.stderr.write(f"wgpy: top: the interface went away: {gone}\n")
        return Exit.FAILED
    return Exit.OK


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _wait_for_quit(fd: int | None, seconds: float) -> bool:
    """Sleep ``seconds``; True as soon as q (or Q) is typed on the terminal."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        if fd is None:
            time.sleep(remaining)
            return False
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            typed = os.read(fd, 64)
            if not typed or b"q" in typed.lower():
                return True
    return False
