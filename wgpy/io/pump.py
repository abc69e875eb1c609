"""The loop both faces of the data path share: UDP sockets ⇄ Device ⇄ timer.

``wgpyd`` (``io/runner.py``: the inner packets go to a TUN) and ``wgpy.aio`` (they go to Python
code) differ only in where inner packets and events go. Everything between the sockets and the
Device is here, once: datagrams read in batches (with UDP GRO where the kernel glues them),
each handed to the Device; after each batch — and after every timer or local input — the
Device's outputs drained: datagrams sent (UDP GSO runs while the path takes them, a tunnel
inside the tunnel never fragmented, replies from the local address the peer last reached, as
the kernel does), then inner packets to ``deliver``, then events to ``dispatch``, then the
timer moved to the Device's next deadline.

With worker threads (``WGPY_WORKERS``, see :func:`worker_count`), the GIL-free batch calls of
big batches run on the other cores: a GRO batch is opened while the one read before it is
consumed (replay, timers, drops and delivery, in order, here), and a run being sealed holds
its place in the output, which leaves in order (what is ready is sent while the rest seals).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from wgpy import batch
from wgpy.device import Device
from wgpy.device.state import PendingOpen, PendingRun, QueuedDatagrams, datagrams_of
from wgpy.events import Event
from wgpy.io import rtnl, udp
from wgpy.io.timer import DeviceTimer

READ_BATCH: Final = 128
_GSO_ERRNOS: Final = (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP, errno.EMSGSIZE)

log = logging.getLogger("wgpy")

#: What the Device queued (Device.datagram_runs_to_send).
Queued = list[QueuedDatagrams]
#: Worker threads when ``WGPY_WORKERS`` is not set (see :func:`worker_count`).
DEFAULT_WORKERS: Final = 0


def worker_count() -> int:
    """Worker threads for the batch calls: ``WGPY_WORKERS`` (a number, or ``auto``: one per
    core), else DEFAULT_WORKERS; none on the pure-Python path, whose calls hold the GIL."""
    if not batch.ACCELERATED:
        return 0
    choice = os.environ.get("WGPY_WORKERS")
    if choice is None:
        return DEFAULT_WORKERS
    if choice == "auto":
        return len(os.sched_getaffinity(0))
    try:
        return max(0, int(choice))
    except ValueError:
        log.warning("WGPY_WORKERS=%r is not a number or auto: no worker threads", choice)
        return 0


class DatagramPump:
    """Owns the UDP sockets of one Device and pumps datagrams between them and it.

    Args:
        device: the Device to drive.
        deliver: receives the inner packets the Device delivers, after each batch.
        dispatch: receives the Device's events (an iterator to drain), after each batch.
        unreachable: receives the packets that get an ICMP error from the interface's own
            stack (``device.icmp_from_stack``), if the face sends those.
        after_read: called after each batch of datagrams was read and handled.
    """

    def __init__(
        self,
        device: Device,
        *,
        deliver: Callable[[list[bytes]], None],
        dispatch: Callable[[Iterator[Event]], None],
        unreachable: Callable[[list[bytes]], None] | None = None,
        after_read: Callable[[], None] | None = None,
    ) -> None:
        self.device = device
        self._after_read = after_read
        self._deliver = deliver
        self._dispatch = dispatch
        self._unreachable = unreachable
        self.sock4: socket.socket | None = None
        #: with ``dual_stack``, the one socket, which reaches IPv4 endpoints as mapped IPv6
        self.sock6: socket.socket | None = None
        self.dual_stack = False
        self._gro = False
        self.gso = os.environ.get("WGPY_NO_GSO") != "1"
        self._receiver = udp.Receiver()
        # remote endpoint -> control message sending from the local address it last reached
        self.sources: dict[tuple[str, int], udp.Cmsg] = {}
        # remote endpoint -> index of the interface its datagrams arrived on (for the check
        # the kernel makes: an IPv4 source is kept only while the route leaves through it)
        self._source_ifindex: dict[tuple[str, int], int] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timer = DeviceTimer(device, self.on_timer)
        workers = worker_count()
        self._workers: ThreadPoolExecutor | None = None
        if workers:
            self._workers = ThreadPoolExecutor(workers, thread_name_prefix="wgpy-batch")
            device.workers = self._workers

    # -------------------------------------------------------------- sockets

    @property
    def bound(self) -> bool:
        return self.sock4 is not None or self.sock6 is not None

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.sock4, self.sock6) if s is not None]

    def bind(self, port: int, fwmark: int) -> int:
        """Bind 0.0.0.0 and :: (IPv6-only) on ``port`` (0: any free one), as wgpyd and
        wireguard-go do; returns the port."""
        sock4, sock6, port = udp.bind_pair(port, fwmark)
        self._use(sock4, sock6, dual_stack=False)
        return port

    def bind_address(self, host: str, port: int) -> int:
        """Bind one socket on ``host`` (an IPv6 one also reaches IPv4 endpoints, mapped)."""
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        if family == socket.AF_INET6:
            self._use(None, sock, dual_stack=True)
        else:
            self._use(sock, None, dual_stack=False)
        return int(sock.getsockname()[1])

    def _use(
        self, sock4: socket.socket | None, sock6: socket.socket | None, *, dual_stack: bool
    ) -> None:
        self.close()
        self.sock4, self.sock6, self.dual_stack = sock4, sock6, dual_stack
        socks = self.sockets()
        self._gro = all(udp.enable_gro(s) for s in socks)
        for sock in socks:
            udp.enable_pktinfo(sock)
            if self.loop is not None:
                self.loop.add_reader(sock.fileno(), self.on_readable, sock)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve the sockets (bound now or later) on ``loop``."""
        self.loop = loop
        for sock in self.sockets():
            loop.add_reader(sock.fileno(), self.on_readable, sock)

    def close(self) -> None:
        """Close the sockets (the pump can bind again)."""
        for sock in self.sockets():
            if self.loop is not None and not self.loop.is_closed():
                self.loop.remove_reader(sock.fileno())
            sock.close()
        self.sock4 = self.sock6 = None

    def stop(self) -> None:
        self.close()
        self._timer.cancel()
        if self._workers is not None:
            self.device.workers = None
            self._workers.shutdown(wait=True)
            self._workers = None

    def set_fwmark(self, mark: int) -> None:
        udp.set_fwmark(self.sockets(), mark)

    # ---------------------------------------------------------------- input

    def on_readable(self, sock: socket.socket) -> None:
        device = self.device
        now = time.monotonic()
        gro = self._gro
        receiver = self._receiver
        receive = receiver.receive
        consume = self._consume
        open_ahead = device.open_ahead if device.workers is not None else None
        # a batch being opened in a worker, consumed after the next read
        waiting: tuple[Sequence[bytes], tuple[str, int], udp.Cmsg | None, int, PendingOpen] | None
        waiting = None
        follows = False
        for _ in range(READ_BATCH):
            try:
                datagrams, endpoint, source = receive(sock, gro)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:  # e.g. ICMP port unreachable reported on the socket
                log.debug("UDP receive error: %s", error)
                break
            ahead = None if open_ahead is None else open_ahead(datagrams)
            if waiting is not None:
                consume(*waiting, now)
                waiting = None
            if ahead is None:
                # reads after the first follow it with nothing in between (see Device)
                consume(datagrams, endpoint, source, receiver.ifindex, None, now, follows)
                follows = True
            else:
                waiting = (datagrams, endpoint, source, receiver.ifindex, ahead)
        if waiting is not None:
            consume(*waiting, now)
        self.flush()
        if self._after_read is not None:
            self._after_read()

    def _consume(
        self,
        datagrams: Sequence[bytes],
        endpoint: tuple[str, int],
        source: udp.Cmsg | None,
        ifindex: int,
        ahead: PendingOpen | None,
        now: float,
        follows: bool = False,
    ) -> None:
        """One read's datagrams to the Device, in order (``ahead``: opened in a worker;
        ``follows``: see :meth:`Device.receive_datagrams`)."""
        device = self.device
        authenticated = device.authenticated_received
        device.receive_datagrams(datagrams, endpoint, now, ahead, follows=follows)
        if (
            source is not None
            and device.authenticated_received != authenticated
            and (
                self.sources.get(endpoint) != source
                or self._source_ifindex.get(endpoint) != ifindex
            )
        ):
            # learned from authenticated datagrams only, as wireguard-go does; replies
            # to them (handshake responses) go out at the flush below, from this source
            self.sources[endpoint] = source
            self._source_ifindex[endpoint] = ifindex
            if len(self.sources) > 2 * len(device.peers) + 64:
                self._prune_sources()

    def on_timer(self) -> None:
        self.device.handle_timer(time.monotonic())
        self.flush()

    def _prune_sources(self) -> None:
        """Keep the sticky sources of current peer endpoints only (peers that roamed leave
        their old endpoints behind)."""
        endpoints = {peer.endpoint for peer in self.device.peers.values()}
        self.sources = {ep: cmsg for ep, cmsg in self.sources.items() if ep in endpoints}
        self._source_ifindex = {
            ep: index for ep, index in self._source_ifindex.items() if ep in self.sources
        }

    def revalidate_sources(self) -> None:
        """Routes or addresses changed: forget each sticky source the kernel would drop at its
        next send (address gone; for IPv4 also: the route to the peer from that address now
        leaves through another interface than the peer's datagrams came in on)."""
        for endpoint, cmsg in list(self.sources.items()):
            address, scope = udp.source_address(cmsg)
            keep = rtnl.is_local_address(address, scope)
            arrived_on = self._source_ifindex.get(endpoint, 0)
            if keep and ":" not in address and arrived_on:
                try:
                    keep = rtnl.route_oif(endpoint[0], address, self.device.fwmark) == arrived_on
                except OSError:
                    keep = False
            if not keep:
                log.debug("Sticky source %s for %s:%d forgotten", address, *endpoint)
                del self.sources[endpoint]
                self._source_ifindex.pop(endpoint, None)

    # --------------------------------------------------------------- output

    def flush(self) -> None:
        """Drain the Device: datagrams out, packets to ``deliver``, events to ``dispatch``."""
        device = self.device
        if device.workers is None:
            queued = device.datagram_runs_to_send()
            if queued:
                self._send(queued)
        else:
            self._send_in_order(device.queued_output())
        unfragmentable = device.datagrams_not_to_fragment()
        if unfragmentable:
            self._send_unfragmented([(d, e, 0) for d, e in unfragmentable])
        packets = device.packets_to_deliver()
        if packets:
            self._deliver(packets)
        if self._unreachable is not None:
            unreachable = device.unreachable_packets()
            if unreachable:
                self._unreachable(unreachable)
        self._dispatch(device.events())
        self._timer.update(self.loop)

    def _socket_for(self, endpoint: tuple[str, int]) -> tuple[socket.socket | None, bool]:
        """The socket for ``endpoint``, and whether its address must be written as mapped
        IPv6."""
        if ":" in endpoint[0]:
            return self.sock6, False
        if self.dual_stack:
            return self.sock6, True
        return self.sock4, False

    def _by_socket(self, queued: Queued) -> list[tuple[socket.socket | None, Queued]]:
        """The queued datagrams grouped by the socket that sends them, in order; the socket is
        looked up once per run to one endpoint (a peer's datagrams share its endpoint)."""
        groups: dict[int, tuple[socket.socket | None, Queued]] = {}
        last: tuple[str, int] | None = None
        group: Queued = []
        mapped_endpoint: tuple[str, int] | None = None
        for item in queued:
            endpoint = item[1]
            if endpoint is not last:
                last = endpoint
                sock, mapped = self._socket_for(endpoint)
                group = groups.setdefault(id(sock), (sock, []))[1]
                mapped_endpoint = (f"::ffff:{endpoint[0]}", endpoint[1]) if mapped else None
            group.append(item if mapped_endpoint is None else (item[0], mapped_endpoint, item[2]))
        return list(groups.values())

    def _send_in_order(self, queued: list[QueuedDatagrams | PendingRun]) -> None:
        """Send what is ready up to each run still being sealed, then wait for that one: the
        datagrams leave in the order the Device queued them."""
        ready: Queued = []
        for item in queued:
            if isinstance(item, PendingRun):
                if ready and not item.future.done():
                    self._send(ready)
                    ready = []
                ready += self.device.resolve_run(item)
            else:
                ready.append(item)
        if ready:
            self._send(ready)

    def _send(self, queued: Queued) -> None:
        device = self.device
        for sock, items in self._by_socket(queued):
            if sock is None:
                for datagram, endpoint in datagrams_of(items):
                    device.report_send_failure(datagram, endpoint, "no socket bound")
                continue
            failed = udp.send_queued(sock, items, self.gso, self.sources)
            if failed and self.gso and any(e.errno in _GSO_ERRNOS for _, _, e in failed):
                # The path refuses segmentation offload: from now on, one datagram per call.
                self.gso = False
                retry = [(d, e) for d, e, _ in failed]
                failed = udp.send_runs(sock, retry, False, self.sources)
                if len(failed) == len(retry):
                    # they fail one by one too (an IPv6 datagram above the path MTU:
                    # EMSGSIZE): the datagrams were the problem, not segmentation offload
                    self.gso = True
            for datagram, endpoint, error in failed:
                device.report_send_failure(datagram, endpoint, error.strerror or str(error))

    def _send_unfragmented(self, queued: Queued) -> None:
        """A tunnel inside this one: never fragmented (see Device.datagrams_not_to_fragment)."""
        for sock, items in self._by_socket(queued):
            for datagram, endpoint in datagrams_of(items):
                if sock is None:
                    self.device.report_send_failure(datagram, endpoint, "no socket bound")
                    continue
                for _, _, error in udp.send_unfragmented(
                    sock, [(datagram, endpoint)], self.sources
                ):
                    detail = error.strerror or str(error)
                    if error.errno == errno.EMSGSIZE:
                        detail = "a tunnel inside the tunnel outgrew the path MTU (not fragmented)"
                    self.device.report_send_failure(datagram, endpoint, detail)
