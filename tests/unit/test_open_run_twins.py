"""open_run, C (wgpy/_batch_receive.c) against its pure-Python twin (wgpy.batch), and both
against what the full receive path would do datagram by datagram.

A batch of data messages is built with every kind of datagram that must end a run (short,
keepalive, another receiver, another type, a counter at the limit, a bad tag, a plaintext that
is not a well-formed IP packet, a replay, a counter behind the window) and every kind that must
not (IPv4 and IPv6 packets with padding, changing sources). Both twins must return the same
and leave their replay windows byte for byte equal; and the run must be exactly the prefix the
datagram-by-datagram reference accepts, with the window recording only those counters.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.batch_paths import c_module
from tests.packets import ipv4_udp, ipv6_udp
from wgpy import batch, crypto
from wgpy.replay import REJECT_AFTER_MESSAGES, ReplayWindow

C: Any = c_module()
KEY = bytes(range(32))
RECEIVER = 0x11223344
LIMIT = REJECT_AFTER_MESSAGES - 1


def _seal(counter: int, plaintext: bytes, *, key: bytes = KEY, receiver: int = RECEIVER) -> bytes:
    padded = plaintext + bytes(-len(plaintext) % 16)
    header = (4).to_bytes(4, "little") + receiver.to_bytes(4, "little")
    return header + counter.to_bytes(8, "little") + crypto.aead_encrypt(key, counter, padded, b"")


SOURCES_V4 = ["10.0.0.1", "10.0.0.2", "192.0.2.9"]
SOURCES_V6 = ["fd00::1", "fd00::2"]


@st.composite
def datagrams(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    """Data messages, mostly well-formed, with counters mostly rising; and the counters the
    window saw before (to start from a window that is not fresh)."""
    out: list[bytes] = []
    counter = draw(st.integers(0, 20_000))
    for _ in range(draw(st.integers(0, 24))):
        kind = draw(
            st.sampled_from(
                ["v4"] * 6
                + ["v6"] * 3
                + ["short", "keepalive", "receiver", "type", "limit", "tag", "notip"]
                + ["badlength", "replay", "old", "jump", "key"]
            )
        )
        size = draw(st.integers(0, 1400))
        if kind == "v4" or kind == "jump":
            if kind == "jump":
                counter += draw(st.integers(1, 20_000))
            source = draw(st.sampled_from(SOURCES_V4))
            out.append(_seal(counter, ipv4_udp(source, "10.9.9.9", bytes(size))))
        elif kind == "v6":
            source = draw(st.sampled_from(SOURCES_V6))
            out.append(_seal(counter, ipv6_udp(source, "fd00::9", bytes(size))))
        elif kind == "short":
            out.append(bytes(draw(st.integers(0, 32))))
        elif kind == "keepalive":
            out.append(_seal(counter, b""))
        elif kind == "receiver":
            out.append(_seal(counter, ipv4_udp("10.0.0.1", "10.9.9.9", b"x"), receiver=7))
        elif kind == "type":
            datagram = bytearray(_seal(counter, ipv4_udp("10.0.0.1", "10.9.9.9", b"x")))
            datagram[1] = 1
            out.append(bytes(datagram))
        elif kind == "limit":
            out.append(
                _seal(LIMIT + draw(st.integers(0, 8129)), ipv4_udp("10.0.0.1", "1.1.1.1", b""))
            )
        elif kind == "tag":
            datagram = bytearray(_seal(counter, ipv4_udp("10.0.0.1", "10.9.9.9", bytes(size))))
            datagram[draw(st.integers(16, len(datagram) - 1))] ^= 1 << draw(st.integers(0, 7))
            out.append(bytes(datagram))
        elif kind == "key":
            out.append(_seal(counter, ipv4_udp("10.0.0.1", "10.9.9.9", b"k"), key=bytes(32)))
        elif kind == "notip":
            out.append(_seal(counter, draw(st.binary(min_size=1, max_size=60))))
        elif kind == "badlength":
            packet = bytearray(ipv4_udp("10.0.0.1", "10.9.9.9", bytes(size)))
            packet[2:4] = (len(packet) + draw(st.integers(1, 40))).to_bytes(2, "big")
            out.append(_seal(counter, bytes(packet)))
        elif kind == "replay":
            if out:
                out.append(draw(st.sampled_from(out)))
            continue
        else:  # old: behind the window once the counters have moved on
            out.append(_seal(max(0, counter - 9000), ipv4_udp("10.0.0.1", "10.9.9.9", b"o")))
        counter += 1
    seen = draw(st.lists(st.integers(0, 30_000), max_size=6))
    return out, seen


def _window(seen: list[int]) -> ReplayWindow:
    window = ReplayWindow()
    for counter in seen:
        window.accept(counter)
    return window


def _state(window: ReplayWindow) -> tuple[bytes, int]:
    return bytes(window._bits), window.top


def _reference(
    batch_datagrams: list[bytes], start: int, window: ReplayWindow
) -> tuple[int, list[bytes]]:
    """The datagrams the full path would deliver as a run, one by one: opened, an IP packet
    of sound length, a counter the window accepts."""
    packets: list[bytes] = []
    index = start
    for index in range(start, len(batch_datagrams)):
        datagram = batch_datagrams[index]
        if len(datagram) <= 32 or datagram[:8] != bytes([4, 0, 0, 0]) + RECEIVER.to_bytes(
            4, "little"
        ):
            return index, packets
        counter = int.from_bytes(datagram[8:16], "little")
        if counter >= LIMIT:
            return index, packets
        plaintext = crypto.aead_decrypt(KEY, counter, datagram[16:], b"")
        if plaintext is None:
            return index, packets
        version = plaintext[0] >> 4
        if version == 4 and len(plaintext) >= 20:
            length = int.from_bytes(plaintext[2:4], "big")
            if not 20 <= length <= len(plaintext):
                return index, packets
        elif version == 6 and len(plaintext) >= 40:
            length = 40 + int.from_bytes(plaintext[4:6], "big")
            if length > len(plaintext):
                return index, packets
        else:
            return index, packets
        if not window.accept(counter):
            return index, packets
        packets.append(plaintext[:length])
    return len(batch_datagrams), packets


@settings(max_examples=400, deadline=None)
@given(datagrams(), st.data())
def test_open_run_c_equals_pure_and_the_full_path(
    case: tuple[list[bytes], list[int]], data: st.DataObject
) -> None:
    batch_datagrams, seen = case
    start = data.draw(st.integers(0, len(batch_datagrams)))
    pure_window, c_window, reference_window = _window(seen), _window(seen), _window(seen)
    pure = batch.pure_open_run(KEY, batch_datagrams, start, RECEIVER, LIMIT, pure_window)
    made = C.open_run(KEY, batch_datagrams, start, RECEIVER, LIMIT, c_window)
    assert made == pure
    assert _state(c_window) == _state(pure_window)
    end, packets, sources, received = pure
    assert (end, packets) == _reference(batch_datagrams, start, reference_window)
    assert _state(pure_window) == _state(reference_window)
    assert received == sum(len(d) for d in batch_datagrams[start:end])
    # sources: one entry where each run of one source address begins
    expected: list[tuple[int, bytes]] = []
    for position, packet in enumerate(packets):
        source = packet[12:16] if packet[0] >> 4 == 4 else packet[8:24]
        if not expected or expected[-1][1] != source:
            expected.append((position, source))
    assert sources == expected


@pytest.mark.parametrize("opener", ["c", "pure"])
def test_open_run_stops_before_each_unusual_datagram_and_leaves_the_window(opener: str) -> None:
    open_run = C.open_run if opener == "c" else batch.pure_open_run
    good = [_seal(n, ipv4_udp("10.0.0.1", "10.9.9.9", bytes(n))) for n in range(3)]
    bad_tag = bytearray(_seal(3, ipv4_udp("10.0.0.1", "10.9.9.9", b"t")))
    bad_tag[-1] ^= 1
    unusual = {
        "short": bytes(31),
        "keepalive": _seal(3, b""),
        "receiver": _seal(3, ipv4_udp("10.0.0.1", "10.9.9.9", b"r"), receiver=RECEIVER + 1),
        "limit": _seal(LIMIT, ipv4_udp("10.0.0.1", "10.9.9.9", b"l")),
        "bad tag": bytes(bad_tag),
        "not ip": _seal(3, b"\x00" * 40),
        "replay": good[1],
    }
    for name, datagram in unusual.items():
        window = ReplayWindow()
        end, packets, _, _ = open_run(KEY, [*good, datagram, good[2]], 0, RECEIVER, LIMIT, window)
        assert end == 3, name
        assert len(packets) == 3
        assert window.top == 3, name
        before = copy.deepcopy(_state(window))
        # from the unusual one on: nothing taken, nothing recorded
        assert open_run(KEY, [*good, datagram], 3, RECEIVER, LIMIT, window)[:2] == (3, []), name
        assert _state(window) == before, name


@pytest.mark.parametrize("opener", ["c", "pure"])
def test_open_run_refuses_bad_arguments_alike(opener: str) -> None:
    open_run = C.open_run if opener == "c" else batch.pure_open_run
    window = ReplayWindow()
    with pytest.raises(ValueError):
        open_run(bytes(31), [], 0, RECEIVER, LIMIT, window)
    with pytest.raises(ValueError):
        open_run(KEY, [], 0, 2**32, LIMIT, window)
    with pytest.raises(IndexError):
        open_run(KEY, [b""], 2, RECEIVER, LIMIT, window)
    assert open_run(KEY, [], 0, RECEIVER, LIMIT, window) == (0, [], [], 0)


@st.composite
def gro_reads(draw: st.DrawFn) -> tuple[bytes, int]:
    """One UDP GRO read: data messages of one size back to back (some damaged, replayed or
    for another receiver), the last possibly shorter, as the kernel glues them."""
    payload = draw(st.integers(0, 1400))
    counter = draw(st.integers(0, 10_000))
    datagrams: list[bytes] = []
    for _ in range(draw(st.integers(1, 20))):
        kind = draw(st.sampled_from(["data"] * 8 + ["tag", "replay", "receiver", "source"]))
        if kind == "replay" and datagrams:
            datagrams.append(draw(st.sampled_from(datagrams)))
            continue
        source = "10.0.0.7" if kind == "source" else "10.0.0.1"
        receiver = RECEIVER + 1 if kind == "receiver" else RECEIVER
        datagram = _seal(counter, ipv4_udp(source, "10.9.9.9", bytes(payload)), receiver=receiver)
        if kind == "tag":
            damaged = bytearray(datagram)
            damaged[-1] ^= 0x80
            datagram = bytes(damaged)
        datagrams.append(datagram)
        counter += 1
    if draw(st.booleans()):  # a shorter last one
        datagrams.append(_seal(counter, ipv4_udp("10.0.0.1", "10.9.9.9", b"")))
    size = len(datagrams[0])
    if len(datagrams[-1]) > size:
        datagrams.pop()
    return b"".join(datagrams), size


@settings(max_examples=300, deadline=None)
@given(gro_reads(), st.data())
def test_open_run_reads_a_gro_read_in_place_as_its_datagrams(
    read: tuple[bytes, int], data: st.DataObject
) -> None:
    """Given a Segments (one GRO read, not cut into objects), the C call takes exactly what
    it and its twin take from the same datagrams as a list."""
    whole, size = read
    segments = batch.Segments(whole, size)
    as_list = [whole[i : i + size] for i in range(0, len(whole), size)]
    assert list(segments) == as_list and segments[-1] == as_list[-1]
    start = data.draw(st.integers(0, len(as_list)))
    windows = [ReplayWindow() for _ in range(3)]
    from_segments = C.open_run(KEY, segments, start, RECEIVER, LIMIT, windows[0])
    from_list = C.open_run(KEY, as_list, start, RECEIVER, LIMIT, windows[1])
    pure = batch.pure_open_run(KEY, segments, start, RECEIVER, LIMIT, windows[2])
    assert from_segments == from_list == pure
    assert _state(windows[0]) == _state(windows[1]) == _state(windows[2])


def test_segments_is_a_sequence_of_its_datagrams() -> None:
    segments = batch.Segments(b"abcdefg", 3)
    assert len(segments) == 3
    assert list(segments) == [b"abc", b"def", b"g"]
    assert segments[-1] == b"g" and segments[1:] == [b"def", b"g"]
    with pytest.raises(IndexError):
        segments[3]
    with pytest.raises(ValueError):
        batch.Segments(b"abc", 0)
