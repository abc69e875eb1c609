"""An asyncio WireGuard endpoint without a TUN: inner IP packets go to and come from Python.

`WireGuardEndpoint` drives one sans-I/O `wgpy.device.Device` the way ``wgpyd``
does (same cryptokey routing, timers, events and drop counters) but, instead of a TUN device,
hands decrypted packets to the program and takes the packets it wants to send. It needs no
root: it only binds a UDP port (IPv4 and IPv6):

```python
import asyncio

from wgpy.aio import open_endpoint
from wgpy.device import Device
from wgpy.keys import decode_key

async def main() -> None:
    device = Device(decode_key(PRIVATE_KEY))
    async with await open_endpoint(device, port=51820) as endpoint:
        endpoint.add_peer(CLIENT_PUBLIC_KEY, allowed_ips=["10.0.0.2/32"])
        async for packet in endpoint:  # inner IP packets, source already checked
            reply = answer(packet)
            if reply is not None:
                endpoint.send(reply)  # routed by AllowedIPs, encrypted, sent
```

Packets whose source address is not in the sending peer's AllowedIPs never reach the
iterator; they are counted in ``device.drop_counts`` under
`wgpy.events.DropReason.DISALLOWED_SOURCE` and reported as a
`wgpy.events.PacketDropped` event, exactly as in the daemon. Packets the program does
not read fast enough (more than ``max_queued`` waiting) are dropped as
`wgpy.events.DropReason.TUN_WRITE_FAILED`, which is what a full TUN queue gives in the
daemon.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from types import TracebackType
from typing import Final, Generic, TypeVar

from wgpy.device import Device
from wgpy.events import Event
from wgpy.io.pump import DatagramPump
from wgpy.keys import decode_key
from wgpy.peer import Peer

__all__ = ["EndpointClosed", "EventCallback", "WireGuardEndpoint", "open_endpoint"]

log = logging.getLogger("wgpy.aio")

DEFAULT_MAX_QUEUED: Final = 1024
"""Inner packets waiting to be read before new ones are dropped (``tun_write_failed``)."""

EventCallback = Callable[[Event], None]
"""Called with every event of the device, in order, from the event loop."""

T = TypeVar("T")


class EndpointClosed(ConnectionError):
    """The endpoint was closed: nothing more can be sent or received."""


class _Channel(Generic[T]):
    """A bounded FIFO with async getters that ends when closed (after draining)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: collections.deque[T] = collections.deque()
        self.closed = False
        self._waiters: list[asyncio.Future[None]] = []

    def put(self, item: T) -> bool:
        if self.closed or len(self.items) >= self.limit:
            return False
        self.items.append(item)
        self._wake()
        return True

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def get(self) -> T:
        while not self.items:
            if self.closed:
                raise EndpointClosed("the WireGuard endpoint is closed")
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        return self.items.popleft()


