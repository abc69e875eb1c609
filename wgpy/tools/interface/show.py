"""``wgpy show``: what ``wg show`` prints, plus wgpy's drop counters per peer and reason.

The drops read at 80 columns, in a pager, in ``watch`` and in logs: one line per peer and
reason with its count, the addresses dropped most under it, and what each reason means once,
below (:func:`render_drops`). ``--wide`` gives one rich table at whatever width it needs.
"""

from __future__ import annotations

import base64
import json
import textwrap
import time
from dataclasses import dataclass, field
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from wgpy.events import DROP_REASON_HELP, explaining_address


@dataclass
class PeerView:
    public_key: str
    preshared_key: bool = False
    endpoint: str | None = None
    allowed_ips: list[str] = field(default_factory=list)
    latest_handshake: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    persistent_keepalive: int = 0


@dataclass(frozen=True)
class AddressCount:
    """An inner address among the most dropped for a (peer, reason): its true count lies in
    ``[count - error, count]`` (``error`` 0: exact; see wgpy.tally)."""

    address: str
    count: int
    error: int = 0


DropKey = tuple[str | None, str]


@dataclass
class InterfaceView:
    name: str
    public_key: str | None = None
    has_private_key: bool = False
    listen_port: int = 0
    fwmark: int = 0
    peers: list[PeerView] = field(default_factory=list)
    #: (peer public key or None for the interface, reason) → count; None if not a wgpyd.
    drops: dict[tuple[str | None, str], int] | None = None
    #: disallowed_source drops: (sending peer, peer holding the source or None) → count.
    owners: dict[tuple[str, str | None], int] = field(default_factory=dict)
    #: The inner source and destination addresses dropped most, per (peer, reason).
    sources: dict[DropKey, list[AddressCount]] = field(default_factory=dict)
    destinations: dict[DropKey, list[AddressCount]] = field(default_factory=dict)
    #: A kernel interface: its link counters, and what a `wgpy watch` knows (None: userspace).
    kernel: dict[str, Any] | None = None


def short_key(key: str) -> str:
    """A peer's label when it has no name: the first ten characters of its base64 public
    key and an ellipsis, as ``wgpy top``, ``map`` and ``web`` show it."""
    return key[:10] + "…"


def key_from_hex(hex_key: str) -> str:
    """A key as UAPI get writes it (hex) in the base64 form wg prints."""
    return base64.b64encode(bytes.fromhex(hex_key)).decode()


def parse_get(name: str, pairs: list[tuple[str, str]]) -> InterfaceView:
    """Build a view from the key=value pairs of a UAPI get (as ``wg`` interprets them)."""
    from wgpy import crypto

    view = InterfaceView(name)
    peer: PeerView | None = None
    for key, value in pairs:
        if key == "public_key":
            peer = PeerView(key_from_hex(value))
            view.peers.append(peer)
        elif peer is None:
            if key == "private_key":
                view.has_private_key = True
                view.public_key = base64.b64encode(crypto.public_key(bytes.fromhex(value))).decode()
            elif key == "listen_port":
                view.listen_port = int(value)
            elif key == "fwmark":
                view.fwmark = int(value)
        elif key == "preshared_key":
            peer.preshared_key = value != "0" * 64
        elif key == "endpoint":
            peer.endpoint = value
        elif key == "allowed_ip":
            peer.allowed_ips.append(value)
        elif key == "last_handshake_time_sec":
            peer.latest_handshake = int(value)
        elif key == "rx_bytes":
            peer.rx_bytes = int(value)
        elif key == "tx_bytes":
            peer.tx_bytes = int(value)
        elif key == "persistent_keepalive_interval":
            peer.persistent_keepalive = int(value)
    return view


def _addresses(entries: list[dict[str, Any]]) -> list[AddressCount]:
    return [
        AddressCount(str(e["address"]), int(e["count"]), int(e.get("error", 0))) for e in entries
    ]


