"""wgpy calc: the result covers exactly INCLUDE minus EXCLUDE and no smaller prefix set does."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.allowedips import Prefix
from wgpy.cli import main
from wgpy.tools.files.calc import difference, parse_prefixes


def v4(bits: int = 32, base: int = 0, low: int = 0) -> st.SearchStrategy[Prefix]:
    """IPv4 prefixes inside base/(32 - bits) with lengths from low."""

    def make(value: int, length: int) -> Prefix:
        return IPv4Network((base + value, length), strict=False)

    return st.builds(make, st.integers(0, 2**bits - 1), st.integers(max(low, 32 - bits), 32))


def v6() -> st.SearchStrategy[Prefix]:
    def make(value: int, length: int) -> Prefix:
        return IPv6Network((value, length), strict=False)

    return st.builds(make, st.integers(0, 2**128 - 1), st.integers(0, 128))


def covered(prefixes: list[Prefix], version: int) -> list[tuple[int, int]]:
    """Oracle: merged [start, end) intervals, computed independently of calc."""
    spans = sorted(
        (int(p.network_address), int(p.broadcast_address) + 1)
        for p in prefixes
        if p.version == version
    )
    out: list[tuple[int, int]] = []
    for start, end in spans:
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def contains(intervals: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(s <= start and end <= e for s, e in intervals)


def minus(keep: list[tuple[int, int]], drop: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = keep
    for ds, de in drop:
        nxt = []
        for s, e in out:
            if de <= s or e <= ds:
                nxt.append((s, e))
                continue
            if s < ds:
                nxt.append((s, ds))
            if de < e:
                nxt.append((de, e))
        out = nxt
    return out


def check(include: list[Prefix], exclude: list[Prefix]) -> None:
    result = difference(include, exclude)
    for version in (4, 6):
        want = minus(covered(include, version), covered(exclude, version))
        mine = [p for p in result if p.version == version]
        # exact coverage
        got = covered(mine, version)
        assert got == _merge(want), (include, exclude, result)
        # disjoint
        total = sum(p.num_addresses for p in mine)
        assert total == sum(e - s for s, e in got)
        # minimal: every prefix is maximal (its parent is not inside the set), which makes the
        # decomposition the unique minimal one
        for p in mine:
            if p.prefixlen == 0:
                continue
            parent = p.supernet()
            start = int(parent.network_address)
            assert not contains(got, start, start + parent.num_addresses), (p, result)


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


@settings(max_examples=300)
@given(st.lists(v4(), max_size=6), st.lists(v4(), max_size=6))
def test_ipv4_anywhere(include: list[Prefix], exclude: list[Prefix]) -> None:
    check(include, exclude)


@settings(max_examples=300)
@given(
    st.lists(v4(8, 0x0A000000, 24), min_size=1, max_size=6),
    st.lists(v4(8, 0x0A000000, 24), max_size=6),
)
def test_ipv4_small_space_against_brute_force(include: list[Prefix], exclude: list[Prefix]) -> None:
    """In 10.0.0.0/24, address by address; and no smaller prefix set exists (by search)."""
    check(include, exclude)
    result = difference(include, exclude)
    inc = {a for p in include for a in p}
    exc = {a for p in exclude for a in p}
    assert {a for p in result for a in p} == inc - exc
    # no prefix list with fewer entries covers the set: each chosen prefix must lie inside the
    # set, and the greedy maximal blocks are a lower bound on the count
    blocks = [
        IPv4Network((0x0A000000 + s, n))
        for n in range(24, 33)
        for s in range(0, 256, 2 ** (32 - n))
        if all(a in inc - exc for a in IPv4Network((0x0A000000 + s, n)))
    ]
    maximal = [b for b in blocks if not any(b != c and b.subnet_of(c) for c in blocks)]
    assert sorted(result) == sorted(maximal)


@settings(max_examples=200)
@given(st.lists(v6(), max_size=5), st.lists(v6(), max_size=5))
def test_ipv6(include: list[Prefix], exclude: list[Prefix]) -> None:
    check(include, exclude)


@settings(max_examples=100)
@given(st.lists(st.one_of(v4(), v6()), max_size=6), st.lists(st.one_of(v4(), v6()), max_size=6))
def test_mixed_families(include: list[Prefix], exclude: list[Prefix]) -> None:
    check(include, exclude)


def test_issue_example(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["calc", "0.0.0.0/0", "::/0", "--exclude", "192.168.0.0/16", "10.0.0.0/8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("AllowedIPs = 0.0.0.0/5, 8.0.0.0/7, 11.0.0.0/8, 12.0.0.0/6,")
    assert out.rstrip().endswith("224.0.0.0/3, ::/0")
    assert main([*argv, "--json"]) == 0
    assert capsys.readouterr().out.startswith('["0.0.0.0/5", ')


def test_everything_excluded_and_bad_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    assert difference(parse_prefixes(["10.0.0.0/8"]), parse_prefixes(["0.0.0.0/0"])) == []
    assert main(["calc", "10.0.0.0/33"]) == 2
    assert "invalid prefix '10.0.0.0/33'" in capsys.readouterr().err


def test_host_bits_warn_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calc", "10.0.0.1/8"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "AllowedIPs = 10.0.0.0/8\n"
    assert "10.0.0.1/8 has host bits set; using 10.0.0.0/8" in captured.err
    assert main(["calc", "10.0.0.0/8", "fd00::1", "-x", "10.0.0.1/16"]) == 0
    err = capsys.readouterr().err
    assert err.count("host bits") == 1 and "10.0.0.1/16 has host bits set" in err
    warnings: list[str] = []
    parse_prefixes(["192.168.1.1/24, 10.0.0.0/8, 10.0.0.1"], warnings)
    assert warnings == ["192.168.1.1/24 has host bits set; using 192.168.1.0/24"]


def test_nothing_left_says_so_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calc", "10.0.0.0/8", "--exclude", "0.0.0.0/0"]) == 1
    captured = capsys.readouterr()
    assert "AllowedIPs = " not in captured.out
    assert "nothing is left" in captured.err
    assert main(["calc", "10.0.0.0/8", "--exclude", "0.0.0.0/0", "--json"]) == 1
    assert capsys.readouterr().out == "[]\n"