class WireGuardEndpoint:
    """One WireGuard interface whose inner packets live in Python.

    Create it with `open_endpoint` (or construct it and ``await start()``), use it as an
    async context manager, and close it with `close`. Receive inner IP packets with
    ``async for packet in endpoint`` or `recv`; send with `send`. Events (drops
    with their reason, handshakes, roaming...) go to ``on_event`` and to every
    `events` iterator. Counters stay where the daemon keeps them: per-peer
    ``device.peers[key].rx_bytes``/``tx_bytes`` and ``device.drop_counts``.

    Args:
        device: The configured (or still empty) sans-I/O device to drive. Configure peers
            before or after starting; after starting, use `add_peer` or call
            `flush` after changing the device directly.
        host: Address to bind; ``None`` binds ``0.0.0.0`` and ``::`` (IPv6-only) on the same
            port, as ``wgpyd`` does.
        port: UDP port; 0 picks a free one (see `port`). Sets ``device.listen_port``.
        on_event: Called with every event of the device, in order.
        max_queued: Inner packets kept for the reader before new ones are dropped.
    """

    def __init__(
        self,
        device: Device,
        *,
        host: str | None = None,
        port: int | None = None,
        on_event: EventCallback | None = None,
        max_queued: int = DEFAULT_MAX_QUEUED,
    ) -> None:
        self.device = device
        self.host = host
        self._port = device.listen_port if port is None else port
        self.on_event = on_event
        self._packets: _Channel[bytes] = _Channel(max_queued)
        self._event_channels: list[_Channel[Event]] = []
        #: Events not given to an `events` iterator because it was this far behind.
        self.events_lost = 0
        self._pump = DatagramPump(device, deliver=self._queue_packets, dispatch=self._dispatch_all)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"port={self._port}"
        return f"WireGuardEndpoint({state}, peers={len(self.device.peers)})"

    # -------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        """The UDP port the endpoint is bound to (after `start`)."""
        return self._port

    @property
    def closed(self) -> bool:
        return self._closed

    async def start(self) -> None:
        """Bind the UDP socket(s) and start serving; send what the device already has queued
        (keepalives, staged packets)."""
        if self._loop is not None:
            raise RuntimeError("the endpoint was already started")
        if self._closed:
            raise EndpointClosed("the WireGuard endpoint is closed")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._pump.start(loop)
        if self.host is None:
            self._port = self._pump.bind(self._port, self.device.fwmark)
        else:
            self._port = self._pump.bind_address(self.host, self._port)
        self.device.listen_port = self._port
        self.device.wall_offset = time.time() - loop.time()
        now = loop.time()
        self.device.handle_timer(now)
        for peer in self.device.peers.values():
            self.device.peer_configured(peer, now)
        self.flush()

    async def close(self) -> None:
        """Stop serving and close the sockets; pending iterators end. Idempotent.

        The device itself is left as it is (peers, keys, counters), so it can be inspected
        or driven by a new endpoint.
        """
        if self._closed:
            return
        self._closed = True
        self._pump.stop()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush_handle = None
        self._packets.close()
        for channel in self._event_channels:
            channel.close()

    async def __aenter__(self) -> WireGuardEndpoint:
        if self._loop is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ---------------------------------------------------------------- peers

    def add_peer(
        self,
        public_key: str | bytes,
        *,
        allowed_ips: Iterable[str] = (),
        endpoint: tuple[str, int] | None = None,
        preshared_key: str | bytes | None = None,
        persistent_keepalive: int = 0,
    ) -> Peer:
        """Add (or update) a peer, as one ``[Peer]`` section of a config would.

        Keys are base64 text (as ``wg`` prints them) or raw 32 bytes. ``allowed_ips`` are
        prefixes like ``"10.0.0.2/32"``; an inserted prefix moves from any other peer that
        held it. Returns the device's `wgpy.peer.Peer`.

        Raises:
            ValueError: for a malformed key or prefix, or our own public key.
        """
        key = public_key if isinstance(public_key, bytes) else decode_key(public_key)
        now = self._now()
        peer = self.device.add_peer(key)
        if peer is None:
            raise ValueError("a peer cannot have the interface's own public key")
        if preshared_key is not None:
            psk = preshared_key if isinstance(preshared_key, bytes) else decode_key(preshared_key)
            self.device.set_preshared_key(peer, psk)
        for prefix in allowed_ips:
            self.device.allowed_ips.insert(prefix, peer)
        if endpoint is not None:
            self.device.set_endpoint(peer, (endpoint[0], int(endpoint[1])))
        if persistent_keepalive != peer.persistent_keepalive:
            self.device.set_persistent_keepalive(peer, persistent_keepalive, now)
        self.device.peer_configured(peer, now)
        self._schedule_flush()
        return peer

    # ---------------------------------------------------------------- packets

    def send(self, packet: bytes) -> None:
        """Send one inner IPv4 or IPv6 packet to the peer whose AllowedIPs hold its destination.

        Never blocks: a packet that cannot go yet waits for a handshake (staged, as in the
        daemon); one that cannot go at all is dropped and counted (``no_peer``, ``not_ip``...).
        Datagrams are sent when the event loop next runs, together with other sends.

        Raises:
            EndpointClosed: if the endpoint is closed.
        """
        if self._closed:
            raise EndpointClosed("the WireGuard endpoint is closed")
        self.device.send_packet(bytes(packet), self._now())
        self._schedule_flush()

    async def recv(self) -> bytes:
        """The next inner IP packet received from a peer (decrypted, source checked).

        Raises:
            EndpointClosed: once the endpoint is closed and no received packet is left.
        """
        return await self._packets.get()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._packets.get()
        except EndpointClosed:
            raise StopAsyncIteration from None

    async def events(self, max_queued: int = DEFAULT_MAX_QUEUED) -> AsyncIterator[Event]:
        """Iterate over the device's events from now on, until the endpoint is closed.

        Each iterator gets every event; if it falls more than ``max_queued`` events behind,
        newer ones are counted in `events_lost` instead.
        """
        channel: _Channel[Event] = _Channel(max_queued)
        if self._closed:
            return
        self._event_channels.append(channel)
        try:
            while True:
                try:
                    event = await channel.get()
                except EndpointClosed:
                    return
                yield event
        finally:
            with contextlib.suppress(ValueError):
                self._event_channels.remove(channel)

    # ------------------------------------------------------------------ pump

    def _now(self) -> float:
        loop = self._loop
        return loop.time() if loop is not None else time.monotonic()

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and self._loop is not None and not self._closed:
            self._flush_handle = self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_handle = None
        self.flush()

    def flush(self) -> None:
        """Send the device's datagrams, queue its packets and dispatch its events now.

        Called automatically after every input; call it after changing the device directly
        (``device.set_endpoint``, ``device.allowed_ips.insert``...) while the endpoint runs.
        """
        if self._closed or self._loop is None:
            return
        self._pump.flush()

    def _queue_packets(self, packets: list[bytes]) -> None:
        for packet in packets:
            if not self._packets.put(packet):
                self.device.report_tun_write_failure(packet, "receive queue full")

    def _dispatch_all(self, events: Iterator[Event]) -> None:
        for event in events:
            self._dispatch(event)

    def _dispatch(self, event: Event) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a faulty callback must not stop the endpoint
                log.exception("on_event callback failed")
        for channel in self._event_channels:
            if not channel.put(event):
                self.events_lost += 1


async def open_endpoint(
    device: Device,
    *,
    host: str | None = None,
    port: int | None = None,
    on_event: EventCallback | None = None,
    max_queued: int = DEFAULT_MAX_QUEUED,
) -> WireGuardEndpoint:
    """Create a `WireGuardEndpoint` for ``device`` and start it.

    ``port=None`` uses ``device.listen_port`` (0 by default: any free port).
    """
    endpoint = WireGuardEndpoint(
        device, host=host, port=port, on_event=on_event, max_queued=max_queued
    )
    await endpoint.start()
    return endpoint
