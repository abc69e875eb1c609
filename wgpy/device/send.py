"""What happens to a packet read from the TUN: its destination longest-matches a peer
(cryptokey routing, outgoing; no peer: dropped and answered with ICMP unreachable), it waits
in the peer's queue until there is a session, then it is padded, encrypted and sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from wgpy import batch, messages
from wgpy.device.state import (
    DATA_HEADER,
    ICMP_BURST,
    ICMP_PER_SECOND,
    NEW_HANDSHAKE,
    NONCE,
    TYPE_DATA,
    WORKER_MIN_PACKETS,
    DeviceState,
    PendingRun,
)
from wgpy.events import (
    Direction,
    DropReason,
    Verdict,
)
from wgpy.offload import VNET_HDR_LEN
from wgpy.packet import icmp_unreachable, may_answer_unreachable
from wgpy.peer import MAX_STAGED_PACKETS, Endpoint, Keypair, Peer
from wgpy.replay import REJECT_AFTER_MESSAGES
from wgpy.timers import (
    KEEPALIVE_TIMEOUT,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
)


def _can_send(keypair: Keypair, now: float, packets: int) -> bool:
    """Whether ``keypair`` may encrypt ``packets`` more: valid, young enough, and every
    counter they would take below REJECT_AFTER_MESSAGES. A keypair without counters
    enough left is invalidated for sending, as the kernel does when a nonce of a batch
    reaches the limit; the packets stay staged for the next session."""
    if not keypair.can_send or now - keypair.birth >= REJECT_AFTER_TIME:
        return False
    if keypair.send_counter + packets > REJECT_AFTER_MESSAGES:
        keypair.can_send = False
        return False
    return True


class Sending(DeviceState):
    """Packets in, datagrams out."""

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

    def send_packets(self, packets: Sequence[bytes], now: float) -> None:
        """:meth:`send_packet` for each of ``packets``, in order, with the same outcome.

        A run of packets to one destination (the segments of one super-packet, usually) is
        routed once and, while its peer has a session, encrypted in one loop: one lookup, one
        set of checks and one timer update per run instead of per packet. Anything else takes
        the per-packet path."""
        count = len(packets)
        start = 0
        lookup_v4 = self.allowed_ips.lookup_v4
        lookup_v6 = self.allowed_ips.lookup_v6
        while start < count:
            packet = packets[start]
            size = len(packet)
            version = packet[0] >> 4 if size else 0
            if version == 4 and size >= 20:
                destination = packet[16:20]
                low, high = 16, 20
            elif version == 6 and size >= 40:
                destination = packet[24:40]
                low, high = 24, 40
            else:
                self.send_packet(packet, now)
                start += 1
                continue
            end = start + 1
            while end < count:
                following = packets[end]
                if following[low:high] != destination or following[0] >> 4 != version:
                    break
                end += 1
            if end - start == 1:
                self.send_packet(packet, now)
                start = end
                continue
            number = int.from_bytes(destination, "big")
            peer = lookup_v4(number) if version == 4 else lookup_v6(number)
            keypair = None if peer is None else peer.current
            if (
                peer is None
                or keypair is None
                or peer.staged
                or peer.endpoint is None
                or not self.is_up
                or not _can_send(keypair, now, end - start)
            ):
                for index in range(start, end):
                    self.send_packet(packets[index], now)
            else:
                self._encrypt_run(peer, keypair, packets[start:end], peer.endpoint)
                self._after_data_sent(peer, keypair, now)
            start = end

    def send_super(self, frame: bytes | bytearray | memoryview, now: float) -> bool:
        """A TCP super-packet read from the TUN (a virtio-net header first) cut and sent in one
        batch call (:func:`wgpy.batch.seal_super`), with exactly the outcome of
        ``send_packets(split(frame), now)``: True when it was sent.

        Only the common case is taken: the run path of :meth:`send_packets` (the destination's
        peer has a current keypair that may send every segment, nothing staged, an endpoint,
        the device up) with no tap, no per-route MTUs and no worker threads, and a frame that
        ``seal_super`` takes. Anything else is False with nothing done at all (not even a
        keypair invalidated by :func:`_can_send`): the caller splits the frame and sends the
        segments."""
        if self.tap is not None or self.route_mtus or self.workers is not None or not self.is_up:
            return False
        size = len(frame)
        version = frame[VNET_HDR_LEN] >> 4 if size > VNET_HDR_LEN else 0
        if version == 4 and size >= VNET_HDR_LEN + 20:
            at = VNET_HDR_LEN + 16
            peer = self.allowed_ips.lookup_v4(int.from_bytes(frame[at : at + 4], "big"))
        elif version == 6 and size >= VNET_HDR_LEN + 40:
            at = VNET_HDR_LEN + 24
            peer = self.allowed_ips.lookup_v6(int.from_bytes(frame[at : at + 16], "big"))
        else:
            return False
        if peer is None or peer.staged or peer.endpoint is None:
            return False
        keypair = peer.current
        if keypair is None or not keypair.can_send or now - keypair.birth >= REJECT_AFTER_TIME:
            return False
        # the counter check of _can_send, without its side effect: past the limit, None
        sealed = batch.seal_super(
            keypair.send_key,
            keypair.remote_index,
            keypair.send_counter,
            frame,
            self.mtu,
            REJECT_AFTER_MESSAGES,
        )
        if sealed is None:
            return False
        runs, singles, sent, count = sealed
        keypair.send_counter += count
        peer.tx_bytes += sent
        endpoint = peer.endpoint
        queue = self._datagrams
        for data, run_size in runs:
            queue.append((data, endpoint, run_size))
        for datagram in singles:
            self._unfragmentable.append((datagram, endpoint))
        self._after_data_sent(peer, keypair, now)
        return True

    def _encrypt_run(
        self,
        peer: Peer,
        keypair: Keypair,
        packets: Sequence[bytes],
        endpoint: Endpoint,
    ) -> None:
        """:meth:`_encrypt` for packets of one version to one peer, in one batch call.

        :func:`wgpy.batch.seal_run` writes the datagrams back to back into one buffer per run
        of equal sizes (the last may be shorter; at most RUN_MAX_DATAGRAMS and RUN_MAX_BYTES),
        each header packed and each packet padded and encrypted in place: one allocation per
        run instead of three per datagram, and a run the adapter sends whole (UDP GSO). The
        counters were checked by the caller (:func:`_can_send`).

        With ``workers``, a run of WORKER_MIN_PACKETS or more is sealed in a worker: its
        counters are taken here, in order, and a :class:`PendingRun` holds its place in the
        output queues (wireguard-go's encryption queue and sequential sender)."""
        tap = self.tap
        if tap is not None:
            for packet in packets:
                tap(Direction.OUTGOING, Verdict.SENT, peer.public_key, packet, None)
        mtu = self.mtu
        limits = None
        route_mtu = self.route_mtu if self.route_mtus else None
        if route_mtu is not None:
            limits = [(route_mtu(p) or mtu) if len(p) & 15 else mtu for p in packets]
        workers = self.workers
        if workers is not None and len(packets) >= WORKER_MIN_PACKETS:
            future = workers.submit(
                batch.seal_run,
                keypair.send_key,
                keypair.remote_index,
                keypair.send_counter,
                packets,
                mtu,
                limits,
            )
            keypair.send_counter += len(packets)
            pending = PendingRun(future, peer, endpoint)
            self._datagrams.append(pending)
            self._runs_queued += 1
            self._unfragmentable.append(pending)
            return
        runs, singles, sent = batch.seal_run(
            keypair.send_key, keypair.remote_index, keypair.send_counter, packets, mtu, limits
        )
        keypair.send_counter += len(packets)
        peer.tx_bytes += sent
        queue = self._datagrams
        for data, size in runs:
            queue.append((data, endpoint, size))
        for datagram in singles:
            self._unfragmentable.append((datagram, endpoint))

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
        datagram = DATA_HEADER.pack(TYPE_DATA, keypair.remote_index, counter) + (
            keypair.send.encrypt(NONCE.pack(counter), packet, None)
        )
        if size >= batch.NESTED_CHECK_MIN and batch.carries_wireguard(packet):
            self._unfragmentable.append((datagram, endpoint))
        else:
            self._datagrams.append((datagram, endpoint, 0))
        peer.tx_bytes += len(datagram)

    def _after_data_sent(self, peer: Peer, keypair: Keypair, now: float) -> None:
        self._after_authenticated_sent(peer, now)
        if not self.timers.pending(peer, NEW_HANDSHAKE):
            self.timers.arm(
                peer, NEW_HANDSHAKE, now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()
            )
        if keypair.send_counter > REKEY_AFTER_MESSAGES or (
            keypair.initiator and now - keypair.birth >= REKEY_AFTER_TIME
        ):
            self._send_initiation(peer, now, is_retry=False)

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
