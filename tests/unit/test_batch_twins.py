"""The C batch calls (wgpy/_batch.c) against their pure-Python twins (wgpy.batch), byte for byte.

Each case runs both and compares everything they return; each also checks the result against
what a data message is (header, counter, padding, an AEAD that opens under the key), so that a
mistake shared by both twins fails too. The replay check is Python's, after open_batch: a
datagram repeated in one batch opens twice and the window refuses the second.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.batch_paths import c_module
from tests.packets import ipv4_udp, ipv6_udp
from wgpy import batch, crypto, messages
from wgpy.device import state
from wgpy.replay import ReplayWindow

C: Any = c_module()

keys = st.binary(min_size=32, max_size=32)
mtus = st.sampled_from([0, 1, 16, 100, 1280, 1420, 1500, 9000])


@st.composite
def inner_packets(draw: st.DrawFn) -> bytes:
    """IP packets of every size the runs care about, some carrying a WireGuard message."""
    kind = draw(st.sampled_from(["raw", "v4", "v6", "nested4", "nested6", "fragment"]))
    size = draw(st.integers(0, 1700))
    if kind == "raw":
        return draw(st.binary(max_size=80)) + bytes(size % 200)
    if kind == "v4":
        return ipv4_udp("10.0.0.1", "10.0.0.2", bytes(size))
    if kind == "v6":
        return ipv6_udp("fd00::1", "fd00::2", bytes(size))
    wireguard = bytes([draw(st.integers(0, 5)), 0, 0, 0]) + bytes(500 + size)
    if kind == "nested4":
        return ipv4_udp("10.0.0.1", "10.0.0.2", wireguard)
    if kind == "nested6":
        return ipv6_udp("fd00::1", "fd00::2", wireguard)
    packet = bytearray(ipv4_udp("10.0.0.1", "10.0.0.2", wireguard))
    packet[6] |= 0x20  # more fragments: not looked into
    return bytes(packet)


def _plain(sealed: batch.SealedRun) -> tuple[Any, ...]:
    runs, singles, sent = sealed
    return [(bytes(data), size) for data, size in runs], [bytes(d) for d in singles], sent


def _datagrams(runs: list[tuple[bytes | bytearray, int]]) -> list[bytes]:
    out: list[bytes] = []
    for data, size in runs:
        step = size or len(data)
        out += [bytes(data[i : i + step]) for i in range(0, len(data), step)]
    return out


def _both(call: str, *args: Any) -> Any:
    """The C call and its twin on the same arguments: same result or same exception."""
    twin: Callable[..., Any] = getattr(batch, "pure_" + call)
    try:
        expected = twin(*args)
    except (ValueError, OverflowError) as error:
        with pytest.raises(type(error)):
            getattr(C, call)(*args)
        return None
    got = getattr(C, call)(*args)
    if call == "seal_run":
        assert _plain(got) == _plain(expected)
    else:
        assert got == expected
    return got


def test_constants_agree() -> None:
    """The statuses and the run bounds are the same numbers in C, in the twin and in Device."""
    assert (C.OK, C.SHORT, C.BAD_TAG, C.FOREIGN) == (
        batch.OK,
        batch.SHORT,
        batch.BAD_TAG,
        batch.FOREIGN,
    )
    assert (batch._RUN_MAX_DATAGRAMS, batch._RUN_MAX_BYTES) == (
        state.RUN_MAX_DATAGRAMS,
        state.RUN_MAX_BYTES,
    )


@settings(max_examples=200)
@given(
    key=keys,
    receiver=st.integers(0, 2**32 - 1),
    counter=st.integers(0, 2**64 - 100),
    packets=st.lists(inner_packets(), max_size=80),
    mtu=mtus,
    with_limits=st.booleans(),
)
def test_seal_run_twins(
    key: bytes, receiver: int, counter: int, packets: list[bytes], mtu: int, with_limits: bool
) -> None:
    limits = [1280 if len(p) & 1 else mtu for p in packets] if with_limits else None
    runs, singles, sent = _both("seal_run", key, receiver, counter, packets, mtu, limits)
    # what a data message is, whichever twin made it
    datagrams = _datagrams(runs)
    assert sent == sum(map(len, datagrams)) + sum(map(len, singles))
    assert len(datagrams) + len(singles) == len(packets)
    by_counter = {int.from_bytes(d[8:16], "little"): d for d in [*datagrams, *singles]}
    assert sorted(by_counter) == list(range(counter, counter + len(packets)))
    for index, packet in enumerate(packets):
        datagram = by_counter[counter + index]
        assert datagram[:8] == b"\x04\0\0\0" + receiver.to_bytes(4, "little")
        limit = mtu if limits is None else limits[index]
        padded = packet + bytes(messages.padded_length(len(packet), limit) - len(packet))
        assert crypto.aead_decrypt(key, counter + index, datagram[16:], b"") == padded
    for data, size in runs:
        assert len(data) <= max(size, state.RUN_MAX_BYTES)
        assert not size or len(data) <= size * state.RUN_MAX_DATAGRAMS


@st.composite
def damaged_batches(draw: st.DrawFn) -> tuple[bytes, int, list[bytes], int]:
    """Sealed datagrams on one keypair, some repeated, cut short, tampered with, sealed under
    another key, or addressed elsewhere."""
    key = draw(keys)
    receiver = draw(st.integers(0, 2**32 - 1))
    counter = draw(st.integers(0, 2**40))
    packets = draw(st.lists(st.binary(max_size=300), min_size=1, max_size=20))
    datagrams = _datagrams(C.seal_run(key, receiver, counter, packets, 1420)[0])
    other = draw(keys.filter(lambda k: k != key))
    out: list[bytes] = []
    for datagram in datagrams:
        kind = draw(
            st.sampled_from(["ok", "ok", "ok", "repeat", "short", "tag", "key", "index", "type"])
        )
        if kind == "repeat":
            out += [datagram, datagram]
            continue
        damaged = bytearray(datagram)
        if kind == "short":
            damaged = damaged[: draw(st.integers(0, 31))]
        elif kind == "tag":
            at = draw(st.integers(16, len(damaged) - 1))
            damaged[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "key":
            damaged = bytearray(
                _datagrams(C.seal_run(other, receiver, counter, [packets[0]], 1420)[0])[0]
            )
        elif kind == "index":
            damaged[4] ^= 1
        elif kind == "type":
            damaged[draw(st.integers(0, 3))] ^= 2
        out.append(bytes(damaged))
    limit = draw(st.sampled_from([2**64 - 1, counter + len(datagrams) // 2]))
    return key, receiver, out, limit


@settings(max_examples=300)
@given(case=damaged_batches(), any_receiver=st.booleans())
def test_open_batch_twins(case: tuple[bytes, int, list[bytes], int], any_receiver: bool) -> None:
    key, receiver, datagrams, limit = case
    receiver_arg = -1 if any_receiver else receiver
    counters, results = _both("open_batch", key, datagrams, receiver_arg, limit)
    assert len(counters) == len(results) <= len(datagrams)
    for index, (counter, result) in enumerate(zip(counters, results, strict=True)):
        datagram = datagrams[index]
        last = index == len(results) - 1
        if len(datagram) < 32:
            assert result == batch.SHORT and last
            continue
        assert counter == int.from_bytes(datagram[8:16], "little")
        header = datagram[:4] == b"\x04\0\0\0" and (
            any_receiver or datagram[4:8] == receiver.to_bytes(4, "little")
        )
        if not header or counter >= limit:
            assert result == batch.FOREIGN and last
            continue
        expected = crypto.aead_decrypt(key, counter, datagram[16:], b"")
        assert result == (batch.BAD_TAG if expected is None else expected)
    if len(results) < len(datagrams):
        assert results[-1] in (batch.SHORT, batch.FOREIGN)
    # replay is Python's, after: both twins' plaintexts through one window decide alike
    windows = ReplayWindow(), ReplayWindow()
    pure_counters, pure_results = batch.pure_open_batch(key, datagrams, receiver_arg, limit)
    verdicts = [
        [isinstance(r, bytes) and window.accept(c) for c, r in zip(cs, rs, strict=True)]
        for window, cs, rs in (
            (windows[0], counters, results),
            (windows[1], pure_counters, pure_results),
        )
    ]
    assert verdicts[0] == verdicts[1]


def test_a_repeated_datagram_opens_twice_and_replay_refuses_it() -> None:
    key = os.urandom(32)
    datagram = _datagrams(C.seal_run(key, 9, 5, [b"x" * 40], 1420)[0])[0]
    for open_batch in (C.open_batch, batch.pure_open_batch):
        counters, results = open_batch(key, [datagram, datagram], 9)
        assert counters == [5, 5] and results[0] == results[1] == b"x" * 40 + bytes(8)
        window = ReplayWindow()
        assert [window.accept(c) for c in counters] == [True, False]


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("seal_run", (bytes(31), 1, 0, [b"x"], 1420)),
        ("seal_run", (bytes(32), 2**32, 0, [b"x"], 1420)),
        ("seal_run", (bytes(32), 1, 2**64 - 1, [b"x"], 1420)),
        ("seal_run", (bytes(32), 1, 0, [b"x", b"y"], 1420, [1420])),
        ("open_batch", (bytes(33), [bytes(40)])),
    ],
)
def test_both_refuse_bad_arguments(call: str, args: tuple[Any, ...]) -> None:
    with pytest.raises((ValueError, OverflowError)):
        getattr(batch, "pure_" + call)(*args)
    assert _both(call, *args) is None


def test_threads_share_the_c_calls() -> None:
    """The C calls hold no state between calls: threads calling at once get each their own
    right answer (the GIL is released inside)."""
    key = os.urandom(32)
    packets = [ipv4_udp("10.0.0.1", "10.0.0.2", bytes(1392))] * 64
    expected = _plain(batch.pure_seal_run(key, 3, 0, packets, 1420))
    wrong: list[int] = []

    def work(number: int) -> None:
        for _ in range(20):
            sealed = C.seal_run(key, 3, 0, packets, 1420)
            if _plain(sealed) != expected:
                wrong.append(number)
            opened = C.open_batch(key, _datagrams(sealed[0]), 3)[1]
            if opened != [packets[0]] * 64:
                wrong.append(number)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong


@pytest.mark.parametrize(
    ("size", "layout"),
    [
        # 112 + 32 = 144 bytes a datagram: 64 to a run (the kernel's UDP GSO segment limit)
        (100, [(64, 144), (64, 144), (22, 144)]),
        # 1420 + 32 = 1452: 44 to a run (65,000 bytes at most)
        (1420, [(44, 1452), (44, 1452), (44, 1452), (18, 1452)]),
    ],
)
def test_runs_are_cut_at_the_gso_bounds(size: int, layout: list[tuple[int, int]]) -> None:
    packets = [bytes(size)] * 150
    for seal_run in (C.seal_run, batch.pure_seal_run):
        runs = seal_run(os.urandom(32), 1, 0, packets, 1420)[0]
        assert [(len(data) // each, each) for data, each in runs] == layout
