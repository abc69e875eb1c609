"""Tools for producing every drop reason of wgpyd from outside, and for reading back what wgpyd
says about them: its ``wgpy-stats`` counters, its JSON event log and its annotated captures.

* :func:`udp_socket` makes a UDP socket that lives in another network namespace (the calling
  thread switches namespace with ``setns`` just long enough to create it), so the test process
  itself can play the remote side without a helper process.
* :class:`CorePeer` is a WireGuard peer made of the sans-I/O :class:`~wgpy.device.Device` and
  such a socket (the idea of ``core_peer.py``, driven step by step from the test): it can
  handshake, encrypt any plaintext on its current keypair, and remembers every datagram it sent
  so that tests can replay or corrupt them.
* :func:`forged_initiation` builds a 148-byte initiation with a correct mac1 (which needs only
  the responder's public key) and a body that decrypts to nothing.
* :func:`start_dut` starts wgpyd with ``WGPY_LOG_FORMAT=json`` and ``WGPY_LOG_FILE``;
  :class:`Capture` runs ``wgpy capture`` against it.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

from tests.netns.harness import (
    Netns,
    WgDaemon,
    genkey,
    pubkey,
    start_wg_daemon,
    unique_ifname,
    wait_for,
    wg,
    write_secret,
)
from wgpy import crypto, messages
from wgpy.device import Device
from wgpy.events import Event, HandshakeCompleted
from wgpy.io.uapi_client import wgpy_stats
from wgpy.peer import Peer
from wgpy.sinks import pcapng

WGPYD: Final[tuple[str, ...]] = (sys.executable, "-m", "wgpy.daemon", "-f")
"""wgpyd in the foreground (the harness appends the interface name)."""

CLONE_NEWNET: Final = 0x40000000

DropKey = tuple[str | None, str]
"""(peer public key in base64 or None, reason) — how wgpy-stats and the JSON log name a drop."""


# ---------------------------------------------------------------------------------------------
# sockets in another namespace


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


@contextlib.contextmanager
def in_netns(ns: Netns) -> Iterator[None]:
    """Run the body with the calling thread inside ``ns``'s network namespace.

    Sockets created in the body stay in ``ns`` after the thread switches back.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{ns.name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)


def udp_socket(ns: Netns, address: tuple[str, int] = ("0.0.0.0", 0)) -> socket.socket:
    """A non-blocking IPv4 UDP socket bound to ``address`` inside ``ns``."""
    with in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(address)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def receive_all(sock: socket.socket, quiet: float = 0.3, timeout: float = 5.0) -> list[bytes]:
    """Datagrams arriving on ``sock`` until none came for ``quiet`` seconds."""
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], quiet)
        if not readable:
            break
        with contextlib.suppress(BlockingIOError):
            while True:
                out.append(sock.recv(65535))
    return out


# ---------------------------------------------------------------------------------------------
# crafted packets


def ipv4_packet(src: str, dst: str, payload: bytes = b"dropkit", *, proto: int = 17) -> bytes:
    """A minimal IPv4 packet (checksum left zero: wgpyd drops before the kernel would look)."""
    total = 20 + len(payload)
    return (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            total,
            0,
            0,
            64,
            proto,
            0,
            socket.inet_aton(src),
            socket.inet_aton(dst),
        )
        + payload
    )


def forged_initiation(responder_public: bytes, sender_index: int) -> bytes:
    """A handshake initiation with a correct mac1 for ``responder_public``, a zero mac2 and a
    random body: it passes the mac1 check and then fails to decrypt."""
    body = struct.pack("<II", messages.TYPE_INITIATION, sender_index) + os.urandom(108)
    mac1 = crypto.mac(crypto.hash_(crypto.LABEL_MAC1, responder_public), body)
    return body + mac1 + bytes(16)


def forged_response(initiator_public: bytes, receiver_index: int) -> bytes:
    """A handshake response with a correct mac1 for ``initiator_public`` to ``receiver_index``."""
    body = struct.pack("<III", messages.TYPE_RESPONSE, 0x0BADF00D, receiver_index)
    body += os.urandom(48)
    return body + crypto.mac(crypto.hash_(crypto.LABEL_MAC1, initiator_public), body) + bytes(16)


def with_mac2(initiation: bytes, cookie: bytes) -> bytes:
    """``initiation`` with mac2 computed from ``cookie`` (as a peer that holds a cookie does)."""
    head = initiation[: messages.INITIATION_MAC2_OFFSET]
    return head + crypto.mac(cookie, head)


def open_cookie_reply(reply: bytes, responder_public: bytes, mac1: bytes) -> bytes | None:
    """The cookie inside a cookie reply answering a message whose mac1 was ``mac1``."""
    parsed = messages.parse_cookie_reply(reply)
    key = crypto.hash_(crypto.LABEL_COOKIE, responder_public)
    return crypto.xaead_decrypt(key, parsed.nonce, parsed.encrypted_cookie, mac1)


# ---------------------------------------------------------------------------------------------
# a core-based peer driven from the test


