"""GRO in C (wgpy._batch.coalesce) against its twin (wgpy.offload.coalesce), byte for byte.

The packets are what the receiving daemon gives it: the segments of TSO/USO super-packets cut
by ``offload.split`` (IPv4 and IPv6, TCP and UDP, several flows interleaved, sequence numbers
and IPv4 IDs that wrap), then mutated the ways a peer's packets differ: a sequence gap, a
repeated or lost segment, other flags, another byte anywhere in the headers (ACK, window,
options, TOS, TTL, lengths, protocol), truncated, lengthened, garbage. Every case compares
everything both return; the unmutated ones also check what a glued write must be (it splits
back into the packets it holds, each flow's packets stay in order), so that a mistake shared
by both twins fails too.
"""

from __future__ import annotations

import random
import struct
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.batch_paths import c_module
from tests.unit.test_offload import super_packet, tcp_packet, udp_packet
from wgpy import batch, offload
from wgpy.offload import VNET_HDR, split

C: Any = c_module()

ADDRESSES = [
    ("10.0.0.1", "10.0.0.2"),
    ("10.0.0.3", "10.0.0.2"),
    ("fd00::1", "fd00::2"),
    ("fd00::3", "fd00::2"),
]
TIMESTAMPS = b"\x01\x01\x08\x0a" + bytes(range(8))
#: TCP flags of a super-packet: ACK, ACK PSH, with CWR, with FIN, SYN ACK, ECE, none
FLAGS = [0x10, 0x18, 0x10, 0x98, 0x11, 0x19, 0x12, 0x50, 0x00]
#: the largest payload of a super-packet split takes (65535 bytes with IPv6 and 40 of TCP options)
MAX_PAYLOAD = 65535 - 40 - 60


class Packets(list[bytes]):
    """A list of packets whose repr (Hypothesis prints it for a failing case) is a summary:
    each packet's length and headers, not 64 KiB of payload."""

    def __repr__(self) -> str:
        return "Packets({})".format(", ".join(f"{len(p)}:{p[:64].hex()}" for p in self))


def same(got: list[tuple[bytes, list[bytes]]], expected: list[tuple[bytes, list[bytes]]]) -> None:
    """``got == expected``, saying where they differ in a line rather than a 64 KiB diff."""
    assert len(got) == len(expected), f"{len(got)} writes, the twin {len(expected)}"
    for index, ((frame, held), (twin_frame, twin_held)) in enumerate(
        zip(got, expected, strict=True)
    ):
        assert held == twin_held, f"write {index} holds {len(held)}, the twin's {len(twin_held)}"
        if frame != twin_frame:
            at = next(
                (i for i, (a, b) in enumerate(zip(frame, twin_frame, strict=False)) if a != b), None
            )
            raise AssertionError(
                f"write {index} ({len(frame)} bytes, the twin's {len(twin_frame)}) differs at"
                f" byte {at}: {frame[:80].hex()} != {twin_frame[:80].hex()}"
            )


def both(packets: Sequence[bytes], *, udp: bool) -> list[tuple[bytes, list[bytes]]]:
    """C and twin on ``packets``: equal results, the held packets the very objects given."""
    expected = batch.pure_coalesce(packets, udp=udp)
    got: list[tuple[bytes, list[bytes]]] = C.coalesce(packets, udp=udp)
    same(got, expected)
    assert all(type(frame) is bytes and type(held) is list for frame, held in got)
    given_ids = sorted(id(packet) for packet in packets)
    assert sorted(id(packet) for _, held in got for packet in held) == given_ids
    for frame, held in got:
        if len(held) == 1:
            assert frame == offload.VALID_HEADER + held[0]
        else:
            header_len = VNET_HDR.unpack_from(frame)[2]
            assert frame[10 + header_len :] == b"".join(p[header_len:] for p in held)
    return got


