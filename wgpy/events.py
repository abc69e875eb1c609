"""Events the sans-I/O core emits: every decision worth telling and every drop with its reason.

Counters, logs, captures and ``explain`` are renderers of these events. Events never carry
secrets: peers are named by their public key, packets by addresses, protocol and size.
"""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass


class DropReason(enum.StrEnum):
    """The closed set of reasons the core gives for not delivering something.

    Outgoing (TUN → network) packets:
    """

    NO_PEER = "no_peer"
    """Outgoing: no peer's AllowedIPs contains the destination (kernel: ENOKEY + ICMP)."""
    NOT_IP = "not_ip"
    """Outgoing or incoming inner packet is neither IPv4 nor IPv6, or shorter than its header."""
    BAD_LENGTH = "bad_length"
    """Incoming inner packet whose IP length field disagrees with the decrypted plaintext."""
    NO_ENDPOINT = "no_endpoint"
    """Staged packets discarded because the peer never had an endpoint to handshake with."""
    NO_IDENTITY = "no_identity"
    """A handshake was needed but the interface has no private key."""
    INVALID_PEER_KEY = "invalid_peer_key"
    """A handshake was needed but the peer's public key is of low order (or is our own)."""
    STAGED_OVERFLOW = "staged_overflow"
    """The staged queue (128 packets waiting for a handshake) overflowed; the oldest is dropped."""
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    """Staged packets discarded after the handshake gave up (20 attempts, about 90 s)."""
    INTERFACE_DOWN = "interface_down"
    """Staged packets discarded because the interface went down or the peer was removed."""
    # Incoming datagrams (network → TUN):
    BAD_SIZE = "bad_size"
    """A datagram too short for its type, or a handshake message of the wrong size."""
    UNKNOWN_TYPE = "unknown_type"
    """A datagram whose first four bytes are not one of the four message types."""
    INVALID_MAC1 = "invalid_mac1"
    """A handshake message whose mac1 is wrong (not meant for us, or forged)."""
    COOKIE_REQUIRED = "cookie_required"
    """Under load and mac2 missing or wrong: a cookie reply was sent instead of processing."""
    RATE_LIMITED = "rate_limited"
    """Under load, valid mac2, but the source exceeded 20 handshakes/s."""
    HANDSHAKE_FAILED = "handshake_failed"
    """A handshake message that does not decrypt, names an unknown peer or is in the wrong state."""
    REPLAYED_INITIATION = "replayed_initiation"
    """An initiation whose TAI64N timestamp is not newer than the last one from that peer."""
    INITIATION_FLOOD = "initiation_flood"
    """An initiation less than 20 ms after the previous accepted one from that peer."""
    INVALID_COOKIE = "invalid_cookie"
    """A cookie reply that does not decrypt or answers nothing we sent."""
    UNKNOWN_INDEX = "unknown_index"
    """A message whose receiver index names no current handshake or keypair."""
    DECRYPTION_FAILED = "decryption_failed"
    """A data message that fails authentication."""
    REPLAYED_COUNTER = "replayed_counter"
    """A data message whose counter was already seen or is behind the 8128-packet window."""
    EXPIRED_KEYPAIR = "expired_keypair"
    """A data message for a keypair older than REJECT_AFTER_TIME (180 s) or exhausted."""
    DISALLOWED_SOURCE = "disallowed_source"
    """An authenticated inner packet whose source is not routed to the sending peer."""
    TUN_WRITE_FAILED = "tun_write_failed"
    """The adapter could not write a delivered packet to the TUN device."""
    SEND_FAILED = "send_failed"
    """The adapter could not send a datagram (no socket, unreachable network...)."""


class Direction(enum.StrEnum):
    OUTGOING = "out"  # TUN → network
    INCOMING = "in"  # network → TUN


class Verdict(enum.StrEnum):
    """What became of an inner packet, as a packet tap (captures) sees it."""

    SENT = "sent"  # encrypted and handed to the UDP socket
    DELIVERED = "delivered"  # decrypted, allowed, handed to the TUN
    DROPPED = "dropped"


def key_b64(key: bytes | None) -> str | None:
    return None if key is None else base64.b64encode(key).decode()


@dataclass(frozen=True, slots=True)
class InnerInfo:
    """What we know of an inner IP packet, for explanations. No payload is kept."""

    version: int
    src: str
    dst: str
    proto: int
    length: int


@dataclass(frozen=True, slots=True)
class PacketDropped:
    reason: DropReason
    direction: Direction
    peer: bytes | None  # public key of the peer concerned, if known
    endpoint: tuple[str, int] | None = None  # outer address of the datagram, incoming only
    inner: InnerInfo | None = None
    owner: bytes | None = None  # DISALLOWED_SOURCE: the peer that does own the source, if any
    size: int = 0
    detail: str = ""

    def describe(self) -> str:
        parts = [f"drop {self.direction.value} {self.reason.value}"]
        if self.peer is not None:
            parts.append(f"peer={key_b64(self.peer)}")
        if self.endpoint is not None:
            parts.append(f"endpoint={self.endpoint[0]}:{self.endpoint[1]}")
        if self.inner is not None:
            parts.append(f"src={self.inner.src} dst={self.inner.dst} proto={self.inner.proto}")
        if self.owner is not None:
            parts.append(f"owner={key_b64(self.owner)}")
        if self.detail:
            parts.append(self.detail)
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class HandshakeInitiationSent:
    peer: bytes
    attempt: int


@dataclass(frozen=True, slots=True)
class HandshakeResponseSent:
    peer: bytes


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    peer: bytes
    initiator: bool


@dataclass(frozen=True, slots=True)
class HandshakeGaveUp:
    peer: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class CookieReplySent:
    endpoint: tuple[str, int]


@dataclass(frozen=True, slots=True)
class CookieReceived:
    peer: bytes


@dataclass(frozen=True, slots=True)
class KeysZeroed:
    peer: bytes


@dataclass(frozen=True, slots=True)
class EndpointChanged:
    peer: bytes
    endpoint: tuple[str, int]


@dataclass(frozen=True, slots=True)
class KeepaliveReceived:
    peer: bytes


Event = (
    PacketDropped
    | HandshakeInitiationSent
    | HandshakeResponseSent
    | HandshakeCompleted
    | HandshakeGaveUp
    | CookieReplySent
    | CookieReceived
    | KeysZeroed
    | EndpointChanged
    | KeepaliveReceived
)
