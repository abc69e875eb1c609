"""The sans-I/O WireGuard device: peers, cryptokey routing, handshakes, transport and timers.

Inputs: :meth:`Device.receive_datagram` (from the UDP socket), :meth:`Device.send_packet` (from
the TUN), :meth:`Device.handle_timer` (when :meth:`Device.get_timer` says so). Each takes
``now``, a monotonic time in seconds. Outputs are drained by the adapter:
:meth:`Device.datagrams_to_send`, :meth:`Device.packets_to_deliver` and :meth:`Device.events`.
Nothing here touches a socket, a file or the clock; randomness comes from ``random``.
"""

from __future__ import annotations

import collections
import ipaddress
import os
import struct
from collections.abc import Callable, Iterator
from typing import Final

from cryptography.exceptions import InvalidTag

from wgpy import crypto, messages, noise
from wgpy.allowedips import AllowedIPs
from wgpy.cookie import CookieChecker
from wgpy.events import (
    CookieReceived,
    CookieReplySent,
    Direction,
    DropReason,
    EndpointChanged,
    Event,
    HandshakeCompleted,
    HandshakeGaveUp,
    HandshakeInitiationSent,
    HandshakeResponseSent,
    KeepaliveReceived,
    KeysZeroed,
    PacketDropped,
    Verdict,
)
from wgpy.packet import icmp_unreachable, inner_info, may_answer_unreachable
from wgpy.peer import MAX_STAGED_PACKETS, NO_PRESHARED_KEY, Endpoint, Keypair, Peer
from wgpy.ratelimiter import RateLimiter
from wgpy.replay import REJECT_AFTER_MESSAGES
from wgpy.tally import AddressTally
from wgpy.timers import (
    INITIATIONS_MIN_INTERVAL,
    KEEPALIVE_TIMEOUT,
    MAX_TIMER_HANDSHAKES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX_MS,
    UNDER_LOAD_AFTER_TIME,
    ZERO_KEYS_AFTER,
    Timer,
    TimerQueue,
)

DEFAULT_MTU: Final = 1420
# Handshake messages per second above which the device considers itself under load and asks
# for cookies (wireguard-go: 128 waiting in its handshake queue; we measure a rate instead).
UNDER_LOAD_HANDSHAKES_PER_SECOND: Final = 128
# ICMP unreachables answered per second when no peer has a destination (kernel rate-limits too).
ICMP_PER_SECOND: Final = 100.0
ICMP_BURST: Final = 50.0

_RETRANSMIT = Timer.RETRANSMIT_HANDSHAKE
_SEND_KEEPALIVE = Timer.SEND_KEEPALIVE
_NEW_HANDSHAKE = Timer.NEW_HANDSHAKE
_ZERO_KEYS = Timer.ZERO_KEY_MATERIAL
_PERSISTENT = Timer.PERSISTENT_KEEPALIVE

#: A packet tap: (direction, verdict, peer public key, inner packet, drop reason).
PacketTap = Callable[[Direction, Verdict, bytes | None, bytes, DropReason | None], None]

_DATA_HEADER = struct.Struct("<IIQ")
_NONCE_PREFIX = bytes(4)
_TYPE_DATA = messages.TYPE_DATA


def _can_send(keypair: Keypair, now: float, packets: int) -> bool:
    """Whether ``keypair`` may encrypt ``packets`` more: valid, young enough, counter left."""
    return (
        keypair.can_send
        and now - keypair.birth < REJECT_AFTER_TIME
        and keypair.send_counter + packets < REJECT_AFTER_MESSAGES
    )


def _source_bytes(endpoint: Endpoint) -> tuple[bytes, bytes]:
    """(address bytes for the rate limiter, address+port bytes for the cookie MAC)."""
    address = ipaddress.ip_address(endpoint[0].split("%", 1)[0]).packed
    return address, address + endpoint[1].to_bytes(2, "little")


#: Below this size a datagram is never fragmented (576 is IPv4's minimum MTU), so whether a
#: packet carries WireGuard only matters above it.
_NESTED_CHECK_MIN: Final = 576 - 60


def _carries_wireguard(packet: bytes) -> bool:
    """Whether an inner packet is a UDP datagram holding a WireGuard message (its 4-byte
    header: type 1-4 and three zero bytes) — another tunnel's traffic going through this one."""
    version = packet[0] >> 4
    if version == 4:
        if packet[9] != 17 or packet[6] & 0x1F or packet[7]:  # not UDP, or not a first fragment
            return False
        offset = (packet[0] & 0x0F) * 4 + 8
    elif version == 6:
        if packet[6] != 17:
            return False
        offset = 48
    else:
        return False
    header = packet[offset : offset + 4]
    return len(header) == 4 and 1 <= header[0] <= 4 and header[1:] == b"\0\0\0"


