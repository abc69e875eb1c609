"""The UAPI configuration protocol (``/var/run/wireguard/<ifname>.sock``) over a sans-I/O Device.

Pure functions and a per-connection parser; nothing here touches a socket or the clock. The
semantics follow wireguard-go (``device/uapi.go``; ``docs/wireguard-behaviour.md`` §8):

* :func:`handle_get` renders ``get=1`` exactly as go does (key order, omissions, formats).
* :func:`handle_set` applies the lines of a ``set=1`` request one by one, as go does: not
  transactional, the first error stops processing, earlier lines stay applied.
* :class:`UapiConnection` is the incremental parser for one stream connection: feed it bytes,
  write back what it returns, close when :attr:`UapiConnection.closed` becomes true.

Where go's behaviour depends on how the request bytes happen to be split into ``read()`` calls
(go's ``bufio.Scanner`` reads ahead and drops whatever followed the end of a ``set``), we do what
go does when the whole request arrives in one piece, and never drop a following operation. See
:class:`UapiConnection` for the details and for the limits on buffered bytes.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import re
import socket
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final, Protocol

from wgpy import batch
from wgpy.device import Device
from wgpy.peer import Endpoint, Peer

#: Where userspace WireGuard implementations listen: ``SOCKET_DIRECTORY/IFNAME.sock``.
SOCKET_DIRECTORY: Final = "/var/run/wireguard"


def socket_path(ifname: str) -> str:
    return os.path.join(SOCKET_DIRECTORY, f"{ifname}.sock")


__all__ = [
    "ERRNO_INVALID",
    "ERRNO_IO",
    "ERRNO_PORT_IN_USE",
    "ERRNO_PROTOCOL",
    "ERRNO_UNKNOWN",
    "MAX_LINE",
    "MAX_PEERS",
    "NullHooks",
    "UapiConnection",
    "UapiHooks",
    "handle_get",
    "handle_set",
]

_log = logging.getLogger(__name__)

# Error codes as sent on the wire (go ipc/uapi_unix.go: IpcError*), always negative.
ERRNO_IO: Final = -5  # EIO: a line too long for go's scanner (see MAX_LINE)
ERRNO_INVALID: Final = -22  # EINVAL: bad key or value
ERRNO_UNKNOWN: Final = -55  # go's IpcErrorUnknown: any other (unexpected) failure
ERRNO_PROTOCOL: Final = -71  # EPROTO: a line without '='
ERRNO_PORT_IN_USE: Final = -98  # EADDRINUSE: binding the port or setting the fwmark failed

#: Longest line, in bytes *including* its ``\n``, of a ``set`` body. go reads the body with a
#: ``bufio.Scanner`` whose buffer is at most 64 KiB: a line of 65535 bytes plus ``\n`` is fine,
#: one byte more is a read error answered with ``errno=-5`` (checked against wireguard-go).
MAX_LINE: Final = 65536

#: Most peers a device may have (go ``MaxPeers``); creating one more is ``errno=-22``.
MAX_PEERS: Final = 1 << 16

_KEY_HEX = re.compile(r"[0-9a-fA-F]{64}")  # go hex.DecodeString into 32 bytes: either case
_DECIMAL = re.compile(r"[0-9]+")  # go strconv.ParseUint(s, 10, n): no sign, no '_', no space
_PREFIX_BITS = re.compile(r"0|[1-9][0-9]*")  # go netip.ParsePrefix: no sign, no leading zeros
_NO_KEY = bytes(32)
#: A run of plain ``allowed_ip=ADDRESS/BITS`` lines, the bulk of a large ``wg setconf``. Such a
#: run is applied by :meth:`_SetOperation.apply_allowed_ip_run` without the per-line machinery;
#: anything unusual (``\r``, ``-``, a zone, non-ASCII) does not match and goes line by line.
_ALLOWED_IP_RUN = re.compile(rb"(?:allowed_ip=[0-9A-Fa-f.:]{1,64}/(?:0|[1-9][0-9]{0,2})\n)+")
_ALLOWED_IP = b"allowed_ip="


class UapiHooks(Protocol):
    """What a ``set`` needs from the I/O adapter. Both may raise OSError (→ ``errno=-98``).

    The adapter stores the result into ``device.listen_port`` / ``device.fwmark`` itself
    (go: on a failed bind the port becomes 0; a port of 0 becomes the port actually bound).
    """

    def set_listen_port(self, port: int) -> None: ...

    def set_fwmark(self, mark: int) -> None: ...


class NullHooks:
    """Hooks without sockets: store the values into the device (for tests and the library)."""

    def __init__(self, device: Device) -> None:
        self.device = device

    def set_listen_port(self, port: int) -> None:
        self.device.listen_port = port

    def set_fwmark(self, mark: int) -> None:
        self.device.fwmark = mark


class _UapiError(Exception):
    def __init__(self, errno: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno


def _invalid(message: str) -> _UapiError:
    return _UapiError(ERRNO_INVALID, message)


# ----------------------------------------------------------------------------------- parsing


def _parse_key(value: str, what: str) -> bytes:
    if _KEY_HEX.fullmatch(value) is None:
        # never put the value into the message: it may be a secret
        raise _invalid(f"{what} is not 64 hex digits")
    return bytes.fromhex(value)


def _parse_uint(value: str, maximum: int, what: str) -> int:
    if _DECIMAL.fullmatch(value) is None:
        raise _invalid(f"{what} is not a decimal number: {value[:40]!r}")
    digits = value.lstrip("0")  # leading zeros are fine, as in go
    # check the length first: int() refuses (ValueError) strings of thousands of digits
    if len(digits) > 20 or (number := int(digits or "0")) > maximum:
        raise _invalid(f"{what} out of range: {value[:40]!r}")
    return number


def _expect_true(value: str, key: str) -> None:
    if value != "true":
        raise _invalid(f"{key}: invalid value {value[:40]!r}")


def _parse_address(text: str) -> tuple[IPv4Address | IPv6Address, str | None]:
    """go ``netip.ParseAddr``: the first of '.', ':' or '%' decides the family; an IPv6 address
    may carry a non-empty zone after the first '%'. Returns (address, zone or None)."""
    for char in text:
        if char == ".":
            try:
                return IPv4Address(text), None
            except ValueError:
                raise _invalid(f"invalid IPv4 address {text[:60]!r}") from None
        if char == ":":
            address, percent, zone = text.partition("%")
            if percent and not zone:
                raise _invalid(f"empty zone in {text[:60]!r}")
            try:
                return IPv6Address(address), (zone if percent else None)
            except ValueError:
                raise _invalid(f"invalid IPv6 address {text[:60]!r}") from None
        if char == "%":
            break
    raise _invalid(f"invalid IP address {text[:60]!r}")


def _parse_prefix(text: str) -> IPv4Network | IPv6Network:
    """go ``netip.ParsePrefix`` (current Go: no zone, no sign or leading zero in the length)."""
    address_text, slash, bits_text = text.rpartition("/")
    if not slash:
        raise _invalid(f"no '/' in allowed IP {text[:60]!r}")
    address, zone = _parse_address(address_text)
    if zone is not None:
        raise _invalid(f"zone in allowed IP {text[:60]!r}")
    if _PREFIX_BITS.fullmatch(bits_text) is None:
        raise _invalid(f"bad prefix length in {text[:60]!r}")
    bits = int(bits_text) if len(bits_text) <= 3 else 1000
    if bits > address.max_prefixlen:
        raise _invalid(f"prefix length out of range in {text[:60]!r}")
    if isinstance(address, IPv4Address):
        return IPv4Network((address, bits), strict=False)
    return IPv6Network((address, bits), strict=False)


def _parse_endpoint(text: str) -> Endpoint:
    """go ``netip.ParseAddrPort`` (newer wireguard-go's ``StdNetBind.ParseEndpoint``):
    ``a.b.c.d:port`` or ``[v6]:port`` / ``[v6%zone]:port``, numeric only, port 0-65535."""
    colon = text.rfind(":")
    if colon < 0:
        raise _invalid(f"endpoint is not ip:port: {text[:80]!r}")
    host, port_text = text[:colon], text[colon + 1 :]
    if not host or not port_text:
        raise _invalid(f"endpoint without address or port: {text[:80]!r}")
    bracketed = host[0] == "["
    if bracketed:
        if len(host) < 2 or host[-1] != "]":
            raise _invalid(f"endpoint is missing ']': {text[:80]!r}")
        host = host[1:-1]
    port = _parse_uint(port_text, 0xFFFF, "endpoint port")
    address, zone = _parse_address(host)
    if bracketed != (address.version == 6):
        raise _invalid(f"endpoint must bracket IPv6 and only IPv6: {text[:80]!r}")
    formatted = _format_address(address)
    return (formatted if zone is None else f"{formatted}%{zone}"), port


# -------------------------------------------------------------------------------- formatting


def _format_address(address: IPv4Address | IPv6Address) -> str:
    """go ``netip.Addr.String``: RFC 5952 for IPv6, except IPv4-mapped as ``::ffff:a.b.c.d``
    (Python before 3.13 would print ``::ffff:102:304``)."""
    if isinstance(address, IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return f"::ffff:{mapped}"
    return str(address)


def _format_prefix_int(version: int, address: int, length: int) -> str:
    """A prefix as go prints it (:func:`_format_address`) from integers, without making
    ``ipaddress`` objects: inet_ntop prints RFC 5952 text as go does, except
    for the addresses whose first 96 bits are zero, which glibc prints with an embedded IPv4
    address; those (and the mapped ones) go through :func:`_format_address`."""
    if version == 4:
        return f"{socket.inet_ntop(socket.AF_INET, address.to_bytes(4, 'big'))}/{length}"
    if address >> 32 in (0, 0xFFFF):
        return f"{_format_address(IPv6Address(address))}/{length}"
    return f"{socket.inet_ntop(socket.AF_INET6, address.to_bytes(16, 'big'))}/{length}"


def _format_endpoint(endpoint: Endpoint) -> str:
    host, port = endpoint
    text, percent, zone = host.partition("%")
    try:
        address: IPv4Address | IPv6Address = IPv6Address(text) if ":" in text else IPv4Address(text)
    except ValueError:  # not ours: an adapter stored something odd; show it as it is
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if address.version == 4 and not percent:
        return f"{address}:{port}"
    return f"[{_format_address(address)}{percent}{zone}]:{port}"


def _handshake_time(wall: float) -> tuple[int, int]:
    """(seconds, nanoseconds) of a Unix time; (0, 0) for 'never' (0 or less)."""
    if not wall > 0.0:
        return 0, 0
    seconds = math.floor(wall)
    nanoseconds = round((wall - seconds) * 1e9)
    if nanoseconds >= 1_000_000_000:
        seconds, nanoseconds = seconds + 1, nanoseconds - 1_000_000_000
    return seconds, nanoseconds


# ----------------------------------------------------------------------------------------- get


def handle_get(device: Device) -> str:
    """The complete response to ``get=1``, ending with ``errno=0`` and an empty line.

    Order as go: ``private_key`` (omitted without a key), ``listen_port`` and ``fwmark``
    (omitted when 0), then per peer ``public_key``, ``preshared_key`` (zeros when none),
    ``protocol_version=1``, ``endpoint`` (omitted when unknown), ``last_handshake_time_sec``,
    ``last_handshake_time_nsec``, ``tx_bytes``, ``rx_bytes``, ``persistent_keepalive_interval``
    and one ``allowed_ip`` per entry in list order. Peers come in creation order (go: random).
    """
    lines: list[str] = []
    add = lines.append
    if device.private_key is not None and device.private_key != _NO_KEY:
        add(f"private_key={device.private_key.hex()}")
    if device.listen_port:
        add(f"listen_port={device.listen_port}")
    if device.fwmark:
        add(f"fwmark={device.fwmark}")
    for peer in device.peers.values():
        add(f"public_key={peer.public_key.hex()}")
        add(f"preshared_key={peer.preshared_key.hex()}")
        add("protocol_version=1")
        if peer.endpoint is not None:
            add(f"endpoint={_format_endpoint(peer.endpoint)}")
        seconds, nanoseconds = _handshake_time(peer.last_handshake_wall)
        add(f"last_handshake_time_sec={seconds}")
        add(f"last_handshake_time_nsec={nanoseconds}")
        add(f"tx_bytes={peer.tx_bytes}")
        add(f"rx_bytes={peer.rx_bytes}")
        add(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        for version, address, length in device.allowed_ips.entries_int(peer):
            add(f"allowed_ip={_format_prefix_int(version, address, length)}")
    add("errno=0")
    return "\n".join(lines) + "\n\n"


# ----------------------------------------------------------------------------------------- set


class _SetOperation:
    """One ``set=1`` operation, applied line by line as go does.

    Lines before the first ``public_key`` are device keys; each ``public_key`` ends the previous
    peer section and opens a new one. A section whose peer is our own key, or that ``remove`` /
    ``update_only`` turned off, still has its values checked (errors are reported) but nothing
    is applied. At the end of each section (next ``public_key``, blank line, end of input or an
    overlong line, but *not* after an error — as in go) :meth:`Device.peer_configured` runs.
    """

    def __init__(self, device: Device, hooks: UapiHooks) -> None:
        self._device = device
        self._hooks = hooks
        self._device_section = True
        self._peer: Peer | None = None  # the peer being configured; None: none or ignored
        self._created = False  # the peer was created by this section (for update_only)
        self._keepalive_on = False  # go's pkaOn: this section turned keepalive on from 0

    def apply(self, line: str, now: float) -> int:
        """Apply one non-blank line: 0, or a negative errno (the operation is then over)."""
        try:
            self._apply(line, now)
        except _UapiError as error:
            _log.error("UAPI set: %s (errno=%d)", error, error.errno)
            return error.errno
        except Exception:
            _log.exception("UAPI set: unexpected failure on a %r line", line.partition("=")[0])
            return ERRNO_UNKNOWN
        return 0

    def finish(self, now: float) -> int:
        """End of the operation (blank line, end of input): close the last peer section."""
        try:
            self._end_section(now)
        except Exception:
            _log.exception("UAPI set: unexpected failure finishing a peer section")
            return ERRNO_UNKNOWN
        return 0

    def apply_allowed_ip_run(self, run: bytes, now: float) -> tuple[int, int]:
        """Apply a run of lines matched by ``_ALLOWED_IP_RUN`` (each ends with ``\\n``).

        Returns (bytes consumed, errno): all of ``run`` and 0, or up to and including the
        first line in error and its errno (the operation is then over). Well-formed lines
        are read straight into integers by :func:`wgpy.batch.parse_prefixes` (inet_pton) and
        inserted by :meth:`AllowedIPs.insert_run`; a line it does not take is re-run through
        :meth:`apply`, which either accepts it or reports go's error for it.
        """
        at = 0
        while at < len(run):
            # in the device section allowed_ip is an invalid key: the exact path says so
            if not self._device_section:
                at, _, runs = batch.parse_prefixes(run, at)
                if self._peer is not None:
                    for version, length, addresses in runs:
                        self._device.allowed_ips.insert_run(version, length, addresses, self._peer)
            if at < len(run):
                end = run.index(b"\n", at)
                # the exact path decides, and reports
                errno = self.apply(run[at:end].decode("ascii"), now)
                at = end + 1
                if errno:
                    return at, errno
        return len(run), 0

    def _apply(self, line: str, now: float) -> None:
        key, equals, value = line.partition("=")
        if not equals:
            raise _UapiError(ERRNO_PROTOCOL, f"line without '=': {line[:40]!r}")
        if key == "public_key":
            self._end_section(now)
            self._device_section = False
            self._begin_section(value)
        elif self._device_section:
            self._device_line(key, value, now)
        else:
            self._peer_line(key, value, now)

    def _device_line(self, key: str, value: str, now: float) -> None:
        device = self._device
        if key == "private_key":
            # all zeros removes the key; the device clamps, ignores an unchanged key and drops
            # a peer holding the new public key
            device.set_private_key(_parse_key(value, key), now)
        elif key == "listen_port":
            port = _parse_uint(value, 0xFFFF, key)
            try:
                self._hooks.set_listen_port(port)
            except OSError as error:
                raise _UapiError(ERRNO_PORT_IN_USE, f"listen_port {port}: {error}") from error
        elif key == "fwmark":
            mark = _parse_uint(value, 0xFFFF_FFFF, key)
            try:
                self._hooks.set_fwmark(mark)
            except OSError as error:
                raise _UapiError(ERRNO_PORT_IN_USE, f"fwmark {mark}: {error}") from error
        elif key == "replace_peers":
            _expect_true(value, key)
            device.remove_all_peers(now)
        else:
            raise _invalid(f"invalid UAPI device key: {key[:40]!r}")

    def _begin_section(self, value: str) -> None:
        public_key = _parse_key(value, "public_key")
        self._peer = None
        self._created = False
        self._keepalive_on = False
        device = self._device
        if device.public_key is not None and public_key == device.public_key:
            return  # our own key: the section is ignored (go, kernel)
        peer = device.peers.get(public_key)
        if peer is None:
            if len(device.peers) >= MAX_PEERS:
                raise _invalid("too many peers")
            peer = device.add_peer(public_key)
            self._created = True
        self._peer = peer

    def _end_section(self, now: float) -> None:
        peer, self._peer = self._peer, None
        if peer is None:
            return
        device = self._device
        if self._keepalive_on and device.is_up:
            # go sends the keepalive that turning persistent keepalive on implies only now, at
            # the end of the section, so that an endpoint given after the interval is used.
            # Going through 0 makes the device send it.
            interval = peer.persistent_keepalive
            device.set_persistent_keepalive(peer, 0, now)
            device.set_persistent_keepalive(peer, interval, now)
        device.peer_configured(peer, now)

    def _peer_line(self, key: str, value: str, now: float) -> None:
        device = self._device
        peer = self._peer
        if key == "update_only":
            _expect_true(value, key)
            if self._created and peer is not None:
                device.remove_peer(peer, now)
                self._peer = None
        elif key == "remove":
            _expect_true(value, key)
            if peer is not None:
                device.remove_peer(peer, now)
            self._peer = None
        elif key == "preshared_key":
            psk = _parse_key(value, key)
            if peer is not None:
                device.set_preshared_key(peer, None if psk == _NO_KEY else psk)
        elif key == "endpoint":
            endpoint = _parse_endpoint(value)
            if peer is not None:
                device.set_endpoint(peer, endpoint)
        elif key == "persistent_keepalive_interval":
            interval = _parse_uint(value, 0xFFFF, key)
            if peer is not None:
                # as go: recomputed on every such line, so "25" then "30" sends nothing
                self._keepalive_on = peer.persistent_keepalive == 0 and interval != 0
                if self._keepalive_on:
                    # store only; the keepalive goes out at the end of the section
                    peer.persistent_keepalive = interval
                else:
                    device.set_persistent_keepalive(peer, interval, now)  # never sends here
        elif key == "replace_allowed_ips":
            _expect_true(value, key)
            if peer is not None:
                device.allowed_ips.remove_by_peer(peer)
        elif key == "allowed_ip":
            # a leading '-' removes the prefix if this peer holds it (go ≥ 0.0.20250522)
            remove = value.startswith("-")
            prefix = _parse_prefix(value[1:] if remove else value)
            if peer is not None:
                if remove:
                    device.allowed_ips.remove(prefix, peer)
                else:
                    device.allowed_ips.insert(prefix, peer)
        elif key == "protocol_version":
            if value != "1":
                raise _invalid(f"invalid protocol version: {value[:40]!r}")
        else:
            raise _invalid(f"invalid UAPI peer key: {key[:40]!r}")


def handle_set(device: Device, body: Iterable[str], now: float, hooks: UapiHooks) -> int:
    """Apply the lines of a ``set=1`` request (those after ``set=1``, without the terminating
    blank line, without line ends); returns 0 or a negative errno.

    Lines are applied in order as they come; the first error stops processing and earlier
    lines stay applied (go). A blank line in ``body`` ends the operation there, as it would on
    the wire.
    """
    operation = _SetOperation(device, hooks)
    for line in body:
        if not line:
            break
        errno = operation.apply(line, now)
        if errno:
            return errno
    return operation.finish(now)


# ---------------------------------------------------------------------------------- connection


class _State(enum.Enum):
    OPERATION = enum.auto()  # waiting for an operation line
    GET = enum.auto()  # after "get=1\n": the next byte must be "\n"
    SET = enum.auto()  # inside a set body
    SKIP = enum.auto()  # after a set error: skipping to the end of that request


def _reply(errno: int) -> bytes:
    return b"errno=%d\n\n" % errno


class UapiConnection:
    """Incremental parser for one UAPI connection: ``feed`` bytes, write back the result.

    Follows go's ``IpcHandle``: any number of operations in sequence; an operation line other
    than ``get=1`` / ``set=1`` (exact bytes, ``\\n``-terminated) closes the connection without
    a reply; after ``get=1\\n`` the next byte must be ``\\n``, else ``errno=-22`` is answered and
    parsing goes on with the byte after it (as go, which consumed exactly that byte). Set bodies
    are applied line by line as they arrive (so nothing accumulates) with go's line splitting: a
    ``\\r`` before the ``\\n`` is dropped, so ``\\r\\n`` alone also ends the request.

    When :attr:`closed` becomes true, write what the call returned, then close; later calls
    return nothing.

    Differences from go, all where go's behaviour depends on how the bytes were split into
    reads (go's scanner reads ahead of the set body):

    * after a ``set`` error, the rest of that request up to its blank line is skipped and the
      connection stays usable. go does the same when the whole request had arrived already
      (the usual case, ``wg`` writes it at once); when the rest arrives later go reads it as
      operation lines and closes.
    * bytes after the blank line of a ``set`` are kept for the next operation; go loses them
      when they came in the same read (and the client then waits forever).

    Limits, so that a client cannot make us buffer without bound:

    * a set body line of :data:`MAX_LINE` bytes or more (counting a ``\\r`` but not the
      ``\\n``) ends the operation as go's scanner does: the current peer section is finished,
      ``errno=-5`` is answered and the connection is closed (go reads the rest of the line as
      an unknown operation and closes).
    * an operation line that reaches :data:`MAX_LINE` bytes without ``\\n`` closes the
      connection without a reply — what go does once the ``\\n`` arrives (it would buffer
      until then).
    * the lines skipped after an error are never buffered.
    """

    def __init__(self, device: Device, hooks: UapiHooks, clock: Callable[[], float]) -> None:
        self._device = device
        self._hooks = hooks
        self._clock = clock
        self._buffer = bytearray()
        self._state = _State.OPERATION
        self._operation: _SetOperation | None = None
        self._skip_dirty = False  # the skipped line so far is neither "" nor "\r"
        self.closed = False

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the end of a line (at most :data:`MAX_LINE`)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> bytes:
        """Process received bytes; returns the bytes to send back (possibly empty)."""
        if self.closed:
            return b""
        out = bytearray()
        buffer = self._buffer
        buffer += data
        pos = 0
        end = len(buffer)
        while pos < end and not self.closed:
            if self._state is _State.GET:
                byte = buffer[pos]
                pos += 1
                self._state = _State.OPERATION
                if byte == 0x0A:
                    out += handle_get(self._device).encode("utf-8", "surrogateescape")
                else:
                    _log.error("UAPI get: trailing character %r", bytes([byte]))
                    out += _reply(ERRNO_INVALID)
                continue
            if self._state is _State.SET and buffer.startswith(_ALLOWED_IP, pos):
                run = _ALLOWED_IP_RUN.match(buffer, pos)
                if run is not None:
                    pos = self._allowed_ip_run(buffer, pos, run.end(), out)
                    continue
            newline = buffer.find(b"\n", pos)
            if newline < 0:
                break
            self._line(buffer, pos, newline, out)
            pos = newline + 1
        del buffer[:pos]
        if not self.closed:
            self._limit_partial_line(out)
        if self.closed:
            buffer.clear()
        return bytes(out)

    def feed_eof(self) -> bytes:
        """The client shut down its sending side: finish as go does and mark closed.

        An unterminated ``set`` is completed (its last partial line applied) and answered; a
        partial operation line or a ``get=1\\n`` without its second ``\\n`` gets no reply.
        """
        if self.closed:
            return b""
        self.closed = True
        out = b""
        operation = self._operation
        if self._state is _State.SET and operation is not None:
            line = bytes(self._buffer)
            if line.endswith(b"\r"):
                line = line[:-1]
            errno = operation.apply(self._text(line), self._clock()) if line else 0
            out = _reply(errno if errno else operation.finish(self._clock()))
        self._buffer.clear()
        self._operation = None
        return out

    @staticmethod
    def _text(line: bytes) -> str:
        # lossless: bytes that are not UTF-8 survive (as surrogates) and match no valid value
        return line.decode("utf-8", "surrogateescape")

    def _line(self, buffer: bytearray, start: int, newline: int, out: bytearray) -> None:
        """Handle the complete line ``buffer[start:newline]`` (without its ``\\n``)."""
        state = self._state
        length = newline - start
        if state is _State.OPERATION:
            operation = bytes(buffer[start:newline]) if length == 5 else b""
            if operation == b"get=1":
                self._state = _State.GET
            elif operation == b"set=1":
                self._state = _State.SET
                self._operation = _SetOperation(self._device, self._hooks)
            else:
                _log.error("UAPI: invalid operation, closing the connection")
                self.closed = True
        elif state is _State.SET:
            operation_ = self._operation
            assert operation_ is not None
            if length >= MAX_LINE:
                self._overlong(out)
                return
            if length and buffer[newline - 1] == 0x0D:
                newline -= 1  # go's ScanLines drops one "\r" before the "\n"
            if newline == start:  # blank line: the request is complete
                out += _reply(operation_.finish(self._clock()))
                self._state = _State.OPERATION
                self._operation = None
                return
            errno = operation_.apply(self._text(bytes(buffer[start:newline])), self._clock())
            if errno:
                self._fail(errno, out)
        elif state is _State.SKIP:
            line_is_blank = not self._skip_dirty and (
                length == 0 or (length == 1 and buffer[start] == 0x0D)
            )
            self._skip_dirty = False
            if line_is_blank:
                self._state = _State.OPERATION

    def _allowed_ip_run(self, buffer: bytearray, start: int, end: int, out: bytearray) -> int:
        """Apply ``buffer[start:end]``, a run of allowed_ip lines; returns where to go on."""
        operation = self._operation
        assert operation is not None
        consumed, errno = operation.apply_allowed_ip_run(bytes(buffer[start:end]), self._clock())
        if errno:
            self._fail(errno, out)
        return start + consumed

    def _fail(self, errno: int, out: bytearray) -> None:
        """A set line failed: answer with its errno and skip the rest of the request."""
        out += _reply(errno)
        self._state = _State.SKIP
        self._operation = None
        self._skip_dirty = False

    def _limit_partial_line(self, out: bytearray) -> None:
        """Bound what waits in the buffer for its ``\\n`` (see the class docstring)."""
        pending = len(self._buffer)
        if self._state is _State.SKIP:
            if pending > 1:  # longer than "\r": the line is not blank; forget its bytes
                self._skip_dirty = True
                self._buffer.clear()
        elif pending >= MAX_LINE:
            if self._state is _State.SET:
                self._overlong(out)
            else:
                _log.error("UAPI: operation line too long, closing the connection")
                self.closed = True

    def _overlong(self, out: bytearray) -> None:
        operation = self._operation
        assert operation is not None
        _log.error("UAPI set: line of %d bytes or more, closing the connection", MAX_LINE)
        operation.finish(self._clock())  # go's scanner stops and the section ends normally
        out += _reply(ERRNO_IO)
        self._operation = None
        self.closed = True
