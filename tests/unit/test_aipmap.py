"""``wgpy map``: the Hilbert geometry, and the picture of a hub and two spokes (golden files,
and what a wrong picture would get wrong: positions, nesting, marks, names, no secrets).

Golden files are rewritten with ``WGPY_UPDATE_GOLDEN=1`` (then review the diff, and look at
the picture: ``chromium --headless --screenshot ... file://.../map-hub.svg``).
"""

from __future__ import annotations

import itertools
import os
import re
import xml.etree.ElementTree as ET
from fractions import Fraction
from ipaddress import ip_network
from pathlib import Path

import pytest

from wgpy.cli import main
from wgpy.config import Config, load, parse_config
from wgpy.tools.files.aipmap import SQUARE, build_sides, render_html, render_svg
from wgpy.tools.files.hilbert import cell, region

GOLDEN = Path(__file__).parent / "golden"
SVG = "{http://www.w3.org/2000/svg}"


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("WGPY_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs (WGPY_UPDATE_GOLDEN=1 rewrites it)"


def configs(*names: str) -> list[Config]:
    return [parse_config((GOLDEN / f"map-{n}.conf").read_text(), f"{n}.conf") for n in names]


# ------------------------------------------------------------------------------ geometry


@pytest.mark.parametrize("side", [2, 4, 8, 16])
def test_curve_visits_every_cell_once_stepping_to_a_neighbour(side: int) -> None:
    cells = [cell(side, i) for i in range(side * side)]
    assert len(set(cells)) == side * side
    assert all(0 <= x < side and 0 <= y < side for x, y in cells)
    for (x0, y0), (x1, y1) in itertools.pairwise(cells):
        assert abs(x0 - x1) + abs(y0 - y1) == 1


@pytest.mark.parametrize("depth", [0, 1, 2, 3, 6, 7])
def test_regions_nest_and_tile_with_areas_to_scale(depth: int) -> None:
    for index in range(2**depth):
        x, y, w, h = region(depth, index)
        assert w * h == Fraction(1, 2**depth)
        assert {w / h, h / w} & {1, 2}  # a square or a 2:1 rectangle
        children = [region(depth + 1, 2 * index + i) for i in range(2)]
        for cx, cy, cw, ch in children:
            assert x <= cx and cx + cw <= x + w and y <= cy and cy + ch <= y + h
        assert sum(cw * ch for _x, _y, cw, ch in children) == w * h


def test_a_deep_prefix_is_placed_exactly() -> None:
    # a /128 in ::/0: 2**64 cells a side, computed with integers, no float error
    x, y, w, _h = region(128, 2**128 - 1)
    assert w == Fraction(1, 2**64)
    assert (x, y) == (1 - w, Fraction(0))  # the curve ends in the top-right corner


# ---------------------------------------------------------------------------------- map


def boxes(svg: str) -> dict[str, tuple[float, float, float, float]]:
    """title text -> (x, y, w, h) of every rect with a title."""
    root = ET.fromstring(svg.encode())
    found = {}
    for rect in root.iter(f"{SVG}rect"):
        title = rect.find(f"{SVG}title")
        if title is not None and title.text:
            keys = ("x", "y", "width", "height")
            found[title.text] = tuple(float(rect.get(k, "0")) for k in keys)
    return found  # type: ignore[return-value]


def test_hub_and_spokes_golden() -> None:
    sides = build_sides(configs("hub", "alice", "bob"))
    svg = render_svg(sides)
    golden("map-hub.svg", svg)
    golden("map-hub.html", render_html(sides))
    # the picture in docs/see-it.md is this one
    assert (GOLDEN.parents[2] / "docs" / "map-example.svg").read_text() == svg
    assert render_svg(build_sides(configs("hub", "alice", "bob"))) == svg  # deterministic


def test_svg_parses_and_names_every_peer_with_its_key() -> None:
    sides = build_sides(configs("hub", "alice", "bob"))
    root = ET.fromstring(render_svg(sides).encode())
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    names = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "peer-name"]
    expected = [n for side in sides for n in (p.name for p in side.peers)]
    assert names == expected == ["alice", "bob", "carol", "hub", "hub"]
    for side in sides:
        for peer in side.peers:
            assert peer.key in texts


def test_prefixes_are_placed_to_scale_and_nested() -> None:
    (hub,) = build_sides(configs("hub"))
    found = boxes(render_svg([hub]))
    alice = hub.peers[0].key
    bob = hub.peers[1].key
    big = found[f"10.1.0.0/16: peer alice ({alice})"]
    small = found[f"10.1.5.0/24: peer bob ({bob})"]
    # the root is 10.0.0.0/14: a /16 is a quarter of the square, a /24 1/1024 of it
    assert big[2] * big[3] == pytest.approx(SQUARE * SQUARE / 4)
    assert small[2] * small[3] == pytest.approx(SQUARE * SQUARE / 1024, rel=0.05)
    assert big[0] <= small[0] and small[0] + small[2] <= big[0] + big[2]
    assert big[1] <= small[1] and small[1] + small[3] <= big[1] + big[3]