@dataclass
class CorePeer:
    """A WireGuard peer made of a sans-I/O Device and one UDP socket (in another namespace)."""

    sock: socket.socket
    private_key: bytes
    remote_public: bytes
    remote_endpoint: tuple[str, int]
    device: Device = field(init=False)
    peer: Peer = field(init=False)
    sent: list[bytes] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    delivered: list[bytes] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.device = Device(self.private_key, wall_offset=time.time() - time.monotonic())
        peer = self.device.add_peer(self.remote_public)
        assert peer is not None
        self.peer = peer
        self.device.set_endpoint(peer, self.remote_endpoint)

    @property
    def public_key(self) -> bytes:
        assert self.device.public_key is not None
        return self.device.public_key

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_key).decode()

    def allow(self, prefix: str) -> None:
        """Accept inner packets from the remote side with sources in ``prefix``."""
        self.device.allowed_ips.insert(prefix, self.peer)

    def send_raw(self, datagram: bytes) -> None:
        self.sock.sendto(datagram, self.remote_endpoint)

    def flush(self) -> None:
        device = self.device
        for datagram, endpoint in device.datagrams_to_send():
            self.sock.sendto(datagram, endpoint)
            self.sent.append(datagram)
        self.delivered.extend(device.packets_to_deliver())
        self.events.extend(device.events())

    def pump(self, duration: float = 0.0, until: Callable[[], bool] | None = None) -> bool:
        """Handle timers and incoming datagrams for ``duration`` seconds, or until ``until()``.

        Returns whether ``until()`` became true (True when there is no ``until``).
        """
        deadline = time.monotonic() + duration
        device = self.device
        while True:
            now = time.monotonic()
            timer = device.get_timer()
            if timer is not None and timer <= now:
                device.handle_timer(now)
            self.flush()
            if until is not None and until():
                return True
            remaining = deadline - now
            if remaining <= 0:
                return until is None
            readable, _, _ = select.select([self.sock], [], [], min(0.02, remaining))
            if not readable:
                continue
            with contextlib.suppress(BlockingIOError):
                while True:
                    data, address = self.sock.recvfrom(65535)
                    self.received.append(data)
                    device.receive_datagram(data, (address[0], address[1]), time.monotonic())

    def handshake(self, timeout: float = 5.0) -> None:
        """Initiate a handshake and wait for it to complete; the keepalive that confirms the
        new keypair to the responder is sent at once."""
        completed = sum(isinstance(e, HandshakeCompleted) for e in self.events)
        self.peer.last_sent_handshake = float("-inf")  # allow a new initiation at once
        self.device._send_initiation(self.peer, time.monotonic(), is_retry=False)
        done = self.pump(
            timeout, lambda: sum(isinstance(e, HandshakeCompleted) for e in self.events) > completed
        )
        assert done, f"no handshake within {timeout:g}s; received {len(self.received)}"

    def encrypt(self, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` as is (no routing, no checks) on the current keypair, send it
        and return the data message."""
        keypair = self.peer.current
        assert keypair is not None, "no keypair: handshake first"
        self.device._encrypt(self.peer, keypair, plaintext, self.remote_endpoint)
        self.flush()
        return self.sent[-1]

    def seal(self, plaintext: bytes) -> bytes:
        """Like :meth:`encrypt` but return the data message without sending it."""
        keypair = self.peer.current
        assert keypair is not None, "no keypair: handshake first"
        self.flush()
        self.device._encrypt(self.peer, keypair, plaintext, self.remote_endpoint)
        ((datagram, _),) = self.device.datagrams_to_send()
        return datagram

    def initiations_sent(self) -> list[bytes]:
        return [d for d in self.sent if d[:4] == struct.pack("<I", messages.TYPE_INITIATION)]


def new_core_peer(
    ns: Netns, remote_public: str, remote_endpoint: tuple[str, int], *, private_key: bytes | None
) -> CorePeer:
    private = private_key if private_key is not None else crypto.generate_private_key()
    return CorePeer(udp_socket(ns), private, base64.b64decode(remote_public), remote_endpoint)


# ---------------------------------------------------------------------------------------------
# the device under test


@dataclass
class Dut:
    """wgpyd in a namespace, with its JSON event log."""

    ns: Netns
    ifname: str
    daemon: WgDaemon
    private_key: str
    public_key: str
    listen_port: int
    json_log: Path

    @property
    def public_bytes(self) -> bytes:
        return base64.b64decode(self.public_key)

    def add_peer(
        self,
        public_key: str,
        allowed_ips: str,
        endpoint: str | None = None,
        psk_file: Path | None = None,
    ) -> None:
        argv = ["set", self.ifname, "peer", public_key, "allowed-ips", allowed_ips]
        if endpoint is not None:
            argv += ["endpoint", endpoint]
        if psk_file is not None:
            argv += ["preshared-key", str(psk_file)]
        wg(self.ns, *argv)

    def stats(self) -> collections.Counter[DropKey]:
        stats = wgpy_stats(self.ifname)
        assert stats is not None, f"{self.ifname}: wgpy-stats=1 got no answer"
        drops = cast(list[dict[str, Any]], stats["drops"])
        return collections.Counter(
            {(entry["peer"], entry["reason"]): int(entry["count"]) for entry in drops}
        )

    def settled_stats(
        self, expected: collections.Counter[DropKey], timeout: float = 5.0, quiet: float = 0.3
    ) -> collections.Counter[DropKey]:
        """The counters once they reach ``expected`` (or ``timeout``) and then stay unchanged
        for ``quiet`` seconds; the caller compares them with ``expected``."""
        deadline = time.monotonic() + timeout
        stats = self.stats()
        while time.monotonic() < deadline and any(stats[k] < n for k, n in expected.items()):
            time.sleep(0.05)
            stats = self.stats()
        while True:
            time.sleep(quiet)
            again = self.stats()
            if again == stats or time.monotonic() > deadline + quiet:
                return again
            stats = again

    def json_records(self) -> list[dict[str, Any]]:
        try:
            text = self.json_log.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def json_drops(self) -> list[dict[str, Any]]:
        return [r for r in self.json_records() if r.get("event") == "packet_dropped"]


def json_drop_counts(records: list[dict[str, Any]]) -> collections.Counter[DropKey]:
    return collections.Counter((r.get("peer"), r["reason"]) for r in records)


def start_dut(
    ns: Netns,
    *,
    tunnel: str = "10.100.0.1/24",
    listen_port: int = 51820,
    env: dict[str, str] | None = None,
) -> Dut:
    """Start wgpyd in ``ns`` (JSON log to a file), give it a key, a port and ``tunnel``, up."""
    ifname = unique_ifname("wgd")
    json_log = ns.workdir / f"{ifname}-events.log"
    daemon = start_wg_daemon(
        ns,
        ifname,
        WGPYD,
        env={"WGPY_LOG_FORMAT": "json", "WGPY_LOG_FILE": str(json_log), **(env or {})},
    )
    private = genkey()
    key_file = write_secret(ns, f"{ifname}.key", private)
    wg(ns, "set", ifname, "private-key", str(key_file), "listen-port", str(listen_port))
    ns.run("sysctl", "-q", "-w", f"net.ipv6.conf.{ifname}.disable_ipv6=1", check=False)
    ns.run("ip", "addr", "add", tunnel, "dev", ifname)
    ns.run("ip", "link", "set", ifname, "up")
    return Dut(ns, ifname, daemon, private, pubkey(private), listen_port, json_log)


# ---------------------------------------------------------------------------------------------
# captures


@dataclass
class Capture:
    """``wgpy capture IFNAME -w FILE`` running in a namespace until :meth:`stop`."""

    proc: subprocess.Popen[bytes]
    path: Path

    @classmethod
    def start(cls, ns: Netns, ifname: str, seconds: float = 120.0) -> Capture:
        path = ns.workdir / f"{ifname}-{os.urandom(3).hex()}.pcapng"
        proc = ns.popen(
            sys.executable, "-m", "wgpy.cli", "capture", ifname, "-w", str(path), "-t", str(seconds)
        )
        capture = cls(proc, path)
        # The daemon writes the section header and turns its tap on in the same step: once
        # the header is in the file, every later packet is captured.
        header = len(pcapng.header(ifname))
        wait_for(
            lambda: path.exists() and path.stat().st_size >= header,
            10,
            what=f"capture header of {ifname}",
        )
        return capture

    def comments(self) -> list[str]:
        """Comments of the whole packet blocks written so far."""
        out: list[str] = []
        with self.path.open("rb") as stream, contextlib.suppress(pcapng.PcapngError):
            out.extend(p.comment for p in pcapng.read(stream))
        return out

    def stop(self, expect_at_least: int = 0, timeout: float = 5.0) -> list[pcapng.CapturedPacket]:
        """Wait for ``expect_at_least`` packets (or ``timeout``), stop, return all packets."""
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: len(self.comments()) >= expect_at_least, timeout, what="packets")
        time.sleep(0.2)
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        with self.path.open("rb") as stream:
            return list(pcapng.read(stream))


def annotation_counts(
    packets: list[pcapng.CapturedPacket], verdict: str = "dropped"
) -> collections.Counter[tuple[str, str | None, str | None]]:
    """(direction, reason, peer) of the packets with ``verdict``, from their wgpy comments.

    Peer is None for ``(none)``.
    """
    counts: collections.Counter[tuple[str, str | None, str | None]] = collections.Counter()
    for packet in packets:
        words = packet.comment.split()
        assert words[:1] == ["wgpy:"], f"not a wgpy annotation: {packet.comment!r}"
        direction, what = words[1], words[2]
        if what != verdict:
            continue
        fields = dict(w.split("=", 1) for w in words[3:])
        peer = fields.get("peer")
        counts[(direction, fields.get("reason"), None if peer == "(none)" else peer)] += 1
    return counts
