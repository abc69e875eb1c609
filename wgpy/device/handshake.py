"""Handshakes: initiations and responses sent and received (Noise_IKpsk2 through wgpy.noise),
mac1/mac2 and cookie replies under load, keypairs made and rotated.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from wgpy import crypto, messages, noise
from wgpy.device.state import (
    RETRANSMIT,
    ZERO_KEYS,
    DeviceState,
)
from wgpy.events import (
    CookieReceived,
    CookieReplySent,
    DropReason,
    EndpointChanged,
    HandshakeCompleted,
    HandshakeInitiationSent,
    HandshakeResponseSent,
)
from wgpy.peer import Endpoint, Keypair, Peer
from wgpy.timers import (
    INITIATIONS_MIN_INTERVAL,
    REKEY_TIMEOUT,
    UNDER_LOAD_AFTER_TIME,
    ZERO_KEYS_AFTER,
)

# Handshake messages per second above which the device considers itself under load and asks
# for cookies (wireguard-go: 128 waiting in its handshake queue; we measure a rate instead).
UNDER_LOAD_HANDSHAKES_PER_SECOND: Final = 128


def _source_bytes(endpoint: Endpoint) -> tuple[bytes, bytes]:
    """(address bytes for the rate limiter, address+port bytes for the cookie MAC)."""
    address = ipaddress.ip_address(endpoint[0].split("%", 1)[0]).packed
    return address, address + endpoint[1].to_bytes(2, "little")


class Handshakes(DeviceState):
    """The handshake messages, both ways."""

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
            self._datagrams.append((datagram, peer.endpoint, 0))
            peer.tx_bytes += len(datagram)
            self._after_authenticated_sent(peer, now)
            self._emit(HandshakeInitiationSent(peer.public_key, peer.handshake_attempts + 1))
        # Like wireguard-go, keep retrying even while there is no endpoint to send to: the
        # staged packets are then purged (as "no endpoint") when the attempts give up.
        self.timers.arm(peer, RETRANSMIT, now + REKEY_TIMEOUT + self._jitter())

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
        self.timers.arm(peer, ZERO_KEYS, now + ZERO_KEYS_AFTER)
        datagram = peer.cookies.add_macs(message.pack_without_macs(), now)
        peer.last_sent_handshake = now
        self._datagrams.append((datagram, peer.endpoint, 0))
        peer.tx_bytes += len(datagram)
        self._after_authenticated_sent(peer, now)
        self._emit(HandshakeResponseSent(peer.public_key))

    def _receive_initiation(self, datagram: bytes, endpoint: Endpoint, now: float) -> None:
        message = messages.parse_initiation(datagram)
        if not self._check_handshake_macs(
            datagram, messages.INITIATION_MAC1_OFFSET, endpoint, message.sender_index, now
        ):
            return
        if self.private_key is None or self.public_key is None:
            self._drop_datagram(DropReason.NO_IDENTITY, datagram, endpoint)
            return
        decoded = noise.decode_initiation(
            message, local_private=self.private_key, local_public=self.public_key
        )
        if decoded is None:
            self._drop_datagram(
                DropReason.HANDSHAKE_FAILED,
                datagram,
                endpoint,
                detail="initiation does not decrypt",
            )
            return
        peer = self.peers.get(decoded.initiator_public)
        if peer is None or peer.static_static is None:
            self._drop_datagram(
                DropReason.HANDSHAKE_FAILED,
                datagram,
                endpoint,
                detail="initiation from an unknown or unusable peer key",
            )
            return
        opened = noise.open_initiation_timestamp(decoded, message, static_static=peer.static_static)
        if opened is None:
            self._drop_datagram(
                DropReason.HANDSHAKE_FAILED,
                datagram,
                endpoint,
                peer,
                detail="initiation timestamp does not decrypt",
            )
            return
        timestamp, chaining_key, h = opened
        hs = peer.handshake
        if timestamp <= hs.latest_timestamp:
            self._drop_datagram(DropReason.REPLAYED_INITIATION, datagram, endpoint, peer)
            return
        last = hs.last_initiation_consumed
        if last is not None and now - last <= INITIATIONS_MIN_INTERVAL:
            self._drop_datagram(DropReason.INITIATION_FLOOD, datagram, endpoint, peer)
            return
        self._clear_handshake(peer)
        noise.accept_initiation(hs, message, chaining_key, h, timestamp, now)
        peer.rx_bytes += len(datagram)
        self._set_endpoint_from_packet(peer, endpoint)
        self._after_authenticated_received(peer, now)
        self._send_response(peer, now)

    def _receive_response(self, datagram: bytes, endpoint: Endpoint, now: float) -> None:
        message = messages.parse_response(datagram)
        if not self._check_handshake_macs(
            datagram, messages.RESPONSE_MAC1_OFFSET, endpoint, message.sender_index, now
        ):
            return
        peer = self._handshake_index.get(message.receiver_index)
        if peer is None:
            self._drop_datagram(
                DropReason.UNKNOWN_INDEX, datagram, endpoint, detail="handshake response"
            )
            return
        if self.private_key is None:
            self._drop_datagram(DropReason.NO_IDENTITY, datagram, endpoint, peer)
            return
        hs = peer.handshake
        result = noise.consume_response(
            hs, message, local_private=self.private_key, preshared_key=peer.preshared_key
        )
        if result is None:
            self._drop_datagram(
                DropReason.HANDSHAKE_FAILED,
                datagram,
                endpoint,
                peer,
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
        self.timers.arm(peer, ZERO_KEYS, now + ZERO_KEYS_AFTER)
        self._send_keepalive(peer, now)

    def _receive_cookie_reply(self, datagram: bytes, endpoint: Endpoint, now: float) -> None:
        message = messages.parse_cookie_reply(datagram)
        peer = self._handshake_index.get(message.receiver_index)
        if peer is None:
            keypair = self._keypair_index.get(message.receiver_index)
            peer = None if keypair is None else keypair.peer
        if peer is None:
            self._drop_datagram(DropReason.UNKNOWN_INDEX, datagram, endpoint, detail="cookie reply")
            return
        if not peer.cookies.consume_reply(message, now):
            self._drop_datagram(DropReason.INVALID_COOKIE, datagram, endpoint, peer)
            return
        self._emit(CookieReceived(peer.public_key))

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
            self._drop_datagram(DropReason.INVALID_MAC1, datagram, endpoint)
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
            self._datagrams.append((reply, endpoint, 0))
            self._emit(CookieReplySent((endpoint[0], endpoint[1])))
            self._drop_datagram(DropReason.COOKIE_REQUIRED, datagram, endpoint)
            return False
        if not self.rate_limiter.allow(address, now):
            self._drop_datagram(DropReason.RATE_LIMITED, datagram, endpoint)
            return False
        return True

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

    def _handshake_complete(self, peer: Peer, now: float, *, initiator: bool) -> None:
        self.timers.cancel(peer, RETRANSMIT)
        peer.handshake_attempts = 0
        peer.sent_lastminute_handshake = False
        peer.last_handshake_wall = now + self.wall_offset
        self._emit(HandshakeCompleted(peer.public_key, initiator))

    def _set_endpoint_from_packet(self, peer: Peer, endpoint: Endpoint) -> None:
        if peer.endpoint != endpoint:
            peer.endpoint = endpoint
            self._emit(EndpointChanged(peer.public_key, (endpoint[0], endpoint[1])))
