"""Differential test of the UAPI protocol: the same raw requests go to a real userspace daemon's
socket and to a `wgpy.uapi.UapiConnection` over a fresh `Device` (NullHooks); the replies, and
a `get=1` afterwards, must be identical — modulo `listen_port` when we did not set one (the
daemon binds a random port) and the order of peers (go lists them in map order).

The daemon is the `wg_daemon_command` fixture (tests/netns/conftest.py): wireguard-go by default;
override that fixture to run the same table against wgpyd. Each case gets a fresh namespace and
daemon. Cases where Debian's wireguard-go v0.0.20220316 is known to differ from the newer go that
wgpy follows are skipped for wireguard-go older than 0.0.20250522 only (see `Case.old_go`).
"""

from __future__ import annotations

import functools
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.netns.harness import WIREGUARD_GO, Netns, start_wg_daemon, unique_ifname
from wgpy import crypto
from wgpy.device import Device
from wgpy.uapi import NullHooks, UapiConnection, handle_get

pytestmark = pytest.mark.netns

READ_TIMEOUT = 5.0

PRIV = "ff" * 32  # stored clamped: f8ff…ff7f
PRIV2 = "1f" * 32
OWN = crypto.public_key(bytes.fromhex(PRIV)).hex()  # the public key of PRIV
A = "a1" * 32
B = "b2" * 32
C = "c3" * 32
PSK = "5a" * 32
ZERO = "00" * 32


def req(*lines: str) -> bytes:
    """A complete set request made of `lines`."""
    return ("set=1\n" + "".join(line + "\n" for line in lines) + "\n").encode()


@dataclass(frozen=True)
class Case:
    """Chunks are written one at a time on one connection; after each, the replies are read.
    At the end the client shuts down its sending side (so an unterminated request completes).
    """

    id: str
    chunks: tuple[bytes, ...]
    #: Why Debian's wireguard-go v0.0.20220316 answers differently (case skipped for it).
    old_go: str | None = None
    #: Why every wireguard-go answers differently (case skipped for wireguard-go).
    go: str | None = None


def case(id: str, *chunks: bytes, old_go: str | None = None, go: str | None = None) -> Case:
    return Case(id, chunks, old_go=old_go, go=go)


def bad(id: str, *lines: str, old_go: str | None = None) -> Case:
    """A set request expected to fail (the comparison decides; the id says why)."""
    return Case(f"invalid-{id}", (req(*lines),), old_go=old_go)


ZONE = "Debian's go 0.0.20220316 turns the zone into an interface index (unknown names are -22) "
ZONE += "and drops it from get; newer go keeps the zone text, as we do"
CIDR = "Debian's go 0.0.20220316 (Go 1.19 netip) accepts a sign/leading zeros in the prefix "
CIDR += "length; current Go's netip.ParsePrefix, and we, reject them"
REMOVAL = "`allowed_ip=-…` removal exists since go 0.0.20250522; Debian's 0.0.20220316 says -22"

