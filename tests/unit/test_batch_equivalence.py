"""Device.send_packets and Device.receive_datagrams are the per-packet calls, batched.

Two identical pairs of Devices (same seeds) get the same inputs: one pair packet by packet, the
other as batches. Everything observable must come out the same: datagrams (byte for byte),
delivered packets, events, drop counters, byte counters, timers and keypair state. Each test
runs on both batch paths (wgpy.batch: the C extension and its pure-Python twin), and once more
with the batch calls in worker threads (``Device.workers``): the same datagrams, in order.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.batch_paths import PATHS, on_path
from tests.packets import ipv4_udp, ipv6_udp
from tests.unit.test_device import Node, Pair, make_pair
from wgpy.device import Device
from wgpy.device.state import RUN_MAX_BYTES, RUN_MAX_DATAGRAMS
from wgpy.peer import Peer

P = ParamSpec("P")
T = TypeVar("T")

#: The C path, and the C path with the batch calls in worker threads.
WORKER_PATHS = (*PATHS, "c-workers")


class Workers(ThreadPoolExecutor):
    """Two worker threads that count the jobs they ran off the caller's thread."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.ran_elsewhere = 0
        self._caller = threading.get_ident()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        def run() -> T:
            if threading.get_ident() != self._caller:
                self.ran_elsewhere += 1
            return fn(*args, **kwargs)

        return super().submit(run)


@contextlib.contextmanager
def workers_for(path: str, *devices: Device) -> Iterator[Workers | None]:
    """``path``'s batch calls; for "c-workers", the C ones in a :class:`Workers` pool that
    ``devices`` use."""
    with on_path("c" if path == "c-workers" else path):
        if path != "c-workers":
            yield None
            return
        with Workers() as pool:
            for device in devices:
                device.workers = pool
            yield pool


def _peer_state(peer: Peer) -> tuple[Any, ...]:
    keypairs = tuple(
        None if k is None else (k.local_index, k.send_counter, k.replay.top)
        for k in (peer.previous, peer.current, peer.next)
    )
    return (
        peer.rx_bytes,
        peer.tx_bytes,
        peer.endpoint,
        len(peer.staged),
        tuple(peer.staged),
        tuple(peer.deadlines),
        peer.need_another_keepalive,
        peer.sent_lastminute_handshake,
        keypairs,
    )


def _device_state(device: Device) -> tuple[Any, ...]:
    return (
        dict(device.drop_counts),
        dict(device.disallowed_owners),
        device.authenticated_received,
        tuple(_peer_state(p) for p in device.peers.values()),
        device.get_timer(),
    )


def _drain(device: Device) -> tuple[Any, ...]:
    return (
        device.datagrams_to_send(),
        device.datagrams_not_to_fragment(),
        device.packets_to_deliver(),
        device.unreachable_packets(),
        list(device.events()),
    )


def _session(pair: Pair) -> None:
    pair.a.device.send_packet(ipv4_udp("10.0.0.1", "10.0.0.2", b"hello"), pair.now)
    pair.roundtrip()
    pair.a.collect()
    pair.b.collect()


@dataclass(frozen=True)
class Outgoing:
    """A packet A reads from its TUN."""

    kind: str  # "v4", "v6", "nopeer", "short", "nested", "big"
    size: int


def _outgoing(op: Outgoing) -> bytes:
    payload = bytes(op.size)
    if op.kind == "v4":
        return ipv4_udp("10.0.0.1", "10.0.0.2", payload)
    if op.kind == "v6":
        return ipv6_udp("fd00::1", "fd00::2", payload)
    if op.kind == "nopeer":
        return ipv4_udp("10.0.0.1", "10.7.7.7", payload)
    if op.kind == "nested":  # a WireGuard data message inside: sent unfragmented
        return ipv4_udp("10.0.0.1", "10.0.0.2", b"\x04\0\0\0" + bytes(600 + op.size))
    if op.kind == "big":  # larger than the MTU
        return ipv4_udp("10.0.0.1", "10.0.0.2", bytes(1400 + op.size))
    return bytes([0x45]) + payload[:10]  # "short": not a whole IPv4 header