def test_shadowed_duplicate_address_and_mismatch_are_marked() -> None:
    hub, _alice, bob = build_sides(configs("hub", "alice", "bob"))
    svg = render_svg([hub])
    root = ET.fromstring(svg.encode())
    marked = {
        (el.get("class"), el.findtext(f"{SVG}title", "").split(":")[1].split(" of ")[0])
        for el in root.iter()
        if el.get("class") in ("shadowed", "duplicate")
    }
    # bob's 10.2.0.0/24 is covered by carol's two /25s; bob's 10.0.0.3/32 is taken by carol
    assert marked == {("shadowed", " 10.2.0.0/24"), ("duplicate", " 10.0.0.3/32")}
    titles = [t.text or "" for t in root.iter(f"{SVG}title")]
    assert "Address 10.0.0.1" in titles and "Address subnet 10.0.0.0/24" in titles
    # bob's Address 10.0.0.30 is not in the hub's AllowedIPs for bob: red, and lint says so
    mismatches = [
        el.findtext(f"{SVG}title", "")
        for el in root.iter(f"{SVG}circle")
        if el.get("class") == "cross-mismatch"
    ]
    assert any(m.startswith("10.0.0.30, the Address of bob.conf") for m in mismatches), mismatches
    assert any("[cross-allowed-ips]" in t for t in (x.text or "" for x in root.iter(f"{SVG}text")))
    # and on bob's side, the hub's fd00::1 is not covered (bob has no IPv6 AllowedIPs)
    assert [c.ok for c in bob.cross] == [True, False]
    assert [str(c.address) for c in bob.cross] == ["10.0.0.1", "fd00::1"]


def test_routes_follow_table_off() -> None:
    text = (GOLDEN / "map-alice.conf").read_text().replace("[Peer]", "Table = off\n\n[Peer]", 1)
    (side,) = build_sides([parse_config(text, "alice.conf")])
    assert side.routes == [ip_network("10.0.0.2/32"), ip_network("fd00::2/128")]
    (side,) = build_sides(configs("alice"))
    routes = [str(r) for r in side.routes]
    assert routes == ["10.0.0.0/24", "10.0.0.2/32", "fd00::/64", "fd00::2/128"]


def test_no_key_material_in_the_picture() -> None:
    svg = render_html(build_sides(configs("hub", "alice", "bob")))
    for name in ("hub", "alice", "bob"):
        text = (GOLDEN / f"map-{name}.conf").read_text()
        for secret in re.findall(r"^(?:PrivateKey|PresharedKey) = (\S+)", text, re.M):
            assert secret not in svg


def test_cli_writes_svg_or_html_and_reports_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = str(GOLDEN / "map-hub.conf")
    assert main(["map", hub, "-o", str(tmp_path / "m.html")]) == 0
    assert (tmp_path / "m.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["map", hub, "-o", str(tmp_path / "m.svg")]) == 0
    ET.parse(tmp_path / "m.svg")
    bad = tmp_path / "bad.conf"
    bad.write_text("[Interface]\n\n[Peer]\nPublicKey = nope\nAllowedIPs = 10.0.0.0/8\n")
    assert main(["map", str(bad), "-o", str(tmp_path / "x.svg")]) == 2
    assert f"{bad}:4: " in capsys.readouterr().err
    assert not (tmp_path / "x.svg").exists()


def test_names_for_a_config_without_them(tmp_path: Path) -> None:
    """A live interface has no # Name comments: --names CONF supplies them."""
    text = (GOLDEN / "map-hub.conf").read_text()
    bare = tmp_path / "bare.conf"
    bare.write_text("\n".join(line for line in text.splitlines() if "# Name" not in line))
    out = tmp_path / "named.svg"
    assert main(["map", str(bare), "--names", str(GOLDEN / "map-hub.conf"), "-o", str(out)]) == 0
    names = [t.text for t in ET.parse(out).iter(f"{SVG}text") if t.get("class") == "peer-name"]
    assert names == ["alice", "bob", "carol"]
    assert main(["map", str(bare), "-o", str(out)]) == 0
    names = [t.text for t in ET.parse(out).iter(f"{SVG}text") if t.get("class") == "peer-name"]
    keys = [p.public_key.text for p in load(bare).peers if p.public_key is not None]
    assert names == [key[:10] + "…" for key in keys]  # the short key, as wgpy top shows it