@st.composite
def flow_segments(draw: st.DrawFn, addrs: tuple[str, str]) -> list[bytes]:
    """The segments of one to three consecutive super-packets of one flow, as split cuts
    them: up to 70 segments each (past the 64 a write may glue), together past 64 KiB."""
    protocol = draw(st.sampled_from([offload.TCP, offload.TCP, offload.UDP]))
    gso_size = draw(st.sampled_from([1420, 1368, 1240, 536, 100, 7]) | st.integers(1, 1500))
    seq = draw(st.sampled_from([0, 2**32 - 3000]) | st.integers(0, 2**32 - 1))
    ident = draw(st.sampled_from([0xFFF0]) | st.integers(0, 0xFFFF))
    flags = draw(st.sampled_from(FLAGS))
    options = draw(st.sampled_from([TIMESTAMPS, b"", bytes(4), TIMESTAMPS + bytes(28)]))
    rng = random.Random(draw(st.integers(0, 2**32)))
    segments: list[bytes] = []
    for _ in range(draw(st.integers(1, 3))):
        count = draw(st.sampled_from([44, 64, 65, 70]) | st.integers(0, 70))
        length = min(count * gso_size + draw(st.integers(0, gso_size - 1)), MAX_PAYLOAD)
        payload = rng.randbytes(length)
        if protocol == offload.TCP:
            whole = tcp_packet(addrs, seq, payload, flags=flags, options=options, ident=ident)
        else:
            whole = udp_packet(addrs, payload, ident=ident)
        cut = split(super_packet(whole, gso_size))
        segments += cut
        seq = (seq + length) & 0xFFFFFFFF
        ident = (ident + len(cut)) & 0xFFFF  # as one longer super-packet would have them
    return segments


@st.composite
def interleaved(draw: st.DrawFn, distinct: bool = True) -> tuple[Packets, list[Packets]]:
    """Segments of one to four flows (unless ``distinct``, maybe two of the same addresses),
    interleaved in a way that keeps each flow's order; and the flows."""
    picks = draw(st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=4, unique=distinct))
    flows = [Packets(draw(flow_segments(addrs))) for addrs in picks]
    mode = draw(st.sampled_from(["one after another", "round robin", "random", "bursts"]))
    rng = random.Random(draw(st.integers(0, 2**32)))
    queues = [list(flow) for flow in flows]
    out = Packets()
    if mode == "one after another":
        for queue in queues:
            out += queue
    else:
        turn = 0
        while any(queues):
            live = [q for q in queues if q]
            queue = live[turn % len(live)] if mode == "round robin" else rng.choice(live)
            burst = rng.randint(1, 20) if mode == "bursts" else 1
            out += queue[:burst]
            del queue[:burst]
            turn += 1
    return out, flows


MUTATIONS = ["field", "field", "field", "byte", "seq", "flags", "truncate", "lengthen"]
MUTATIONS += ["drop", "repeat", "garbage"]
#: (offset, width) of the header fields a "field" mutation changes: IPv4's TOS, length, ID,
#: flags and fragment offset, TTL, protocol, checksum; IPv6's version, traffic class and flow
#: label, payload length, next header, hop limit; the transport header's ports, sequence
#: number (UDP: length, checksum), acknowledgement, data offset, window, checksum, urgent
#: pointer, options (relative to the IP header's end)
IPV4_FIELDS = [(1, 1), (2, 2), (4, 2), (6, 2), (8, 1), (9, 1), (10, 2)]
IPV6_FIELDS = [(0, 4), (4, 2), (6, 1), (7, 1)]
L4_FIELDS = [(0, 4), (4, 4), (8, 4), (12, 1), (14, 2), (16, 2), (18, 2), (20, 12)]


