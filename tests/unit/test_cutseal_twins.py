"""seal_super (wgpy/_batch_cut.c) against its pure twin (wgpy.batch.pure_seal_super), byte for byte.

The twin is ``seal_run(split(frame))``; the C call cuts the super-packet straight into the run
buffers. Each case compares both results whole, and checks them against what they must be
independently of either: the datagrams open under the key into the very segments
``wgpy.offload.split`` makes (padded), with the counters in order; and None exactly when the
frame is not a TCP super-packet of two segments or more that split accepts, or its counters would
pass the limit.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from tests.batch_paths import c_module
from wgpy import batch, crypto, messages, offload
from wgpy.offload import VNET_HDR, OffloadError, split

C: Any = c_module()

KEY = bytes(range(32))
LAST = 2**64 - 1


@dataclass(frozen=True)
class Tso:
    """A TCP super-packet as a TSO TUN reads it, and what breaks it (if anything)."""

    v6: bool
    ip_options: int  # IPv4 option words
    tcp_options: int  # TCP option words
    payload: int
    gso_size: int
    flags: int
    seq: int
    ident: int
    ecn: bool
    breakage: str


#: One way each of making split refuse the frame (OffloadError), or take it another way.
BREAKAGES = (
    "short",  # shorter than the virtio-net header
    "too large",  # more than 65,535 bytes of packet
    "gso udp",  # USO: split cuts it, this call does not
    "gso none",
    "gso ufo",
    "gso unknown",
    "other version",  # TCPV4 with IPv6 inside, or the reverse
    "not tcp",
    "fragment",
    "ihl",  # an IPv4 header length below 20 or past the packet
    "csum_start",
    "csum_offset",
    "data offset",  # a TCP header length below 20
    "headers past the end",
    "gso_size 0",
    "too many segments",
    "truncated",
)


def build(tso: Tso) -> bytes:
    """The frame for ``tso``: a virtio-net header and the IP packet."""
    tcp_len = 20 + 4 * tso.tcp_options
    data = bytes((i * 7 + tso.seq) & 0xFF for i in range(tso.payload))
    offset = (tcp_len // 4) << 4
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, tso.seq, 99, offset, tso.flags, 500, 0x1234, 0)
    tcp += bytes(range(1, 1 + tcp_len - 20)) + data
    if tso.v6:
        ip = struct.pack("!IHBB", 6 << 28 | 0x12345, len(tcp), 6, 64)
        ip += bytes(range(16)) + bytes(range(16, 32))
        gso = offload.GSO_TCPV6
    else:
        ip_len = 20 + 4 * tso.ip_options
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x40 | ip_len // 4, 0, ip_len + len(tcp), tso.ident, 0x4000, 64,
            6, 0, b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02",
        )  # fmt: skip
        ip += b"\x01" * (ip_len - 20)
        gso = offload.GSO_TCPV4
    fields = [offload.F_NEEDS_CSUM, gso | (offload.GSO_ECN if tso.ecn else 0)]
    fields += [len(ip) + tcp_len, tso.gso_size, len(ip), 16]
    packet = bytearray(ip + tcp)
    how = tso.breakage
    if how == "gso udp":
        fields[1] = offload.GSO_UDP_L4
        fields[5] = 6
    elif how in ("gso none", "gso ufo", "gso unknown"):
        fields[1] = {"gso none": 0, "gso ufo": offload.GSO_UDP, "gso unknown": 9}[how]
    elif how == "other version":
        fields[1] = offload.GSO_TCPV4 if tso.v6 else offload.GSO_TCPV6
    elif how == "not tcp":
        packet[6 if tso.v6 else 9] = 17
    elif how == "fragment":
        packet[3 if tso.v6 else 7] |= 1  # IPv6: the flow label, no fragment: still taken
    elif how == "ihl":
        # IPv4: below 20 bytes, or past a short packet; IPv6: version 5
        packet[0] = 0x50 if tso.v6 else 0x40 | (4 if tso.ip_options % 2 else 15)
    elif how == "csum_start":
        fields[4] += 4
    elif how == "csum_offset":
        fields[5] = 6
    elif how == "data offset":
        packet[len(ip) + 12] = 4 << 4
    elif how == "headers past the end":
        del packet[len(ip) + 21 :]
    elif how == "gso_size 0":
        fields[3] = 0
    elif how == "too many segments":
        fields[3] = max(1, tso.payload // (offload.MAX_SEGMENTS + 1))
    elif how == "truncated":
        del packet[len(ip) // 2 :]
    frame = VNET_HDR.pack(*fields) + bytes(packet)
    if how == "short":
        return frame[: tso.payload % offload.VNET_HDR_LEN]
    if how == "too large":
        return frame + bytes(offload.MAX_SUPER_PACKET + 1 - len(packet))
    return frame


tso_frames = st.builds(
    Tso,
    v6=st.booleans(),
    ip_options=st.sampled_from([0, 0, 0, 1, 5, 10]),
    tcp_options=st.sampled_from([0, 3, 3, 10]),
    payload=st.one_of(st.integers(0, 3000), st.integers(3000, 65000 - 120)),
    gso_size=st.one_of(st.sampled_from([1448, 1368, 1366, 1000, 1001, 64]), st.integers(1, 2000)),
    flags=st.one_of(st.sampled_from([0x10, 0x18, 0x19, 0x99, 0xD9]), st.integers(0, 255)),
    seq=st.one_of(st.integers(0, 2**32 - 1), st.just(2**32 - 700)),
    ident=st.one_of(st.integers(0, 0xFFFF), st.just(0xFFFE)),
    ecn=st.booleans(),
    breakage=st.one_of(st.just(""), st.just(""), st.just(""), st.sampled_from(BREAKAGES)),
)
mtus = st.sampled_from([0, 1, 16, 100, 1280, 1420, 1500, 9000])


def _plain(sealed: batch.SealedSuper | None) -> Any:
    if sealed is None:
        return None
    runs, singles, sent, count = sealed
    return [(bytes(data), size) for data, size in runs], [bytes(d) for d in singles], sent, count


def _expected_segments(frame: bytes, counter: int, limit: int) -> list[bytes] | None:
    """The segments seal_super must seal, or None when it must refuse: by its rules, not by
    either implementation."""
    if len(frame) < offload.VNET_HDR_LEN:
        return None
    if frame[1] & ~offload.GSO_ECN not in (offload.GSO_TCPV4, offload.GSO_TCPV6):
        return None
    try:
        segments = split(frame)
    except OffloadError:
        return None
    if len(segments) < 2 or counter + len(segments) > limit:
        return None
    return segments


def _check_against_split(
    sealed: batch.SealedSuper, segments: list[bytes], counter: int, mtu: int
) -> None:
    runs, singles, sent, count = sealed
    assert count == len(segments) and singles == []
    datagrams: list[bytes] = []
    for data, size in runs:
        data = bytes(data)
        step = size or len(data)
        datagrams += [data[i : i + step] for i in range(0, len(data), step)]
    assert sent == sum(map(len, datagrams))
    assert len(datagrams) == count
    for index, (datagram, segment) in enumerate(zip(datagrams, segments, strict=True)):
        kind, to, number = struct.unpack_from("<IIQ", datagram)
        assert (kind, to, number) == (4, 0xA1B2C3D4, counter + index)
        plain = crypto.aead_decrypt(KEY, number, datagram[16:], b"")
        padded = messages.padded_length(len(segment), mtu)
        assert plain == segment + bytes(padded - len(segment))


@settings(max_examples=400, deadline=None)
@given(
    tso=tso_frames,
    mtu=mtus,
    counter=st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 100)),
    headroom=st.one_of(st.integers(-2, 2), st.integers(0, 2000), st.integers(0, 2000)),
)
@example(tso=Tso(False, 0, 3, 64000, 1448, 0x99, 5, 0xFFFE, True, ""), mtu=1420, counter=7,
         headroom=100)  # fmt: skip
@example(tso=Tso(True, 0, 3, 7000, 1001, 0x19, 2**32 - 700, 0, False, ""), mtu=1420,
         counter=0, headroom=5)  # fmt: skip
def test_seal_super_c_equals_twin(tso: Tso, mtu: int, counter: int, headroom: int) -> None:
    frame = build(tso)
    # limits around where the segments' counters end: counter + segments - 1 + headroom
    try:
        segments_now = len(split(frame))
    except OffloadError:
        segments_now = 0
    limit = min(LAST, max(0, counter + segments_now + headroom))
    c = C.seal_super(KEY, 0xA1B2C3D4, counter, frame, mtu, limit)
    twin = batch.pure_seal_super(KEY, 0xA1B2C3D4, counter, frame, mtu, limit)
    assert _plain(c) == _plain(twin)
    # and through a memoryview of a larger buffer, as the runner passes it
    buffer = bytearray(frame + b"\xee" * 33)
    assert _plain(C.seal_super(KEY, 0xA1B2C3D4, counter, memoryview(buffer)[: len(frame)],
                               mtu, limit)) == _plain(c)  # fmt: skip
    expected = _expected_segments(frame, counter, limit)
    event("refused" if expected is None else "sealed")
    if expected is None:
        assert c is None
    else:
        assert c is not None
        _check_against_split(c, expected, counter, mtu)


def test_a_good_super_packet_is_taken_and_each_breakage_refused() -> None:
    """Every breakage gives None from both (each is an OffloadError of split, or a frame that
    split takes another way); unbroken, the frame is sealed."""
    good = Tso(False, 1, 3, 9000, 1000, 0x18, 1, 2, False, "")
    for v6 in (False, True):
        for name in ("", *BREAKAGES):
            tso = Tso(**{**good.__dict__, "v6": v6, "breakage": name})
            frame = build(tso)
            for call in (C.seal_super, batch.pure_seal_super):
                result = call(KEY, 1, 0, frame, 1420, LAST)
                if name == "" or (v6 and name == "fragment"):  # no such IPv6 field
                    assert result is not None and result[3] == 9, (v6, name)
                else:
                    assert result is None, (v6, name)


def test_counters_up_to_the_limit_are_taken_past_it_refused() -> None:
    frame = build(Tso(True, 0, 0, 4000, 1000, 0x18, 1, 2, False, ""))  # 4 segments
    for call in (C.seal_super, batch.pure_seal_super):
        assert call(KEY, 1, 96, frame, 1420, 100) is not None  # counters 96..99
        assert call(KEY, 1, 97, frame, 1420, 100) is None
        assert call(KEY, 1, LAST - 4, frame, 1420, LAST) is not None
        assert call(KEY, 1, LAST - 3, frame, 1420, LAST) is None
        assert call(KEY, 1, 0, frame, 1420, 3) is None


def test_one_segment_or_none_is_not_taken() -> None:
    for payload in (0, 1, 1000):
        frame = build(Tso(False, 0, 0, payload, 1000, 0x18, 1, 2, False, ""))
        assert len(split(frame)) == 1
        assert C.seal_super(KEY, 1, 0, frame, 1420, LAST) is None
        assert batch.pure_seal_super(KEY, 1, 0, frame, 1420, LAST) is None


@pytest.mark.parametrize(
    ("key", "receiver", "counter", "limit", "error"),
    [
        (bytes(31), 1, 0, LAST, ValueError),
        (KEY, 2**32, 0, LAST, ValueError),
        (KEY, -1, 0, LAST, ValueError),
        (KEY, 1, -1, LAST, OverflowError),
        (KEY, 1, 2**64, LAST, OverflowError),
        (KEY, 1, 0, 2**64, OverflowError),
        (KEY, 1, 0, -1, OverflowError),
    ],
)
def test_bad_arguments_raise_alike(
    key: bytes, receiver: int, counter: int, limit: int, error: type[Exception]
) -> None:
    frame = build(Tso(False, 0, 0, 4000, 1000, 0x18, 1, 2, False, ""))
    for what in (frame, b"not a frame"):  # raised before the frame is looked at
        for call in (C.seal_super, batch.pure_seal_super):
            with pytest.raises(error):
                call(key, receiver, counter, what, 1420, limit)


def test_the_c_call_seals_without_the_gil() -> None:
    """Two threads sealing 64 KiB super-packets give the same results as one at a time (the
    per-byte work runs with the GIL released; nothing shared is written)."""
    from concurrent.futures import ThreadPoolExecutor

    frames = [build(Tso(i % 2 == 1, 0, 3, 64000, 1448, 0x18, i, i, False, "")) for i in range(8)]
    one = [_plain(C.seal_super(KEY, 1, 0, f, 1420, LAST)) for f in frames]
    with ThreadPoolExecutor(2) as pool:
        many = list(pool.map(lambda f: _plain(C.seal_super(KEY, 1, 0, f, 1420, LAST)), frames))
    assert many == one


def test_os_random_key_and_receiver() -> None:
    key = os.urandom(32)
    frame = build(Tso(False, 0, 3, 20000, 1448, 0x18, 9, 9, True, ""))
    assert _plain(C.seal_super(key, 77, 5, frame, 1420, LAST)) == _plain(
        batch.pure_seal_super(key, 77, 5, frame, 1420, LAST)
    )
