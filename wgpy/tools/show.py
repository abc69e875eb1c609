"""``wgpy show``: what ``wg show`` prints, plus wgpy's drop counters per peer and reason."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from wgpy.events import DROP_REASON_HELP


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
    #: A kernel interface: its link counters, and what a `wgpy watch` knows (None: userspace).
    kernel: dict[str, Any] | None = None


def _b64(hex_key: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_key)).decode()


def parse_get(name: str, pairs: list[tuple[str, str]]) -> InterfaceView:
    """Build a view from the key=value pairs of a UAPI get (as ``wg`` interprets them)."""
    from wgpy import crypto

    view = InterfaceView(name)
    peer: PeerView | None = None
    for key, value in pairs:
        if key == "public_key":
            peer = PeerView(_b64(value))
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


def parse_stats(view: InterfaceView, stats: dict[str, Any]) -> None:
    view.drops = {
        (entry.get("peer"), str(entry["reason"])): int(entry["count"])
        for entry in stats.get("drops", [])
    }
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
            lines.append(f"  latest handshake: {ago(int(now) - peer.latest_handshake)} ago")
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


def drops_table(view: InterfaceView) -> Table:
    table = Table(title=f"{view.name}: packets not delivered, by peer and reason")
    table.add_column("peer", no_wrap=True, min_width=12)
    table.add_column("reason", no_wrap=True)
    table.add_column("count", justify="right", no_wrap=True)
    table.add_column("meaning", ratio=1)
    meanings = {reason.value: text for reason, text in DROP_REASON_HELP.items()}
    for (peer, reason), count in sorted(
        (view.drops or {}).items(), key=lambda item: (item[0][0] or "", -item[1])
    ):
        meaning = meanings.get(reason, "")
        if reason == "disallowed_source":
            held = ", ".join(
                f"{'no peer' if owner is None else owner[:10] + '…'} ×{n}"
                for owner, n in _owners_of(view, peer)
            )
            meaning += f" Sources held by: {held}." if held else ""
        shown = f"≥{count}" if view.kernel and view.kernel.get("lower_bound") else str(count)
        table.add_row(peer or "(interface)", reason, shown, meaning)
    return table


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
            {"peer": peer, "reason": reason, "count": count}
            | (
                {"owners": [{"owner": o, "count": n} for o, n in _owners_of(view, peer)]}
                if reason == "disallowed_source"
                else {}
            )
            for (peer, reason), count in sorted(view.drops.items(), key=lambda i: -i[1])
        ],
    }


def print_view(view: InterfaceView, *, as_json: bool, console: Console | None = None) -> None:
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
    else:
        console.print()
        console.print(drops_table(view))
