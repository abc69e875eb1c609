"""The per-byte work of data messages over a whole batch: the C accelerator or its twin.

Six calls, each with a C implementation (``wgpy/_batch*.c``, the GIL released over the byte
work; the AEAD is OpenSSL's ChaCha20-Poly1305) and a pure-Python twin here (``cryptography``,
:mod:`wgpy.offload`), held byte for byte equal by tests/unit/test_batch_twins.py,
test_open_run_twins.py, test_cutseal_twins.py, test_coalesce_twins.py and
test_parse_prefixes_twins.py:

- :func:`seal_run`: a run of plaintext packets to one peer sealed into data messages (header,
  counter, padding, AEAD), laid out as UDP GSO runs;
- :func:`open_batch`: data messages on one keypair opened, each with its counter and its
  plaintext or why not;
- :func:`open_run`: the common case of a receive batch on one keypair: opened, accepted by the
  replay window (its rules applied in place) and trimmed, up to the first unusual datagram;
- :func:`seal_super`: a TCP super-packet from the TUN cut into its segments
  (:func:`wgpy.offload.split`) and sealed as :func:`seal_run` would (C: straight into the run
  buffers, no object per segment; twin tests in tests/unit/test_cutseal_twins.py);
- :func:`parse_prefixes`: the ``allowed_ip`` lines of a UAPI set (``wg setconf`` sends them in
  hundreds of thousands) read into runs of integers (``wgpy/_batch_prefixes.c``, inet_pton);
- :func:`coalesce`: decrypted packets glued into GRO TUN writes (``wgpy/_batch_coalesce.c``;
  the twin is :func:`wgpy.offload.coalesce`, held equal by tests/unit/test_coalesce_twins.py).

They decide nothing: the caller has chosen the peer, checked that the counters may be used,
and does the replay check (but :func:`open_run`'s, which only records counters the kernel would
accept), the timers and every drop.

The C path is used when the extension was built, unless ``WGPY_PURE=1``; :data:`ACTIVE` says
which (``wgpy --version`` and wgpyd's start line print it).
"""

from __future__ import annotations

import os
import re
import socket
import struct
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Final, overload

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from wgpy import offload
from wgpy.messages import padded_length
from wgpy.offload import GSO_ECN, GSO_TCPV4, GSO_TCPV6, VNET_HDR_LEN, OffloadError, split
from wgpy.replay import ReplayWindow

#: What the calls take as bytes.
Buffer = bytes | bytearray | memoryview
#: :func:`seal_run`'s result: the runs as ``(data, size)`` (``size`` 0 for a run of one
#: datagram, else each datagram's size, the last may be shorter), the datagrams that carry a
#: WireGuard message (each alone, not to be fragmented), and the bytes of all of them.
SealedRun = tuple[list[tuple[bytes | bytearray, int]], list[bytes], int]
#: :func:`open_batch`'s result: one counter and one result per datagram opened, a result
#: being the plaintext or a status (:data:`SHORT`, :data:`BAD_TAG`, :data:`FOREIGN`).
OpenedBatch = tuple[list[int], list[bytes | int]]

#: :func:`seal_super`'s result: :data:`SealedRun` and the number of segments sealed.
SealedSuper = tuple[list[tuple[bytes | bytearray, int]], list[bytes], int, int]
#: :func:`parse_prefixes`'s result: the byte offset of the first line not taken, how many
#: lines were taken, and the prefixes as runs of one version and length: ``(version, length,
#: addresses)``, addresses as integers.
ParsedPrefixes = tuple[int, int, list[tuple[int, int, list[int]]]]
#: :func:`coalesce`'s result: TUN writes (a virtio-net header and a packet or a GSO
#: super-packet), each with the packets it holds.
Coalesced = list[tuple[bytes, list[bytes]]]
#: :func:`open_run`'s result: the index of the first datagram not taken, the IP packets of
#: the ones taken (trimmed to their IP length), where their source address changes (the
#: index in the packets and the source's 4 or 16 bytes), and the bytes of the datagrams taken.
OpenedRun = tuple[int, list[bytes], list[tuple[int, bytes]], int]

#: Statuses of :func:`open_batch` (OK is never in a result: the plaintext is).
OK: Final = 0
SHORT: Final = 1
BAD_TAG: Final = 2
FOREIGN: Final = 3

_TYPE_DATA: Final = 4
_OVERHEAD: Final = 32
_RUN_MAX_DATAGRAMS: Final = 64
_RUN_MAX_BYTES: Final = 65000
#: Below this size a datagram is never fragmented (576 is IPv4's minimum MTU), so whether a
#: packet carries WireGuard (:func:`carries_wireguard`) only matters above it.
NESTED_CHECK_MIN: Final = 576 - 60
_MAX_PLAINTEXT: Final = 1 << 30
_LAST: Final = 2**64 - 1
_HEADER: Final = struct.Struct("<IIQ")
_NONCE: Final = struct.Struct("<4xQ")