class Device:
    """One WireGuard interface without its I/O."""

    def __init__(
        self,
        private_key: bytes | None = None,
        *,
        random: Callable[[int], bytes] = os.urandom,
        mtu: int = DEFAULT_MTU,
        wall_offset: float = 0.0,
    ) -> None:
        self.random = random
        self.mtu = mtu
        #: MTUs of routes through the interface (``ip route ... dev wg0 mtu N``), kept by an
        #: adapter. The kernel pads to the MTU of the packet's route, not the device's; when
        #: a route's MTU could make a difference for a packet, ``route_mtu(packet)`` (the
        #: adapter's lookup; 0 = none set) decides.
        self.route_mtus: tuple[int, ...] = ()
        self.route_mtu: Callable[[bytes], int] | None = None
        #: Added to ``now`` to get Unix time (TAI64N stamps and "latest handshake").
        self.wall_offset = wall_offset
        self.listen_port = 0
        self.fwmark = 0
        self.is_up = True
        self.private_key: bytes | None = None
        self.public_key: bytes | None = None
        self.peers: dict[bytes, Peer] = {}
        self.allowed_ips: AllowedIPs[Peer] = AllowedIPs()
        self.timers: TimerQueue[Peer] = TimerQueue()
        self.cookie_checker = CookieChecker()
        self.rate_limiter = RateLimiter()
        self.drop_counts: collections.Counter[tuple[bytes | None, DropReason]] = (
            collections.Counter()
        )
        #: Datagrams that authenticated as coming from a peer (handshake or data), so far:
        #: adapters compare it around ``receive_datagram`` to learn only from those.
        self.authenticated_received = 0
        #: The inner addresses most dropped, per key of ``drop_counts`` (bounded per key).
        self.drop_addresses: dict[tuple[bytes | None, DropReason], AddressTally] = {}
        #: ``disallowed_source`` drops by (sending peer, peer holding the source or None).
        self.disallowed_owners: collections.Counter[tuple[bytes, bytes | None]] = (
            collections.Counter()
        )
        self._handshake_index: dict[int, Peer] = {}
        self._keypair_index: dict[int, Keypair] = {}
        self._datagrams: list[tuple[bytes, Endpoint]] = []
        self._packets: list[bytes] = []
        self._unfragmentable: list[tuple[bytes, Endpoint]] = []
        #: Set by an adapter that sends ICMP errors from the interface's own network stack
        #: (as the kernel module does): packets no peer has are then handed out by
        #: ``unreachable_packets()`` instead of an ICMP error written to the TUN.
        self.icmp_from_stack = False
        self._unreachable: list[bytes] = []
        self._events: collections.deque[Event] = collections.deque()
        self.max_events = 65536
        #: Called for every inner packet sent, delivered or dropped while set (captures).
        #: None costs one attribute check per packet.
        self.tap: PacketTap | None = None
        self._handshake_window_start = 0.0
        self._handshake_window_count = 0
        self._under_load_until = float("-inf")
        self._icmp_tokens = ICMP_BURST
        self._icmp_last = 0.0
        if private_key is not None:
            self.set_private_key(private_key, 0.0)

    def __repr__(self) -> str:
        return f"Device(peers={len(self.peers)}, listen_port={self.listen_port})"

    # ------------------------------------------------------------------ outputs

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        out, self._datagrams = self._datagrams, []
        return out

    def datagrams_not_to_fragment(self) -> list[tuple[bytes, Endpoint]]:
        """Data datagrams that carry another WireGuard message (a tunnel inside a tunnel), to
        be sent without fragmentation: dropped when larger than the path MTU.

        A routing loop between two tunnels runs through here: each pass wraps the packet
        once more, and fragmenting the growing datagram would split it into ever more
        packets, each looping on. Refusing to fragment ends the loop when the packet outgrows
        the MTU, about where the kernel module's own loop dies. Other datagrams may be
        fragmented (IPv4 without DF), as the kernel's are."""
        out, self._unfragmentable = self._unfragmentable, []
        return out

    def unreachable_packets(self) -> list[bytes]:
        """Packets that no peer has and that get an ICMP error (``icmp_from_stack`` only),
        rate-limited like the TUN answers."""
        out, self._unreachable = self._unreachable, []
        return out

    def packets_to_deliver(self) -> list[bytes]:
        out, self._packets = self._packets, []
        return out

    def events(self) -> Iterator[Event]:
        """Drain the pending events, oldest first."""
        events = self._events
        while events:
            yield events.popleft()

    def get_timer(self) -> float | None:
        """The next time :meth:`handle_timer` must be called, or None."""
        return self.timers.next_deadline()

    def _emit(self, event: Event) -> None:
        if len(self._events) >= self.max_events:
            self._events.popleft()  # an adapter that never drains must not grow without bound
        self._events.append(event)

    def _drop(
        self,
        reason: DropReason,
        direction: Direction,
        peer: Peer | None,
        *,
        endpoint: Endpoint | None = None,
        packet: bytes | None = None,
        owner: Peer | None = None,
        size: int = 0,
        detail: str = "",
    ) -> None:
        public = None if peer is None else peer.public_key
        key = (public, reason)
        self.drop_counts[key] += 1
        if self.tap is not None and packet:
            self.tap(direction, Verdict.DROPPED, public, packet, reason)
        inner = None if packet is None else inner_info(packet)
        if inner is not None:
            tally = self.drop_addresses.get(key)
            if tally is None:
                tally = self.drop_addresses[key] = AddressTally()
            tally.add(inner.src, inner.dst)
        self._emit(
            PacketDropped(
                reason,
                direction,
                public,
                endpoint=None if endpoint is None else (endpoint[0], endpoint[1]),
                inner=inner,
                owner=None if owner is None else owner.public_key,
                size=size,
                detail=detail,
            )
        )

    # ------------------------------------------------------------- configuration

    def set_private_key(self, private_key: bytes | None, now: float) -> None:
        """Set (clamped) or remove the interface key; as in wireguard-go, a peer holding the
        new public key is removed and every session is expired."""
        if private_key is not None and private_key == bytes(32):
            private_key = None
        if private_key is not None:
            private_key = crypto.clamp(private_key)
        if private_key == self.private_key:
            return
        # as the kernel (since 6.2): what waited for a first key (a persistent keepalive
        # queued when the interface came up, data) goes out once there is one
        first_key = self.private_key is None and private_key is not None and self.is_up
        self.private_key = private_key
        self.public_key = None if private_key is None else crypto.public_key(private_key)
        self.cookie_checker.set_public_key(self.public_key)
        if self.public_key is not None and self.public_key in self.peers:
            self.remove_peer(self.peers[self.public_key], now)
        for peer in list(self.peers.values()):
            peer.compute_static_static(private_key)
            self._expire_sessions(peer)
            if first_key and peer.staged:
                self._send_staged(peer, now)

    def _expire_sessions(self, peer: Peer) -> None:
        self._clear_handshake(peer)
        for keypair in (peer.current, peer.next):
            if keypair is not None:
                keypair.can_send = False
        peer.last_sent_handshake = float("-inf")

    def add_peer(self, public_key: bytes) -> Peer | None:
        """Create a peer (or return the existing one). None for our own public key."""
        if len(public_key) != 32:
            raise ValueError("a public key is 32 bytes")
        if public_key == self.public_key:
            return None
        peer = self.peers.get(public_key)
        if peer is None:
            peer = Peer(public_key)
            peer.compute_static_static(self.private_key)
            self.peers[public_key] = peer
        return peer

    def remove_peer(self, peer: Peer, now: float) -> None:
        if self.peers.get(peer.public_key) is not peer:
            return
        del self.peers[peer.public_key]
        self.allowed_ips.remove_by_peer(peer)
        self._purge_staged(peer, DropReason.INTERFACE_DOWN, detail="peer removed")
        self._clear_keypairs(peer)
        self._clear_handshake(peer)
        for timer in Timer:
            self.timers.cancel(peer, timer)

    def remove_all_peers(self, now: float) -> None:
        for peer in list(self.peers.values()):
            self.remove_peer(peer, now)

    def set_preshared_key(self, peer: Peer, key: bytes | None) -> None:
        peer.preshared_key = NO_PRESHARED_KEY if key is None else key

    def set_endpoint(self, peer: Peer, endpoint: Endpoint | None) -> None:
        peer.endpoint = endpoint

    def set_persistent_keepalive(self, peer: Peer, interval: int, now: float) -> None:
        """Set the interval; enabling it while up sends a keepalive at once (as wg-go does)."""
        was = peer.persistent_keepalive
        peer.persistent_keepalive = interval
        if interval == 0:
            self.timers.cancel(peer, _PERSISTENT)
        elif was == 0 and self.is_up:
            self._send_keepalive(peer, now)

    def peer_configured(self, peer: Peer, now: float) -> None:
        """End of a configuration section for ``peer``: flush what waits, as wg-go does."""
        if self.is_up and peer.staged:
            self._send_staged(peer, now)

    def up(self, now: float) -> None:
        if self.is_up:
            return
        self.is_up = True
        for peer in self.peers.values():
            if peer.persistent_keepalive:
                self._send_keepalive(peer, now)
            elif peer.staged:
                self._send_staged(peer, now)

    def down(self, now: float) -> None:
        if not self.is_up:
            return
        self.is_up = False
        for peer in self.peers.values():
            self._purge_staged(peer, DropReason.INTERFACE_DOWN)
            self._clear_keypairs(peer)
            self._clear_handshake(peer)
            peer.last_sent_handshake = float("-inf")
            peer.handshake_attempts = 0
        self.timers.clear()
        self._under_load_until = float("-inf")

    # --------------------------------------------------------- index bookkeeping

    def _new_index(self) -> int:
        while True:
            index = int.from_bytes(self.random(4), "little")
            if index not in self._handshake_index and index not in self._keypair_index:
                return index

    def _clear_handshake(self, peer: Peer) -> None:
        hs = peer.handshake
        if hs.state is not noise.HandshakeState.ZEROED:
            self._handshake_index.pop(hs.local_index, None)
        hs.clear()

    def _drop_keypair(self, keypair: Keypair | None) -> None:
        if keypair is not None:
            self._keypair_index.pop(keypair.local_index, None)

    def _clear_keypairs(self, peer: Peer) -> None:
        for keypair in (peer.previous, peer.current, peer.next):
            self._drop_keypair(keypair)
        peer.previous = peer.current = peer.next = None

    # ------------------------------------------------------------------- timers

    def _jitter(self) -> float:
        value = int.from_bytes(self.random(2), "little") % REKEY_TIMEOUT_JITTER_MAX_MS
        return value / 1000.0

    def _after_authenticated_sent(self, peer: Peer, now: float) -> None:
        self.timers.cancel(peer, _SEND_KEEPALIVE)
        if peer.persistent_keepalive:
            self.timers.arm(peer, _PERSISTENT, now + peer.persistent_keepalive)

    def _after_authenticated_received(self, peer: Peer, now: float) -> None:
        self.authenticated_received += 1
        self.timers.cancel(peer, _NEW_HANDSHAKE)
        if peer.persistent_keepalive:
            self.timers.arm(peer, _PERSISTENT, now + peer.persistent_keepalive)

    def _handshake_complete(self, peer: Peer, now: float, *, initiator: bool) -> None:
        self.timers.cancel(peer, _RETRANSMIT)
        peer.handshake_attempts = 0
        peer.sent_lastminute_handshake = False
        peer.last_handshake_wall = now + self.wall_offset
        self._emit(HandshakeCompleted(peer.public_key, initiator))

    def handle_timer(self, now: float) -> None:
        """Fire every timer that is due at ``now``."""
        for peer, timer in self.timers.pop_due(now):
            if self.peers.get(peer.public_key) is not peer or not self.is_up:
                continue
            if timer == _RETRANSMIT:
                self._retransmit_expired(peer, now)
            elif timer == _SEND_KEEPALIVE:
                self._send_keepalive(peer, now)
                if peer.need_another_keepalive:
                    peer.need_another_keepalive = False
                    self.timers.arm(peer, _SEND_KEEPALIVE, now + KEEPALIVE_TIMEOUT)
            elif timer == _NEW_HANDSHAKE:
                self._send_initiation(peer, now, is_retry=False)
            elif timer == _ZERO_KEYS:
                self._clear_keypairs(peer)
                self._clear_handshake(peer)
                self._emit(KeysZeroed(peer.public_key))
            elif timer == _PERSISTENT and peer.persistent_keepalive:
                self._send_keepalive(peer, now)

    def _retransmit_expired(self, peer: Peer, now: float) -> None:
        if peer.handshake_attempts > MAX_TIMER_HANDSHAKES:
            self._emit(HandshakeGaveUp(peer.public_key, peer.handshake_attempts + 2))
            self.timers.cancel(peer, _SEND_KEEPALIVE)
            reason = (
                DropReason.NO_ENDPOINT if peer.endpoint is None else DropReason.HANDSHAKE_TIMEOUT
            )
            self._purge_staged(peer, reason)
            if not self.timers.pending(peer, _ZERO_KEYS):
                self.timers.arm(peer, _ZERO_KEYS, now + ZERO_KEYS_AFTER)
            return
        peer.handshake_attempts += 1
        self._send_initiation(peer, now, is_retry=True)

    # ---------------------------------------------------------------- handshake

    def _send_initiation(self, peer: Peer, now: float, *, is_retry: bool) -> None:
        if not is_retry:
            peer.handshake_attempts = 0
        if now - peer.last_sent_handshake < REKEY_TIMEOUT:
            return
        if self.private_key is None or self.public_key is None:
            # no handshake and no retry; the packets stay staged for a key (the kernel's way)
            return
        if peer.static_static is None:
            self._purge_staged(peer, DropReason.INVALID_PEER_KEY)
            return
        peer.last_sent_handshake = now
        if peer.endpoint is not None:
            self._clear_handshake(peer)
            index = self._new_index()
            message = noise.create_initiation(
                peer.handshake,
                local_public=self.public_key,
                peer_public=peer.public_key,
                static_static=peer.static_static,
                ephemeral_private=crypto.generate_private_key(self.random),
                sender_index=index,
                timestamp=crypto.tai64n(now + self.wall_offset),
            )
            if message is None:
                return
            self._handshake_index[index] = peer
            datagram = peer.cookies.add_macs(message.pack_without_macs(), now)
            self._datagrams.append((datagram, peer.endpoint))
            peer.tx_bytes += len(datagram)
            self._after_authenticated_sent(peer, now)
            self._emit(HandshakeInitiationSent(peer.public_key, peer.handshake_attempts + 1))
        # Like wireguard-go, keep retrying even while there is no endpoint to send to: the
        # staged packets are then purged (as "no endpoint") when the attempts give up.
        self.timers.arm(peer, _RETRANSMIT, now + REKEY_TIMEOUT + self._jitter())

    def _under_load(self, now: float) -> bool:
        if now - self._handshake_window_start >= 1.0:
            self._handshake_window_start = now
            self._handshake_window_count = 0
        self._handshake_window_count += 1
        if self._handshake_window_count > UNDER_LOAD_HANDSHAKES_PER_SECOND:
            self._under_load_until = now + UNDER_LOAD_AFTER_TIME
        return now < self._under_load_until

    def force_under_load(self, now: float, duration: float = UNDER_LOAD_AFTER_TIME) -> None:
        """Let an adapter that sees a backlog of handshake datagrams declare load."""
        self._under_load_until = max(self._under_load_until, now + duration)

    def _check_handshake_macs(
        self,
        datagram: bytes,
        mac1_offset: int,
        endpoint: Endpoint,
        sender_index: int,
        now: float,
    ) -> bool:
        """mac1 always; under load, mac2 (else answer with a cookie) and the rate limiter."""
        under_load = self._under_load(now)
        if not self.cookie_checker.check_mac1(datagram, mac1_offset):
            self._drop(
                DropReason.INVALID_MAC1,
                Direction.INCOMING,
                None,
                endpoint=endpoint,
                size=len(datagram),
            )
            return False
        if not under_load:
            return True
        try:
            address, source = _source_bytes(endpoint)
        except ValueError:
            return True
        if not self.cookie_checker.check_mac2(datagram, mac1_offset + 16, source, now):
            reply = self.cookie_checker.create_reply(
                datagram, mac1_offset, sender_index, source, now, self.random
            )
            self._datagrams.append((reply, endpoint))
            self._emit(CookieReplySent((endpoint[0], endpoint[1])))
            self._drop(
                DropReason.COOKIE_REQUIRED,
                Direction.INCOMING,
                None,
                endpoint=endpoint,
                size=len(datagram),
            )
            return False
        if not self.rate_limiter.allow(address, now):
            self._drop(
                DropReason.RATE_LIMITED,
                Direction.INCOMING,
                None,
                endpoint=endpoint,
                size=len(datagram),
            )
            return False
        return True

    def _set_endpoint_from_packet(self, peer: Peer, endpoint: Endpoint) -> None:
        if peer.endpoint != endpoint:
            peer.endpoint = endpoint
            self._emit(EndpointChanged(peer.public_key, (endpoint[0], endpoint[1])))

    def _receive_initiation(self, datagram: bytes, endpoint: Endpoint, now: float) -> None:
        message = messages.parse_initiation(datagram)
        if not self._check_handshake_macs(
            datagram, messages.INITIATION_MAC1_OFFSET, endpoint, message.sender_index, now
        ):
            return
        if self.private_key is None or self.public_key is None:
            self._drop(
                DropReason.NO_IDENTITY,
                Direction.INCOMING,
                None,
                endpoint=endpoint,
                size=len(datagram),
            )
            return
        decoded = noise.decode_initiation(
            message, local_private=self.private_key, local_public=self.public_key
        )
        if decoded is None:
            self._drop(
                DropReason.HANDSHAKE_FAILED,
                Direction.INCOMING,
                None,
                endpoint=endpoint,
                size=len(datagram),
                detail="initiation does not decrypt",
            )
            return
        peer = self.peers.get(decoded.initiator_public)
        if peer is None or peer.static_static is None:
            self._drop(
                DropReason.HANDSHAKE_FAILED,
                Direction.INCOMING,
                None,
                endpoint=endpoint,
                size=len(datagram),
                detail="initiation from an unknown or unusable peer key",
            )
            return
        opened = noise.open_initiation_timestamp(decoded, message, static_static=peer.static_static)
        if opened is None:
            self._drop(
                DropReason.HANDSHAKE_FAILED,
                Direction.INCOMING,
                peer,
                endpoint=endpoint,
                size=len(datagram),
                detail="initiation timestamp does not decrypt",
            )
            return
        timestamp, chaining_key, h = opened
        hs = peer.handshake
        if timestamp <= hs.latest_timestamp:
            self._drop(
                DropReason.REPLAYED_INITIATION,
                Direction.INCOMING,
                peer,
                endpoint=endpoint,
                size=len(datagram),
            )
            return
        last = hs.last_initiation_consumed
        if last is not None and now - last <= INITIATIONS_MIN_INTERVAL:
            self._drop(
                DropReason.INITIATION_FLOOD,
                Direction.INCOMING,
                peer,
                endpoint=endpoint,
                size=len(datagram),
            )
            return
        self._clear_handshake(peer)
        noise.accept_initiation(hs, message, chaining_key, h, timestamp, now)
        peer.rx_bytes += len(datagram)
        self._set_endpoint_from_packet(peer, endpoint)
        self._after_authenticated_received(peer, now)
        self._send_response(peer, now)

    def _send_response(self, peer: Peer, now: float) -> None:
        hs = peer.handshake
        index = self._new_index()
        message = noise.create_response(
            hs,
            initiator_public=peer.public_key,
            preshared_key=peer.preshared_key,
            ephemeral_private=crypto.generate_private_key(self.random),
            sender_index=index,
        )
        if message is None or peer.endpoint is None:
            hs.clear()
            return
        remote_index = hs.remote_index
        send_key, receive_key = noise.derive_transport_keys(hs)
        keypair = Keypair(
            peer,
            send_key,
            receive_key,
            initiator=False,
            local_index=index,
            remote_index=remote_index,
            birth=now,
        )
        self._keypair_index[index] = keypair
        # Responder: the new keypair waits in `next` until the initiator confirms it.
        self._drop_keypair(peer.next)
        self._drop_keypair(peer.previous)
        peer.previous = None
        peer.next = keypair
        hs.clear()
        self.timers.arm(peer, _ZERO_KEYS, now + ZERO_KEYS_AFTER)
        datagram = peer.cookies.add_macs(message.pack_without_macs(), now)
        peer.last_sent_handshake = now
        self._datagrams.append((datagram, peer.endpoint))
        peer.tx_bytes += len(datagram)
        self._after_authenticated_sent(peer, now)
        self._emit(HandshakeResponseSent(peer.public_key))

    def _receive_response(self, datagram: bytes, endpoint: Endpoint, now: float) -> None:
        message = messages.parse_response(datagram)
        if not self._check_handshake_macs(
            datagram, messages.RESPONSE_MAC1_OFFSET, endpoint, message.sender_index, now
        ):
            return
        peer = self._handshake_index.get(message.receiver_index)
        if peer is None:
            self._drop(
                DropReason.UNKNOWN_INDEX,
                Direction.INCOMING,
                None,
                endpoint=endpoint,
                size=len(datagram),
            )
            return
        if self.private_key is None:
            self._drop(
                DropReason.NO_IDENTITY,
                Direction.INCOMING,
                peer,
                endpoint=endpoint,
                size=len(datagram),
            )
            return
        hs = peer.handshake
        result = noise.consume_response(
            hs, message, local_private=self.private_key, preshared_key=peer.preshared_key
        )
        if result is None:
            self._drop(
                DropReason.HANDSHAKE_FAILED,
                Direction.INCOMING,
                peer,
                endpoint=endpoint,
                size=len(datagram),
                detail="response does not decrypt or no initiation is pending",
            )
            return
        hs.chaining_key, hs.hash = result
        local_index = hs.local_index
        send_key, receive_key = noise.derive_transport_keys(hs)
        keypair = Keypair(
            peer,
            send_key,
            receive_key,
            initiator=True,
            local_index=local_index,
            remote_index=message.sender_index,
            birth=now,
        )
        # The index now names the keypair instead of the handshake.
        self._handshake_index.pop(local_index, None)
        hs.clear()
        self._keypair_index[local_index] = keypair
        if peer.next is not None:
            self._drop_keypair(peer.previous)
            self._drop_keypair(peer.current)
            peer.previous = peer.next
            peer.next = None
        else:
            self._drop_keypair(peer.previous)
            peer.previous = peer.current
        peer.current = keypair
        peer.rx_bytes += len(datagram)
        self._set_endpoint_from_packet(peer, endpoint)
        self._after_authenticated_received(peer, now)
        self._handshake_complete(peer, now, initiator=True)
        self.timers.arm(peer, _ZERO_KEYS, now + ZERO_KEYS_AFTER)
        self._send_keepalive(peer, now)

    def _receive_cookie_reply(self, datagram: bytes, endpoint: Endpoint, now: float) -> None:
        message = messages.parse_cookie_reply(datagram)
        peer = self._handshake_index.get(message.receiver_index)
        if peer is None:
            keypair = self._keypair_index.get(message.receiver_index)
            peer = None if keypair is None else keypair.peer
        if peer is None:
            self._drop(
                DropReason.UNKNOWN_INDEX,
                Direction.INCOMING,
                None,
                endpoint=endpoint,
                size=len(datagram),
            )
            return
        if not peer.cookies.consume_reply(message, now):
            self._drop(
                DropReason.INVALID_COOKIE,
                Direction.INCOMING,
                peer,
                endpoint=endpoint,
                size=len(datagram),
            )
            return
        self._emit(CookieReceived(peer.public_key))

    # ------------------------------------------------------------------ receive

    def receive_datagram(self, datagram: bytes, endpoint: Endpoint, now: float) -> None:
        """Handle one UDP payload from ``endpoint``. Never raises for anything it contains."""
        if len(datagram) >= 32 and datagram[0] == _TYPE_DATA and datagram[1:4] == b"\0\0\0":
            self._receive_data(datagram, endpoint, now)
            return
        try:
            kind = messages.message_type(datagram)
        except messages.MessageError as error:
            reason = (
                DropReason.UNKNOWN_TYPE if error.reason == "unknown_type" else DropReason.BAD_SIZE
            )
            self._drop(
                reason,
                Direction.INCOMING,
                None,
                endpoint=endpoint,
                size=len(datagram),
                detail=str(error),
            )
            return
        if not self.is_up:
            self._drop(
                DropReason.INTERFACE_DOWN,
                Direction.INCOMING,
                None,
                endpoint=endpoint,
                size=len(datagram),
                detail="handshake message while the interface is down",
            )
            return
        if kind == messages.TYPE_INITIATION:
            self._receive_initiation(datagram, endpoint, now)
        elif kind == messages.TYPE_RESPONSE:
            self._receive_response(datagram, endpoint, now)
        elif kind == messages.TYPE_COOKIE_REPLY:
            self._receive_cookie_reply(datagram, endpoint, now)

    def _receive_data(self, datagram: bytes, endpoint: Endpoint, now: float) -> None:
        _, receiver, counter = _DATA_HEADER.unpack_from(datagram)
        keypair = self._keypair_index.get(receiver)
        if keypair is None:
            self._drop(
                DropReason.UNKNOWN_INDEX,
                Direction.INCOMING,
                None,
                endpoint=endpoint,
                size=len(datagram),
            )
            return
        peer = keypair.peer
        if now - keypair.birth >= REJECT_AFTER_TIME or counter >= REJECT_AFTER_MESSAGES:
            self._drop(
                DropReason.EXPIRED_KEYPAIR,
                Direction.INCOMING,
                peer,
                endpoint=endpoint,
                size=len(datagram),
            )
            return
        try:
            plaintext = keypair.receive.decrypt(
                _NONCE_PREFIX + counter.to_bytes(8, "little"), datagram[16:], None
            )
        except InvalidTag:
            self._drop(
                DropReason.DECRYPTION_FAILED,
                Direction.INCOMING,
                peer,
                endpoint=endpoint,
                size=len(datagram),
            )
            return
        if not keypair.replay.accept(counter):
            self._drop(
                DropReason.REPLAYED_COUNTER,
                Direction.INCOMING,
                peer,
                endpoint=endpoint,
                size=len(datagram),
                detail=f"counter {counter}",
            )
            return
        if peer.endpoint != endpoint:
            self._set_endpoint_from_packet(peer, endpoint)
        peer.rx_bytes += len(datagram)
        if keypair is peer.next:
            self._confirm_next_keypair(peer, now)
        self._after_authenticated_received(peer, now)
        current = peer.current
        if (
            not peer.sent_lastminute_handshake
            and current is not None
            and current.initiator
            and now - current.birth >= REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
        ):
            peer.sent_lastminute_handshake = True
            self._send_initiation(peer, now, is_retry=False)
        if not plaintext:
            self._emit(KeepaliveReceived(peer.public_key))
            return
        if not self.timers.pending(peer, _SEND_KEEPALIVE):
            self.timers.arm(peer, _SEND_KEEPALIVE, now + KEEPALIVE_TIMEOUT)
        else:
            peer.need_another_keepalive = True
        self._deliver(peer, plaintext, endpoint)

    def _deliver(self, peer: Peer, plaintext: bytes, endpoint: Endpoint) -> None:
        version = plaintext[0] >> 4
        size = len(plaintext)
        if version == 4 and size >= 20:
            length = (plaintext[2] << 8) | plaintext[3]
            bad_length = length < 20 or length > size
            owner = self.allowed_ips.lookup_v4(int.from_bytes(plaintext[12:16], "big"))
        elif version == 6 and size >= 40:
            length = 40 + ((plaintext[4] << 8) | plaintext[5])
            bad_length = length > size
            owner = self.allowed_ips.lookup_v6(int.from_bytes(plaintext[8:24], "big"))
        else:
            self._drop(
                DropReason.NOT_IP,
                Direction.INCOMING,
                peer,
                endpoint=endpoint,
                packet=plaintext,
                size=size,
            )
            return
        if bad_length:
            self._drop(
                DropReason.BAD_LENGTH,
                Direction.INCOMING,
                peer,
                endpoint=endpoint,
                packet=plaintext,
                size=size,
                detail=f"IPv{version} length field says {length}, plaintext {size}",
            )
            return
        if length != size:
            plaintext = plaintext[:length]
        if owner is not peer:
            self.disallowed_owners[
                (peer.public_key, None if owner is None else owner.public_key)
            ] += 1
            self._drop(
                DropReason.DISALLOWED_SOURCE,
                Direction.INCOMING,
                peer,
                endpoint=endpoint,
                packet=plaintext,
                owner=owner,
                size=length,
            )
            return
        if self.tap is not None:
            self.tap(Direction.INCOMING, Verdict.DELIVERED, peer.public_key, plaintext, None)
        self._packets.append(plaintext)

    def _confirm_next_keypair(self, peer: Peer, now: float) -> None:
        self._drop_keypair(peer.previous)
        peer.previous = peer.current
        peer.current = peer.next
        peer.next = None
        self._handshake_complete(peer, now, initiator=False)
        if peer.staged:
            self._send_staged(peer, now)

    # --------------------------------------------------------------------- send

    def send_packet(self, packet: bytes, now: float) -> None:
        """Route one IP packet read from the TUN to its peer (cryptokey routing)."""
        size = len(packet)
        version = packet[0] >> 4 if size else 0
        if version == 4 and size >= 20:
            peer = self.allowed_ips.lookup_v4(int.from_bytes(packet[16:20], "big"))
        elif version == 6 and size >= 40:
            peer = self.allowed_ips.lookup_v6(int.from_bytes(packet[24:40], "big"))
        else:
            self._drop(DropReason.NOT_IP, Direction.OUTGOING, None, packet=packet, size=size)
            return
        if peer is None:
            self._drop(DropReason.NO_PEER, Direction.OUTGOING, None, packet=packet, size=size)
            self._answer_unreachable(packet, now)
            return
        keypair = peer.current
        if (
            peer.staged
            or keypair is None
            or not _can_send(keypair, now, 1)
            or peer.endpoint is None
            or not self.is_up
        ):
            self._stage(peer, packet)
            if self.is_up:
                self._send_staged(peer, now)
            return
        self._encrypt(peer, keypair, packet, peer.endpoint)
        self._after_data_sent(peer, keypair, now)

    def _answer_unreachable(self, packet: bytes, now: float) -> None:
        self._icmp_tokens = min(
            ICMP_BURST, self._icmp_tokens + (now - self._icmp_last) * ICMP_PER_SECOND
        )
        self._icmp_last = now
        if self._icmp_tokens < 1.0:
            return
        if self.icmp_from_stack:
            if may_answer_unreachable(packet):
                self._icmp_tokens -= 1.0
                self._unreachable.append(packet)
            return
        reply = icmp_unreachable(packet)
        if reply is not None:
            self._icmp_tokens -= 1.0
            self._packets.append(reply)

    def _stage(self, peer: Peer, packet: bytes) -> None:
        staged = peer.staged
        if len(staged) >= MAX_STAGED_PACKETS:
            oldest = staged.popleft()
            self._drop(
                DropReason.STAGED_OVERFLOW,
                Direction.OUTGOING,
                peer,
                packet=oldest or None,
                size=len(oldest),
            )
        staged.append(packet)

    def _purge_staged(self, peer: Peer, reason: DropReason, detail: str = "") -> None:
        while peer.staged:
            packet = peer.staged.popleft()
            if packet:  # a queued keepalive is not a packet anyone sent
                self._drop(
                    reason,
                    Direction.OUTGOING,
                    peer,
                    packet=packet,
                    size=len(packet),
                    detail=detail,
                )

    def _encrypt(self, peer: Peer, keypair: Keypair, packet: bytes, endpoint: Endpoint) -> None:
        counter = keypair.send_counter
        keypair.send_counter = counter + 1
        size = len(packet)
        if self.tap is not None and size:
            self.tap(Direction.OUTGOING, Verdict.SENT, peer.public_key, packet, None)
        mtu = self.mtu
        if self.route_mtus and size & 15 and self.route_mtu is not None:
            mtu = self.route_mtu(packet) or mtu
        padded = messages.padded_length(size, mtu)
        if padded != size:
            packet += bytes(padded - size)
        datagram = _DATA_HEADER.pack(_TYPE_DATA, keypair.remote_index, counter) + (
            keypair.send.encrypt(_NONCE_PREFIX + counter.to_bytes(8, "little"), packet, None)
        )
        if size >= _NESTED_CHECK_MIN and _carries_wireguard(packet):
            self._unfragmentable.append((datagram, endpoint))
        else:
            self._datagrams.append((datagram, endpoint))
        peer.tx_bytes += len(datagram)

    def _after_data_sent(self, peer: Peer, keypair: Keypair, now: float) -> None:
        self._after_authenticated_sent(peer, now)
        if not self.timers.pending(peer, _NEW_HANDSHAKE):
            self.timers.arm(
                peer, _NEW_HANDSHAKE, now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()
            )
        if keypair.send_counter > REKEY_AFTER_MESSAGES or (
            keypair.initiator and now - keypair.birth >= REKEY_AFTER_TIME
        ):
            self._send_initiation(peer, now, is_retry=False)

    def _send_keepalive(self, peer: Peer, now: float) -> None:
        if not peer.staged:
            peer.staged.append(b"")
        self._send_staged(peer, now)

    def _send_staged(self, peer: Peer, now: float) -> None:
        keypair = peer.current
        endpoint = peer.endpoint
        if keypair is None or not _can_send(keypair, now, len(peer.staged)) or endpoint is None:
            self._send_initiation(peer, now, is_retry=False)
            return
        sent_data = False
        staged = peer.staged
        while staged:
            packet = staged.popleft()
            sent_data = sent_data or bool(packet)
            self._encrypt(peer, keypair, packet, endpoint)
        if sent_data:
            self._after_data_sent(peer, keypair, now)
        else:
            self._after_authenticated_sent(peer, now)
            if keypair.initiator and now - keypair.birth >= REKEY_AFTER_TIME:
                self._send_initiation(peer, now, is_retry=False)

    def report_tun_write_failure(self, packet: bytes, detail: str) -> None:
        """Adapters call this when a delivered packet could not be written to the TUN."""
        self._drop(
            DropReason.TUN_WRITE_FAILED,
            Direction.INCOMING,
            None,
            packet=packet,
            size=len(packet),
            detail=detail,
        )

    def report_send_failure(self, datagram: bytes, endpoint: Endpoint, detail: str) -> None:
        self._drop(
            DropReason.SEND_FAILED,
            Direction.OUTGOING,
            None,
            endpoint=endpoint,
            size=len(datagram),
            detail=detail,
        )