def parse_stats(view: InterfaceView, stats: dict[str, Any]) -> None:
    view.drops = {}
    for entry in stats.get("drops", []):
        key = (entry.get("peer"), str(entry["reason"]))
        view.drops[key] = int(entry["count"])
        if entry.get("sources"):
            view.sources[key] = _addresses(entry["sources"])
        if entry.get("destinations"):
            view.destinations[key] = _addresses(entry["destinations"])
    view.owners = {
        (str(entry["peer"]), entry.get("owner")): int(entry["count"])
        for entry in stats.get("disallowed_owners", [])
    }


def _owners_of(view: InterfaceView, peer: str | None) -> list[tuple[str | None, int]]:
    """Who holds the sources of ``peer``'s disallowed_source drops, most first."""
    found = [(owner, n) for (sender, owner), n in view.owners.items() if sender == peer]
    return sorted(found, key=lambda item: -item[1])


def ago(seconds: int) -> str:
    """wg's rendering of an age: '1 minute, 5 seconds'."""
    if seconds <= 0:
        return "Now"
    parts = []
    for unit, size in (("year", 365 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    if seconds:
        parts.append(f"{seconds} second{'s' if seconds != 1 else ''}")
    return ", ".join(parts)


def handshake_age(seconds: int) -> str:
    """``latest handshake:`` as wg says it: ``Now``, ``… ago``, or that the clock went back."""
    if seconds == 0:
        return "Now"
    if seconds < 0:
        return "(System clock wound backward; connection problems may ensue.)"
    return f"{ago(seconds)} ago"


def human_bytes(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    for unit, size in (("KiB", 1024), ("MiB", 1024**2), ("GiB", 1024**3), ("TiB", 1024**4)):
        if count < size * 1024 or unit == "TiB":
            return f"{count / size:.2f} {unit}"
    return f"{count} B"


def render_text(view: InterfaceView, now: float | None = None) -> str:
    now = time.time() if now is None else now
    lines = [f"interface: {view.name}"]
    if view.public_key:
        lines.append(f"  public key: {view.public_key}")
        lines.append("  private key: (hidden)")
    if view.listen_port:
        lines.append(f"  listening port: {view.listen_port}")
    if view.fwmark:
        lines.append(f"  fwmark: {view.fwmark:#x}")
    for peer in sorted(view.peers, key=lambda p: -p.latest_handshake):
        lines.append("")
        lines.append(f"peer: {peer.public_key}")
        if peer.preshared_key:
            lines.append("  preshared key: (hidden)")
        if peer.endpoint:
            lines.append(f"  endpoint: {peer.endpoint}")
        lines.append(f"  allowed ips: {', '.join(peer.allowed_ips) or '(none)'}")
        if peer.latest_handshake:
            lines.append(f"  latest handshake: {handshake_age(int(now) - peer.latest_handshake)}")
        if peer.rx_bytes or peer.tx_bytes:
            lines.append(
                f"  transfer: {human_bytes(peer.rx_bytes)} received, "
                f"{human_bytes(peer.tx_bytes)} sent"
            )
        if peer.persistent_keepalive:
            lines.append(f"  persistent keepalive: every {ago(peer.persistent_keepalive)}")
    return "\n".join(lines) + "\n"


def _print_kernel(view: InterfaceView, console: Console) -> None:
    assert view.kernel is not None
    counters = view.kernel.get("link_counters") or {}
    moved = ", ".join(
        f"{name} {value}"
        for name, value in counters.items()
        if value and ("error" in name or "dropped" in name)
    )
    console.print(f"  kernel interface counters (exact): {moved or 'no errors, no drops'}")
    if not view.kernel.get("watch"):
        console.print(
            f"  (drop reasons: no `wgpy watch {view.name}` is running; start one to see why "
            "the kernel drops packets, by peer and reason)",
            markup=False,
        )
        return
    if view.kernel.get("lower_bound"):
        console.print(
            "  counts below are lower bounds (≥): the kernel rate-limits its messages "
            "(wgpy watch --unthrottle lifts that)",
            markup=False,
        )
    for entry in view.kernel.get("unattributed", []):
        console.print(
            f"  {entry['count']} × {entry['reason']}: peer {entry['why']} (endpoint shared or "
            "not known)",
            markup=False,
        )
    for entry in view.kernel.get("unrecognised", []):
        console.print(f"  {entry['count']} × unrecognised: {entry['text']}", markup=False)
    traced = view.kernel.get("traced")
    if traced:
        console.print(f"  drops neither logged nor counted, {traced['scope']}:", markup=False)
        for entry in traced["drops"]:
            source = entry["source"]
            count = "" if source.startswith("not visible") else f"{entry['count']} × "
            console.print(f"    {count}{entry['reason']} ({source})", markup=False)


def _sorted_drops(view: InterfaceView) -> list[tuple[DropKey, int]]:
    """(interface) first, then peers by key; within each, the largest count first."""
    return sorted((view.drops or {}).items(), key=lambda item: (item[0][0] or "", -item[1]))


def _count(view: InterfaceView, count: int) -> str:
    lower_bound = view.kernel is not None and view.kernel.get("lower_bound")
    return f"≥{count}" if lower_bound else str(count)


def _counted(entry: AddressCount) -> str:
    return f"{entry.address} {'≤' if entry.error else '×'}{entry.count}"


def _owner_items(view: InterfaceView, peer: str | None) -> list[str]:
    return [f"{'no peer' if o is None else o} ×{n}" for o, n in _owners_of(view, peer)]


def _details(view: InterfaceView, key: DropKey) -> list[tuple[str, list[str]]]:
    """What is known beyond the count: (label, items) for addresses and source owners."""
    found = [
        ("from", [_counted(e) for e in view.sources.get(key, [])]),
        ("to", [_counted(e) for e in view.destinations.get(key, [])]),
    ]
    if explaining_address(key[1]) == "destination":
        found.reverse()  # what explains the reason first (no_peer: where the packets went)
    if key[1] == "disallowed_source":
        found.append(("sources held by", _owner_items(view, key[0])))
    return [(label, items) for label, items in found if items]


def _fill_items(label: str, items: list[str], width: int, indent: int) -> list[str]:
    """``label item, item, ...`` in lines of at most ``width`` columns, never splitting an
    item (a public key, an address); continuation lines are indented two more."""
    lines: list[str] = []
    line = " " * indent + label
    for index, item in enumerate(items):
        text = item + ("," if index < len(items) - 1 else "")
        if line.strip() and len(line) + 1 + len(text) > width and line.strip() != label:
            lines.append(line)
            line = " " * (indent + 2) + text
        else:
            line += " " + text
    lines.append(line)
    return lines


def render_drops(view: InterfaceView, width: int = 80) -> str:
    """The drops for a terminal, a pager or a log: per peer, one line per reason with its
    count and the addresses dropped most under it, then what each reason met means, wrapped
    to ``width`` columns."""
    width = max(width, 40)
    lines = [f"{view.name}: packets not delivered, by peer and reason"]
    current: object = ()
    for key, count in _sorted_drops(view):
        peer, reason = key
        if peer != current:
            current = peer
            lines.append("  (interface)" if peer is None else f"  peer {peer}")
        shown = _count(view, count)
        lines.append(f"    {reason} {shown if shown.startswith('≥') else '×' + shown}")
        for label, items in _details(view, key):
            lines.extend(_fill_items(label + ":", items, width, 6))
    meanings = {reason.value: text for reason, text in DROP_REASON_HELP.items()}
    reasons = sorted({reason for _, reason in view.drops or {}} & meanings.keys())
    if reasons:
        lines.append("")
        lines.append("what the reasons mean (docs/drop-reasons.md):")
    for reason in reasons:
        lines.extend(
            textwrap.wrap(
                f"{reason}: {meanings[reason]}",
                width,
                initial_indent="  ",
                subsequent_indent="    ",
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n".join(lines) + "\n"


def drops_table(view: InterfaceView) -> Table:
    """The drops as one table (``--wide``): print it at :func:`table_width` columns."""
    table = Table(title=f"{view.name}: packets not delivered, by peer and reason")
    table.add_column("peer", no_wrap=True)
    table.add_column("reason", no_wrap=True)
    table.add_column("count", justify="right", no_wrap=True)
    table.add_column("meaning", no_wrap=True)
    table.add_column("addresses", no_wrap=True)
    meanings = {reason.value: text for reason, text in DROP_REASON_HELP.items()}
    for key, count in _sorted_drops(view):
        peer, reason = key
        details = _details(view, key)
        addresses = "\n".join(f"{label} {', '.join(items)}" for label, items in details)
        table.add_row(
            peer or "(interface)", reason, _count(view, count), meanings.get(reason, ""), addresses
        )
    return table


def table_width(table: Table) -> int:
    """The columns ``table`` needs to show every cell on its lines, untruncated."""
    width = 1  # the left border
    for column in table.columns:
        cells = [str(column.header), *(str(cell) for cell in column.cells)]
        width += 3 + max(cell_len(line) for cell in cells for line in cell.splitlines() or [""])
    return width


def kernel_info(state: dict[str, Any] | None, counters: dict[str, int]) -> dict[str, Any]:
    """The ``kernel`` part of a view: the interface counters (exact) and, with a running
    ``wgpy watch``, whether its attributed counts are lower bounds and what it could not
    attribute."""
    info: dict[str, Any] = {"link_counters": counters, "watch": state is not None}
    if state is not None:
        info["lower_bound"] = bool(state.get("lower_bound", True))
        info["debug_callsites_on"] = state.get("debug_callsites_on")
        info["unattributed"] = state.get("unattributed", [])
        info["unrecognised"] = state.get("unrecognised", [])
        info["traced"] = state.get("traced")
    return info


def to_json(view: InterfaceView) -> dict[str, Any]:
    extra = {} if view.kernel is None else {"kernel": view.kernel}
    return extra | {
        "interface": view.name,
        "public_key": view.public_key,
        "listen_port": view.listen_port,
        "fwmark": view.fwmark,
        "peers": [vars(peer) for peer in view.peers],
        "drops": None
        if view.drops is None
        else [
            {
                "peer": peer,
                "reason": reason,
                "count": count,
                "sources": [vars(e) for e in view.sources.get((peer, reason), [])],
                "destinations": [vars(e) for e in view.destinations.get((peer, reason), [])],
            }
            | (
                {"owners": [{"owner": o, "count": n} for o, n in _owners_of(view, peer)]}
                if reason == "disallowed_source"
                else {}
            )
            for (peer, reason), count in sorted(view.drops.items(), key=lambda i: -i[1])
        ],
    }


def print_view(
    view: InterfaceView, *, as_json: bool, console: Console | None = None, wide: bool = False
) -> None:
    console = console or Console(emoji=False, highlight=False)
    if as_json:
        console.print_json(json.dumps(to_json(view)))
        return
    console.print(render_text(view), end="", markup=False, highlight=False, emoji=False)
    if view.kernel is not None:
        _print_kernel(view, console)
    if view.drops is None:
        if view.kernel is None:
            console.print("  (drop counters: not a wgpyd interface)", markup=False)
    elif not view.drops:
        console.print("  drops: none")
    elif wide:
        console.print()
        table = drops_table(view)
        Console(
            file=console.file,
            width=max(table_width(table), console.width),
            color_system=console.color_system,  # type: ignore[arg-type]
            force_terminal=console.is_terminal,
            emoji=False,
            highlight=False,
        ).print(table)
    else:
        console.print()
        console.print(
            render_drops(view, console.width),
            end="",
            markup=False,
            highlight=False,
            emoji=False,
            soft_wrap=True,
        )
