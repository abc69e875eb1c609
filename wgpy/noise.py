"""Noise_IKpsk2 as WireGuard uses it: the initiator and responder steps, pure and sans-I/O.

Each function takes the handshake state and the inputs it needs (keys, a fresh ephemeral, a
fresh index, the timestamp) and returns the message or the decoded result; randomness and time
come from the caller. A failed check returns ``None`` and leaves the state untouched.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from wgpy import crypto
from wgpy.messages import Initiation, Response

ZERO_KEY = bytes(32)
TIMESTAMP_LEN = 12


class HandshakeState(enum.Enum):
    ZEROED = 0
    INITIATION_CREATED = 1
    INITIATION_CONSUMED = 2
    RESPONSE_CREATED = 3


@dataclass(eq=False, slots=True)
class Handshake:
    """One peer's handshake in progress. Holds secrets: never log or repr it."""

    state: HandshakeState = HandshakeState.ZEROED
    chaining_key: bytes = ZERO_KEY
    hash: bytes = ZERO_KEY
    ephemeral_private: bytes = ZERO_KEY
    remote_ephemeral: bytes = ZERO_KEY
    local_index: int = 0
    remote_index: int = 0
    latest_timestamp: bytes = bytes(TIMESTAMP_LEN)
    last_initiation_consumed: float | None = None
    is_initiator: bool = field(default=False)

    def __repr__(self) -> str:
        return f"Handshake(state={self.state.name}, local_index={self.local_index:#010x})"

    def clear(self) -> None:
        """Forget the in-flight exchange (not the replay/flood memory)."""
        self.state = HandshakeState.ZEROED
        self.chaining_key = ZERO_KEY
        self.hash = ZERO_KEY
        self.ephemeral_private = ZERO_KEY
        self.remote_ephemeral = ZERO_KEY
        self.local_index = 0
        self.remote_index = 0


def _initial_state(responder_public: bytes) -> tuple[bytes, bytes]:
    return crypto.INITIAL_CHAIN_KEY, crypto.hash_(crypto.INITIAL_HASH, responder_public)


def create_initiation(
    hs: Handshake,
    *,
    local_public: bytes,
    peer_public: bytes,
    static_static: bytes,
    ephemeral_private: bytes,
    sender_index: int,
    timestamp: bytes,
) -> Initiation | None:
    """Build message 1 (without macs). None if a DH result is all zero."""
    chain, h = _initial_state(peer_public)
    ephemeral_public = crypto.public_key(ephemeral_private)
    h = crypto.hash_(h, ephemeral_public)
    chain = crypto.kdf1(chain, ephemeral_public)
    es = crypto.dh(ephemeral_private, peer_public)
    if es is None:
        return None
    chain, key = crypto.kdf2(chain, es)
    encrypted_static = crypto.aead_encrypt(key, 0, local_public, h)
    h = crypto.hash_(h, encrypted_static)
    chain, key = crypto.kdf2(chain, static_static)
    encrypted_timestamp = crypto.aead_encrypt(key, 0, timestamp, h)
    h = crypto.hash_(h, encrypted_timestamp)

    hs.state = HandshakeState.INITIATION_CREATED
    hs.chaining_key = chain
    hs.hash = h
    hs.ephemeral_private = ephemeral_private
    hs.remote_ephemeral = ZERO_KEY
    hs.local_index = sender_index
    hs.remote_index = 0
    hs.is_initiator = True
    return Initiation(
        sender_index, ephemeral_public, encrypted_static, encrypted_timestamp, b"", b""
    )


@dataclass(frozen=True, slots=True)
class DecodedInitiation:
    """The first half of consuming message 1: whose static key it carries."""

    initiator_public: bytes
    chaining_key: bytes
    hash: bytes

    def __repr__(self) -> str:
        return "DecodedInitiation(...)"


def decode_initiation(
    msg: Initiation, *, local_private: bytes, local_public: bytes
) -> DecodedInitiation | None:
    """Open the initiator's static key (responder step 2–3)."""
    chain, h = _initial_state(local_public)
    h = crypto.hash_(h, msg.ephemeral)
    chain = crypto.kdf1(chain, msg.ephemeral)
    es = crypto.dh(local_private, msg.ephemeral)
    if es is None:
        return None
    chain, key = crypto.kdf2(chain, es)
    initiator_public = crypto.aead_decrypt(key, 0, msg.encrypted_static, h)
    if initiator_public is None:
        return None
    h = crypto.hash_(h, msg.encrypted_static)
    return DecodedInitiation(initiator_public, chain, h)