@st.composite
def mutated(draw: st.DrawFn) -> Packets:
    """Interleaved flows with up to eight mutations at drawn places."""
    packets, _flows = draw(interleaved(distinct=False))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(MUTATIONS))
        if not packets:
            packets.append(draw(st.binary(max_size=100)))
            continue
        index = draw(st.integers(0, len(packets) - 1))
        packet = bytearray(packets[index])
        ip_len = 40 if packet[:1] and packet[0] >> 4 == 6 else 20
        if kind == "field" and len(packet) >= ip_len + 32:
            ip_fields = IPV6_FIELDS if ip_len == 40 else IPV4_FIELDS
            base, choices = draw(st.sampled_from([(0, ip_fields), (ip_len, L4_FIELDS)]))
            offset, width = draw(st.sampled_from(choices))
            packet[base + offset + draw(st.integers(0, width - 1))] ^= draw(st.integers(1, 255))
        elif kind == "byte" and packet:
            at = draw(st.integers(0, min(len(packet), ip_len + 40) - 1))
            packet[at] ^= draw(st.integers(1, 255))
        elif kind == "seq" and len(packet) >= ip_len + 8:
            old = struct.unpack_from("!I", packet, ip_len + 4)[0]
            delta = draw(st.sampled_from([1, -1, 1420, 2**31]) | st.integers(1, 2**32 - 1))
            struct.pack_into("!I", packet, ip_len + 4, (old + delta) & 0xFFFFFFFF)
        elif kind == "flags" and len(packet) > ip_len + 13:
            packet[ip_len + 13] = draw(st.sampled_from(FLAGS))
        elif kind == "truncate":
            del packet[draw(st.integers(0, len(packet))) :]
        elif kind == "lengthen":
            packet += bytes(draw(st.integers(1, 100)))
        elif kind == "drop":
            del packets[index]
            continue
        elif kind == "repeat":
            packets.insert(index, packets[index])
            continue
        elif kind == "garbage":
            packets.insert(index, draw(st.binary(max_size=100)))
            continue
        packets[index] = bytes(packet)
    return packets


@settings(max_examples=150)
@given(interleaved(), st.booleans())
def test_realistic_flows(case: tuple[Packets, list[Packets]], udp: bool) -> None:
    packets, flows = case
    frames = both(packets, udp=udp)
    delivered = [packet for _, held in frames for packet in held]
    for flow in flows:  # each flow's packets in order (flows of the same addresses together)
        members = {id(packet) for packet in flow}
        mine = [p for p in delivered if id(p) in members]
        assert mine == [p for p in packets if id(p) in members]
    for frame, held in frames:
        if len(held) > 1:
            assert len(held) <= offload.MAX_COALESCE
            assert len(frame) - 10 <= offload.MAX_SUPER_PACKET + 40
            assert split(frame) == held  # what the kernel's segmentation of it gives


@settings(max_examples=300)
@given(mutated(), st.booleans())
def test_mutated_flows(packets: Packets, udp: bool) -> None:
    both(packets, udp=udp)


def _header_edits() -> st.SearchStrategy[bytes]:
    """A packet of a glued flow with one header byte set to anything, or cut anywhere: every
    length, version and protocol a bounds check must survive."""
    base = [
        tcp_packet(ADDRESSES[0], 0, bytes(60)),
        tcp_packet(ADDRESSES[2], 0, bytes(60)),
        udp_packet(ADDRESSES[0], bytes(60)),
        udp_packet(ADDRESSES[2], bytes(60)),
    ]

    @st.composite
    def edit(draw: st.DrawFn) -> bytes:
        packet = bytearray(draw(st.sampled_from(base)))
        for _ in range(draw(st.integers(1, 3))):
            packet[draw(st.integers(0, len(packet) - 1))] = draw(st.integers(0, 255))
        return bytes(packet[: draw(st.integers(0, len(packet)))])

    return edit()


@settings(max_examples=400)
@given(
    st.lists(
        st.binary(max_size=120)
        | _header_edits()
        | st.sampled_from([b"", b"\x45", b"\x60" + bytes(59), b"\x4f" + bytes(62)]),
        max_size=12,
    ),
    st.booleans(),
)
def test_garbage(packets: list[bytes], udp: bool) -> None:
    both(packets, udp=udp)


def _one_flow(count: int, size: int, addrs: tuple[str, str] = ADDRESSES[0]) -> list[bytes]:
    payload = random.Random(count).randbytes(count * size)
    return split(super_packet(tcp_packet(addrs, 5, payload, flags=0x18), size))


