"""The message-counter limit is the kernel's, on both sides of a session.

The kernel's REJECT_AFTER_MESSAGES is U64_MAX - COUNTER_WINDOW_SIZE - 1 (drivers/net/wireguard/
messages.h), 2**64 - 8130 with its 8128-counter window; wireguard-go's 2**64 - 2**13 - 1 is 63
lower, and an implementation with go's limit fails cases 25-34 of the kernel's counter
self-test (selftest/counter.c). The values here are written out, not taken from wgpy.
"""

from __future__ import annotations

import pytest

from tests.unit.test_device import Pair, a_to_b, make_pair
from wgpy.device.state import DATA_HEADER, NONCE, TYPE_DATA
from wgpy.events import DropReason, HandshakeInitiationSent
from wgpy.replay import REJECT_AFTER_MESSAGES, ReplayWindow

KERNEL_WINDOW = 8192 - 64  # COUNTER_BITS_TOTAL - BITS_PER_LONG on a 64-bit kernel
KERNEL_LIMIT = (2**64 - 1) - KERNEL_WINDOW - 1  # U64_MAX - COUNTER_WINDOW_SIZE - 1
T_LIM = KERNEL_WINDOW + 1


def test_the_limit_is_the_kernels() -> None:
    assert KERNEL_LIMIT == 2**64 - 8130 == 18446744073709543486
    assert REJECT_AFTER_MESSAGES == KERNEL_LIMIT


# selftest/counter.c, all 34 cases in order, with the kernel's own limit
KERNEL_SELFTEST = [
    (0, True),
    (1, True),
    (1, False),
    (9, True),
    (8, True),
    (7, True),
    (7, False),
    (T_LIM, True),
    (T_LIM - 1, True),
    (T_LIM - 1, False),
    (T_LIM - 2, True),
    (2, True),
    (2, False),
    (T_LIM + 16, True),
    (3, False),
    (T_LIM + 16, False),
    (T_LIM * 4, True),
    (T_LIM * 4 - (T_LIM - 1), True),
    (10, False),
    (T_LIM * 4 - T_LIM, False),
    (T_LIM * 4 - (T_LIM + 1), False),
    (T_LIM * 4 - (T_LIM - 2), True),
    (T_LIM * 4 + 1 - T_LIM, False),
    (0, False),
    (KERNEL_LIMIT, False),  # case 25
    (KERNEL_LIMIT - 1, True),
    (KERNEL_LIMIT, False),
    (KERNEL_LIMIT - 1, False),
    (KERNEL_LIMIT - 2, True),
    (KERNEL_LIMIT + 1, False),
    (KERNEL_LIMIT + 2, False),
    (KERNEL_LIMIT - 2, False),
    (KERNEL_LIMIT - 3, True),
    (0, False),  # case 34
]


def test_kernel_counter_selftest_with_the_kernels_limit() -> None:
    window = ReplayWindow()
    assert [(n, window.accept(n)) for n in (n for n, _ in KERNEL_SELFTEST)] == KERNEL_SELFTEST


@pytest.mark.parametrize("counter", [2**64 - 8193, 2**64 - 8192, 2**64 - 8132])
def test_counters_between_gos_limit_and_the_kernels_are_accepted(counter: int) -> None:
    window = ReplayWindow()
    assert window.accept(counter)
    assert not window.exhausted


def _session(pair: Pair) -> None:
    pair.a.device.send_packet(a_to_b(b"first"), pair.now)
    pair.roundtrip()
    assert len(pair.b.delivered) == 1
    pair.now += 6  # past REKEY_TIMEOUT, so that a new initiation is not held back


def _data_from_a(pair: Pair, counter: int, payload: bytes) -> bytes:
    """A data message A's session could have sent with ``counter`` (whatever its own)."""
    keypair = pair.a.peer.current
    assert keypair is not None
    plaintext = a_to_b(payload)
    plaintext += bytes(-len(plaintext) % 16)
    header = DATA_HEADER.pack(TYPE_DATA, keypair.remote_index, counter)
    return header + keypair.send.encrypt(NONCE.pack(counter), plaintext, None)


