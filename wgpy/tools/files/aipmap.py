"""``wgpy map``: a picture of the address space as AllowedIPs divide it, as SVG or HTML.

One panel per config (or live interface); in it one square per address family, laid out
along a Hilbert curve (:mod:`wgpy.tools.files.hilbert`) over the smallest prefix that holds
everything drawn. A Hilbert curve rather than a treemap: an address always lands in the same
place whatever the other prefixes are, every prefix is one connected square or 2:1 rectangle
whose area is exactly its size, and a more specific prefix lies inside the one it beats, so
painting prefixes from the least to the most specific shows the longest-prefix match itself.
A treemap would move every box when one prefix changes and cannot nest overlapping prefixes.

Marked on top: prefixes that never win a lookup (shadowed: covered by more specific prefixes
of other peers), prefixes given to two peers (the one that loses it), the interface's own
Address and its subnet, the routes into the interface, and, with a hub and its spokes, where
the other sides' Addresses fall (red when this side would not send them to that peer: lint's
``cross-allowed-ips``). Each panel lists the lint findings of its file.

Output is deterministic (same input, same bytes): no clocks, no random colours, coordinates
from exact fractions rounded the same way. Private and preshared keys never appear.
"""

from __future__ import annotations

import base64
import bisect
import textwrap
from dataclasses import dataclass, field
from fractions import Fraction
from ipaddress import IPv4Address, IPv6Address, ip_network
from xml.sax.saxutils import escape

from wgpy import crypto
from wgpy.allowedips import Prefix
from wgpy.config import Config, ConfigError, parse_address, parse_key, parse_prefix
from wgpy.tools.files.calc import difference
from wgpy.tools.files.hilbert import region
from wgpy.tools.files.lint import Finding, lint
from wgpy.tools.interface.show import short_key

__all__ = ["MapSide", "build_sides", "render_html", "render_svg", "wrap_words"]

#: peer colours, in peer order (colour-blind-friendly, Okabe-Ito and Tol's light set)
PALETTE = (
    "#e69f00",
    "#56b4e9",
    "#009e73",
    "#f0e442",
    "#0072b2",
    "#d55e00",
    "#cc79a7",
    "#77aadd",
    "#ee8866",
    "#aaaa00",
    "#bbcc33",
    "#99ddff",
)
SQUARE = 360  # pixels per family square
SMALLEST = 4.0  # a region smaller than this is drawn as a marker (not to scale)
UNOWNED = "#eeeeee"
ROUTE = "#1f4e9c"
ALERT = "#d62728"


@dataclass(frozen=True)
class MapPeer:
    key: str
    name: str | None
    colour: str


@dataclass(frozen=True)
class Held:
    """One AllowedIPs entry as written: ``lost`` when another peer holds the same prefix
    (wg keeps the later one), ``shadowed`` when more specific prefixes cover all of it."""

    prefix: Prefix
    key: str
    lost_to: str | None = None
    shadowed: bool = False


@dataclass(frozen=True)
class CrossMark:
    """Another side's Address as this side's table sees it."""

    address: IPv4Address | IPv6Address
    side: str  # the other side's file or interface
    peer: str  # the key this side knows the other side by
    owner: str | None  # who holds the address here
    ok: bool


@dataclass
class MapSide:
    title: str
    peers: list[MapPeer] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    addresses: list[tuple[IPv4Address | IPv6Address, Prefix]] = field(default_factory=list)
    routes: list[Prefix] = field(default_factory=list)
    routes_note: str = ""
    cross: list[CrossMark] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    _by_key: dict[str, MapPeer] = field(default_factory=dict, repr=False, compare=False)

    def peer(self, key: str) -> MapPeer | None:
        if len(self._by_key) != len(self.peers):
            self._by_key = {p.key: p for p in self.peers}
        return self._by_key.get(key)

    def label(self, key: str | None) -> str:
        if key is None:
            return "no peer"
        peer = self.peer(key)
        return peer.name if peer is not None and peer.name else short_key(key)


@dataclass
class Live:
    """What a live interface adds to its config: its addresses and routes (when it is in
    this network namespace)."""

    addresses: list[tuple[IPv4Address | IPv6Address, Prefix]]
    routes: list[Prefix]
    #: how the routes were found (shown in the legend)
    note: str = "routes into the interface (this namespace's routing tables)"


def _public_key(config: Config) -> str | None:
    iface = config.interface
    if iface is None or iface.private_key is None:
        return None
    try:
        raw = parse_key(iface.private_key)
    except ConfigError:
        return None
    return base64.b64encode(crypto.public_key(raw)).decode()