@pytest.mark.parametrize("addrs", [ADDRESSES[0], ADDRESSES[2]], ids=["ipv4", "ipv6"])
def test_a_full_flow_is_one_write(addrs: tuple[str, str]) -> None:
    segments = _one_flow(44, 1420, addrs)
    [(frame, held)] = both(segments, udp=False)
    ip_len, gso = (20, offload.GSO_TCPV4) if addrs is ADDRESSES[0] else (40, offload.GSO_TCPV6)
    needs_csum = offload.F_NEEDS_CSUM
    assert VNET_HDR.unpack_from(frame) == (needs_csum, gso, ip_len + 32, 1420, ip_len, 16)
    assert held == segments
    assert frame[10 + ip_len + 13] & 0x08  # the last segment's PSH


def test_empty_and_bad_arguments() -> None:
    assert C.coalesce([]) == batch.pure_coalesce([]) == []
    assert C.coalesce(iter(_one_flow(3, 100))) == batch.pure_coalesce(iter(_one_flow(3, 100)))
    bad_arguments: list[Any] = [[bytearray(40)], [b"", memoryview(b"x" * 40)], [None], 5, [1]]
    for bad in bad_arguments:
        for call in (C.coalesce, batch.pure_coalesce):
            with pytest.raises(TypeError):
                call(bad)
    with pytest.raises(TypeError):
        C.coalesce(_one_flow(3, 100), True)  # udp is keyword-only, as in the twin


def test_the_switch() -> None:
    assert batch.coalesce is (C.coalesce if batch.ACCELERATED else batch.pure_coalesce)


