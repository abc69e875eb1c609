"""parse_prefixes, C (wgpy/_batch_prefixes.c) against its pure-Python twin (wgpy.batch), and
the UAPI set it speeds up against the line-by-line path.

Runs of ``allowed_ip=`` lines of every kind the UAPI may carry: well-formed IPv4 and IPv6
prefixes of every length (with host bits, IPv4-mapped, compressed), and lines that must end a
run (lengths past the family's, addresses inet_pton refuses, bad characters, no slash, a
missing newline, other keys, NUL bytes). Both twins must give the same offsets, counts and
runs, and the runs must be exactly what inet_pton gives line by line.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.batch_paths import c_module
from wgpy import batch

C: Any = c_module()

v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(lambda a: a.compressed)
good_lines = st.one_of(st.tuples(v4, st.integers(0, 32)), st.tuples(v6, st.integers(0, 128))).map(
    lambda t: f"allowed_ip={t[0]}/{t[1]}\n".encode()
)
bad_lines = st.one_of(
    st.tuples(v4, st.integers(33, 999)).map(lambda t: f"allowed_ip={t[0]}/{t[1]}\n"),
    st.tuples(v6, st.integers(129, 999)).map(lambda t: f"allowed_ip={t[0]}/{t[1]}\n"),
    st.sampled_from(
        [
            "allowed_ip=1.2.3/8\n",
            "allowed_ip=01.2.3.4/8\n",
            "allowed_ip=1.2.3.4.5/8\n",
            "allowed_ip=::1::/8\n",
            "allowed_ip=fe80::1%eth0/64\n",
            "allowed_ip=1.2.3.4/-1\n",
            "allowed_ip=1.2.3.4/\n",
            "allowed_ip=/8\n",
            "allowed_ip=1.2.3.4\n",
            "allowed_ip=1.2.3.4/8",
            "allowed_ip=1.2.3.4/0008\n",
            "allowed_ip=1.2.3.4/8\r\n",
            "allowed_ip=1.2.3.4\x00/8\n",
            "public_key=00/8\n",
            "allowed_ip=" + "1" * 65 + "/8\n",
        ]
    ),
    st.binary(max_size=40).map(lambda b: "allowed_ip=" + b.decode("latin-1") + "\n"),
).map(lambda text: text.encode("latin-1") if isinstance(text, str) else text)


def _reference(run: bytes, start: int) -> tuple[int, int, list[tuple[int, int, list[int]]]]:
    """Line by line with ipaddress: what each well-formed line means, until one is not."""
    at, count = start, 0
    runs: list[tuple[int, int, list[int]]] = []
    while at < len(run):
        end = run.find(b"\n", at)
        if end < 0:
            break
        key, _, value = run[at:end].partition(b"=")
        address, slash, bits = value.partition(b"/")
        if key != b"allowed_ip" or not slash or not bits.isdigit() or len(bits) > 3:
            break
        if not address or len(address) > 64 or address.strip(b"0123456789abcdefABCDEF.:"):
            break
        family = socket.AF_INET6 if b":" in address else socket.AF_INET
        try:
            value_bytes = socket.inet_pton(family, address.decode())
        except OSError:
            break
        length = int(bits)
        if length > (128 if family == socket.AF_INET6 else 32):
            break
        version = 6 if family == socket.AF_INET6 else 4
        number = int.from_bytes(value_bytes, "big")
        ipaddress.ip_address(number if version == 4 else ipaddress.IPv6Address(number))
        if not runs or runs[-1][:2] != (version, length):
            runs.append((version, length, []))
        runs[-1][2].append(number)
        count += 1
        at = end + 1
    return at, count, runs


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(good_lines, good_lines, good_lines, bad_lines), max_size=30), st.data())
def test_parse_prefixes_c_equals_pure_and_inet_pton(
    lines: list[bytes], data: st.DataObject
) -> None:
    run = b"".join(lines)
    start = data.draw(st.integers(0, len(run)))
    pure = batch.pure_parse_prefixes(run, start)
    assert C.parse_prefixes(run, start) == pure
    if start == 0 or run[start - 1 : start] == b"\n":  # from a line's start
        assert pure == _reference(run, start)


@pytest.mark.parametrize("parse", ["c", "pure"])
def test_parse_prefixes_runs_and_stops(parse: str) -> None:
    call = C.parse_prefixes if parse == "c" else batch.pure_parse_prefixes
    run = (
        b"allowed_ip=10.0.0.1/8\nallowed_ip=10.1.0.0/8\nallowed_ip=fd00::/64\n"
        b"allowed_ip=10.2.0.0/8\nallowed_ip=10.3.0.0/33\nallowed_ip=10.4.0.0/8\n"
    )
    end, count, runs = call(run, 0)
    assert count == 4
    assert run[end:].startswith(b"allowed_ip=10.3.0.0/33\n")
    assert runs == [
        (4, 8, [0x0A000001, 0x0A010000]),
        (6, 64, [0xFD00 << 112]),
        (4, 8, [0x0A020000]),
    ]
    assert call(run, len(run)) == (len(run), 0, [])
    with pytest.raises(IndexError):
        call(run, len(run) + 1)
