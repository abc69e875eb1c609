"""The state every part of the device shares: configuration, peers and indices, the output
queues the adapter drains, drop accounting and the timer bookkeeping of authenticated traffic.
"""

from __future__ import annotations

import collections
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Final

from wgpy import messages, noise
from wgpy.allowedips import AllowedIPs
from wgpy.batch import OpenedBatch, SealedRun
from wgpy.cookie import CookieChecker
from wgpy.events import (
    Direction,
    DropReason,
    Event,
    PacketDropped,
    Verdict,
)
from wgpy.packet import inner_info
from wgpy.peer import Endpoint, Keypair, Peer
from wgpy.ratelimiter import RateLimiter
from wgpy.tally import AddressTally
from wgpy.timers import (
    REKEY_TIMEOUT_JITTER_MAX_MS,
    Timer,
    TimerQueue,
)

DEFAULT_MTU: Final = 1420
# ICMP unreachables answered per second when no peer has a destination (kernel rate-limits too).
ICMP_PER_SECOND: Final = 100.0
ICMP_BURST: Final = 50.0

RETRANSMIT: Final = Timer.RETRANSMIT_HANDSHAKE
SEND_KEEPALIVE: Final = Timer.SEND_KEEPALIVE
NEW_HANDSHAKE: Final = Timer.NEW_HANDSHAKE
ZERO_KEYS: Final = Timer.ZERO_KEY_MATERIAL
PERSISTENT: Final = Timer.PERSISTENT_KEEPALIVE

#: A packet tap: (direction, verdict, peer public key, inner packet, drop reason).
PacketTap = Callable[[Direction, Verdict, bytes | None, bytes, DropReason | None], None]

#: A data message's header: type, receiver index, counter; the nonce is the counter after
#: four zero bytes.
DATA_HEADER: Final = struct.Struct("<IIQ")
DATA_HEADER_SIZE: Final = DATA_HEADER.size
#: What a data message adds to its (padded) plaintext: the header and the Poly1305 tag.
DATA_OVERHEAD: Final = DATA_HEADER_SIZE + 16
#: A run of data messages queued as one buffer holds at most this many datagrams and bytes:
#: the kernel's bounds for one UDP GSO send, so that an adapter can send a run whole.
RUN_MAX_DATAGRAMS: Final = 64
RUN_MAX_BYTES: Final = 65000
#: The nonce of a counter: four zero bytes and the counter, little-endian.
NONCE: Final = struct.Struct("<4xQ")
TYPE_DATA: Final = messages.TYPE_DATA


#: A queued output (see :meth:`DeviceState.datagram_runs_to_send`).
QueuedDatagrams = tuple[bytes | bytearray, Endpoint, int]

#: With ``workers`` set, a run of at least this many packets is sealed (and a batch of at
#: least this many datagrams opened) in a worker thread; smaller ones stay on the calling
#: thread, which a thread hop would only slow down (ping).
WORKER_MIN_PACKETS: Final = 8


class PendingRun:
    """A run being sealed in a worker (:attr:`DeviceState.workers`): it holds its place in
    the output queues, and its datagrams take that place when it is resolved, in order."""

    __slots__ = ("endpoint", "future", "peer", "resolved")

    def __init__(self, future: Future[SealedRun], peer: Peer, endpoint: Endpoint) -> None:
        self.future = future
        self.peer = peer
        self.endpoint = endpoint
        self.resolved: tuple[list[QueuedDatagrams], list[tuple[bytes, Endpoint]]] | None = None


class PendingOpen:
    """A batch of datagrams being opened in a worker ahead of the ordered consumer
    (:meth:`Receiving.open_ahead`): on ``keypair``, from the first datagram on."""

    __slots__ = ("future", "keypair")

    def __init__(self, future: Future[OpenedBatch], keypair: Keypair) -> None:
        self.future = future
        self.keypair = keypair


def datagrams_of(queued: Iterable[QueuedDatagrams]) -> list[tuple[bytes, Endpoint]]:
    """Queued outputs one datagram at a time: each run cut into its datagrams."""
    out: list[tuple[bytes, Endpoint]] = []
    for data, endpoint, size in queued:
        if size:
            out += [(bytes(data[i : i + size]), endpoint) for i in range(0, len(data), size)]
        else:
            out.append((bytes(data), endpoint))
    return out