def test_threads_share_nothing() -> None:
    """With the GIL released over the byte work, calls in several threads at once each get
    their own answer."""
    inputs = [_one_flow(60 + n, 900 + n, ADDRESSES[n % 4]) for n in range(4)]
    expected = [batch.pure_coalesce(packets) for packets in inputs]
    failures: list[int] = []

    def run(n: int) -> None:
        for _ in range(50):
            if C.coalesce(inputs[n]) != expected[n]:
                failures.append(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def _segments(addrs: tuple[str, str], payloads: list[int], protocol: int) -> list[bytes]:
    """Consecutive segments of one flow with these payload lengths."""
    seq, out = 1000, []
    for index, size in enumerate(payloads):
        data = bytes([index]) * size
        if protocol == offload.TCP:
            out.append(tcp_packet(addrs, seq, data, ident=index))
        else:
            out.append(udp_packet(addrs, data, ident=index))
        seq += size
    return out


@pytest.mark.parametrize("addrs", [ADDRESSES[0], ADDRESSES[2]], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("protocol", [offload.TCP, offload.UDP], ids=["tcp", "udp"])
@pytest.mark.parametrize("over", [0, 1], ids=["65535", "65536"])
def test_a_write_ends_at_65535_bytes(addrs: tuple[str, str], protocol: int, over: int) -> None:
    """The glued IP packet may be 65535 bytes long, not one more: the last segment, short,
    makes it exactly that or one more."""
    header_len = (20 if addrs is ADDRESSES[0] else 40) + (32 if protocol == offload.TCP else 8)
    full = (65535 - header_len) // 1400
    last = 65535 - header_len - full * 1400 + over
    assert 0 < last < 1400
    packets = _segments(addrs, [1400] * full + [last], protocol)
    frames = both(packets, udp=True)
    assert [len(held) for _, held in frames] == ([full + 1] if not over else [full, 1])


@pytest.mark.parametrize("protocol", [offload.TCP, offload.UDP], ids=["tcp", "udp"])
@pytest.mark.parametrize("count", [64, 65, 129])
def test_a_write_glues_64_segments_at_most(protocol: int, count: int) -> None:
    packets = _segments(ADDRESSES[2], [500] * count, protocol)
    frames = both(packets, udp=True)
    assert [len(held) for _, held in frames] == [64] * (count // 64) + [1] * (count % 64)


@pytest.mark.parametrize("addrs", [ADDRESSES[0], ADDRESSES[2]], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("protocol", [offload.TCP, offload.UDP], ids=["tcp", "udp"])
def test_a_zero_partial_checksum_is_written_as_ffff(addrs: tuple[str, str], protocol: int) -> None:
    """A pseudo-header summing to 0 (mod 0xFFFF) gives the field 0xFFFF (ones' complement's
    other zero), as the twin writes it: the source address is chosen to make it so."""
    packets = _segments(addrs, [1000, 1000, 10], protocol)
    ip_len = 20 if addrs is ADDRESSES[0] else 40
    header_len = ip_len + (32 if protocol == offload.TCP else 8)
    l4_length = sum(len(p) - header_len for p in packets) + header_len - ip_len
    source, destination = (12, 16) if ip_len == 20 else (8, 24)
    width = destination - source
    rest = offload.checksum_sum(packets[0][destination : destination + width])
    # every word of the source but the last is zero; the last makes the sum 0 mod 0xFFFF
    last_word = (-(rest + protocol + l4_length)) % 0xFFFF
    address = last_word.to_bytes(width, "big")
    forged = []
    for packet in packets:
        changed = bytearray(packet)
        changed[source:destination] = address
        forged.append(bytes(changed))
    [(frame, _held)] = both(forged, udp=True)
    where = 10 + ip_len + (16 if protocol == offload.TCP else 6)
    assert frame[where : where + 2] == b"\xff\xff"


def _expected_runs(ip_len: int, protocol: int, offset: int) -> list[int]:
    """The writes' sizes for four segments of one flow whose third has header byte
    ``offset`` changed (XOR 1): the rules of which bytes must match, written out."""
    l4 = offset - ip_len
    if ip_len == 20:
        free = {4, 5, 10, 11}  # IPv4 ID, header checksum
        flow_key = {0, 9} | set(range(12, 20))  # header length, protocol, addresses
    else:
        free = set()
        flow_key = {6} | set(range(8, 40))  # next header, addresses
    if protocol == offload.TCP:
        free |= {2, 3} if ip_len == 20 else {4, 5}  # lengths: checked on a flow's first only
        free |= {ip_len + 16, ip_len + 17}  # checksum
        return [4] if offset in free else [2, 1, 1]
    free |= {ip_len + 6, ip_len + 7}  # checksum
    if offset in flow_key or 0 <= l4 < 4:  # another flow's: the first one goes on
        return [3, 1]
    return [4] if offset in free else [2, 1, 1]


@pytest.mark.parametrize("addrs", [ADDRESSES[0], ADDRESSES[2]], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("protocol", [offload.TCP, offload.UDP], ids=["tcp", "udp"])
def test_which_header_bytes_must_match(addrs: tuple[str, str], protocol: int) -> None:
    ip_len = 20 if addrs is ADDRESSES[0] else 40
    header_len = ip_len + (32 if protocol == offload.TCP else 8)
    for offset in range(header_len):
        packets = _segments(addrs, [1000] * 4, protocol)
        changed = bytearray(packets[2])
        changed[offset] ^= 1
        packets[2] = bytes(changed)
        frames = both(packets, udp=True)
        runs = [len(held) for _, held in frames]
        assert runs == _expected_runs(ip_len, protocol, offset), f"byte {offset}"


@pytest.mark.parametrize("protocol", [offload.TCP, offload.UDP], ids=["tcp", "udp"])
def test_an_ipv4_header_summing_to_zero_gets_checksum_zero(protocol: int) -> None:
    """The glued IPv4 header's checksum is fold(sum): 0, not 0xFFFF, when the rest of the
    header sums to 0 (mod 0xFFFF); the source address is chosen to make it so."""
    packets = _segments(ADDRESSES[0], [1000, 1000, 10], protocol)
    header = bytearray(packets[0][:20])
    header[2:4] = (len(packets[0]) + 1000 + 10).to_bytes(2, "big")  # the glued length
    header[10:12] = bytes(2)
    header[12:16] = bytes(4)
    last_word = (-offload.checksum_sum(header)) % 0xFFFF
    forged = []
    for packet in packets:
        changed = bytearray(packet)
        changed[12:16] = last_word.to_bytes(4, "big")
        forged.append(bytes(changed))
    [(frame, _held)] = both(forged, udp=True)
    assert frame[10 + 10 : 10 + 12] == b"\0\0"
    assert offload.checksum_sum(frame[10:30]) == 0
