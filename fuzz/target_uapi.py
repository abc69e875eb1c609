"""Fuzz target: the UAPI request parser, ``UapiConnection.feed`` with arbitrary chunking.

The input's first byte seeds how the rest is cut into ``feed`` calls (1 to 64 bytes, or all at
once); the connection may end with ``feed_eof``. A fresh device per input (a little state is
preset so that ``get`` has something to render and ``remove``/``update_only`` have targets).

Invariants: no exception; everything answered is a sequence of complete responses, each ending
in ``errno=N`` and a blank line with N one of the errnos wireguard-go uses; never more than
MAX_LINE bytes are held back; the device stays within MAX_PEERS; feeding after ``closed``
answers nothing. Differential: the same input fed with the bulk ``allowed_ip`` path turned off
(every line through the exact per-line path) gives the same answers, peers and allowed IPs in
the same order.
"""

from __future__ import annotations

import random
import re

from wgpy import crypto, uapi
from wgpy.device import Device
from wgpy.uapi import (
    ERRNO_INVALID,
    ERRNO_IO,
    ERRNO_PORT_IN_USE,
    ERRNO_PROTOCOL,
    ERRNO_UNKNOWN,
    MAX_LINE,
    MAX_PEERS,
    NullHooks,
    UapiConnection,
)

_ERRNOS = {0, ERRNO_IO, ERRNO_INVALID, ERRNO_UNKNOWN, ERRNO_PROTOCOL, ERRNO_PORT_IN_USE}
_RESPONSE = re.compile(rb"(?:[^\n]+\n)*?errno=(-?[0-9]+)\n\n")
_PEER_PRIVATE = bytes(range(1, 33))
_PEER_PUBLIC = crypto.public_key(crypto.clamp(_PEER_PRIVATE))
_OWN_PRIVATE = bytes(range(33, 65))


class _FailingHooks(NullHooks):
    def set_listen_port(self, port: int) -> None:
        if port == 1:
            raise OSError(98, "address in use")
        super().set_listen_port(port)


def _check_output(out: bytes) -> None:
    pos = 0
    while pos < len(out):
        match = _RESPONSE.match(out, pos)
        assert match is not None, f"malformed response {out[pos : pos + 200]!r}"
        assert int(match.group(1)) in _ERRNOS, match.group(0)[-40:]
        pos = match.end()


_NEVER = re.compile(rb"(?!)")


def _run(data: bytes) -> tuple[bytes, list[tuple[bytes, list[str]]]]:
    """Feed ``data`` (first byte: chunking) to a fresh device; (answers, peers' prefixes)."""
    device = Device(_OWN_PRIVATE)
    peer = device.add_peer(_PEER_PUBLIC)
    assert peer is not None
    device.allowed_ips.insert("10.0.0.2/32", peer)
    connection = UapiConnection(device, _FailingHooks(device), lambda: 1000.0)
    if not data:
        assert connection.feed_eof() == b""
        return b"", []
    rng = random.Random(data[0])
    body = data[1:]
    out = bytearray()
    pos = 0
    whole = data[0] & 1
    while pos < len(body) and not connection.closed:
        size = len(body) if whole else rng.randint(1, 64)
        out += connection.feed(body[pos : pos + size])
        assert connection.buffered <= MAX_LINE
        pos += size
    if data[0] & 2 and not connection.closed:
        out += connection.feed_eof()
        assert connection.closed
    if connection.closed:
        assert connection.feed(b"get=1\n\n") == b""
    _check_output(bytes(out))
    assert len(device.peers) <= MAX_PEERS
    table = [
        (key, [str(p) for p in device.allowed_ips.entries(p)]) for key, p in device.peers.items()
    ]
    return bytes(out), table


def test_one_input(data: bytes) -> None:
    fast = _run(data)
    bulk = uapi._ALLOWED_IP_RUN
    uapi._ALLOWED_IP_RUN = _NEVER  # every line through the exact path
    try:
        exact = _run(data)
    finally:
        uapi._ALLOWED_IP_RUN = bulk
    assert fast == exact, (fast, exact)


def seeds() -> list[bytes]:
    key = _PEER_PUBLIC.hex()
    requests = [
        b"get=1\n\n",
        b"set=1\nprivate_key=" + bytes(range(1, 33)).hex().encode() + b"\nlisten_port=51820\n\n",
        b"set=1\nreplace_peers=true\npublic_key=" + key.encode() + b"\nendpoint=[::1]:51820\n"
        b"allowed_ip=10.0.0.0/8\nallowed_ip=fd00::/64\npersistent_keepalive_interval=25\n"
        b"preshared_key=" + bytes(32).hex().encode() + b"\nreplace_allowed_ips=true\n\n",
        b"set=1\npublic_key=" + key.encode() + b"\nremove=true\n\nget=1\n\n",
        b"set=1\npublic_key=" + key.encode() + b"\nupdate_only=true\nendpoint=1.2.3.4:5\n\n",
        b"set=1\nfwmark=0\nlisten_port=1\n\n",
        b"set=1\nlisten_port=65536\n\n",
        b"set=1\nbogus\n\n",
        b"set=1\r\nprivate_key=zz\r\n\r\n",
        b"get=1\nx",
        b"wgpy-stats=1\n\n",
        b"set=1\nprotocol_version=1\n\n",
        b"set=1\npublic_key=" + key.encode() + b"\nallowed_ip=10.1.0.0/16\nallowed_ip=10.1.2.3/32\n"
        b"allowed_ip=fd00:1::/48\nallowed_ip=10.1.0.0/16\nallowed_ip=10.0.0.2/08\n\nget=1\n\n",
        b"set=1\nallowed_ip=10.0.0.0/8\n\n",
    ]
    out = []
    for i, request in enumerate(requests):
        out.append(bytes([i * 2 + 1]) + request)  # all at once
        out.append(bytes([i * 2 + 2]) + request)  # in small pieces, with EOF
    return out