def open_initiation_timestamp(
    decoded: DecodedInitiation, msg: Initiation, *, static_static: bytes
) -> tuple[bytes, bytes, bytes] | None:
    """Responder step 5: returns (timestamp, chaining_key, hash) or None."""
    chain, key = crypto.kdf2(decoded.chaining_key, static_static)
    timestamp = crypto.aead_decrypt(key, 0, msg.encrypted_timestamp, decoded.hash)
    if timestamp is None or len(timestamp) != TIMESTAMP_LEN:
        return None
    h = crypto.hash_(decoded.hash, msg.encrypted_timestamp)
    return timestamp, chain, h


def accept_initiation(
    hs: Handshake, msg: Initiation, chaining_key: bytes, h: bytes, timestamp: bytes, now: float
) -> None:
    """Commit a fully authenticated, fresh initiation into the peer's handshake."""
    hs.state = HandshakeState.INITIATION_CONSUMED
    hs.chaining_key = chaining_key
    hs.hash = h
    hs.remote_ephemeral = msg.ephemeral
    hs.remote_index = msg.sender_index
    hs.ephemeral_private = ZERO_KEY
    hs.is_initiator = False
    if timestamp > hs.latest_timestamp:
        hs.latest_timestamp = timestamp
    hs.last_initiation_consumed = now


def create_response(
    hs: Handshake,
    *,
    initiator_public: bytes,
    preshared_key: bytes,
    ephemeral_private: bytes,
    sender_index: int,
) -> Response | None:
    """Build message 2 (without macs) from INITIATION_CONSUMED."""
    if hs.state is not HandshakeState.INITIATION_CONSUMED:
        return None
    ephemeral_public = crypto.public_key(ephemeral_private)
    h = crypto.hash_(hs.hash, ephemeral_public)
    chain = crypto.kdf1(hs.chaining_key, ephemeral_public)
    ee = crypto.dh(ephemeral_private, hs.remote_ephemeral)
    se = crypto.dh(ephemeral_private, initiator_public)
    if ee is None or se is None:
        return None
    chain = crypto.kdf1(chain, ee)
    chain = crypto.kdf1(chain, se)
    chain, tau, key = crypto.kdf3(chain, preshared_key)
    h = crypto.hash_(h, tau)
    encrypted_nothing = crypto.aead_encrypt(key, 0, b"", h)
    h = crypto.hash_(h, encrypted_nothing)

    hs.state = HandshakeState.RESPONSE_CREATED
    hs.chaining_key = chain
    hs.hash = h
    hs.ephemeral_private = ephemeral_private
    hs.local_index = sender_index
    return Response(sender_index, hs.remote_index, ephemeral_public, encrypted_nothing, b"", b"")


def consume_response(
    hs: Handshake, msg: Response, *, local_private: bytes, preshared_key: bytes
) -> tuple[bytes, bytes] | None:
    """Initiator step: verify message 2. Returns (chaining_key, hash) to commit, or None."""
    if hs.state is not HandshakeState.INITIATION_CREATED:
        return None
    h = crypto.hash_(hs.hash, msg.ephemeral)
    chain = crypto.kdf1(hs.chaining_key, msg.ephemeral)
    ee = crypto.dh(hs.ephemeral_private, msg.ephemeral)
    se = crypto.dh(local_private, msg.ephemeral)
    if ee is None or se is None:
        return None
    chain = crypto.kdf1(chain, ee)
    chain = crypto.kdf1(chain, se)
    chain, tau, key = crypto.kdf3(chain, preshared_key)
    h = crypto.hash_(h, tau)
    if crypto.aead_decrypt(key, 0, msg.encrypted_nothing, h) is None:
        return None
    h = crypto.hash_(h, msg.encrypted_nothing)
    return chain, h


def derive_transport_keys(hs: Handshake) -> tuple[bytes, bytes]:
    """Return (send_key, receive_key) for our role and zero the handshake secrets."""
    first, second = crypto.kdf2(hs.chaining_key, b"")
    keys = (first, second) if hs.is_initiator else (second, first)
    hs.state = HandshakeState.ZEROED
    hs.chaining_key = ZERO_KEY
    hs.hash = ZERO_KEY
    hs.ephemeral_private = ZERO_KEY
    hs.remote_ephemeral = ZERO_KEY
    return keys