def test_sender_uses_every_counter_below_the_limit_then_rehandshakes() -> None:
    pair = make_pair()
    _session(pair)
    keypair = pair.a.peer.current
    assert keypair is not None
    keypair.send_counter = KERNEL_LIMIT - 2
    initiations = len(pair.a.of_type(HandshakeInitiationSent))
    pair.a.device.send_packet(a_to_b(b"second to last"), pair.now)
    pair.a.device.send_packet(a_to_b(b"last"), pair.now)
    data = [d for d in pair.flight(pair.a) if d[0] == TYPE_DATA]
    assert [DATA_HEADER.unpack_from(d)[2] for d in data] == [KERNEL_LIMIT - 2, KERNEL_LIMIT - 1]
    # past REKEY_AFTER_MESSAGES (2**60) every send also asks for a new handshake
    assert len(pair.a.of_type(HandshakeInitiationSent)) == initiations + 1
    pair.deliver(pair.a, data)
    assert len(pair.b.delivered) == 3  # the receiver takes both, as the kernel does
    # the next packet finds no counter left: the keypair is retired, the packet waits
    pair.a.device.send_packet(a_to_b(b"after"), pair.now)
    assert not keypair.can_send
    assert [d for d in pair.flight(pair.a) if d[0] == TYPE_DATA] == []
    pair.now += 6
    pair.a.device.send_packet(a_to_b(b"later"), pair.now)
    assert len(pair.a.of_type(HandshakeInitiationSent)) == initiations + 2
    pair.roundtrip()
    assert pair.b.delivered[-2] == a_to_b(b"after")
    assert pair.b.delivered[-1] == a_to_b(b"later")
    current = pair.a.peer.current
    assert current is not None and current is not keypair and current.send_counter >= 1


def test_a_batch_that_would_cross_the_limit_waits_for_a_new_session() -> None:
    pair = make_pair()
    _session(pair)
    keypair = pair.a.peer.current
    assert keypair is not None
    keypair.send_counter = KERNEL_LIMIT - 1
    packets = [a_to_b(b"one"), a_to_b(b"two")]
    pair.a.device.send_packets(packets, pair.now)
    out = pair.flight(pair.a)
    assert [d[0] for d in out] == [1]  # a handshake initiation, no data message
    pair.deliver(pair.a, out)
    pair.roundtrip()
    assert pair.b.delivered[-2:] == packets
    assert pair.a.peer.current is not keypair  # nothing went out with counter >= the limit


def test_receiver_refuses_counters_at_the_limit_as_replays() -> None:
    pair = make_pair()
    _session(pair)
    pair.deliver(pair.a, [_data_from_a(pair, KERNEL_LIMIT, b"at the limit")])
    pair.deliver(pair.a, [_data_from_a(pair, 2**64 - 1, b"past the limit")])
    assert [d.reason for d in pair.b.drops()] == [DropReason.REPLAYED_COUNTER] * 2
    assert len(pair.b.delivered) == 1
    pair.deliver(pair.a, [_data_from_a(pair, 5, b"still fine")])
    assert pair.b.delivered[-1] == a_to_b(b"still fine")


@pytest.mark.parametrize("batched", [False, True], ids=["one by one", "batch"])
def test_the_last_counter_exhausts_the_receiving_keypair(batched: bool) -> None:
    pair = make_pair()
    _session(pair)
    datagrams = [
        _data_from_a(pair, KERNEL_LIMIT - 3, b"a"),
        _data_from_a(pair, KERNEL_LIMIT - 1, b"b"),  # the last: the window's top is the limit
        _data_from_a(pair, KERNEL_LIMIT - 2, b"c"),  # inside the window, but the key is spent
    ]
    if batched:
        pair.b.device.receive_datagrams(datagrams, pair.a.endpoint, pair.now)
        pair.b.collect()
    else:
        pair.deliver(pair.a, datagrams)
    assert pair.b.delivered[1:] == [a_to_b(b"a"), a_to_b(b"b")]
    assert [d.reason for d in pair.b.drops()] == [DropReason.EXPIRED_KEYPAIR]