def _side(config: Config, live: Live | None, names: dict[str, str]) -> tuple[MapSide, str | None]:
    table = config.table()  # raises ConfigError (FILE:LINE) like explain and lint
    side = MapSide(config.filename)
    names = config.peer_names() | names
    for peer in config.peers:
        assert peer.public_key is not None  # table() checked it
        key = peer.public_key.text
        if side.peer(key) is None:
            colour = PALETTE[len(side.peers) % len(PALETTE)]
            side.peers.append(MapPeer(key, names.get(key), colour))
    written: list[tuple[Prefix, str]] = []
    for peer in config.peers:
        assert peer.public_key is not None
        for value in peer.allowed_ips:
            written.append((parse_prefix(value), peer.public_key.text))
    owned = [(p, k) for k in table.peers() for p in table.entries(k)]
    coverage = _Coverage([p for p, _k in owned])
    seen: set[tuple[Prefix, str]] = set()
    for prefix, key in written:
        if (prefix, key) in seen:
            continue
        seen.add((prefix, key))
        owner = table.owner(prefix)
        lost_to = owner if owner != key else None
        shadowed = lost_to is None and coverage.shadowed(prefix)
        side.held.append(Held(prefix, key, lost_to, shadowed))
    if live is not None:
        side.addresses = live.addresses
        side.routes = live.routes
        side.routes_note = live.note
    elif config.interface is not None:
        for value in config.interface.addresses:
            try:
                side.addresses.append(parse_address(value))
            except ConfigError:
                continue  # lint reports it
        table_value = config.interface.table
        if table_value is not None and table_value.text.lower() == "off":
            side.routes = [net for _host, net in side.addresses]
            side.routes_note = "routes into the interface: Table = off, only the Address subnets"
        else:
            side.routes = _unique([p for p, _k in owned] + [n for _h, n in side.addresses])
            side.routes_note = "routes into the interface: wg-quick adds one per AllowedIPs"
    return side, _public_key(config)


def _unique(prefixes: list[Prefix]) -> list[Prefix]:
    return sorted(set(prefixes), key=_order)


def _order(prefix: Prefix) -> tuple[int, int, int]:
    return prefix.version, prefix.prefixlen, int(prefix.network_address)


class _Coverage:
    """Which prefixes lie inside a prefix, found by bisection over the prefixes sorted by
    first address (a hub's thousands of peers stay fast)."""

    def __init__(self, prefixes: list[Prefix]) -> None:
        self.items: dict[int, list[tuple[int, int, Prefix]]] = {4: [], 6: []}
        for prefix in prefixes:
            start = int(prefix.network_address)
            self.items[prefix.version].append((start, prefix.prefixlen, prefix))
        for items in self.items.values():
            items.sort(key=lambda item: (item[0], item[1]))
        self.starts = {v: [item[0] for item in items] for v, items in self.items.items()}

    def shadowed(self, prefix: Prefix) -> bool:
        """Whether more specific prefixes (of any peer) cover all of ``prefix``."""
        items = self.items[prefix.version]
        first = int(prefix.network_address)
        last = first + prefix.num_addresses
        index = bisect.bisect_left(self.starts[prefix.version], first)
        longer: list[Prefix] = []
        while index < len(items) and items[index][0] < last:
            if items[index][1] > prefix.prefixlen:
                longer.append(items[index][2])
            index += 1
        return bool(longer) and not difference([prefix], longer)


def build_sides(
    configs: list[Config],
    live: list[Live | None] | None = None,
    names: dict[str, str] | None = None,
) -> list[MapSide]:
    """One side per config (``live``: the addresses and routes of a live interface, in the
    same order), with the cross-side marks and the lint findings of each file. ``names``
    (public key -> name) adds to the configs' ``# Name =`` comments, for live interfaces."""
    live = live or [None] * len(configs)
    built = [_side(c, extra, names or {}) for c, extra in zip(configs, live, strict=True)]
    findings = lint(configs)
    for side, _key in built:
        side.findings = [f for f in findings if f.file == side.title]
    by_key = {key: side for side, key in built if key is not None}
    for (side, my_key), config in zip(built, configs, strict=True):
        table = config.table()
        for peer in side.peers:
            other = by_key.get(peer.key)
            if other is None or other is side or peer.key == my_key:
                continue
            for host, _net in other.addresses:
                found = table.match(host)
                owner = None if found is None else found[1]
                side.cross.append(CrossMark(host, other.title, peer.key, owner, owner == peer.key))
    return [side for side, _ in built]


# ---------------------------------------------------------------------------------- drawing