CASES: list[Case] = [
    # ------------------------------------------------------------------ get and device keys
    case("get-empty", b"get=1\n\n"),
    case("private-key-clamped", req(f"private_key={PRIV}")),
    case("private-key-uppercase", req(f"private_key={PRIV2.upper()}")),
    case("private-key-removed", req(f"private_key={PRIV}"), req(f"private_key={ZERO}")),
    case("private-key-replaced", req(f"private_key={PRIV}"), req(f"private_key={PRIV2}")),
    case("listen-port-and-fwmark", req("listen_port=23456", "fwmark=77")),
    case("listen-port-leading-zeros", req("listen_port=0023457")),
    case("listen-port-zero", req("listen_port=0")),
    case("fwmark-max", req("fwmark=4294967295")),
    case("fwmark-cleared", req("fwmark=5"), req("fwmark=0")),
    case("device-keys-repeated", req("fwmark=1", "fwmark=2", "listen_port=23458")),
    case("empty-set", req()),
    # -------------------------------------------------------------------------------- peers
    case(
        "peer-full",
        req(
            f"private_key={PRIV}",
            f"public_key={A}",
            f"preshared_key={PSK}",
            "endpoint=192.0.2.1:51820",
            "protocol_version=1",
            "replace_allowed_ips=true",
            "allowed_ip=10.0.0.0/24",
            "allowed_ip=fd00::/64",
        ),
    ),
    case("peer-without-anything", req(f"public_key={A}")),
    case("peer-uppercase-key", req(f"public_key={A.upper()}", f"preshared_key={PSK.upper()}")),
    case(
        "psk-cleared",
        req(f"public_key={A}", f"preshared_key={PSK}"),
        req(f"public_key={A}", f"preshared_key={ZERO}"),
    ),
    case("keepalive", req(f"public_key={A}", "persistent_keepalive_interval=25")),
    case(
        "keepalive-changed-and-off",
        req(f"public_key={A}", "persistent_keepalive_interval=25"),
        req(f"public_key={A}", "persistent_keepalive_interval=0065535"),
        req(
            f"public_key={B}", "persistent_keepalive_interval=7", "persistent_keepalive_interval=0"
        ),
    ),
    case(
        "three-peers",
        req(
            f"public_key={A}",
            "allowed_ip=10.1.0.0/16",
            f"public_key={B}",
            "allowed_ip=10.2.0.0/16",
            f"public_key={C}",
            "allowed_ip=10.3.0.0/16",
        ),
    ),
    case(
        "same-peer-two-sections",
        req(
            f"public_key={A}", "allowed_ip=10.1.0.0/16", f"public_key={A}", "allowed_ip=10.2.0.0/16"
        ),
    ),
    case("zero-key-peer-with-private-key", req(f"private_key={PRIV}", f"public_key={ZERO}")),
    case(
        "zero-key-peer-on-fresh-device",
        req(f"public_key={ZERO}", "allowed_ip=10.0.0.0/8"),
        go="go compares with its own public key, all zeros until a private key is first set, "
        "and so ignores this peer; we follow the kernel (no identity, no own key)",
    ),
    # ---------------------------------------------------------------------------- endpoints
    case("endpoint-v4", req(f"public_key={A}", "endpoint=203.0.113.9:1")),
    case("endpoint-v6-canonical", req(f"public_key={A}", "endpoint=[2001:DB8:0:0:0:0:0:1]:51820")),
    case("endpoint-v6-compress", req(f"public_key={A}", "endpoint=[2001:db8:0:1:0:0:0:1]:2")),
    case("endpoint-v4-mapped", req(f"public_key={A}", "endpoint=[::ffff:192.0.2.7]:3")),
    case("endpoint-v4-compatible", req(f"public_key={A}", "endpoint=[::1.2.3.4]:3")),
    case("endpoint-unspecified", req(f"public_key={A}", "endpoint=[::]:4")),
    case("endpoint-port-0", req(f"public_key={A}", "endpoint=192.0.2.1:0")),
    case("endpoint-port-max", req(f"public_key={A}", "endpoint=192.0.2.1:65535")),
    case("endpoint-port-leading-zeros", req(f"public_key={A}", "endpoint=192.0.2.1:00051820")),
    case("endpoint-replaced", req(f"public_key={A}", "endpoint=192.0.2.1:1", "endpoint=[::1]:2")),
    case("endpoint-zone-name", req(f"public_key={A}", "endpoint=[fe80::1%lo]:5"), old_go=ZONE),
    case("endpoint-zone-number", req(f"public_key={A}", "endpoint=[fe80::1%1]:5"), old_go=ZONE),
    case(
        "endpoint-zone-unknown", req(f"public_key={A}", "endpoint=[fe80::1%nosuch]:5"), old_go=ZONE
    ),
    # -------------------------------------------------------------------------- allowed IPs
    case(
        "allowed-ips-masked-and-ordered",
        req(
            f"public_key={A}",
            "allowed_ip=10.1.2.3/8",
            "allowed_ip=fd00::1/64",
            "allowed_ip=192.0.2.1/32",
            "allowed_ip=2001:db8::1/128",
            "allowed_ip=::ffff:1.2.3.4/96",
            "allowed_ip=::ffff:1.2.3.4/128",
            "allowed_ip=0.0.0.0/0",
            "allowed_ip=::/0",
            "allowed_ip=10.0.0.0/8",
        ),
    ),
    case(
        "allowed-ip-moves-between-peers",
        req(f"public_key={A}", "allowed_ip=10.0.0.0/8", "allowed_ip=10.9.0.0/16"),
        req(f"public_key={B}", "allowed_ip=10.0.0.0/8"),
    ),
    case(
        "replace-allowed-ips",
        req(f"public_key={A}", "allowed_ip=10.0.0.0/8", "allowed_ip=fd00::/8"),
        req(f"public_key={A}", "replace_allowed_ips=true", "allowed_ip=10.5.0.0/16"),
    ),
    case(
        "allowed-ip-removal",
        req(f"public_key={A}", "allowed_ip=10.0.0.0/8", "allowed_ip=10.1.0.0/16"),
        req(f"public_key={B}", "allowed_ip=10.2.0.0/16"),
        req(
            f"public_key={A}",
            "allowed_ip=-10.0.0.0/8",
            "allowed_ip=-10.2.0.0/16",
            "allowed_ip=-10.7.0.0/16",
        ),
        old_go=REMOVAL,
    ),
    # ----------------------------------------------------------- replace, remove, update_only
    case(
        "replace-peers",
        req(f"public_key={A}", "allowed_ip=10.1.0.0/16", f"public_key={B}"),
        req("replace_peers=true", f"public_key={C}", "allowed_ip=10.1.0.0/16"),
    ),
    case(
        "remove-peer",
        req(f"public_key={A}", "allowed_ip=10.1.0.0/16", f"public_key={B}"),
        req(f"public_key={A}", "remove=true", "allowed_ip=10.9.0.0/16", "endpoint=192.0.2.1:1"),
    ),
    case("remove-unknown-peer", req(f"public_key={A}", "remove=true", "allowed_ip=10.0.0.0/8")),
    case(
        "update-only-new-peer", req(f"public_key={A}", "update_only=true", "allowed_ip=10.0.0.0/8")
    ),
    case(
        "update-only-existing-peer",
        req(f"public_key={A}"),
        req(f"public_key={A}", "update_only=true", "allowed_ip=10.0.0.0/8"),
    ),
    case("update-only-late", req(f"public_key={A}", "allowed_ip=10.0.0.0/8", "update_only=true")),
    case(
        "own-key-section-ignored",
        req(
            f"private_key={PRIV}",
            f"public_key={OWN}",
            "allowed_ip=10.0.0.0/8",
            "endpoint=192.0.2.1:1",
            f"public_key={A}",
        ),
    ),
    case(
        "private-key-removes-peer-with-its-public-key",
        req(f"public_key={OWN}", "allowed_ip=10.0.0.0/8", f"public_key={A}"),
        req(f"private_key={PRIV}"),
    ),
    # ------------------------------------------------------------------- connection handling
    case("crlf-lines", b"set=1\nlisten_port=23459\r\npublic_key=" + A.encode() + b"\r\n\r\n"),
    case("get-set-get-one-connection", b"get=1\n\n", req(f"public_key={A}"), b"get=1\n\n"),
    case("set-error-then-get", req("foo=bar", f"public_key={A}"), b"get=1\n\n"),
    case("set-error-last-line-then-set", req("listen_port=99999"), req(f"public_key={A}")),
    case("get-trailing-junk-closes", b"get=1\nx\n"),
    case("get-trailing-junk-then-get", b"get=1\nxget=1\n\n"),
    case("get-split", b"get=1\n", b"\n"),
    case("unknown-operation", b"foo=1\n"),
    case("empty-operation", b"\n"),
    case("operation-crlf", b"set=1\r\n\n"),
    case("operation-get-2", b"get=2\n\n"),
    case("operation-uppercase", b"GET=1\n\n"),
    case("operation-after-get", b"get=1\n\n", b"set=0\n"),
    case("eof-unterminated-set", b"set=1\nlisten_port=23460"),
    case("eof-set-without-blank-line", b"set=1\nlisten_port=23461\n"),
    case("eof-unterminated-bad-set", b"set=1\nlisten_port=x"),
    case("eof-after-get", b"get=1\n"),
    case("eof-partial-operation", b"get="),
    case("line-65535-bytes", req("listen_port=" + "0" * (65535 - 12 - 5) + "23462")),
    case(
        "line-65535-bytes-with-cr",
        b"set=1\nlisten_port=" + b"0" * (65534 - 12 - 5) + b"23463\r\n\n",
    ),
    case(
        "line-65536-bytes",
        req(f"public_key={A}", "listen_port=" + "0" * (65536 - 12 - 5) + "23464"),
    ),
    case("operation-line-70000-bytes", b"x" * 70000 + b"\n"),
    # ------------------------------------------------------------------------ invalid input
    bad("line-without-equals-device", "listen_port"),
    bad("line-without-equals-peer", f"public_key={A}", "allowed_ip 10.0.0.0/8"),
    bad(
        "line-without-equals-after-good-lines",
        "fwmark=9",
        f"public_key={A}",
        "allowed_ip=10.0.0.0/8",
        "x",
    ),
    bad("private-key-63", f"private_key={PRIV[:63]}"),
    bad("private-key-65", f"private_key={PRIV}f"),
    bad("private-key-not-hex", f"private_key={'g' * 64}"),
    bad("private-key-space", f"private_key= {PRIV[:63]}"),
    bad("private-key-0x", f"private_key=0x{PRIV[:62]}"),
    bad("private-key-empty", "private_key="),
    bad("listen-port-65536", "listen_port=65536"),
    bad("listen-port-negative", "listen_port=-1"),
    bad("listen-port-plus", "listen_port=+1"),
    bad("listen-port-empty", "listen_port="),
    bad("listen-port-space", "listen_port= 1"),
    bad("listen-port-trailing-space", "listen_port=1 "),
    bad("listen-port-hex", "listen_port=0x10"),
    bad("listen-port-underscore", "listen_port=1_0"),
    bad("listen-port-huge", "listen_port=99999999999999999999999"),
    bad("fwmark-2^32", "fwmark=4294967296"),
    bad("fwmark-negative", "fwmark=-1"),
    bad("fwmark-hex", "fwmark=0x1"),
    bad("replace-peers-false", "replace_peers=false"),
    bad("replace-peers-uppercase", "replace_peers=TRUE"),
    bad("unknown-device-key", "foo=bar"),
    bad("empty-device-key", "=x"),
    bad("device-key-with-space", " listen_port=1"),
    bad("device-key-uppercase", "LISTEN_PORT=1"),
    bad("peer-key-before-public-key-endpoint", "endpoint=192.0.2.1:1"),
    bad("peer-key-before-public-key-allowed-ip", "allowed_ip=10.0.0.0/8"),
    bad("peer-key-before-public-key-protocol", "protocol_version=1"),
    bad("peer-key-before-public-key-remove", "remove=true"),
    bad("public-key-63", f"public_key={A[:63]}"),
    bad("public-key-not-hex", f"public_key={'zz' * 32}"),
    bad("public-key-empty", "public_key="),
    bad("update-only-false", f"public_key={A}", "update_only=false"),
    bad("remove-1", f"public_key={A}", "remove=1"),
    bad("preshared-key-short", f"public_key={A}", f"preshared_key={PSK[:62]}"),
    bad("endpoint-hostname", f"public_key={A}", "endpoint=localhost:51820"),
    bad("endpoint-dns-name", f"public_key={A}", "endpoint=example.com:51820"),
    bad("endpoint-no-port", f"public_key={A}", "endpoint=192.0.2.1"),
    bad("endpoint-empty-port", f"public_key={A}", "endpoint=192.0.2.1:"),
    bad("endpoint-no-host", f"public_key={A}", "endpoint=:51820"),
    bad("endpoint-v6-unbracketed", f"public_key={A}", "endpoint=::1:51820"),
    bad("endpoint-v4-bracketed", f"public_key={A}", "endpoint=[192.0.2.1]:1"),
    bad("endpoint-port-65536", f"public_key={A}", "endpoint=192.0.2.1:65536"),
    bad("endpoint-port-plus", f"public_key={A}", "endpoint=192.0.2.1:+1"),
    bad("endpoint-port-service", f"public_key={A}", "endpoint=[::1]:http"),
    bad("endpoint-empty-zone", f"public_key={A}", "endpoint=[fe80::1%]:1"),
    bad("endpoint-v4-zone", f"public_key={A}", "endpoint=192.0.2.1%lo:1"),
    bad("endpoint-v4-leading-zero", f"public_key={A}", "endpoint=01.2.3.4:1"),
    bad("endpoint-v4-octet-256", f"public_key={A}", "endpoint=1.2.3.256:1"),
    bad("endpoint-leading-space", f"public_key={A}", "endpoint= 1.2.3.4:1"),
    bad("endpoint-missing-bracket", f"public_key={A}", "endpoint=[::1:1"),
    bad("endpoint-empty-brackets", f"public_key={A}", "endpoint=[]:1"),
    bad("endpoint-bad-v6", f"public_key={A}", "endpoint=[2001:db8::g]:1"),
    bad("endpoint-empty", f"public_key={A}", "endpoint="),
    bad("keepalive-65536", f"public_key={A}", "persistent_keepalive_interval=65536"),
    bad("keepalive-negative", f"public_key={A}", "persistent_keepalive_interval=-1"),
    bad("keepalive-empty", f"public_key={A}", "persistent_keepalive_interval="),
    bad("keepalive-unit", f"public_key={A}", "persistent_keepalive_interval=25s"),
    bad("replace-allowed-ips-false", f"public_key={A}", "replace_allowed_ips=false"),
    bad("allowed-ip-no-cidr", f"public_key={A}", "allowed_ip=10.0.0.1"),
    bad("allowed-ip-v4-33", f"public_key={A}", "allowed_ip=10.0.0.0/33"),
    bad("allowed-ip-v6-129", f"public_key={A}", "allowed_ip=::/129"),
    bad("allowed-ip-short-address", f"public_key={A}", "allowed_ip=10.0.0/8"),
    bad("allowed-ip-empty-cidr", f"public_key={A}", "allowed_ip=10.0.0.1/"),
    bad("allowed-ip-no-address", f"public_key={A}", "allowed_ip=/8"),
    bad("allowed-ip-zone", f"public_key={A}", "allowed_ip=fe80::1%lo/64"),
    bad("allowed-ip-trailing-space", f"public_key={A}", "allowed_ip=10.0.0.0/8 "),
    bad("allowed-ip-negative-cidr", f"public_key={A}", "allowed_ip=10.0.0.0/-1"),
    bad("allowed-ip-hex-cidr", f"public_key={A}", "allowed_ip=10.0.0.0/0x8"),
    bad("allowed-ip-double-minus", f"public_key={A}", "allowed_ip=--10.0.0.0/8"),
    bad("allowed-ip-minus-only", f"public_key={A}", "allowed_ip=-"),
    bad("allowed-ip-empty", f"public_key={A}", "allowed_ip="),
    bad("allowed-ip-leading-zero-cidr", f"public_key={A}", "allowed_ip=10.0.0.0/08", old_go=CIDR),
    bad("allowed-ip-plus-cidr", f"public_key={A}", "allowed_ip=10.0.0.0/+8", old_go=CIDR),
    bad("protocol-version-2", f"public_key={A}", "protocol_version=2"),
    bad("protocol-version-01", f"public_key={A}", "protocol_version=01"),
    bad("protocol-version-empty", f"public_key={A}", "protocol_version="),
    bad("unknown-peer-key", f"public_key={A}", "foo=bar"),
    bad("device-key-in-peer-section", f"public_key={A}", "listen_port=23465"),
    bad("private-key-in-peer-section", f"public_key={A}", f"private_key={PRIV}"),
    bad("partial-device", "listen_port=23466", "foo=bar", "fwmark=5"),
    bad(
        "partial-peer",
        f"public_key={A}",
        "allowed_ip=10.0.0.0/8",
        "endpoint=nonsense",
        "allowed_ip=10.1.0.0/16",
        f"public_key={B}",
    ),
    bad("in-own-key-section", f"private_key={PRIV}", f"public_key={OWN}", "endpoint=nonsense"),
    bad("after-remove", f"public_key={A}", "remove=true", "allowed_ip=10.0.0.0"),
    bad("after-update-only", f"public_key={A}", "update_only=true", "protocol_version=3"),
]


