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

    :data:`DROP_REASON_HELP` explains each; docs/drop-reasons.md is generated from it.
    """

    NO_PEER = "no_peer"
    NOT_IP = "not_ip"
    BAD_LENGTH = "bad_length"
    NO_ENDPOINT = "no_endpoint"
    NO_IDENTITY = "no_identity"
    INVALID_PEER_KEY = "invalid_peer_key"
    STAGED_OVERFLOW = "staged_overflow"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    INTERFACE_DOWN = "interface_down"
    BAD_SIZE = "bad_size"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_MAC1 = "invalid_mac1"
    COOKIE_REQUIRED = "cookie_required"
    RATE_LIMITED = "rate_limited"
    HANDSHAKE_FAILED = "handshake_failed"
    REPLAYED_INITIATION = "replayed_initiation"
    INITIATION_FLOOD = "initiation_flood"
    INVALID_COOKIE = "invalid_cookie"
    UNKNOWN_INDEX = "unknown_index"
    DECRYPTION_FAILED = "decryption_failed"
    REPLAYED_COUNTER = "replayed_counter"
    EXPIRED_KEYPAIR = "expired_keypair"
    DISALLOWED_SOURCE = "disallowed_source"
    TUN_WRITE_FAILED = "tun_write_failed"
    SEND_FAILED = "send_failed"
    BAD_OFFLOAD = "bad_offload"
    HANDSHAKE_QUEUE_FULL = "handshake_queue_full"
    UNRECOGNISED = "unrecognised"


DROP_REASON_HELP: dict[DropReason, str] = {
    DropReason.NO_PEER: (
        "Outgoing: no peer's AllowedIPs contains the destination (kernel: ENOKEY + ICMP)."
    ),
    DropReason.NOT_IP: (
        "Outgoing or incoming inner packet is neither IPv4 nor IPv6, or shorter than its header."
    ),
    DropReason.BAD_LENGTH: (
        "Incoming inner packet whose IP length field disagrees with the decrypted plaintext."
    ),
    DropReason.NO_ENDPOINT: (
        "Staged packets discarded because the peer never had an endpoint to handshake with."
    ),
    DropReason.NO_IDENTITY: ("A handshake was needed but the interface has no private key."),
    DropReason.INVALID_PEER_KEY: (
        "A handshake was needed but the peer's public key is of low order (or is our own)."
    ),
    DropReason.STAGED_OVERFLOW: (
        "The staged queue (128 packets waiting for a handshake) overflowed; the oldest is dropped."
    ),
    DropReason.HANDSHAKE_TIMEOUT: (
        "Staged packets discarded after the handshake gave up (20 attempts, about 90 s)."
    ),
    DropReason.INTERFACE_DOWN: (
        "Staged packets discarded because the interface went down or the peer was removed;"
        " or a handshake message that arrived while the interface was down."
    ),
    DropReason.BAD_SIZE: (
        "A datagram too short for its type, or a handshake message of the wrong size."
    ),
    DropReason.UNKNOWN_TYPE: (
        "A datagram whose first four bytes are not one of the four message types."
    ),
    DropReason.INVALID_MAC1: (
        "A handshake message whose mac1 is wrong (not meant for us, or forged)."
    ),
    DropReason.COOKIE_REQUIRED: (
        "Under load and mac2 missing or wrong: a cookie reply was sent instead of processing."
    ),
    DropReason.RATE_LIMITED: ("Under load, valid mac2, but the source exceeded 20 handshakes/s."),
    DropReason.HANDSHAKE_FAILED: (
        "A handshake message that does not decrypt, names an unknown peer or is in the wrong state."
    ),
    DropReason.REPLAYED_INITIATION: (
        "An initiation whose TAI64N timestamp is not newer than the last one from that peer."
    ),
    DropReason.INITIATION_FLOOD: (
        "An initiation less than 20 ms after the previous accepted one from that peer."
    ),
    DropReason.INVALID_COOKIE: ("A cookie reply that does not decrypt or answers nothing we sent."),
    DropReason.UNKNOWN_INDEX: (
        "A message whose receiver index names no current handshake or keypair."
    ),
    DropReason.DECRYPTION_FAILED: ("A data message that fails authentication."),
    DropReason.REPLAYED_COUNTER: (
        "A data message whose counter was already seen or is behind the 8128-packet window."
    ),
    DropReason.EXPIRED_KEYPAIR: (
        "A data message for a keypair older than REJECT_AFTER_TIME (180 s) or exhausted."
    ),
    DropReason.DISALLOWED_SOURCE: (
        "An authenticated inner packet whose source is not routed to the sending peer."
    ),
    DropReason.TUN_WRITE_FAILED: (
        "The adapter could not write a delivered packet to the TUN device."
    ),
    DropReason.SEND_FAILED: (
        "The adapter could not send a datagram (no socket, unreachable network...)."
    ),
    DropReason.BAD_OFFLOAD: (
        "A TUN read whose virtio-net header (segmentation offload) disagrees with its packet, or"
        " too large to segment; the adapter dropped it whole."
    ),
    DropReason.HANDSHAKE_QUEUE_FULL: (
        "Kernel module only: a handshake message dropped unexamined because the interface's"
        " queue of incoming handshakes was full (a flood), or the kernel's random number"
        " generator was not yet ready at boot."
    ),
    DropReason.UNRECOGNISED: (
        "Kernel module only: a wireguard log line that no entry of wgpy.kernelmsg.MESSAGES"
        " knows; counted with its text so that nothing is ignored silently."
    ),
}


#: Drops of outgoing packets (TUN → network), explained by where they go: their inner
#: *destination* is the address to show first (no_peer: the destination no peer's
#: AllowedIPs holds). Every other drop with inner addresses is of an incoming packet, explained
#: by where it comes from: its *source* first (disallowed_source: the source the peer may
#: not use). Datagram-level drops have no inner addresses.
EXPLAINED_BY_DESTINATION: frozenset[DropReason] = frozenset(
    {
        DropReason.NO_PEER,
        DropReason.NO_ENDPOINT,
        DropReason.NO_IDENTITY,
        DropReason.INVALID_PEER_KEY,
        DropReason.STAGED_OVERFLOW,
        DropReason.HANDSHAKE_TIMEOUT,
        DropReason.INTERFACE_DOWN,
        DropReason.SEND_FAILED,
        DropReason.BAD_OFFLOAD,
    }
)


def explaining_address(reason: str) -> str:
    """``"destination"`` or ``"source"``: the inner address that explains a drop of this
    reason (see :data:`EXPLAINED_BY_DESTINATION`), which the tools show first."""
    return "destination" if reason in EXPLAINED_BY_DESTINATION else "source"


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
