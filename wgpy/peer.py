"""Per-peer state: keys, endpoint, keypair slots, staged packets, timer deadlines, counters."""

from __future__ import annotations

import collections
from typing import Final

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from wgpy import crypto
from wgpy.cookie import CookieGenerator
from wgpy.events import key_b64
from wgpy.noise import Handshake
from wgpy.replay import ReplayWindow
from wgpy.timers import TIMER_COUNT

MAX_STAGED_PACKETS: Final = 128
NO_PRESHARED_KEY: Final = bytes(32)

Endpoint = tuple[str, int]


class Keypair:
    """One direction-pair of transport keys. The cipher objects are built once, here."""

    __slots__ = (
        "birth",
        "can_send",
        "initiator",
        "local_index",
        "peer",
        "receive",
        "receive_key",
        "remote_index",
        "replay",
        "send",
        "send_counter",
        "send_key",
    )

    def __init__(
        self,
        peer: Peer,
        send_key: bytes,
        receive_key: bytes,
        *,
        initiator: bool,
        local_index: int,
        remote_index: int,
        birth: float,
    ) -> None:
        self.peer = peer
        self.send = ChaCha20Poly1305(send_key)
        self.receive = ChaCha20Poly1305(receive_key)
        # the raw keys, for the batch calls (wgpy.batch), which take a key per batch
        self.send_key = send_key
        self.receive_key = receive_key
        self.send_counter = 0
        self.can_send = True
        self.replay = ReplayWindow()
        self.initiator = initiator
        self.local_index = local_index
        self.remote_index = remote_index
        self.birth = birth

    def __repr__(self) -> str:
        return (
            f"Keypair(local_index={self.local_index:#010x}, "
            f"remote_index={self.remote_index:#010x}, initiator={self.initiator})"
        )


class Peer:
    """A peer of one device. Secrets live in slots that ``__repr__`` never shows."""

    __slots__ = (
        "cookies",
        "current",
        "deadlines",
        "endpoint",
        "handshake",
        "handshake_attempts",
        "last_handshake_wall",
        "last_sent_handshake",
        "need_another_keepalive",
        "next",
        "persistent_keepalive",
        "preshared_key",
        "previous",
        "public_key",
        "queued",
        "rx_bytes",
        "sent_lastminute_handshake",
        "staged",
        "static_static",
        "tx_bytes",
    )

    def __init__(self, public_key: bytes) -> None:
        self.public_key = public_key
        self.preshared_key = NO_PRESHARED_KEY
        self.endpoint: Endpoint | None = None
        self.persistent_keepalive = 0
        self.static_static: bytes | None = None  # DH(our private, their public); None if unusable
        self.handshake = Handshake()
        self.cookies = CookieGenerator(public_key)
        self.current: Keypair | None = None
        self.previous: Keypair | None = None
        self.next: Keypair | None = None
        self.staged: collections.deque[bytes] = collections.deque()
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.last_handshake_wall = 0.0  # unix time of the last completed handshake, 0 = never
        self.last_sent_handshake = float("-inf")
        self.handshake_attempts = 0
        self.need_another_keepalive = False
        self.sent_lastminute_handshake = False
        self.deadlines: list[float | None] = [None] * TIMER_COUNT
        self.queued: list[float | None] = [None] * TIMER_COUNT

    def __repr__(self) -> str:
        return f"Peer({key_b64(self.public_key)}, endpoint={self.endpoint})"

    def keypairs(self) -> list[Keypair]:
        return [kp for kp in (self.previous, self.current, self.next) if kp is not None]

    def compute_static_static(self, private_key: bytes | None) -> None:
        self.static_static = (
            None if private_key is None else crypto.dh(private_key, self.public_key)
        )
