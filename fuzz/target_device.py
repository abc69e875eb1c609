"""Fuzz target: Device.receive_datagram with random datagrams and mutations of real messages.

The first byte of an input picks a mode; the rest are its parameters:

0. the rest is the datagram;
1. a real message (handshake initiation, response, cookie reply, data, keepalive from a seeded
   in-memory pair) with bytes overwritten at positions the input chooses, and its length cut
   or extended;
2. as 1, then mac1 recomputed for a's key, so that mutated handshakes pass the mac check and
   reach the Noise code;
3. a real message's first 16 bytes (type, indices, counter) followed by the rest;
4. a fresh valid initiation from b, mutated like 2 when the rest is not empty; a's answer is
   carried back to b, so that new sessions are made and replaced;
5. as 1 while a is under load (cookie replies, mac2, the rate limiter);
6. the clock jumps forward by up to about 200 s and timers run, then the rest is a datagram;
7. as 1, sent from another of a few source endpoints (IPv6, scoped, v4-mapped);
8. a batch for ``Device.receive_datagrams`` (the short path after a data message that
   authenticated): each following byte adds a fresh data message from b, one with a flipped
   byte, a replay of the one before, or a real message.

Invariants after every datagram (in a batch: for each of its datagrams): no exception;
accepted or counted under exactly one drop reason; a's index tables, timers, rate-limiter
buckets and staged queues stay bounded. The world is rebuilt (deterministically) every 4096
inputs.
"""

from __future__ import annotations

from fuzz.world import (
    A_TUNNEL,
    B_ENDPOINT,
    B_TUNNEL,
    ENDPOINTS,
    World,
    check_bounded,
    ipv4,
    receive_batch_checked,
    receive_checked,
)
from wgpy import crypto, messages

REBUILD_EVERY = 4096

_world: World | None = None
_inputs = 0


def _get_world() -> World:
    global _world, _inputs
    if _world is None or _inputs % REBUILD_EVERY == 0:
        _world = World(seed=1 + _inputs // REBUILD_EVERY % 8)
    _inputs += 1
    return _world


def _mutate(sample: bytes, params: bytes) -> bytes:
    buf = bytearray(sample)
    if params:
        resize = params[0]
        params = params[1:]
        if resize & 0x80:
            del buf[max(0, len(buf) - (resize & 0x7F)) :]
        elif resize & 0x40:
            buf += bytes(resize & 0x3F)
    for i in range(0, len(params) - 1, 2):
        if buf:
            buf[params[i] % len(buf)] = params[i + 1]
    return bytes(buf)


def _remac(datagram: bytes, responder_public: bytes) -> bytes:
    if len(datagram) == messages.INITIATION_SIZE:
        offset = messages.INITIATION_MAC1_OFFSET
    elif len(datagram) == messages.RESPONSE_SIZE:
        offset = messages.RESPONSE_MAC1_OFFSET
    else:
        return datagram
    body = datagram[:offset]
    mac1 = crypto.mac(crypto.hash_(crypto.LABEL_MAC1, responder_public), body)
    return body + mac1 + datagram[offset + 16 :]


def test_one_input(data: bytes) -> None:
    world = _get_world()
    a = world.a
    assert a.public_key is not None
    if not data:
        receive_checked(a, data, B_ENDPOINT, world.now)
        return
    mode, rest = data[0] % 9, data[1:]
    if mode == 8 and world.peer_ba.current is not None:
        _batch(world, rest)
        return
    endpoint = B_ENDPOINT
    pick = world.samples[rest[0] % len(world.samples)] if rest else world.samples[0]
    params = rest[1:]
    if mode == 0:
        datagram = rest
    elif mode in (1, 5):
        datagram = _mutate(pick, params)
    elif mode == 2:
        datagram = _remac(_mutate(pick, params), a.public_key)
    elif mode == 3:
        datagram = pick[:16] + params
    elif mode == 4:
        datagram = world.fresh_initiation()
        if rest:
            datagram = _remac(_mutate(datagram, rest), a.public_key)
    elif mode == 6:
        jump = int.from_bytes(rest[:2].ljust(2, b"\0"), "little") / 300.0
        world.now += jump
        a.handle_timer(world.now)
        world.b.handle_timer(world.now)
        world.exchange()
        check_bounded(a)
        datagram = rest[2:]
    else:
        endpoint = ENDPOINTS[(rest[0] if rest else 0) % len(ENDPOINTS)]
        datagram = _mutate(pick, params)
    if mode == 5:
        a.force_under_load(world.now, 0.001)
    answers = receive_checked(a, datagram, endpoint, world.now)
    if mode == 4:
        for answer, _ in answers:
            world.b.receive_datagram(answer, ("192.0.2.1", 51820), world.now)
        world.exchange()
    world.now += 0.0001


def _batch(world: World, rest: bytes) -> None:
    batch: list[bytes] = []
    for byte in rest[:32]:
        kind = byte & 3
        if kind == 0 or not batch:
            batch.append(world.seal(ipv4(B_TUNNEL, A_TUNNEL, bytes(byte))))
        elif kind == 1:
            flipped = bytearray(world.seal(ipv4(B_TUNNEL, A_TUNNEL, b"flip")))
            flipped[byte % len(flipped)] ^= 0x10
            batch.append(bytes(flipped))
        elif kind == 2:
            batch.append(batch[-1])
        else:
            batch.append(world.samples[byte % len(world.samples)])
    receive_batch_checked(world.a, batch, B_ENDPOINT, world.now)
    world.now += 0.0001


def seeds() -> list[bytes]:
    world = World(seed=1)
    out = [b"", bytes([0]) + b"\x01\x00\x00\x00", bytes([0]) + b"\x04\x00\x00\x00" + bytes(28)]
    for i, _ in enumerate(world.samples):
        out.append(bytes([1, i, 0, 0, 0]))
        out.append(bytes([2, i, 0, 20, 0x55]))
        out.append(bytes([3, i]) + bytes(32))
        out.append(bytes([5, i, 0]))
        out.append(bytes([7, i, 0]))
    out.append(bytes([4]))
    out.append(bytes([4, 0, 100, 7]))
    out.append(bytes([6, 0xFF, 0xFF]) + world.samples[0])
    out.append(bytes([0]) + ipv4("10.0.0.2", "10.0.0.1"))
    out.append(bytes([8, 0, 4, 8, 2, 1, 0, 3, 7, 0]))
    return out
