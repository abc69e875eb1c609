"""``wgpy net map``: a network as a picture — its hosts as a graph, and a reachability
matrix of every ordered pair coloured by the cause that kills it — as SVG or HTML.

The graph puts the hosts on a circle in input order; a line joins two hosts whose
WireGuard interfaces list each other as peers (dashed and red when only one side lists the
other: no handshake can complete). A LAN hangs off its gateway. The matrix has one row per
sender and one column per receiver, in the same order as ``wgpy net check`` lists them: green
for a pair whose ping and reply arrive, grey for unknown, and one colour per cause group,
named in the legend with the group's size. Past :data:`MATRIX_MAX` addresses the matrix would
be unreadable and is left out (the legend still counts every group).

Deterministic: the same inputs give the same bytes (no clocks, no random layout, coordinates
rounded the same way). No key but public ones appears, and those only in hover titles.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

from wgpy.net.check import Endpoint, Report
from wgpy.net.model import Network
from wgpy.tools.files.aipmap import PALETTE, wrap_words
from wgpy.tools.network.net_text import cause_text

__all__ = ["MATRIX_MAX", "render_html", "render_svg"]

MATRIX_MAX = 120
REACHABLE = "#2ca02c"
UNKNOWN = "#bbbbbb"
ONE_SIDED = "#d62728"
CELL = 14
GRAPH = 420


def _name(endpoint: Endpoint) -> str:
    return f"{endpoint.host}/lan" if endpoint.lan else endpoint.host


def _cause_line(report: Report, number: int) -> str:
    group = report.groups[number]
    return f"{len(group.pairs)} × {cause_text(group.cause, group.leg)}"


def _graph(network: Network, x0: int, y0: int) -> list[str]:
    out: list[str] = []
    hosts = network.hosts
    centre = GRAPH / 2
    radius = GRAPH / 2 - 60
    where: dict[str, tuple[float, float]] = {}
    count = max(1, len(hosts))
    for i, host in enumerate(hosts):
        angle = -math.pi / 2 + 2 * math.pi * i / count
        where[host.name] = (
            round(x0 + centre + radius * math.cos(angle), 1),
            round(y0 + centre + radius * math.sin(angle), 1),
        )
    keys = {i.public_key: h.name for h in hosts for i in h.wireguard() if i.public_key}
    knows: set[tuple[str, str]] = set()
    for host in hosts:
        for interface in host.wireguard():
            for peer in interface.peers:
                other = keys.get(peer.public_key)
                if other is not None:
                    knows.add((host.name, other))
    drawn: set[frozenset[str]] = set()
    for a, b in sorted(knows):
        pair = frozenset((a, b))
        if pair in drawn:
            continue
        drawn.add(pair)
        mutual = (b, a) in knows
        (x1, y1), (x2, y2) = where[a], where[b]
        style = 'stroke="#555555"' if mutual else f'stroke="{ONE_SIDED}" stroke-dasharray="5,4"'
        title = f"{a} ↔ {b}" if mutual else f"{a} lists {b} as a peer, {b} does not list {a}"
        out.append(
            f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" {style} stroke-width="1.5">'
            f"<title>{escape(title)}</title></line>"
        )
    for host in hosts:
        x, y = where[host.name]
        addresses = ", ".join(str(a) for i in host.wireguard() for a in i.addresses)
        out.append(
            f'<circle cx="{x}" cy="{y}" r="9" fill="#0072b2">'
            f"<title>{escape(host.name + ': ' + addresses)}</title></circle>"
        )
        out.append(
            f'<text x="{x}" y="{round(y - 13, 1)}" text-anchor="middle">{escape(host.name)}</text>'
        )
        for j, lan in enumerate(host.lans):
            lx, ly = round(x + 28, 1), round(y + 16 + 14 * j, 1)
            out.append(
                f'<rect x="{lx - 5}" y="{ly - 5}" width="10" height="10" fill="#009e73">'
                f"<title>{escape(f'LAN {lan.prefix} behind {host.name} ({lan.origin})')}</title>"
                "</rect>"
            )
            out.append(f'<text x="{lx + 8}" y="{ly + 4}">{escape(str(lan.prefix))}</text>')
    return out


def _matrix(report: Report, x0: int, y0: int) -> tuple[list[str], int, int]:
    order: list[Endpoint] = []
    for result in report.results:
        for endpoint in (result.source, result.target):
            if endpoint not in order:
                order.append(endpoint)
    if len(order) > MATRIX_MAX:
        text = f"({len(order)} addresses: the matrix is left out above {MATRIX_MAX})"
        return [f'<text x="{x0}" y="{y0 + 14}">{escape(text)}</text>'], 400, 30
    group_of: dict[tuple[Endpoint, Endpoint], int] = {}
    for number, group in enumerate(report.groups):
        for result in group.pairs:
            group_of[(result.source, result.target)] = number
    label = 8 * max((len(_name(e)) for e in order), default=4) + 10
    cell = max(CELL, min(28, 360 // max(1, len(order))))
    out: list[str] = []
    index = {e: i for i, e in enumerate(order)}
    for i, endpoint in enumerate(order):
        y = y0 + label + i * cell
        out.append(
            f'<text x="{x0 + label - 4}" y="{y + cell - 3}" text-anchor="end">'
            f"{escape(_name(endpoint))}</text>"
        )
        x = x0 + label + i * cell
        out.append(
            f'<text x="{x + cell - 3}" y="{y0 + label - 4}" '
            f'transform="rotate(-90 {x + cell - 3} {y0 + label - 4})">'
            f"{escape(_name(endpoint))}</text>"
        )
    for result in report.results:
        row, column = index[result.source], index[result.target]
        found = group_of.get((result.source, result.target))
        if result.reachable:
            fill, what = REACHABLE, "reachable"
        elif result.unknown:
            fill, what = UNKNOWN, "unknown"
        elif found is not None:
            fill, what = PALETTE[found % len(PALETTE)], _cause_line(report, found)
        else:
            fill, what = UNKNOWN, "not reachable"
        title = f"{result.source.label} → {result.target.label}: {what}"
        out.append(
            f'<rect x="{x0 + label + column * cell}" y="{y0 + label + row * cell}" '
            f'width="{cell - 1}" height="{cell - 1}" fill="{fill}">'
            f"<title>{escape(title)}</title></rect>"
        )
    size = label + len(order) * cell
    return out, size, size


def _legend(report: Report, x0: int, y0: int, width: int) -> tuple[list[str], int]:
    out = [
        f'<rect x="{x0}" y="{y0}" width="12" height="12" fill="{REACHABLE}"/>',
        f'<text x="{x0 + 18}" y="{y0 + 11}">{report.reachable} pairs reachable '
        f"(a ping and its reply)</text>",
    ]
    y = y0 + 20
    for number in range(len(report.groups)):
        colour = PALETTE[number % len(PALETTE)]
        out.append(f'<rect x="{x0}" y="{y}" width="12" height="12" fill="{colour}"/>')
        lines = wrap_words(_cause_line(report, number), width // 7)
        for k, text in enumerate(lines):
            out.append(f'<text x="{x0 + 18}" y="{y + 11 + 15 * k}">{escape(text)}</text>')
        y += 15 * len(lines) + 6
    return out, y - y0


def render_svg(report: Report) -> str:
    graph = _graph(report.network, 10, 30)
    matrix, mw, mh = _matrix(report, GRAPH + 30, 30)
    width = max(GRAPH + 40 + mw, 700)
    legend, lh = _legend(report, 10, 40 + max(GRAPH, mh), width - 20)
    height = 40 + max(GRAPH, mh) + lh + 10
    total = len(report.results)
    title = (
        f"{len(report.network.hosts)} hosts, {total} pairs: "
        f"{report.reachable} reachable, {total - report.reachable} not"
    )
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">\n'
        f"<title>{escape('wgpy net map: ' + title)}</title>\n"
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>\n'
        f'<text x="10" y="18" font-weight="bold">{escape(title)}</text>\n'
    )
    return head + "\n".join([*graph, *matrix, *legend]) + "\n</svg>\n"


def render_html(report: Report) -> str:
    svg = render_svg(report).split("\n", 1)[1]
    title = escape(f"wgpy net map: {', '.join(h.name for h in report.network.hosts)}")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n"
        "<style>body{font-family:sans-serif;margin:1em}svg{max-width:100%;height:auto}"
        "</style>\n</head>\n<body>\n"
        f"<h1>{title}</h1>\n{svg}</body>\n</html>\n"
    )