def _root(prefixes: list[Prefix]) -> Prefix:
    """The smallest prefix that contains all of ``prefixes`` (one family)."""
    width = prefixes[0].max_prefixlen
    length = min(p.prefixlen for p in prefixes)
    first = int(prefixes[0].network_address)
    for prefix in prefixes[1:]:
        differing = first ^ int(prefix.network_address)
        length = min(length, width - differing.bit_length())
    network = ip_network((first >> (width - length) << (width - length), length))
    return network


def _fmt(value: Fraction) -> str:
    return f"{float(value):.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class _Box:
    x: Fraction
    y: Fraction
    w: Fraction
    h: Fraction

    @property
    def small(self) -> bool:
        return min(self.w, self.h) < SMALLEST

    def centre(self) -> tuple[str, str]:
        return _fmt(self.x + self.w / 2), _fmt(self.y + self.h / 2)


class _Square:
    """One family's square: places prefixes and addresses of ``root`` at (x0, y0)."""

    def __init__(self, root: Prefix, x0: int, y0: int) -> None:
        self.root = root
        self.x0 = x0
        self.y0 = y0

    def box(self, prefix: Prefix) -> _Box | None:
        """Where ``prefix`` is drawn: the whole square when it holds the root, None when it
        lies outside."""
        if prefix.prefixlen <= self.root.prefixlen:
            if self.root.subnet_of(prefix):  # type: ignore[arg-type]
                whole = Fraction(SQUARE)
                return _Box(Fraction(self.x0), Fraction(self.y0), whole, whole)
            return None
        if not prefix.subnet_of(self.root):  # type: ignore[arg-type]
            return None
        depth = prefix.prefixlen - self.root.prefixlen
        offset = int(prefix.network_address) - int(self.root.network_address)
        index = offset >> (prefix.max_prefixlen - prefix.prefixlen)
        x, y, w, h = region(depth, index)
        return _Box(self.x0 + x * SQUARE, self.y0 + y * SQUARE, w * SQUARE, h * SQUARE)

    def address_box(self, address: IPv4Address | IPv6Address) -> _Box | None:
        return self.box(_host(address))


def _host(address: IPv4Address | IPv6Address) -> Prefix:
    return ip_network((int(address), address.max_prefixlen))


def _rect(box: _Box | None, attrs: str, title: str) -> str:
    if box is None:
        return ""
    if box.small:
        cx, cy = box.centre()
        return (
            f'<circle cx="{cx}" cy="{cy}" r="{SMALLEST:g}" {attrs}><title>{title}</title></circle>'
        )
    return (
        f'<rect x="{_fmt(box.x)}" y="{_fmt(box.y)}" width="{_fmt(box.w)}" '
        f'height="{_fmt(box.h)}" {attrs}><title>{title}</title></rect>'
    )


def _text(x: float | str, y: float | str, text: str, extra: str = "") -> str:
    return f'<text x="{x}" y="{y}"{extra}>{escape(text)}</text>'


def _drawn(side: MapSide, version: int) -> list[Prefix]:
    """Every prefix a family's square shows."""
    return (
        [h.prefix for h in side.held if h.prefix.version == version]
        + [n for a, n in side.addresses if a.version == version]
        + [h for a, _n in side.addresses if a.version == version for h in [_host(a)]]
        + [r for r in side.routes if r.version == version]
        + [_host(c.address) for c in side.cross if c.address.version == version]
    )


def _zoom(root: Prefix, prefixes: list[Prefix]) -> Prefix | None:
    """The smallest prefix holding what is too small to draw in ``root``'s square, when it is
    at least 16 times smaller than the root (a second, enlarged square of it is worth it)."""
    square = _Square(root, 0, 0)
    small = [p for p in prefixes if (box := square.box(p)) is not None and box.small]
    if not small:
        return None
    zoom = _root(small)
    return zoom if zoom.prefixlen >= root.prefixlen + 4 else None