# ------------------------------------------------------------------------------------ helpers


@functools.cache
def _go_version(executable: str) -> tuple[int, ...] | None:
    """(0, 0, YYYYMMDD) of a wireguard-go binary, None if not wireguard-go."""
    try:
        out = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except OSError:
        return None
    match = re.search(r"wireguard-go v(\d+)\.(\d+)\.(\d+)", out)
    return None if match is None else tuple(int(g) for g in match.groups())


def _skip_reason(item: Case, command: Sequence[str]) -> str | None:
    if Path(command[0]).name != "wireguard-go":
        return None
    if item.go is not None:
        return f"known difference from wireguard-go: {item.go}"
    version = _go_version(command[0])
    if item.old_go is not None and (version is None or version < (0, 0, 20250522)):
        return f"known difference from wireguard-go {version}: {item.old_go}"
    return None


def _read(sock: socket.socket, responses: int, until_eof: bool) -> tuple[bytes, bool]:
    """Read until `responses` replies (each ends with the only blank line in it) arrived and,
    if `until_eof`, the peer closed. Returns (bytes, whether EOF was seen)."""
    data = b""
    deadline = time.monotonic() + READ_TIMEOUT
    while data.count(b"\n\n") < responses or until_eof:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def _get(path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        sock.sendall(b"get=1\n\n")
        data, _ = _read(sock, 1, until_eof=False)
    return data


def _canonical(stream: bytes, drop_port: bool) -> list[object]:
    """Split replies; in each, sort the peer sections and maybe drop `listen_port`."""
    out: list[object] = []
    for reply in stream.split(b"\n\n"):
        device: list[bytes] = []
        peers: list[list[bytes]] = []
        trailer: list[bytes] = []  # errno=N (and an incomplete tail), after the last peer
        for line in reply.split(b"\n"):
            if drop_port and line.startswith(b"listen_port="):
                continue
            if line.startswith(b"public_key="):
                peers.append([])
            if line.startswith(b"errno=") or trailer:
                trailer.append(line)
            else:
                (peers[-1] if peers else device).append(line)
        out.append((device, sorted(peers), trailer))
    return out


def _exchange(path: Path, item: Case) -> tuple[list[tuple[bytes, bool]], list[tuple[bytes, bool]]]:
    """Run the case against the daemon and against a UapiConnection; (ours, theirs) where each
    element is (reply bytes, closed) per chunk, plus one for the final shutdown."""
    device = Device()
    conn = UapiConnection(device, NullHooks(device), time.monotonic)
    ours: list[tuple[bytes, bool]] = []
    theirs: list[tuple[bytes, bool]] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        for chunk in item.chunks:
            reply = conn.feed(chunk)
            ours.append((reply, conn.closed))
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                theirs.append((b"", True))
                break
            theirs.append(_read(sock, reply.count(b"\n\n"), until_eof=conn.closed))
            if conn.closed:
                break
        if not conn.closed:
            tail = conn.feed_eof()
            ours.append((tail, True))
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                theirs.append((b"", True))
            else:
                theirs.append(_read(sock, tail.count(b"\n\n"), until_eof=True))
    ours.append((handle_get(device).encode(), False))
    theirs.append((_get(path), False))
    return ours, theirs


# -------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("item", CASES, ids=[c.id for c in CASES])
def test_uapi_matches_daemon(
    item: Case, netns_factory: Callable[[], Netns], wg_daemon_command: Sequence[str]
) -> None:
    reason = _skip_reason(item, wg_daemon_command)
    if reason is not None:
        pytest.skip(reason)
    ns = netns_factory()
    daemon = start_wg_daemon(ns, unique_ifname("wgu"), wg_daemon_command)
    ours, theirs = _exchange(daemon.socket_path, item)
    drop_port = b"\nlisten_port=" not in b"\n" + ours[-1][0]
    assert [(_canonical(r, drop_port), closed) for r, closed in theirs] == [
        (_canonical(r, drop_port), closed) for r, closed in ours
    ], f"daemon replies (left) differ from wgpy.uapi (right); raw: {theirs!r} vs {ours!r}"
    assert daemon.alive, f"the daemon died:\n{daemon.log()}"


def test_table_has_no_duplicate_ids() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


WGPYD: Sequence[str] = (sys.executable, "-m", "wgpy.daemon", "-f")


@pytest.fixture(params=["wireguard-go", "wgpyd"])
def wg_daemon_command(request: pytest.FixtureRequest) -> Sequence[str]:
    """Run the whole table against both daemons: each must equal wgpy.uapi, so wgpyd's socket
    answers every request exactly as wireguard-go's does (cases go is known to answer
    differently are skipped for go only)."""
    return WIREGUARD_GO if request.param == "wireguard-go" else WGPYD
