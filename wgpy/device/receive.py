"""What happens to an incoming datagram: the type is checked, handshake messages go to
wgpy.device.handshake, and a data message is looked up by receiver index, checked for age,
decrypted, checked against replay, and its inner packet delivered only if its source
address longest-matches the peer that sent it (cryptokey routing, incoming).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag

from wgpy import messages
from wgpy.device.state import (
    DATA_HEADER,
    NONCE_PREFIX,
    SEND_KEEPALIVE,
    TYPE_DATA,
    DeviceState,
)
from wgpy.events import (
    Direction,
    DropReason,
    KeepaliveReceived,
    Verdict,
)
from wgpy.peer import Endpoint, Peer
from wgpy.replay import REJECT_AFTER_MESSAGES
from wgpy.timers import (
    KEEPALIVE_TIMEOUT,
    REJECT_AFTER_TIME,
    REKEY_TIMEOUT,
)


class Receiving(DeviceState):
    """Datagrams in, inner packets out."""

    def receive_datagram(self, datagram: bytes, endpoint: Endpoint, now: float) -> None:
        """Handle one UDP payload from ``endpoint``. Never raises for anything it contains."""
        if len(datagram) >= 32 and datagram[0] == TYPE_DATA and datagram[1:4] == b"\0\0\0":
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
        _, receiver, counter = DATA_HEADER.unpack_from(datagram)
        keypair = self._keypair_index.get(receiver)
        if keypair is None:
            self._drop(
                DropReason.UNKNOWN_INDEX,
                Direction.INCOMING,
                None,
                endpoint=endpoint,
                size=len(datagram),
                detail="data message",
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
                NONCE_PREFIX + counter.to_bytes(8, "little"), datagram[16:], None
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
        if not self.timers.pending(peer, SEND_KEEPALIVE):
            self.timers.arm(peer, SEND_KEEPALIVE, now + KEEPALIVE_TIMEOUT)
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