def _family_svg(
    side: MapSide, version: int, x0: int, y0: int, root: Prefix, caption: str
) -> list[str]:
    held = [h for h in side.held if h.prefix.version == version]
    addresses = [(a, n) for a, n in side.addresses if a.version == version]
    routes = [r for r in side.routes if r.version == version]
    cross = [c for c in side.cross if c.address.version == version]
    square = _Square(root, x0, y0 + 18)
    family = "IPv4" if version == 4 else "IPv6"
    out = [
        _text(x0, y0 + 12, f"{family} {caption}: {root}"),
        f'<rect x="{x0}" y="{y0 + 18}" width="{SQUARE}" height="{SQUARE}" fill="{UNOWNED}" '
        f'stroke="#999999"><title>{escape(str(root))}: no peer holds it (not sent; '
        "packets from it dropped)</title></rect>",
    ]
    # fills: least specific first, so what is drawn last at a point is its longest match;
    # of two peers given the same prefix, the one that keeps it is drawn last
    order = sorted(held, key=lambda h: (_order(h.prefix), h.lost_to is None))
    for entry in order:
        if entry.lost_to is not None:
            continue
        peer = side.peer(entry.key)
        colour = peer.colour if peer else UNOWNED
        title = escape(f"{entry.prefix}: peer {side.label(entry.key)} ({entry.key})")
        box = square.box(entry.prefix)
        if box is None:
            continue
        stroke = "#333333" if box.small else "#ffffff"
        out.append(_rect(box, f'fill="{colour}" stroke="{stroke}" stroke-width="0.5"', title))
        if not box.small and box.w >= 70 and box.h >= 14:
            cx, cy = box.centre()
            out.append(
                _text(cx, cy, str(entry.prefix), ' text-anchor="middle" font-size="10" dy="3"')
            )
    for route in sorted(routes, key=_order):
        title = escape(f"route {route} into the interface")
        out.append(
            _rect(
                square.box(route),
                f'fill="none" stroke="{ROUTE}" stroke-width="1" stroke-dasharray="3 2"',
                title,
            )
        )
    for entry in order:
        if entry.shadowed or entry.lost_to is not None:
            peer = side.peer(entry.key)
            why = (
                f"duplicate: {entry.prefix} of peer {side.label(entry.key)} is taken by peer "
                f"{side.label(entry.lost_to)}"
                if entry.lost_to is not None
                else f"shadowed: {entry.prefix} of peer {side.label(entry.key)} is covered by "
                "more specific prefixes"
            )
            colour = peer.colour if peer else ALERT
            out.append(
                _rect(
                    square.box(entry.prefix),
                    f'fill="none" stroke="{ALERT}" stroke-width="2" stroke-dasharray="6 3" '
                    f'class="{"duplicate" if entry.lost_to else "shadowed"}" '
                    f'data-peer-colour="{colour}"',
                    escape(why),
                )
            )
    for host, net in addresses:
        out.append(
            _rect(
                square.box(net),
                'fill="none" stroke="#000000" stroke-width="1.5"',
                escape(f"Address subnet {net}"),
            )
        )
        box = square.address_box(host)
        if box is None:
            continue
        cx, cy = box.centre()
        out.append(
            f'<path d="M {cx} {cy} m -5 0 l 5 -5 l 5 5 l -5 5 z" fill="#ffffff" '
            f'stroke="#000000" stroke-width="1.5"><title>{escape(f"Address {host}")}'
            "</title></path>"
        )
    for mark in cross:
        box = square.address_box(mark.address)
        if box is None:
            continue
        cx, cy = box.centre()
        colour = "#2ca02c" if mark.ok else ALERT
        text = f"{mark.address}, the Address of {mark.side}: " + (
            f"sent to peer {side.label(mark.peer)}"
            if mark.ok
            else f"held by {side.label(mark.owner)} here, not by peer "
            f"{side.label(mark.peer)}: its packets are dropped"
        )
        out.append(
            f'<circle cx="{cx}" cy="{cy}" r="7" fill="none" stroke="{colour}" stroke-width="3" '
            f'class="{"cross-ok" if mark.ok else "cross-mismatch"}"><title>{escape(text)}'
            "</title></circle>"
        )
        if not mark.ok:  # named on the picture, not only on hover
            x = float(cx) + 10
            anchor = ""
            if x > square.x0 + SQUARE - 110:
                x, anchor = float(cx) - 10, ' text-anchor="end"'
            out.append(
                _text(
                    f"{x:g}",
                    f"{float(cy) + 4:g}",
                    f"{mark.address} ({mark.side})",
                    f' font-size="10" fill="{ALERT}"{anchor}',
                )
            )
    return out


