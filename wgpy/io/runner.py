"""The asyncio adapter: drives one sans-I/O Device from a TUN fd, UDP sockets and a UAPI socket.

This module and its siblings are the only code in wgpy that does I/O. Every input is handed to
the Device with ``now`` and every output is drained right after, so a wakeup that brings several
datagrams is answered as one batch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TextIO

from wgpy.batch import coalesce
from wgpy.device import Device
from wgpy.device.state import WORKER_MIN_PACKETS
from wgpy.events import (
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
    key_b64,
)
from wgpy.io import icmp_errors, netlink, rtnl, tun
from wgpy.io.pump import READ_BATCH, DatagramPump
from wgpy.offload import (
    GSO_ECN,
    GSO_TCPV4,
    GSO_TCPV6,
    NO_OFFLOAD_HEADER,
    VALID_HEADER,
    VNET_HDR_LEN,
    OffloadError,
    split,
    vectorised_sums_available,
)
from wgpy.packet import icmp_unreachable
from wgpy.sinks import pcapng
from wgpy.sinks.eventlog import JsonEventLog, event_record, lost_record
from wgpy.tally import TopCounter
from wgpy.uapi import UapiConnection

if TYPE_CHECKING:  # prometheus_client is imported only when metrics are served
    from wgpy.sinks.metrics import DeviceCollector

_READ_BATCH: Final = READ_BATCH
_CAPTURE_BUFFER_LIMIT: Final = 4 << 20
_LINK_POLL_SECONDS: Final = 1.0
#: Link polling while the interface lives in another namespace, whose rtnetlink events the
#: daemon does not receive (a socket there would keep that namespace alive).
_MOVED_LINK_POLL_SECONDS: Final = 0.1
_MAX_PACKET: Final = 65535
#: A TUN read with a virtio-net header: the header and an IPv6 super-packet of 40 + 65535
#: bytes at most; one more byte tells a longer one (dropped as bad_offload).
_MAX_FRAME: Final = VNET_HDR_LEN + 40 + 65535 + 1
#: Events kept for ``wgpy-events=1`` (``wgpy events IF``), the newest last.
RECENT_EVENTS: Final = 256
_EVENTS_BUFFER_LIMIT: Final = 1 << 20

log = logging.getLogger("wgpy")


def short_key(key: bytes | None) -> str:
    text = key_b64(key) or "?"
    return f"peer({text[:4]}…{text[-5:-1]})"


def describe(event: Event) -> str:
    """One line per event, in the spirit of wireguard-go's verbose log."""
    if isinstance(event, PacketDropped):
        return event.describe()
    if isinstance(event, HandshakeInitiationSent):
        return f"{short_key(event.peer)} - Sending handshake initiation (attempt {event.attempt})"
    if isinstance(event, HandshakeResponseSent):
        return f"{short_key(event.peer)} - Sending handshake response"
    if isinstance(event, HandshakeCompleted):
        role = "initiator" if event.initiator else "responder"
        return f"{short_key(event.peer)} - Handshake completed ({role})"
    if isinstance(event, HandshakeGaveUp):
        return (
            f"{short_key(event.peer)} - Handshake did not complete after "
            f"{event.attempts} attempts, giving up"
        )
    if isinstance(event, KeysZeroed):
        return f"{short_key(event.peer)} - Zeroing out all keys"
    if isinstance(event, EndpointChanged):
        return f"{short_key(event.peer)} - Endpoint now {event.endpoint[0]}:{event.endpoint[1]}"
    if isinstance(event, KeepaliveReceived):
        return f"{short_key(event.peer)} - Receiving keepalive packet"
    return repr(event)


def render_event(event: Event, interface: str, wall_time: float, *, as_json: bool) -> str:
    """One line of ``wgpy events``: the JSON log's record, or the time and :func:`describe`."""
    if as_json:
        return json.dumps(event_record(event, interface, wall_time), separators=(",", ":"))
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(wall_time))
    return f"{stamp} {describe(event)}"


@dataclass
class _Follower:
    """A ``wgpy events --follow`` client and the events it missed while it read too slowly."""

    writer: asyncio.StreamWriter
    as_json: bool
    lost: int = 0