outgoing_ops = st.builds(
    Outgoing,
    st.sampled_from(["v4", "v4", "v4", "v6", "nopeer", "short", "nested", "big"]),
    st.integers(0, 1500),
)


@pytest.mark.parametrize("path", WORKER_PATHS)
@settings(max_examples=150)
@given(
    batches=st.lists(st.lists(outgoing_ops, max_size=24), min_size=1, max_size=4),
    with_session=st.booleans(),
    route_mtu=st.sampled_from([0, 1280]),
)
def test_send_packets_is_send_packet_per_packet(
    path: str, batches: list[list[Outgoing]], with_session: bool, route_mtu: int
) -> None:
    one, many = make_pair(seed=7), make_pair(seed=7)
    with workers_for(path, many.a.device):
        _send_both_ways(one, many, batches, with_session, route_mtu)


def _send_both_ways(
    one: Pair, many: Pair, batches: list[list[Outgoing]], with_session: bool, route_mtu: int
) -> None:
    for pair in (one, many):
        if with_session:
            _session(pair)
        if route_mtu:
            pair.a.device.route_mtus = (route_mtu,)
            pair.a.device.route_mtu = lambda packet: route_mtu if packet[19] & 1 else 0
    for number, batch in enumerate(batches):
        packets = [_outgoing(op) for op in batch]
        now = one.now + number * 0.25
        for packet in packets:
            one.a.device.send_packet(packet, now)
        many.a.device.send_packets(packets, now)
        assert _drain(one.a.device) == _drain(many.a.device)
        assert _device_state(one.a.device) == _device_state(many.a.device)


@dataclass(frozen=True)
class Incoming:
    """A datagram A receives from B's endpoint."""

    kind: str  # "data", "v6", "spoof", "keepalive", "dup", "tamper", "garbage", "unknown", "rekey"
    arg: int


incoming_ops = st.builds(
    Incoming,
    st.sampled_from(
        [
            *["data"] * 4,
            *["v6", "spoof", "keepalive", "dup", "tamper", "garbage"],
            *["unknown", "rekey", "short", "badlength"],
        ]
    ),
    st.integers(0, 1500),
)


def _from_b(node: Node, now: float, op: Incoming, earlier: list[bytes]) -> list[bytes]:
    """What B sends for ``op`` (B's device is driven; its datagrams are returned)."""
    device, peer = node.device, node.peer
    if op.kind in ("data", "v6", "spoof", "short", "badlength"):
        if op.kind == "data":
            packet = ipv4_udp("10.0.0.2", "10.0.0.1", bytes(op.arg))
        elif op.kind == "v6":
            packet = ipv6_udp("fd00::2", "fd00::1", bytes(op.arg))
        elif op.kind == "spoof":  # a source A does not give to B
            packet = ipv4_udp("10.9.9.9", "10.0.0.1", bytes(op.arg))
        elif op.kind == "short":
            packet = bytes([0x45]) + bytes(17) + bytes([10, 0, 0, 1])
        else:  # the IPv4 length field says more than the packet holds
            good = bytearray(ipv4_udp("10.0.0.2", "10.0.0.1", bytes(op.arg)))
            good[2:4] = (len(good) + 9).to_bytes(2, "big")
            packet = bytes(good)
        device.send_packet(packet, now)
    elif op.kind == "keepalive":
        device._send_keepalive(peer, now)
    elif op.kind == "rekey":
        device._send_initiation(peer, now, is_retry=False)
    elif op.kind == "dup" and earlier:
        return [earlier[op.arg % len(earlier)]]
    elif op.kind == "tamper" and earlier:
        damaged = bytearray(earlier[op.arg % len(earlier)])
        if damaged:  # an empty garbage datagram stays empty
            damaged[op.arg % len(damaged)] ^= 0x40
        return [bytes(damaged)]
    elif op.kind == "unknown":
        return [bytes([4, 0, 0, 0]) + op.arg.to_bytes(4, "little") + bytes(40)]
    elif op.kind == "garbage":
        return [op.arg.to_bytes(2, "big") * (op.arg % 40)]
    return [d for d, _ in device.datagrams_to_send()]


