"""What happens to an incoming datagram: the type is checked, handshake messages go to
wgpy.device.handshake, and a data message is looked up by receiver index, checked for age,
decrypted, checked against replay, and its inner packet delivered only if its source
address longest-matches the peer that sent it (cryptokey routing, incoming).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidTag

from wgpy import batch, messages
from wgpy.device.state import (
    DATA_HEADER,
    NONCE,
    SEND_KEEPALIVE,
    TYPE_DATA,
    WORKER_MIN_PACKETS,
    DeviceState,
    PendingOpen,
)
from wgpy.events import (
    Direction,
    DropReason,
    KeepaliveReceived,
    Verdict,
)
from wgpy.peer import Endpoint, Keypair, Peer
from wgpy.replay import REJECT_AFTER_MESSAGES
from wgpy.timers import (
    KEEPALIVE_TIMEOUT,
    REJECT_AFTER_TIME,
    REKEY_TIMEOUT,
)

#: The short path of :meth:`Receiving.receive_datagrams` takes counters below this one: the
#: last counter a keypair accepts exhausts it (:attr:`ReplayWindow.exhausted`), which only the
#: full path checks.
_LAST_COUNTER: Final = REJECT_AFTER_MESSAGES - 1


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
            self._drop_datagram(reason, datagram, endpoint, detail=str(error))
            return
        if not self.is_up:
            self._drop_datagram(
                DropReason.INTERFACE_DOWN,
                datagram,
                endpoint,
                detail="handshake message while the interface is down",
            )
            return
        if kind == messages.TYPE_INITIATION:
            self._receive_initiation(datagram, endpoint, now)
        elif kind == messages.TYPE_RESPONSE:
            self._receive_response(datagram, endpoint, now)
        elif kind == messages.TYPE_COOKIE_REPLY:
            self._receive_cookie_reply(datagram, endpoint, now)

    def open_ahead(self, datagrams: Sequence[bytes]) -> PendingOpen | None:
        """With ``workers``, start opening ``datagrams`` (WORKER_MIN_PACKETS or more) in a
        worker, on the keypair the first one names, for a later :meth:`receive_datagrams` of
        the same datagrams: it uses what was opened if it comes to that keypair, and decides
        everything itself (age, replay, timers, drops, delivery), in order. A guess that
        turns out wrong (a handshake came in between) costs only the worker's time."""
        workers = self.workers
        if workers is None or len(datagrams) < WORKER_MIN_PACKETS:
            return None
        first = datagrams[0]
        if len(first) < 32 or first[0] != TYPE_DATA:
            return None
        receiver = int.from_bytes(first[4:8], "little")
        keypair = self._keypair_index.get(receiver)
        if keypair is None:
            return None
        future = workers.submit(
            batch.open_batch, keypair.receive_key, datagrams, receiver, _LAST_COUNTER
        )
        return PendingOpen(future, keypair)

    def receive_datagrams(
        self,
        datagrams: Sequence[bytes],
        endpoint: Endpoint,
        now: float,
        ahead: PendingOpen | None = None,
        *,
        follows: bool = False,
    ) -> None:
        """:meth:`receive_datagram` for each of ``datagrams`` (all from ``endpoint``), in
        order, with the same outcome. ``ahead``: what :meth:`open_ahead` started for them.

        After a data message took the full path, the data messages that follow it on the same
        keypair (a UDP GRO read brings dozens) take a short one: what the full path did for
        the first (endpoint, keypair confirmation, timers of authenticated traffic, age) holds
        for them at the same ``now``. One :func:`wgpy.batch.open_run` opens them, checks them
        against the replay window and trims them, up to the first unusual one; the source
        check is made once per run of one source address, and the keepalive timer once per
        run. The unusual datagram takes the full path, which says why.

        ``follows``: this call comes right after another one with the same ``now``, with no
        other call to the Device in between (the next read of one batch of reads), so what
        held at the end of that one still holds, and its short path goes on from the first
        datagram here."""
        carried = self._carried_receiver if follows else None
        self._carried_receiver = None
        if ahead is not None or self.tap is not None:
            self._receive_datagrams_singly(datagrams, endpoint, now, ahead)
            return
        count = len(datagrams)
        position = 0
        keypair: Keypair | None = None
        receiver = 0
        peer: Peer | None = None
        if carried is not None and carried[3] == endpoint:
            keypair, receiver, peer, _ = carried
        while True:
            if keypair is not None and peer is not None:
                position = self._receive_run(
                    keypair, receiver, peer, datagrams, position, endpoint, now
                )
            if position == count:
                break
            datagram = datagrams[position]
            authenticated = self.authenticated_received
            self.receive_datagram(datagram, endpoint, now)
            if self.authenticated_received != authenticated:
                keypair, receiver, peer = self._fast_receiver(datagram, endpoint, now)
            else:
                keypair, receiver, peer = None, 0, None
            position += 1
        if keypair is not None and peer is not None:
            self._carried_receiver = (keypair, receiver, peer, endpoint)

    def _receive_run(
        self,
        keypair: Keypair,
        receiver: int,
        peer: Peer,
        datagrams: Sequence[bytes],
        start: int,
        endpoint: Endpoint,
        now: float,
    ) -> int:
        """The short path of :meth:`receive_datagrams` from ``datagrams[start]``: the index
        of the first datagram it did not take."""
        end, packets, sources, received = batch.open_run(
            keypair.receive_key, datagrams, start, receiver, _LAST_COUNTER, keypair.replay
        )
        if not packets:
            return end
        taken = len(packets)
        self.authenticated_received += taken
        peer.rx_bytes += received
        if peer.deadlines[SEND_KEEPALIVE] is None:
            self.timers.arm(peer, SEND_KEEPALIVE, now + KEEPALIVE_TIMEOUT)
            if taken > 1:
                peer.need_another_keepalive = True
        else:
            peer.need_another_keepalive = True
        lookup_v4 = self.allowed_ips.lookup_v4
        lookup_v6 = self.allowed_ips.lookup_v6
        for run, (first, source) in enumerate(sources):
            number = int.from_bytes(source, "big")
            owner = lookup_v4(number) if len(source) == 4 else lookup_v6(number)
            last = sources[run + 1][0] if run + 1 < len(sources) else taken
            if owner is peer:
                self._packets.extend(packets if last - first == taken else packets[first:last])
            else:  # the full delivery path drops and counts them
                for packet in packets[first:last]:
                    self._deliver(peer, packet, endpoint)
        return end

    def _receive_datagrams_singly(
        self,
        datagrams: Sequence[bytes],
        endpoint: Endpoint,
        now: float,
        ahead: PendingOpen | None = None,
    ) -> None:
        """:meth:`receive_datagrams` with a tap or worker threads: each datagram of a run
        is opened in the batch but checked and delivered here, one by one.

        After a data message took the full path, the data messages that follow it on the same
        keypair (a UDP GRO read brings dozens) take a short one: what the full path did for
        the first (endpoint, keypair confirmation, timers of authenticated traffic, age) holds
        for them at the same ``now``, so each is only decrypted, checked against replay and
        the keepalive timer, and delivered. Anything unusual takes the full path again."""
        keypair: Keypair | None = None
        receiver = -1
        peer: Peer | None = None
        tap = self.tap
        deliver = self._packets.append
        lookup_v4 = self.allowed_ips.lookup_v4
        lookup_v6 = self.allowed_ips.lookup_v6
        # the source address last looked up and its owner (the table cannot change in here)
        owned_source = b""
        owner: Peer | None = None
        # the datagrams from ``opened_at`` on, opened on ``opened_by`` in one batch call (the
        # batch ends with the first one that is not a data message for it)
        opened_by: Keypair | None = None
        opened_at = 0
        counters: list[int] = []
        opened: list[bytes | int] = []
        for position, datagram in enumerate(datagrams):
            if keypair is not None and peer is not None:
                at = position - opened_at
                if ahead is not None and keypair is ahead.keypair and keypair is not opened_by:
                    counters, opened = ahead.future.result()  # opened from the first one on
                    opened_by, opened_at, at = keypair, 0, position
                    ahead = None
                if keypair is not opened_by or at >= len(opened):
                    counters, opened = batch.open_batch(
                        keypair.receive_key, datagrams[position:], receiver, _LAST_COUNTER
                    )
                    opened_by, opened_at, at = keypair, position, 0
                plaintext = opened[at]
                if isinstance(plaintext, bytes) and keypair.replay.accept(counters[at]):
                    self.authenticated_received += 1
                    peer.rx_bytes += len(datagram)
                    if not plaintext:
                        self._emit(KeepaliveReceived(peer.public_key))
                        continue
                    if peer.deadlines[SEND_KEEPALIVE] is None:
                        self.timers.arm(peer, SEND_KEEPALIVE, now + KEEPALIVE_TIMEOUT)
                    else:
                        peer.need_another_keepalive = True
                    # _deliver, shortened for a well-formed packet from its owner
                    size = len(plaintext)
                    first = plaintext[0]
                    if first == 0x45 and size >= 20 and tap is None:
                        source = plaintext[12:16]
                        length = (plaintext[2] << 8) | plaintext[3]
                        if source != owned_source:
                            owner = lookup_v4(int.from_bytes(source, "big"))
                            owned_source = source
                    elif first >> 4 == 6 and size >= 40 and tap is None:
                        source = plaintext[8:24]
                        length = 40 + ((plaintext[4] << 8) | plaintext[5])
                        if source != owned_source:
                            owner = lookup_v6(int.from_bytes(source, "big"))
                            owned_source = source
                    else:
                        length = 0
                    if owner is peer and 20 <= length <= size:
                        deliver(plaintext if length == size else plaintext[:length])
                    else:
                        self._deliver(peer, plaintext, endpoint)
                    continue
                # not for this keypair, or a failure: the full path says why (decrypting again)
            authenticated = self.authenticated_received
            self.receive_datagram(datagram, endpoint, now)
            if self.authenticated_received != authenticated:
                keypair, receiver, peer = self._fast_receiver(datagram, endpoint, now)
            else:
                keypair, receiver, peer = None, -1, None

    def _fast_receiver(
        self, datagram: bytes, endpoint: Endpoint, now: float
    ) -> tuple[Keypair | None, int, Peer | None]:
        """The keypair a data message that just took the full path and authenticated was
        received on, if the data messages after it on the same keypair may take the short
        path of :meth:`receive_datagrams`: its peer's endpoint is ``endpoint``, the keypair
        is confirmed (not ``next``) and young enough."""
        if len(datagram) < 32 or datagram[0] != TYPE_DATA:
            return None, -1, None
        receiver = int.from_bytes(datagram[4:8], "little")
        keypair = self._keypair_index.get(receiver)
        if keypair is None:
            return None, -1, None
        peer = keypair.peer
        if (
            keypair is peer.next
            or peer.endpoint != endpoint
            or now - keypair.birth >= REJECT_AFTER_TIME
            or keypair.replay.exhausted
        ):
            return None, -1, None
        return keypair, receiver, peer

    def _receive_data(self, datagram: bytes, endpoint: Endpoint, now: float) -> None:
        _, receiver, counter = DATA_HEADER.unpack_from(datagram)
        keypair = self._keypair_index.get(receiver)
        if keypair is None:
            self._drop_datagram(DropReason.UNKNOWN_INDEX, datagram, endpoint, detail="data message")
            return
        peer = keypair.peer
        # as the kernel: a keypair past its age or whose window reached the message limit
        # takes nothing more; a counter at or past the limit is decrypted and then refused
        # by the replay check (the kernel's "invalid nonce")
        if now - keypair.birth >= REJECT_AFTER_TIME or keypair.replay.exhausted:
            self._drop_datagram(DropReason.EXPIRED_KEYPAIR, datagram, endpoint, peer)
            return
        try:
            plaintext = keypair.receive.decrypt(NONCE.pack(counter), datagram[16:], None)
        except InvalidTag:
            self._drop_datagram(DropReason.DECRYPTION_FAILED, datagram, endpoint, peer)
            return
        if not keypair.replay.accept(counter):
            self._drop_datagram(
                DropReason.REPLAYED_COUNTER, datagram, endpoint, peer, detail=f"counter {counter}"
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