def _legend(side: MapSide, x0: int, y0: int) -> tuple[list[str], int]:
    out = [_text(x0, y0 + 12, "peers", ' font-weight="bold"')]
    y = y0 + 30
    for peer in side.peers:
        out.append(
            f'<rect x="{x0}" y="{y - 10}" width="12" height="12" fill="{peer.colour}" '
            'stroke="#333333" stroke-width="0.5"/>'
        )
        out.append(_text(x0 + 18, y, side.label(peer.key), ' class="peer-name"'))
        y += 14
        out.append(_text(x0 + 18, y, peer.key, ' font-family="monospace" font-size="10"'))
        y += 13
        mine = sorted((h for h in side.held if h.key == peer.key), key=lambda h: _order(h.prefix))
        words = [
            str(h.prefix) + (" (lost)" if h.lost_to else "") + (" (shadowed)" if h.shadowed else "")
            for h in mine
        ]
        for line in wrap_words(", ".join(words) or "(no AllowedIPs)", 60):
            out.append(_text(x0 + 18, y, line, ' font-size="10"'))
            y += 12
        y += 6
    y += 6
    keys = [
        ("#999999", "none", "grey: held by no peer"),
        (ROUTE, "3 2", side.routes_note or "routes into the interface"),
        (ALERT, "6 3", "shadowed or duplicate prefix"),
        ("#000000", "none", "the interface's Address (◇) and its subnet"),
    ]
    if side.cross:
        keys.append(("#2ca02c", "none", "another side's Address: green sent to it, red not"))
    for colour, dash, text in keys:
        out.append(
            f'<rect x="{x0}" y="{y - 10}" width="12" height="12" fill="none" stroke="{colour}" '
            f'stroke-width="2" stroke-dasharray="{dash}"/>'
        )
        out.append(_text(x0 + 18, y, text, ' font-size="11"'))
        y += 16
    return out, y


def wrap_words(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken at spaces only (a key or a
    prefix is never cut), for the text of an SVG picture."""
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [""]


def _panel(side: MapSide, y0: int) -> tuple[list[str], int]:
    out = [_text(10, y0 + 18, side.title, ' font-size="16" font-weight="bold"')]
    y = y0 + 30
    versions = sorted(
        {h.prefix.version for h in side.held}
        | {a.version for a, _n in side.addresses}
        | {r.version for r in side.routes}
        | {c.address.version for c in side.cross}
    )
    legend, legend_bottom = _legend(side, 20 + SQUARE * 2 + 40, y)
    zooms: list[tuple[int, int, Prefix]] = []
    for column, version in enumerate(versions):
        x = 10 + column * (SQUARE + 20)
        root = _root(_drawn(side, version))
        out.extend(_family_svg(side, version, x, y, root, "(area to scale, dots too small)"))
        zoom = _zoom(root, _drawn(side, version))
        if zoom is not None:
            zooms.append((x, version, zoom))
    if not versions:
        out.append(_text(10, y + 20, "no AllowedIPs and no Address: nothing to draw"))
    out.extend(legend)
    y = max(y + (SQUARE + 30 if versions else 40), legend_bottom if not zooms else 0)
    if zooms:
        for x, zoomed, zoom in zooms:
            out.extend(_family_svg(side, zoomed, x, y, zoom, "enlarged"))
        y = max(y + SQUARE + 30, legend_bottom)
    y += 10
    out.append(_text(10, y, "lint findings", ' font-weight="bold"'))
    y += 16
    for finding in side.findings or []:
        colour = ALERT if finding.severity == "error" else "#8a6d00"
        if finding.severity == "info":
            colour = "#555555"
        for index, line in enumerate(wrap_words(str(finding), 150)):
            out.append(
                _text(
                    20 if index == 0 else 36,
                    y,
                    line,
                    f' font-size="11" fill="{colour}" class="finding"',
                )
            )
            y += 14
    if not side.findings:
        out.append(_text(20, y, "none", ' font-size="11"'))
        y += 14
    return out, y + 16


WIDTH = 20 + SQUARE * 2 + 40 + 420


def render_svg(sides: list[MapSide]) -> str:
    """The map of every side, one panel below the other, as an SVG document."""
    body: list[str] = []
    y = 0
    for side in sides:
        panel, y = _panel(side, y)
        body.extend(panel)
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y}" '
        f'viewBox="0 0 {WIDTH} {y}" font-family="sans-serif" font-size="12">\n'
        f"<title>{escape('AllowedIPs map: ' + ', '.join(s.title for s in sides))}</title>\n"
        f'<rect width="{WIDTH}" height="{y}" fill="#ffffff"/>\n'
    )
    return head + "\n".join(body) + "\n</svg>\n"


def render_html(sides: list[MapSide]) -> str:
    """The same picture in a standalone HTML page (hover a prefix for who holds it)."""
    svg = render_svg(sides).split("\n", 1)[1]  # no XML declaration inside HTML
    title = escape("wgpy map: " + ", ".join(s.title for s in sides))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n"
        "<style>body{font-family:sans-serif;margin:1em}svg{max-width:100%;height:auto}"
        "</style>\n</head>\n<body>\n"
        f"<h1>{title}</h1>\n{svg}</body>\n</html>\n"
    )
