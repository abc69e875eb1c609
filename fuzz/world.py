"""A seeded in-memory pair of devices with a completed handshake, and the invariants the
Device targets check after every datagram."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from wgpy import crypto, messages
from wgpy.device import Device
from wgpy.events import (
    CookieReceived,
    Event,
    HandshakeCompleted,
    HandshakeResponseSent,
    KeepaliveReceived,
)
from wgpy.peer import MAX_STAGED_PACKETS, Endpoint, Peer

A_ENDPOINT: Endpoint = ("192.0.2.1", 51820)
B_ENDPOINT: Endpoint = ("198.51.100.2", 40000)
ENDPOINTS: tuple[Endpoint, ...] = (
    B_ENDPOINT,
    ("198.51.100.3", 1),
    ("2001:db8::2", 65535),
    ("fe80::2%eth0", 51820),
    ("::ffff:198.51.100.2", 40000),
)
A_TUNNEL = "10.0.0.1"
B_TUNNEL = "10.0.0.2"


def ipv4(src: str, dst: str, payload: bytes = b"fuzz", proto: int = 17) -> bytes:
    total = 20 + len(payload)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        0,
        0,
        64,
        proto,
        0,
        bytes(int(x) for x in src.split(".")),
        bytes(int(x) for x in dst.split(".")),
    )
    return header + payload


def ipv6(src_last: int, dst_last: int, payload: bytes = b"fuzz", proto: int = 17) -> bytes:
    prefix = bytes.fromhex("fd000000000000000000000000000000")[:15]
    return (
        struct.pack("!IHBB", 0x60000000, len(payload), proto, 64)
        + prefix
        + bytes([src_last])
        + prefix
        + bytes([dst_last])
        + payload
    )


@dataclass
class World:
    """Device ``a`` (under test) and its peer ``b``, handshaken, with sample messages."""

    seed: int = 1
    now: float = 1000.0
    a: Device = field(init=False)
    b: Device = field(init=False)
    peer_ab: Peer = field(init=False)  # a's view of b
    peer_ba: Peer = field(init=False)  # b's view of a
    samples: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        randbytes = rng.randbytes
        self.a = Device(crypto.generate_private_key(randbytes), random=randbytes)
        self.b = Device(crypto.generate_private_key(randbytes), random=randbytes)
        assert self.a.public_key is not None and self.b.public_key is not None
        peer_ab = self.a.add_peer(self.b.public_key)
        peer_ba = self.b.add_peer(self.a.public_key)
        assert peer_ab is not None and peer_ba is not None
        self.peer_ab, self.peer_ba = peer_ab, peer_ba
        self.a.allowed_ips.insert("10.0.0.2/32", peer_ab)
        self.a.allowed_ips.insert("10.2.0.0/16", peer_ab)
        self.a.allowed_ips.insert("fd00::2/128", peer_ab)
        self.b.allowed_ips.insert("10.0.0.1/32", peer_ba)
        self.b.allowed_ips.insert("fd00::1/128", peer_ba)
        # a third peer of a without a session, owning other addresses (disallowed sources)
        other = self.a.add_peer(crypto.public_key(crypto.generate_private_key(randbytes)))
        assert other is not None
        self.a.allowed_ips.insert("10.3.0.0/16", other)
        self.b.set_endpoint(peer_ba, A_ENDPOINT)
        # b starts: initiation -> a; response -> b; b's first data confirms a's keypair
        self.b.send_packet(ipv4(B_TUNNEL, A_TUNNEL, b"hello"), self.now)
        self.exchange()
        assert peer_ab.current is not None and peer_ba.current is not None, "no handshake"
        for datagram in self.sent_by_b:
            self.samples.append(datagram)
        self.samples.extend(self.sent_by_a)
        # more data messages (v4, v6, keepalive, disallowed source) and a cookie reply
        for packet in (
            ipv4(B_TUNNEL, A_TUNNEL, b"x" * 100),
            ipv6(2, 1),
            ipv4("10.3.0.9", A_TUNNEL),
            b"",
        ):
            self.samples.append(self.seal(packet))
        self.a.force_under_load(self.now)
        initiation = self.fresh_initiation()
        self.a.receive_datagram(initiation, B_ENDPOINT, self.now)
        self.samples.extend(d for d, _ in self.a.datagrams_to_send())
        self.a._under_load_until = float("-inf")
        self.drain()

    sent_by_a: list[bytes] = field(default_factory=list)
    sent_by_b: list[bytes] = field(default_factory=list)

    def exchange(self, rounds: int = 4) -> None:
        """Carry datagrams between a and b until both are quiet."""
        for _ in range(rounds):
            from_b = self.b.datagrams_to_send()
            from_a = self.a.datagrams_to_send()
            if not from_a and not from_b:
                break
            for datagram, _ in from_b:
                self.sent_by_b.append(datagram)
                self.a.receive_datagram(datagram, B_ENDPOINT, self.now)
            for datagram, _ in from_a:
                self.sent_by_a.append(datagram)
                self.b.receive_datagram(datagram, A_ENDPOINT, self.now)
        self.drain()

    def drain(self) -> None:
        for device in (self.a, self.b):
            device.packets_to_deliver()
            list(device.events())

    def seal(self, plaintext: bytes) -> bytes:
        """A data message from b carrying exactly ``plaintext`` (no padding, no routing)."""
        keypair = self.peer_ba.current
        assert keypair is not None
        counter = keypair.send_counter
        keypair.send_counter += 1
        nonce = bytes(4) + counter.to_bytes(8, "little")
        return messages.pack_data_header(keypair.remote_index, counter) + keypair.send.encrypt(
            nonce, plaintext, None
        )

    def fresh_initiation(self) -> bytes:
        """A new valid initiation from b to a (b's handshake state follows)."""
        self.peer_ba.last_sent_handshake = float("-inf")
        self.b.datagrams_to_send()
        self.b._send_initiation(self.peer_ba, self.now, is_retry=False)
        out = [d for d, _ in self.b.datagrams_to_send() if d[0] == messages.TYPE_INITIATION]
        self.drain()
        return out[-1]


def accepted(events: list[Event], delivered: int) -> int:
    """How many of a's outcomes for one datagram are acceptances."""
    count = delivered
    for event in events:
        if isinstance(event, KeepaliveReceived | HandshakeResponseSent | CookieReceived) or (
            isinstance(event, HandshakeCompleted) and event.initiator
        ):
            count += 1
    return count


def receive_checked(
    device: Device, datagram: bytes, endpoint: Endpoint, now: float
) -> list[tuple[bytes, Endpoint]]:
    """Feed one datagram; check it was accepted or counted under exactly one drop reason.

    Returns what the device sent in answer. Raises AssertionError on a broken invariant.
    """
    return _checked(
        device,
        lambda: device.receive_datagram(datagram, endpoint, now),
        1,
        f"datagram of {len(datagram)} bytes",
    )


def receive_batch_checked(
    device: Device, datagrams: list[bytes], endpoint: Endpoint, now: float
) -> list[tuple[bytes, Endpoint]]:
    """:func:`receive_checked` for a batch through ``Device.receive_datagrams``: each datagram
    accepted or counted under exactly one drop reason."""
    return _checked(
        device,
        lambda: device.receive_datagrams(datagrams, endpoint, now),
        len(datagrams),
        f"batch of {len(datagrams)}",
    )


def _checked(
    device: Device, feed: Callable[[], None], count: int, what: str
) -> list[tuple[bytes, Endpoint]]:
    """Run ``feed``, which hands ``count`` datagrams to ``device``; check that each was
    accepted or counted under exactly one drop reason and that the tables stay bounded."""
    device.packets_to_deliver()
    list(device.events())
    before = device.drop_counts.total()
    feed()
    dropped = device.drop_counts.total() - before
    delivered = device.packets_to_deliver()
    events = list(device.events())
    ok = accepted(events, len(delivered))
    assert dropped + ok == count, f"{what}: {dropped} drops, {ok} acceptances; events {events}"
    check_bounded(device)
    return device.datagrams_to_send()


def check_bounded(device: Device) -> None:
    """Nothing an outsider sends may make the device's tables grow past their bounds."""
    peers = len(device.peers)
    assert len(device._handshake_index) <= peers, len(device._handshake_index)
    assert len(device._keypair_index) <= 3 * peers, len(device._keypair_index)
    assert len(device.timers) <= 2 * 5 * peers + 8, len(device.timers)
    assert len(device.rate_limiter) <= len(ENDPOINTS), len(device.rate_limiter)
    for peer in device.peers.values():
        assert len(peer.staged) <= MAX_STAGED_PACKETS
    assert len(device._datagrams) <= 4, len(device._datagrams)