@pytest.mark.parametrize("path", WORKER_PATHS)
@settings(max_examples=150)
@given(
    batches=st.lists(st.lists(incoming_ops, max_size=16), min_size=1, max_size=4),
    cuts=st.lists(st.integers(1, 16), max_size=3),
)
def test_receive_datagrams_is_receive_datagram_per_datagram(
    path: str, batches: list[list[Incoming]], cuts: list[int]
) -> None:
    """Each batch is given to receive_datagrams as several reads (cut where ``cuts`` say),
    each after the first with ``follows``, as the pump gives the reads of one wake-up."""
    one, many = make_pair(seed=11), make_pair(seed=11)
    with workers_for(path, many.a.device):
        _receive_both_ways(one, many, batches, cuts)


def _reads(datagrams: list[bytes], cuts: list[int]) -> list[list[bytes]]:
    """``datagrams`` cut into consecutive reads after ``cuts[0]``, then ``cuts[1]``, ... of them."""
    reads: list[list[bytes]] = []
    start = 0
    for cut in cuts:
        if start >= len(datagrams):
            break
        reads.append(datagrams[start : start + cut])
        start += cut
    if start < len(datagrams) or not reads:
        reads.append(datagrams[start:])
    return reads


def _receive_both_ways(
    one: Pair, many: Pair, batches: list[list[Incoming]], cuts: list[int] | None = None
) -> None:
    for pair in (one, many):
        _session(pair)
    earlier: list[bytes] = []
    for number, batch in enumerate(batches):
        now = one.now + number * 0.5
        if number:
            # A sends between the batches (arming its timer for a new handshake, which the
            # next authenticated datagram must cancel: nothing may carry over a send)
            for pair in (one, many):
                pair.a.device.send_packet(ipv4_udp("10.0.0.1", "10.0.0.2", b"x"), now)
                pair.a.device.datagrams_to_send()
        datagrams: list[bytes] = []
        for op in batch:
            sent = _from_b(one.b, now, op, earlier)
            again = _from_b(many.b, now, op, earlier)
            assert sent == again  # both pairs are the same so far
            datagrams += sent
        earlier += datagrams
        for datagram in datagrams:
            one.a.device.receive_datagram(datagram, one.b.endpoint, now)
        for index, read in enumerate(_reads(datagrams, cuts or [])):
            ahead = many.a.device.open_ahead(read)
            many.a.device.receive_datagrams(read, many.b.endpoint, now, ahead, follows=index > 0)
        out_one, out_many = _drain(one.a.device), _drain(many.a.device)
        assert out_one == out_many
        assert _device_state(one.a.device) == _device_state(many.a.device)
        # A's replies (handshake responses, keepalives) reach B in both pairs alike
        for pair, out in ((one, out_one), (many, out_many)):
            for datagram, _ in out[0]:
                pair.b.device.receive_datagram(datagram, pair.a.endpoint, now)
            pair.b.collect()
        assert _device_state(one.b.device) == _device_state(many.b.device)


@pytest.mark.parametrize("path", WORKER_PATHS)
@settings(max_examples=60)
@given(
    sizes=st.lists(st.integers(0, 1600), min_size=1, max_size=150),
    mtu=st.sampled_from([1280, 1420, 9000]),
)
def test_runs_are_ready_for_one_gso_send(path: str, sizes: list[int], mtu: int) -> None:
    """send_packets queues each run as one buffer that one UDP GSO send can take: equal
    datagrams but the last, at most RUN_MAX_DATAGRAMS and RUN_MAX_BYTES, and exactly the
    datagrams the per-packet calls make."""
    one, many = make_pair(seed=5), make_pair(seed=5)
    with workers_for(path, many.a.device):
        _runs_for_gso(one, many, sizes, mtu)