class DeviceState:
    """The fields of one WireGuard interface and the helpers all of its parts use."""

    if TYPE_CHECKING:
        # Provided by the other parts of Device (wgpy.device.*), declared here so that each
        # part can call the others.
        def set_private_key(self, private_key: bytes | None, now: float) -> None: ...
        def _send_initiation(self, peer: Peer, now: float, *, is_retry: bool) -> None: ...
        def _handshake_complete(self, peer: Peer, now: float, *, initiator: bool) -> None: ...
        def _set_endpoint_from_packet(self, peer: Peer, endpoint: Endpoint) -> None: ...
        def _receive_initiation(self, datagram: bytes, endpoint: Endpoint, now: float) -> None: ...
        def _receive_response(self, datagram: bytes, endpoint: Endpoint, now: float) -> None: ...
        def _receive_cookie_reply(
            self, datagram: bytes, endpoint: Endpoint, now: float
        ) -> None: ...
        def _purge_staged(self, peer: Peer, reason: DropReason, detail: str = "") -> None: ...
        def _send_keepalive(self, peer: Peer, now: float) -> None: ...
        def _send_staged(self, peer: Peer, now: float) -> None: ...

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
        #: the short path's receiver at the end of the last receive_datagrams (see ``follows``)
        self._carried_receiver: tuple[Keypair, int, Peer, Endpoint] | None = None
        #: Worker threads for the per-byte work of big batches (None: all on the caller's
        #: thread). Nonces, counters and every decision stay with the caller; the workers
        #: only run the GIL-free batch calls of wgpy.batch. Set by an adapter.
        self.workers: Executor | None = None
        self._datagrams: list[QueuedDatagrams | PendingRun] = []
        self._runs_queued = 0  # PendingRuns in _datagrams
        self._packets: list[bytes] = []
        self._unfragmentable: list[tuple[bytes, Endpoint] | PendingRun] = []
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

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        return datagrams_of(self.datagram_runs_to_send())

    def datagram_runs_to_send(self) -> list[QueuedDatagrams]:
        """What :meth:`datagrams_to_send` returns (drain one or the other), with each run of data
        messages to one peer still as the one buffer they were encrypted into: ``(data,
        endpoint, size)``, ``size`` 0 for one datagram, else the size of each datagram in
        ``data`` (the last may be shorter; at most RUN_MAX_DATAGRAMS and RUN_MAX_BYTES): what
        one UDP GSO send takes. Runs sealed in workers are waited for, in order."""
        pending = self._runs_queued
        queued = self.queued_output()
        if not pending:
            return queued  # type: ignore[return-value]  # no PendingRun among them
        out: list[QueuedDatagrams] = []
        for item in queued:
            if isinstance(item, PendingRun):
                out += self.resolve_run(item)
            else:
                out.append(item)
        return out

    def queued_output(self) -> list[QueuedDatagrams | PendingRun]:
        """What :meth:`datagram_runs_to_send` returns, without waiting for the runs still
        being sealed: an adapter sends what is ready and :meth:`resolve_run` each pending one
        when its turn comes, so that a peer's datagrams leave in order."""
        out, self._datagrams = self._datagrams, []
        self._runs_queued = 0
        return out

    def resolve_run(self, pending: PendingRun) -> list[QueuedDatagrams]:
        """The datagrams of a run sealed in a worker (waiting for it if need be); the bytes
        are counted to its peer now, once."""
        if pending.resolved is None:
            runs, singles, sent = pending.future.result()
            pending.peer.tx_bytes += sent
            endpoint = pending.endpoint
            pending.resolved = (
                [(data, endpoint, size) for data, size in runs],
                [(datagram, endpoint) for datagram in singles],
            )
        return pending.resolved[0]

    def datagrams_not_to_fragment(self) -> list[tuple[bytes, Endpoint]]:
        """Data datagrams that carry another WireGuard message (a tunnel inside a tunnel), to
        be sent without fragmentation: dropped when larger than the path MTU.

        A routing loop between two tunnels runs through here: each pass wraps the packet
        once more, and fragmenting the growing datagram would split it into ever more
        packets, each looping on. Refusing to fragment ends the loop when the packet outgrows
        the MTU, about where the kernel module's own loop dies. Other datagrams may be
        fragmented (IPv4 without DF), as the kernel's are."""
        queued, self._unfragmentable = self._unfragmentable, []
        out: list[tuple[bytes, Endpoint]] = []
        for item in queued:
            if isinstance(item, PendingRun):
                self.resolve_run(item)
                assert item.resolved is not None
                out += item.resolved[1]
            else:
                out.append(item)
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

    def _drop_datagram(
        self,
        reason: DropReason,
        datagram: bytes,
        endpoint: Endpoint,
        peer: Peer | None = None,
        detail: str = "",
    ) -> None:
        """A received datagram dropped before any inner packet was read from it."""
        self._drop(
            reason, Direction.INCOMING, peer, endpoint=endpoint, size=len(datagram), detail=detail
        )

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

    def report_bad_offload(self, packet: bytes, detail: str) -> None:
        """Adapters call this for a TUN read whose offload header they could not follow
        (wgpy.offload.OffloadError): the packet or super-packet is dropped whole."""
        self._drop(
            DropReason.BAD_OFFLOAD,
            Direction.OUTGOING,
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

    def _jitter(self) -> float:
        value = int.from_bytes(self.random(2), "little") % REKEY_TIMEOUT_JITTER_MAX_MS
        return value / 1000.0

    def _after_authenticated_sent(self, peer: Peer, now: float) -> None:
        self.timers.cancel(peer, SEND_KEEPALIVE)
        if peer.persistent_keepalive:
            self.timers.arm(peer, PERSISTENT, now + peer.persistent_keepalive)

    def _after_authenticated_received(self, peer: Peer, now: float) -> None:
        self.authenticated_received += 1
        self.timers.cancel(peer, NEW_HANDSHAKE)
        if peer.persistent_keepalive:
            self.timers.arm(peer, PERSISTENT, now + peer.persistent_keepalive)
