"""Device.send_super: a TCP super-packet cut and sealed in one call, with exactly the outcome of
``send_packets(split(frame))`` when it takes the frame, and no side effect at all when not.

Two identical pairs of Devices (same seeds): one gets ``send_packets(split(frame))``, the other
``send_super(frame)`` (and, when that declines, the same ``send_packets``). Datagrams (as the very
runs a UDP GSO send takes), events, counters, timers and keypair state must come out the same, on
both batch paths (the C extension and its pure-Python twin).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.batch_paths import PATHS, on_path
from tests.unit.test_batch_equivalence import _device_state, _session
from tests.unit.test_device import Pair, make_pair
from tests.unit.test_offload import V4, V6, super_packet, tcp_packet
from wgpy.device import Device
from wgpy.offload import GSO_UDP_L4, split
from wgpy.replay import REJECT_AFTER_MESSAGES
from wgpy.timers import REJECT_AFTER_TIME


def tso(
    addrs: tuple[str, str], payload: int, gso_size: int, *, seq: int = 1, flags: int = 0x18
) -> bytes:
    data = random.Random(payload * 7 + gso_size).randbytes(payload)
    return super_packet(tcp_packet(addrs, seq, data, flags=flags), gso_size)


def _drain(device: Device) -> tuple[Any, ...]:
    return (
        [(bytes(data), endpoint, size) for data, endpoint, size in device.datagram_runs_to_send()],
        device.datagrams_not_to_fragment(),
        device.packets_to_deliver(),
        device.unreachable_packets(),
        list(device.events()),
    )


def _keypairs(device: Device) -> list[Any]:
    return [
        None if k is None else (k.can_send, k.send_counter, k.birth)
        for p in device.peers.values()
        for k in (p.previous, p.current, p.next)
    ]


def _pairs(session: bool = True) -> tuple[Pair, Pair]:
    one, other = make_pair(seed=11), make_pair(seed=11)
    for pair in (one, other):
        if session:
            _session(pair)
    return one, other


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=60, deadline=None)
@given(
    frames=st.lists(
        st.tuples(
            st.booleans(),
            st.integers(0, 64000),
            st.sampled_from([1448, 1368, 1001, 536, 100]),
            st.sampled_from([0x10, 0x18, 0x19, 0x99]),
        ),
        min_size=1,
        max_size=4,
    ),
    mtu=st.sampled_from([1420, 1280, 1500]),
    later=st.sampled_from([0.0, 1.0, 130.0]),
)
def test_send_super_is_send_packets_of_split(
    path: str, frames: list[tuple[bool, int, int, int]], mtu: int, later: float
) -> None:
    one, other = _pairs()
    with on_path(path):
        for number, (v6, payload, gso_size, flags) in enumerate(frames):
            frame = tso(V6 if v6 else V4, payload, gso_size, seq=number * 99991, flags=flags)
            now = one.now + later + number * 0.5
            for pair in (one, other):
                pair.a.device.mtu = mtu
            one.a.device.send_packets(split(frame), now)
            taken = other.a.device.send_super(frame, now)
            assert taken == (len(split(frame)) >= 2)  # a session: every cut frame is taken
            if not taken:
                other.a.device.send_packets(split(frame), now)
            assert _drain(one.a.device) == _drain(other.a.device)
            assert _device_state(one.a.device) == _device_state(other.a.device)
            assert _keypairs(one.a.device) == _keypairs(other.a.device)


def _no_session(pair: Pair) -> None:
    pass


def _staged(pair: Pair) -> None:
    pair.a.peer.staged.append(tcp_packet(V4, 1, b"x"))


def _no_endpoint(pair: Pair) -> None:
    pair.a.peer.endpoint = None


def _down(pair: Pair) -> None:
    pair.a.device.is_up = False


def _tap(pair: Pair) -> None:
    pair.a.device.tap = lambda *args: None


def _route_mtus(pair: Pair) -> None:
    pair.a.device.route_mtus = (1280,)
    pair.a.device.route_mtu = lambda packet: 1280


def _workers(pair: Pair) -> None:
    pair.a.device.workers = ThreadPoolExecutor(1)


def _cannot_send(pair: Pair) -> None:
    assert pair.a.peer.current is not None
    pair.a.peer.current.can_send = False


def _too_old(pair: Pair) -> None:
    assert pair.a.peer.current is not None
    pair.a.peer.current.birth -= REJECT_AFTER_TIME


def _counters_run_out(pair: Pair) -> None:
    """Room for 3 more counters, the frame has 4 segments: send_packets invalidates the
    keypair (and stages, and starts a handshake), send_super must leave all that to it."""
    assert pair.a.peer.current is not None
    pair.a.peer.current.send_counter = REJECT_AFTER_MESSAGES - 3


GOOD = tso(V4, 4000, 1000)

REFUSALS: dict[str, tuple[Callable[[Pair], None], bytes]] = {
    "no session": (_no_session, GOOD),
    "staged": (_staged, GOOD),
    "no endpoint": (_no_endpoint, GOOD),
    "down": (_down, GOOD),
    "tap": (_tap, GOOD),
    "route mtus": (_route_mtus, GOOD),
    "workers": (_workers, GOOD),
    "keypair cannot send": (_cannot_send, GOOD),
    "keypair too old": (_too_old, GOOD),
    "counters run out": (_counters_run_out, GOOD),
    "no peer": (lambda pair: None, tso(("10.0.0.1", "10.9.9.9"), 4000, 1000)),
    "one segment": (lambda pair: None, tso(V6, 1000, 1000)),
    "uso": (lambda pair: None, GOOD[:1] + bytes([GSO_UDP_L4]) + GOOD[2:]),
    "broken": (lambda pair: None, GOOD[:40]),
    "not gso": (lambda pair: None, bytes(10) + tcp_packet(V4, 1, b"abc")),
    "short": (lambda pair: None, GOOD[:12]),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_send_super_declines_with_nothing_changed(path: str, case: str) -> None:
    prepare, frame = REFUSALS[case]
    one, other = _pairs(session=case != "no session")
    with on_path(path):
        for pair in (one, other):
            prepare(pair)
            _drain(pair.a.device)
        device = other.a.device
        before = _device_state(device), _keypairs(device), device.is_up
        assert device.send_super(frame, other.now) is False
        assert _drain(device) == ([], [], [], [], [])
        assert (_device_state(device), _keypairs(device), device.is_up) == before
        # and what the caller does then gives the same outcome as on the other pair
        try:
            segments = split(frame)
        except ValueError:
            segments = []
        for pair in (one, other):
            pair.a.device.send_packets(segments, pair.now)
        assert _drain(one.a.device) == _drain(other.a.device)
        assert _device_state(one.a.device) == _device_state(other.a.device)
        assert _keypairs(one.a.device) == _keypairs(other.a.device)
        for pair in (one, other):
            if pair.a.device.workers is not None:
                pair.a.device.workers.shutdown()


def test_send_super_taps_nothing_and_updates_what_send_packets_does() -> None:
    """A plain check of the outcome, independent of send_packets: counters, bytes, timers."""
    pair = make_pair(seed=3)
    _session(pair)
    peer = pair.a.peer
    assert peer.current is not None
    counter, tx = peer.current.send_counter, peer.tx_bytes
    assert pair.a.device.send_super(tso(V4, 64000, 1448), pair.now)
    assert peer.current.send_counter == counter + 45
    datagrams = pair.a.device.datagrams_to_send()
    assert len(datagrams) == 45
    assert peer.tx_bytes - tx == sum(len(d) for d, _ in datagrams)
    pair.deliver(pair.a, [d for d, _ in datagrams])
    assert pair.b.delivered[-45:] == split(tso(V4, 64000, 1448))