def _runs_for_gso(one: Pair, many: Pair, sizes: list[int], mtu: int) -> None:
    packets = [ipv4_udp("10.0.0.1", "10.0.0.2", bytes(size)) for size in sizes]
    for pair in (one, many):
        _session(pair)
        pair.a.device.mtu = mtu
    for packet in packets:
        one.a.device.send_packet(packet, one.now)
    many.a.device.send_packets(packets, many.now)
    runs = many.a.device.datagram_runs_to_send()
    flattened: list[bytes] = []
    for data, endpoint, size in runs:
        assert endpoint == many.a.peer.endpoint
        if not size:
            flattened.append(bytes(data))
            continue
        count = -(-len(data) // size)
        assert 2 <= count <= RUN_MAX_DATAGRAMS and len(data) <= RUN_MAX_BYTES
        flattened += [bytes(data[i : i + size]) for i in range(0, len(data), size)]
    assert flattened == [d for d, _ in one.a.device.datagrams_to_send()]
    if len(set(len(p) for p in packets)) == 1 and len(packets) > 1:
        assert len(runs) < len(packets)  # equal packets do share runs


def test_big_runs_are_sealed_in_workers_and_leave_in_order() -> None:
    """Runs of WORKER_MIN_PACKETS packets or more are sealed off the caller's thread, several
    at once, and still leave exactly as the per-packet calls send them, in order; smaller ones
    (a ping) are sealed on the caller's thread."""
    one, many = make_pair(seed=3), make_pair(seed=3)
    with workers_for("c-workers", many.a.device) as pool:
        assert pool is not None
        for pair in (one, many):
            _session(pair)
        # four runs (one per destination in a row): 44, 9, 20 and 3 packets
        sizes = [1400] * 44 + [300] * 9 + [1400] * 20 + [100] * 3
        packets = [
            ipv4_udp("10.0.0.1", "10.0.0.2", bytes([n]) * size)
            if n < 44 or 53 <= n < 73
            else ipv6_udp("fd00::1", "fd00::2", bytes([n]) * size)
            for n, size in enumerate(sizes)
        ]
        for packet in packets:
            one.a.device.send_packet(packet, one.now)
        many.a.device.send_packets(packets, many.now)
        assert _drain(one.a.device) == _drain(many.a.device)  # waits for the workers
        assert pool.ran_elsewhere == 3  # not the run of 3
        assert _device_state(one.a.device) == _device_state(many.a.device)
        many.a.device.send_packets([ipv4_udp("10.0.0.1", "10.0.0.2", b"ping")] * 2, many.now)
        many.a.device.datagrams_to_send()
        assert pool.ran_elsewhere == 3


def test_a_batch_is_opened_ahead_in_a_worker() -> None:
    """open_ahead opens a GRO batch in a worker; receive_datagrams uses what it opened and
    decides the rest (replay, delivery) itself: a replayed datagram in the batch is dropped."""
    one, many = make_pair(seed=13), make_pair(seed=13)
    with workers_for("c-workers", many.a.device) as pool:
        assert pool is not None
        for pair in (one, many):
            _session(pair)
        batches = []
        for pair in (one, many):
            for number in range(20):
                pair.b.device.send_packet(b_to_a_packet(number), pair.now)
            batches.append([d for d, _ in pair.b.device.datagrams_to_send()])
        assert batches[0] == batches[1]
        datagrams = batches[0] + [batches[0][5]]  # and a replay
        for datagram in datagrams:
            one.a.device.receive_datagram(datagram, one.b.endpoint, one.now)
        ahead = many.a.device.open_ahead(datagrams)
        assert ahead is not None
        many.a.device.receive_datagrams(datagrams, many.b.endpoint, many.now, ahead)
        assert pool.ran_elsewhere == 1
        out = _drain(many.a.device)
        assert out == _drain(one.a.device)
        assert len(out[2]) == 20
        assert _device_state(one.a.device) == _device_state(many.a.device)
        assert many.a.device.open_ahead(datagrams[:3]) is None  # small: not worth a hop


def b_to_a_packet(number: int) -> bytes:
    return ipv4_udp("10.0.0.2", "10.0.0.1", bytes([number]) * 1000)