class Segments(Sequence[bytes]):
    """The datagrams of one UDP GRO read: ``data`` cut every ``size`` bytes (the last may be
    shorter). A datagram becomes a ``bytes`` object only when asked for by index; the C batch
    calls (:func:`open_run`, :func:`open_batch`) read them straight from ``data``."""

    __slots__ = ("_count", "data", "size")

    def __init__(self, data: bytes, size: int) -> None:
        if size <= 0:
            raise ValueError("the segment size must be positive")
        self.data = data
        self.size = size
        self._count = -(-len(data) // size)

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("segment index out of range")
        start = index * self.size
        return self.data[start : start + self.size]

    def __repr__(self) -> str:
        return f"Segments({len(self.data)} bytes, every {self.size})"


def carries_wireguard(packet: Buffer) -> bool:
    """Whether an inner packet is a UDP datagram (a first fragment) holding a WireGuard
    message: type 1-4 and three zero bytes."""
    version = packet[0] >> 4
    if version == 4:
        if len(packet) < 20 or packet[9] != 17 or packet[6] & 0x1F or packet[7]:
            return False
        offset = (packet[0] & 0x0F) * 4 + 8
    elif version == 6:
        if len(packet) < 40 or packet[6] != 17:
            return False
        offset = 48
    else:
        return False
    header = bytes(packet[offset : offset + 4])
    return len(header) == 4 and 1 <= header[0] <= 4 and header[1:] == b"\0\0\0"


def pure_seal_run(
    key: Buffer,
    receiver: int,
    counter: int,
    packets: Sequence[Buffer],
    mtu: int,
    limits: Sequence[int] | None = None,
) -> SealedRun:
    """Data messages for ``packets``, counters ``counter``, ``counter + 1``, ... in order.

    Each plaintext is padded to a multiple of 16, never past its limit (``limits[i]``, else
    ``mtu``; see :func:`wgpy.messages.padded_length`). The datagrams are written back to back
    into one buffer per run of equal sizes (a shorter one ends a run; at most 64 datagrams and
    65,000 bytes: one UDP GSO send each); a packet of 516 bytes or more that carries a
    WireGuard message gets a datagram of its own in the second list."""
    if len(key) != 32:
        raise ValueError("the key must be 32 bytes")
    if not 0 <= receiver < 2**32:
        raise ValueError("the receiver index is a 32-bit number")
    if limits is not None and len(limits) != len(packets):
        raise ValueError("one limit per packet")
    if counter + len(packets) > _LAST:
        raise OverflowError("the counters would wrap")
    cipher = ChaCha20Poly1305(bytes(key))
    encrypt_into, encrypt = cipher.encrypt_into, cipher.encrypt
    pack_header = _HEADER.pack_into
    pack_nonce = _NONCE.pack
    runs: list[tuple[bytes | bytearray, int]] = []
    singles: list[bytes] = []
    buffer = bytearray()
    view = memoryview(buffer)
    run_size = used = count = capacity = sent = 0
    for index, packet in enumerate(packets):
        size = len(packet)
        if size > _MAX_PLAINTEXT:
            raise ValueError("a packet is too large")
        padded = padded_length(size, mtu if limits is None else limits[index])
        if padded != size:
            packet = bytes(packet) + bytes(padded - size)
        length = padded + _OVERHEAD
        if size >= NESTED_CHECK_MIN and carries_wireguard(packet):
            single = _HEADER.pack(_TYPE_DATA, receiver, counter)
            singles.append(single + encrypt(pack_nonce(counter), bytes(packet), None))
            counter += 1
            sent += length
            continue
        if length > run_size or count == capacity:
            view.release()
            if used:
                del buffer[used:]
                runs.append((buffer, run_size if used > run_size else 0))
            run_size = length
            capacity = max(1, min(_RUN_MAX_DATAGRAMS, _RUN_MAX_BYTES // length))
            buffer = bytearray(capacity * length)
            view = memoryview(buffer)
            used = count = 0
        pack_header(buffer, used, _TYPE_DATA, receiver, counter)
        end = used + length
        encrypt_into(pack_nonce(counter), packet, None, view[used + 16 : end])
        used = end
        count += 1
        counter += 1
        sent += length
        if length < run_size:
            count = capacity  # a shorter datagram ends a run
    view.release()
    if used:
        del buffer[used:]
        runs.append((buffer, run_size if used > run_size else 0))
    return runs, singles, sent


def pure_open_batch(
    key: Buffer, datagrams: Sequence[Buffer], receiver: int = -1, limit: int = _LAST
) -> OpenedBatch:
    """Each of ``datagrams`` opened in order: its counter (0 if it is short) and its plaintext,
    or :data:`BAD_TAG` when it does not authenticate under ``key``.

    The batch ends with the first datagram that is shorter than a data message (:data:`SHORT`)
    or is not one for ``receiver`` (any, if negative) with a counter below ``limit``
    (:data:`FOREIGN`): that one's status is the last result. No replay check here."""
    if len(key) != 32:
        raise ValueError("the key must be 32 bytes")
    decrypt = ChaCha20Poly1305(bytes(key)).decrypt
    counters: list[int] = []
    results: list[bytes | int] = []
    for datagram in datagrams:
        if len(datagram) < _OVERHEAD:
            counters.append(0)
            results.append(SHORT)
            break
        counter = int.from_bytes(datagram[8:16], "little")
        counters.append(counter)
        if (
            int.from_bytes(datagram[0:4], "little") != _TYPE_DATA
            or (receiver >= 0 and int.from_bytes(datagram[4:8], "little") != receiver)
            or counter >= limit
            or len(datagram) - _OVERHEAD > _MAX_PLAINTEXT
        ):
            results.append(FOREIGN)
            break
        try:
            results.append(decrypt(bytes(4) + datagram[8:16], bytes(datagram[16:]), None))
        except InvalidTag:
            results.append(BAD_TAG)
    return counters, results


def pure_seal_super(
    key: Buffer, receiver: int, counter: int, frame: Buffer, mtu: int, limit: int
) -> SealedSuper | None:
    """A TCP TSO super-packet read from the TUN (``frame``: virtio-net header, one IP and TCP
    header, the payload) cut and sealed: :func:`pure_seal_run` of its segments
    (:func:`wgpy.offload.split`), counters from ``counter``, and how many there are.

    None, with nothing done, when ``frame`` is not one this call takes: a gso_type other than
    TCPV4 or TCPV6 (with or without the ECN bit), anything :func:`~wgpy.offload.split` refuses
    (OffloadError), a payload of one segment or none, or counters past ``limit``
    (``counter + segments > limit``). Bad arguments raise as :func:`pure_seal_run` does:
    ValueError for the key or the receiver, OverflowError for a counter or limit that is not a
    64-bit unsigned number."""
    if len(key) != 32:
        raise ValueError("the key must be 32 bytes")
    if not 0 <= receiver < 2**32:
        raise ValueError("the receiver index is a 32-bit number")
    if not 0 <= counter <= _LAST or not 0 <= limit <= _LAST:
        raise OverflowError("a counter is a 64-bit unsigned number")
    if len(frame) < VNET_HDR_LEN or frame[1] & ~GSO_ECN not in (GSO_TCPV4, GSO_TCPV6):
        return None
    try:
        segments = split(frame)
    except OffloadError:
        return None
    count = len(segments)
    if count < 2 or counter + count > limit:
        return None
    runs, singles, sent = pure_seal_run(key, receiver, counter, segments, mtu)
    return runs, singles, sent, count


def _ip_shape(packet: bytes) -> tuple[int, bytes] | None:
    """The IP length and source address of a plaintext that is a well-formed IPv4 or IPv6
    packet (what the device's delivery accepts before its source check), else None."""
    size = len(packet)
    version = packet[0] >> 4 if size else 0
    if version == 4 and size >= 20:
        length = (packet[2] << 8) | packet[3]
        return (length, packet[12:16]) if 20 <= length <= size else None
    if version == 6 and size >= 40:
        length = 40 + ((packet[4] << 8) | packet[5])
        return (length, packet[8:24]) if length <= size else None
    return None


def pure_open_run(
    key: Buffer,
    datagrams: Sequence[Buffer],
    start: int,
    receiver: int,
    limit: int,
    window: ReplayWindow,
) -> OpenedRun:
    """The data messages from ``datagrams[start]`` on, each opened, its counter accepted by
    ``window`` (recorded there) and its plaintext trimmed to its IP length, up to the first
    that is anything else: shorter than a data message or a keepalive (no plaintext), not a
    data message for ``receiver`` with a counter below ``limit`` (< 2**64), not authentic
    under ``key``, not a well-formed IPv4 or IPv6 packet, or refused by ``window``. That one
    and the window are left as they were for it, for the caller's full path, which says why.

    The caller decides the rest per run of one source: whether the source belongs to the
    peer (cryptokey routing), the timers, and the drops."""
    if len(key) != 32:
        raise ValueError("the key must be 32 bytes")
    if not 0 <= receiver < 2**32:
        raise ValueError("the receiver index is a 32-bit number")
    if not 0 <= start <= len(datagrams):
        raise IndexError("start is outside the datagrams")
    decrypt = ChaCha20Poly1305(bytes(key)).decrypt
    accept = window.accept
    packets: list[bytes] = []
    sources: list[tuple[int, bytes]] = []
    last_source = b""
    received = 0
    index = start
    while index < len(datagrams):
        datagram = datagrams[index]
        size = len(datagram)
        if size <= _OVERHEAD or size - _OVERHEAD > _MAX_PLAINTEXT:
            break
        kind, to, counter = _HEADER.unpack_from(datagram)
        if kind != _TYPE_DATA or to != receiver or counter >= limit:
            break
        try:
            plaintext = decrypt(_NONCE.pack(counter), bytes(datagram[16:]), None)
        except InvalidTag:
            break
        shape = _ip_shape(plaintext)
        if shape is None or not accept(counter):
            break
        length, source = shape
        if source != last_source:
            sources.append((len(packets), source))
            last_source = source
        packets.append(plaintext if length == len(plaintext) else plaintext[:length])
        received += size
        index += 1
    return index, packets, sources, received


def pure_coalesce(packets: Iterable[bytes], *, udp: bool = False) -> Coalesced:
    """TUN writes gluing consecutive decrypted packets of one TCP (or, with ``udp``, UDP)
    flow: :func:`wgpy.offload.coalesce`, which gives the rules, for packets that are all
    ``bytes`` (anything else raises TypeError, as the C call does)."""
    taken = list(packets)
    for packet in taken:
        if not isinstance(packet, bytes):
            raise TypeError(f"packets must be bytes, not {type(packet).__name__}")
    return offload.coalesce(taken, udp=udp)


_PREFIX_LINE: Final = re.compile(rb"allowed_ip=([0-9A-Fa-f.:]{1,64})/([0-9]{1,3})\n")


def pure_parse_prefixes(run: Buffer, start: int) -> ParsedPrefixes:
    """The UAPI lines ``allowed_ip=ADDRESS/LENGTH`` of ``run`` from byte ``start`` on, read
    into runs of integers for :meth:`wgpy.allowedips.AllowedIPs.insert_run`, up to the first
    line that is not one with a well-formed prefix: an address of at most 64 characters of
    ``[0-9A-Fa-f.:]`` that inet_pton reads (IPv6 if it has a colon), a length of 1-3 digits no
    longer than the address's. That line is left to the caller's exact path (wgpy.uapi), which
    accepts it or reports go's error for it."""
    data = bytes(run)
    if not 0 <= start <= len(data):
        raise IndexError("start is outside the run")
    pton, from_bytes = socket.inet_pton, int.from_bytes
    runs: list[tuple[int, int, list[int]]] = []
    current: list[int] = []
    run_version = run_length = -1
    count = 0
    at = start
    while at < len(data):
        line = _PREFIX_LINE.match(data, at)
        if line is None:
            break
        address, length = line.group(1).decode("ascii"), int(line.group(2))
        version = 6 if ":" in address else 4
        if length > (128 if version == 6 else 32):
            break
        try:
            value = from_bytes(pton(socket.AF_INET6 if version == 6 else socket.AF_INET, address))
        except OSError:
            break
        if version != run_version or length != run_length:
            current = []
            runs.append((version, length, current))
            run_version, run_length = version, length
        current.append(value)
        count += 1
        at = line.end()
    return at, count, runs


def _choose() -> tuple[str, ModuleType | None]:
    if os.environ.get("WGPY_PURE") == "1":
        return "pure-Python batch path: WGPY_PURE=1", None
    try:
        import wgpy._batch as _batch
    except ImportError:
        return "pure-Python batch path: the C extension wgpy._batch is not built", None
    return f"C batch path: wgpy._batch, {_batch.OPENSSL_VERSION}", _batch


#: Which path is in use, in words.
ACTIVE: str
ACTIVE, _module = _choose()
#: Whether the C path is in use.
ACCELERATED: Final = _module is not None

seal_run = pure_seal_run if _module is None else _module.seal_run
open_batch = pure_open_batch if _module is None else _module.open_batch
open_run = pure_open_run if _module is None else _module.open_run
seal_super = pure_seal_super if _module is None else _module.seal_super
coalesce = pure_coalesce if _module is None else _module.coalesce
parse_prefixes = pure_parse_prefixes if _module is None else _module.parse_prefixes