def _top_json(counter: TopCounter[str]) -> list[dict[str, object]]:
    """The most dropped addresses: ``count`` is exact when ``error`` is 0, else an upper
    bound over by at most ``error`` (see wgpy.tally)."""
    return [
        {"address": counted.item, "count": counted.count, "error": counted.error}
        for counted in counter.top()
    ]


class DeviceRunner:
    """Owns the sockets of one interface and pumps data between them and the Device."""

    def __init__(
        self,
        device: Device,
        ifname: str,
        tun_fd: int,
        uapi_socket: socket.socket,
        uapi_path: str,
        *,
        json_log: TextIO | None = None,
        metrics: DeviceCollector | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.device = device
        # ICMP errors for destinations no peer has leave from the interface's stack, as the
        # kernel's do (with NAT undone): see io/icmp_errors.py
        device.icmp_from_stack = True
        self.ifname = ifname
        self.tun_fd = tun_fd
        self.uapi_socket = uapi_socket
        self.uapi_path = uapi_path
        self._pump = DatagramPump(
            device,
            deliver=self._write_tun,
            dispatch=self._drain_events,
            unreachable=self._answer_unreachable_all,
            after_read=self._read_answers,
        )
        self._wrote_tun = False
        self._revalidation: asyncio.Handle | None = None
        self._link_moved = False
        self._link_key: tuple[int, int] | None = None  # (ifindex, mtu) the route MTUs are for
        # destination address -> MTU of its route through the interface (0: none set)
        self._route_mtu_cache: dict[bytes, int] = {}
        device.route_mtu = self._route_mtu_for
        # Offloads (wgpy.offload): with a virtio-net header, reads may be TSO/USO super-packets
        # to cut, and decrypted segments of a flow are glued into one write (GRO)
        try:
            self._vnet = tun.has_vnet_header(tun_fd)
            choice = os.environ.get("WGPY_TUN_OFFLOADS")  # a TUN_F_* set, for comparisons
            if choice is not None:
                choices: tuple[int, ...] | None = (int(choice, 0),)
            elif not vectorised_sums_available():
                choices = (0,)  # cutting in pure Python costs more than the kernel's cutting
            else:
                choices = None
            offloads = tun.enable_offloads(tun_fd, choices) if self._vnet else 0
        except OSError as error:
            log.debug("TUN offloads unavailable: %s", error)
            self._vnet, offloads = False, 0
        self._tun_gro = self._vnet
        self._udp_gro = offloads & (tun.TUN_F_USO4 | tun.TUN_F_USO6) != 0
        log.debug("TUN virtio-net header %s, offloads %#x", self._vnet, offloads)
        self._tun_buffers = [bytearray(_MAX_FRAME if self._vnet else _MAX_PACKET)]
        self._tun_view = memoryview(self._tun_buffers[0])
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future[str] | None = None
        self._link_running: bool | None = None
        self.uapi_inode = os.stat(uapi_path).st_ino if os.path.exists(uapi_path) else None
        self._json_stream = json_log
        self._json_log = JsonEventLog(ifname) if json_log is not None else None
        self._metrics = metrics
        self._on_ready = on_ready
        self._captures: list[asyncio.StreamWriter] = []
        #: (wall time, event) of the latest events, for ``wgpy-events=1``; rendered on request
        self._recent: collections.deque[tuple[float, Event]] = collections.deque(
            maxlen=RECENT_EVENTS
        )
        self._followers: list[_Follower] = []
        self.capture_records_lost = 0
        self._netlink: socket.socket | None = None

    # ----------------------------------------------------------- UAPI hooks

    def set_listen_port(self, port: int) -> None:
        self.device.listen_port = port
        self._close_sockets()
        if self.device.is_up:
            self._open_sockets()

    def set_fwmark(self, mark: int) -> None:
        self.device.fwmark = mark
        self._pump.set_fwmark(mark)

    # -------------------------------------------------------------- sockets

    def _open_sockets(self) -> None:
        self.device.listen_port = self._pump.bind(self.device.listen_port, self.device.fwmark)

    def _close_sockets(self) -> None:
        self._pump.close()

    # ---------------------------------------------------------------- input

    def _revalidate_sources(self) -> None:
        self._revalidation = None
        self._pump.revalidate_sources()

    def _refresh_route_mtus(self) -> None:
        """Read the MTUs of the routes through the interface (in its namespace), so that
        padding follows the packet's route as the kernel's does."""
        self._route_mtu_cache.clear()
        if self._link_key is None:
            return
        ifindex, mtu = self._link_key
        try:
            sock, _ = tun.device_socket(
                self.tun_fd, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE
            )
            with sock:
                sock.settimeout(1.0)
                found = rtnl.route_mtus(sock, ifindex)
        except OSError as error:
            log.debug("Route MTUs of the interface not read: %s", error)
            found = set()
        self.device.route_mtus = tuple(sorted(found - {mtu}))

    def _route_mtu_for(self, packet: bytes) -> int:
        destination = packet[16:20] if packet[0] >> 4 == 4 else packet[24:40]
        cached = self._route_mtu_cache.get(destination)
        if cached is not None:
            return cached
        mtu = 0
        if self._link_key is not None:
            try:
                sock, _ = tun.device_socket(
                    self.tun_fd, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE
                )
                with sock:
                    sock.settimeout(1.0)
                    mtu = rtnl.route_mtu(sock, destination, self._link_key[0])
            except OSError:
                mtu = 0
        if len(self._route_mtu_cache) >= 4096:
            self._route_mtu_cache.clear()
        self._route_mtu_cache[destination] = mtu
        return mtu

    def _on_tun(self) -> None:
        device = self.device
        now = time.monotonic()
        buffers, view = self._tun_buffers, self._tun_view
        if not device.is_up:
            # packets come only from an interface that is up: a change not seen yet (the
            # interface lives in another namespace, or rtnetlink is late)
            self._check_link()
        vnet = self._vnet
        # a batch ends after _READ_BATCH packets, however many super-packets brought them: the
        # datagrams leave at the end of a batch, and 128 super-packets are 8 MiB
        batch: list[bytes] = []
        refused = 0
        # with worker threads, a super-packet's segments go to the Device at once: the worker
        # seals them while this thread reads and cuts the next one
        at_once = WORKER_MIN_PACKETS if device.workers is not None else _MAX_PACKET
        # without them, a TCP super-packet is cut and sealed in one call when it can be
        # (Device.send_super; it declines with workers)
        whole = device.workers is None
        taken = 0
        while taken + len(batch) + refused < _READ_BATCH:
            try:
                # into a preallocated buffer: os.read would allocate 64 KiB per packet
                size = os.readv(self.tun_fd, buffers)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                gone = error.errno in tun.GONE_ERRNOS
                self._shutdown("interface removed" if gone else f"TUN read failed: {error}")
                return
            if not size:
                self._shutdown("TUN closed")
                return
            if not vnet:
                batch.append(bytes(view[:size]))
                continue
            try:
                if size == _MAX_FRAME:
                    raise OffloadError(f"a read of more than {_MAX_FRAME - 1} bytes")
                if whole and size > VNET_HDR_LEN and view[1] & ~GSO_ECN in (GSO_TCPV4, GSO_TCPV6):
                    if batch:  # what was read before goes first: each peer's order is kept
                        device.send_packets(batch, now)
                        taken += len(batch)
                        batch = []
                    if device.send_super(view[:size], now):
                        # about its number of segments (the headers are not counted)
                        taken += max(1, (size - VNET_HDR_LEN) // ((view[4] | view[5] << 8) or 1))
                        continue
                segments = split(view[:size])
            except OffloadError as error:
                device.report_bad_offload(bytes(view[VNET_HDR_LEN:size]), str(error))
                refused += 1
                continue
            if len(segments) < at_once:
                batch += segments
                continue
            if batch:
                device.send_packets(batch, now)
                taken += len(batch)
                batch = []
            device.send_packets(segments, now)
            taken += len(segments)
        # one call for the batch: runs to one peer are routed and encrypted together
        device.send_packets(batch, now)
        self.flush()

    # --------------------------------------------------------------- output

    def flush(self) -> None:
        self._pump.flush()

    def _read_answers(self) -> None:
        """After datagrams were delivered to the TUN, read it at once: what the stack answers
        (an echo reply, TCP acknowledgements) is usually queued by the time the write returns,
        and reading it here saves a trip through the event loop. Reads never block; the loop
        still sees anything left (level-triggered)."""
        if self._wrote_tun:
            self._wrote_tun = False
            self._on_tun()

    def _write_tun(self, packets: list[bytes]) -> None:
        self._wrote_tun = True
        if self._tun_gro:
            self._write_coalesced(packets)
            return
        fd = self.tun_fd
        vnet = self._vnet
        for packet in packets:
            try:
                os.write(fd, VALID_HEADER + packet if vnet else packet)
            except OSError as error:
                self.device.report_tun_write_failure(packet, error.strerror or str(error))

    def _write_coalesced(self, packets: list[bytes]) -> None:
        """GRO: segments of one flow glued into one write (wgpy.batch.coalesce: C, or its twin
        wgpy.offload.coalesce)."""
        fd = self.tun_fd
        for frame, held in coalesce(packets, udp=self._udp_gro):
            try:
                os.write(fd, frame)
                continue
            except OSError as error:
                if len(held) == 1 or error.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    for packet in held:
                        self.device.report_tun_write_failure(packet, error.strerror or str(error))
                    continue
            # the kernel refuses super-packets: one packet per write from now on
            log.info("TUN refused a coalesced write; writing packets one by one")
            self._tun_gro = False
            self._write_tun(held)

    def _drain_events(self, events: Iterator[Event]) -> None:
        """Events to the log, the ring of recent ones and the ``wgpy events`` followers."""
        first = next(events, None)
        if first is None:
            return
        now, wall = time.monotonic(), time.time()
        json_log, stream = self._json_log, self._json_stream
        if json_log is None or stream is None:
            json_log = stream = None
        debug = stream is None and log.isEnabledFor(logging.DEBUG)
        recent, followers = self._recent, self._followers
        event: Event | None = first
        while event is not None:
            recent.append((wall, event))
            if json_log is not None and stream is not None:
                line = json_log.render(event, now, wall)
                if line is not None:
                    stream.write(line + "\n")
            elif debug:
                log.debug("%s", describe(event))
            if followers:
                self._to_followers(event, wall)
            event = next(events, None)
        if stream is not None:
            stream.flush()

    def _to_followers(self, event: Event, wall: float) -> None:
        lines: dict[bool, bytes] = {}
        for follower in self._followers:
            transport = follower.writer.transport
            if transport.is_closing():
                continue
            if transport.get_write_buffer_size() > _EVENTS_BUFFER_LIMIT:
                follower.lost += 1  # a reader too slow must not make the daemon grow
                continue
            as_json = follower.as_json
            if follower.lost:
                follower.writer.write(self._lost_line(follower.lost, wall, as_json=as_json))
                follower.lost = 0
            line = lines.get(as_json)
            if line is None:
                line = lines[as_json] = (
                    render_event(event, self.ifname, wall, as_json=as_json) + "\n"
                ).encode()
            follower.writer.write(line)

    def _lost_line(self, count: int, wall: float, *, as_json: bool) -> bytes:
        if as_json:
            record = lost_record(self.ifname, wall, count)
            return (json.dumps(record, separators=(",", ":")) + "\n").encode()
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(wall))
        return f"{stamp} {count} events not shown (the reader was too slow)\n".encode()

    def _answer_unreachable_all(self, packets: list[bytes]) -> None:
        for packet in packets:
            self._answer_unreachable(packet)

    def _answer_unreachable(self, packet: bytes) -> None:
        if icmp_errors.send_unreachable(self.tun_fd, packet):
            return
        reply = icmp_unreachable(packet)  # no raw socket here: the TUN answer
        if reply is not None:
            with contextlib.suppress(OSError):
                os.write(self.tun_fd, NO_OFFLOAD_HEADER + reply if self._vnet else reply)

    # ------------------------------------------------------------------ UAPI

    async def _serve_uapi(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # an `ip link set up` or `down` just before `wg` must be seen, even where no rtnetlink
        # event reaches the daemon (interface moved to another namespace)
        self._check_link()
        connection = UapiConnection(self.device, self, time.monotonic)
        first = True
        try:
            while not connection.closed:
                data = await reader.read(65536)
                if not data:
                    reply = connection.feed_eof()
                    self.flush()
                    if reply:
                        writer.write(reply)
                        await writer.drain()
                    break
                if first and data.startswith(b"wgpy-"):
                    # wgpy's own operations; wg and wireguard-go never send these.
                    await self._serve_extension(data, reader, writer)
                    return
                first = False
                reply = connection.feed(data)
                self.flush()
                if reply:
                    writer.write(reply)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_extension(
        self, data: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """``wgpy-stats=1``: drop counters as JSON; ``wgpy-capture=1``: a pcapng stream;
        ``wgpy-events=1``: the recent events, one line each (``format=json``: JSON records,
        else text), then ``errno=0``; with ``follow=1`` new events after it until the client
        goes."""
        while b"\n\n" not in data and len(data) < 4096:
            more = await reader.read(4096)
            if not more:
                return
            data += more
        operation = data.split(b"\n", 1)[0]
        if operation == b"wgpy-stats=1":
            writer.write(self.stats_json().encode() + b"\nerrno=0\n\n")
            await writer.drain()
        elif operation == b"wgpy-capture=1":
            writer.write(pcapng.header(self.ifname))
            self._captures.append(writer)
            self.device.tap = self._tap
            try:
                await reader.read()  # until the client goes away
            except asyncio.CancelledError:
                pass  # the daemon is shutting down: end the stream quietly
            finally:
                self._captures.remove(writer)
                if not self._captures:
                    self.device.tap = None
        elif operation == b"wgpy-events=1":
            await self._serve_events(data, reader, writer)
        else:
            writer.write(b"errno=-22\n\n")
            await writer.drain()

    async def _serve_events(
        self, data: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        options = dict(
            line.partition(b"=")[::2] for line in data.split(b"\n\n", 1)[0].split(b"\n")[1:]
        )
        as_json = options.pop(b"format", b"text")
        follow = options.pop(b"follow", b"0")
        if options or as_json not in (b"text", b"json") or follow not in (b"0", b"1"):
            writer.write(b"errno=-22\n\n")
            await writer.drain()
            return
        json_lines = as_json == b"json"
        for wall, event in self._recent:
            writer.write(
                (render_event(event, self.ifname, wall, as_json=json_lines) + "\n").encode()
            )
        writer.write(b"errno=0\n\n")  # the recent ones are out; with follow, new ones follow
        if follow == b"0":
            await writer.drain()
            return
        follower = _Follower(writer, json_lines)
        self._followers.append(follower)
        try:
            await writer.drain()
            await reader.read()  # until the client goes away
        except asyncio.CancelledError:
            pass  # the daemon is shutting down: end the stream quietly
        finally:
            self._followers.remove(follower)

    def stats_json(self) -> str:
        addresses = self.device.drop_addresses
        drops = []
        for key, count in self.device.drop_counts.items():
            entry: dict[str, object] = {
                "peer": key_b64(key[0]),
                "reason": key[1].value,
                "count": count,
            }
            tally = addresses.get(key)
            if tally is not None:
                entry["sources"] = _top_json(tally.sources)
                entry["destinations"] = _top_json(tally.destinations)
            drops.append(entry)
        owners = [
            {"peer": key_b64(peer), "owner": key_b64(owner), "count": count}
            for (peer, owner), count in self.device.disallowed_owners.items()
        ]
        return json.dumps(
            {
                "interface": self.ifname,
                "drops": drops,
                "disallowed_owners": owners,
                "capture_records_lost": self.capture_records_lost,
            },
            separators=(",", ":"),
        )

    def _tap(
        self,
        direction: Direction,
        verdict: Verdict,
        peer: bytes | None,
        packet: bytes,
        reason: DropReason | None,
    ) -> None:
        block = pcapng.packet_block(
            time.time(), packet, direction, pcapng.annotation(direction, verdict, peer, reason)
        )
        for writer in self._captures:
            transport = writer.transport
            if transport.get_write_buffer_size() > _CAPTURE_BUFFER_LIMIT:
                self.capture_records_lost += 1
                continue
            writer.write(block)

    # ------------------------------------------------------------ link state

    def _check_link(self) -> None:
        """Follow the interface: up/down, MTU, and its deletion (wherever it lives now)."""
        try:
            state = tun.link_state(self.tun_fd)
        except OSError as error:
            if error.errno in tun.GONE_ERRNOS:
                self._shutdown("interface removed")
            return
        self.device.mtu = state.mtu
        self._link_moved = state.moved
        if self._link_key != (state.ifindex, state.mtu):
            self._link_key = (state.ifindex, state.mtu)
            self._refresh_route_mtus()
        running = state.running
        previous, self._link_running = self._link_running, running
        if previous == running:
            return
        now = time.monotonic()
        if running:
            if previous is not None:
                log.info("Interface state was Down, requested Up, now Up")
            self.device.up(now)
            if not self._pump.bound:
                try:
                    self._open_sockets()
                except OSError as error:
                    log.error("Unable to update bind: %s", error)
        else:
            if previous is not None:
                log.info("Interface state was Up, requested Down, now Down")
            # like the kernel: nothing is sent and no port is bound while the link is down
            self.device.down(now)
            self._close_sockets()
        self.flush()

    def _on_netlink(self) -> None:
        """rtnetlink events: of the daemon's own namespace (where the UDP sockets are), and of
        other namespaces with an id here (one is where the interface was moved to)."""
        assert self._netlink is not None
        own: set[int] = set()
        foreign: set[int] = set()
        with contextlib.suppress(OSError):
            while True:
                data, ancillary, _, _ = self._netlink.recvmsg(1 << 16, socket.CMSG_SPACE(4))
                types = netlink.message_types(data)
                (foreign if rtnl.from_other_namespace(ancillary) else own).update(types)
        interface_events = foreign if self._link_moved else own
        if not (own or foreign) or (own | foreign) & rtnl.LINK_MESSAGES:
            self._check_link()
        if interface_events & rtnl.ROUTING_MESSAGES:
            # now, not later in the loop: a packet already waiting on the TUN may need it
            self._refresh_route_mtus()
        if own & rtnl.ROUTING_MESSAGES and self._pump.sources and self._revalidation is None:
            assert self._loop is not None
            self._revalidation = self._loop.call_soon(self._revalidate_sources)

    async def _watch(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(
                _MOVED_LINK_POLL_SECONDS if self._link_moved else _LINK_POLL_SECONDS
            )
            self._check_link()
            now = time.monotonic()
            if now - last < _LINK_POLL_SECONDS:
                continue
            last = now
            self.device.wall_offset = time.time() - now
            if self._metrics is not None:
                from wgpy.sinks.metrics import take_snapshot  # loaded with the collector

                self._metrics.snapshot = take_snapshot(self.device, self.ifname)
            try:
                inode = os.stat(self.uapi_path).st_ino
            except OSError:
                inode = None
            if inode != self.uapi_inode:
                self._shutdown("UAPI socket removed")
                return

    # -------------------------------------------------------------- lifecycle

    def _shutdown(self, why: str) -> None:
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(why)

    async def run(self) -> str:
        """Serve until the TUN or the UAPI socket goes away or a signal arrives."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._pump.start(loop)
        self._stop = loop.create_future()
        self.device.wall_offset = time.time() - time.monotonic()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(
                signum, self._shutdown, f"received {signal.Signals(signum).name}"
            )
        loop.add_reader(self.tun_fd, self._on_tun)
        try:
            # in the namespace the daemon (and its UDP sockets) live in, whatever happens to
            # the interface later
            self._netlink = rtnl.subscribe(rtnl.RTMGRP_LINK | rtnl.ROUTING_GROUPS)
            loop.add_reader(self._netlink.fileno(), self._on_netlink)
        except OSError:
            self._netlink = None
        self._check_link()  # binds the sockets if the link is up already
        server = await asyncio.start_unix_server(
            self._serve_uapi, sock=self.uapi_socket, backlog=socket.SOMAXCONN
        )
        watcher = asyncio.ensure_future(self._watch())
        log.info("Device started")
        if self._on_ready is not None:
            self._on_ready()
        try:
            why = await self._stop
        finally:
            watcher.cancel()
            for capture in list(self._captures):
                capture.close()
            for follower in list(self._followers):
                follower.writer.close()
            server.close()
            loop.remove_reader(self.tun_fd)
            if self._netlink is not None:
                loop.remove_reader(self._netlink.fileno())
                self._netlink.close()
            if self._revalidation is not None:
                self._revalidation.cancel()
            self._pump.stop()
        log.info("Shutting down: %s", why)
        return why
