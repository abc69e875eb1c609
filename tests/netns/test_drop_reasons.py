"""Every drop reason of wgpyd, produced from outside and read back three ways.

wgpyd is the device under test in namespace A, started with ``WGPY_LOG_FORMAT=json`` and
``WGPY_LOG_FILE``, with ``wgpy capture`` recording its inner packets. The other side, in
namespace B, is wireguard-go configured by ``wg`` or a core-based peer driven by the test
(``dropkit.CorePeer``: the sans-I/O Device plus a UDP socket created inside B), which can send
crafted plaintexts and raw datagrams. For each reason the test causes a known number of drops
and asserts that the ``wgpy-stats`` counter for (peer, reason), the number of JSON log lines and
(for reasons about inner packets) the capture annotations all equal that number, and that the
packets which were delivered alongside produced no drop event at all.

Also: ``tshark -V`` shows the annotations as packet comments, and no output of a busy run (logs,
capture, ``wgpy show``, Prometheus) ever contains a private key or the preshared key.
"""

from __future__ import annotations

import base64
import collections
import json
import shutil
import struct
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from tests.netns.core_peer import icmp_echo
from tests.netns.dropkit import (
    WGPYD,
    Capture,
    CorePeer,
    DropKey,
    Dut,
    annotation_counts,
    forged_initiation,
    forged_response,
    ipv4_packet,
    json_drop_counts,
    new_core_peer,
    open_cookie_reply,
    receive_all,
    start_dut,
    udp_socket,
    with_mac2,
)
from tests.netns.harness import (
    Netns,
    ping,
    two_peer_topology,
    veth_pair,
    wait_for,
)
from wgpy import crypto, messages
from wgpy.io.uapi_client import wgpy_stats
from wgpy.sinks.pcapng import CapturedPacket

pytestmark = pytest.mark.netns

DUT_UNDERLAY: Final = "10.99.0.1"
OUTSIDE_UNDERLAY: Final = "10.99.0.2"
DUT_PORT: Final = 51820
DUT_TUNNEL: Final = "10.100.0.1"
CORE_TUNNEL: Final = "10.100.0.2"
NOBODY: Final = "10.100.0.77"  # in the tunnel subnet, held by no peer

Annotation = tuple[str, str | None, str | None]  # (direction, reason, peer)


# ---------------------------------------------------------------------------------------------
# the bench: wgpyd in A with a capture running, a core-based peer in B


@dataclass
class Bench:
    a: Netns
    b: Netns
    dut: Dut
    core: CorePeer
    capture: Capture

    @property
    def core_key(self) -> str:
        return self.core.public_b64

    def echo(self, count: int, *, seq0: int = 0) -> None:
        """Send ``count`` echo requests from the core peer and wait for the replies."""
        before = echo_replies(self.core)
        for seq in range(seq0, seq0 + count):
            self.core.encrypt(icmp_echo(CORE_TUNNEL, DUT_TUNNEL, 0x77, seq))
        got = self.core.pump(5, lambda: echo_replies(self.core) >= before + count)
        assert got, f"{echo_replies(self.core) - before} of {count} echo replies came back"

    def check(
        self,
        expected: dict[DropKey, int],
        *,
        inner: dict[Annotation, int] | None = None,
        delivered: dict[Annotation, int] | None = None,
    ) -> Counts:
        return check_counts(self.dut, self.capture, expected, inner=inner, delivered=delivered)


def echo_replies(core: CorePeer) -> int:
    return sum(1 for p in core.delivered if len(p) > 20 and p[9] == 1 and p[20] == 0)


@pytest.fixture
def bench(netns_factory: Callable[[], Netns]) -> Generator[Bench]:
    a, b = netns_factory(), netns_factory()
    veth_pair(a, b, DUT_UNDERLAY, OUTSIDE_UNDERLAY, 24)
    dut = start_dut(a, tunnel=f"{DUT_TUNNEL}/24", listen_port=DUT_PORT)
    core = new_core_peer(b, dut.public_key, (DUT_UNDERLAY, DUT_PORT), private_key=None)
    core.allow(f"{DUT_TUNNEL}/32")
    dut.add_peer(core.public_b64, f"{CORE_TUNNEL}/32")
    capture = Capture.start(a, dut.ifname)
    try:
        yield Bench(a, b, dut, core, capture)
    finally:
        core.sock.close()


@dataclass
class Counts:
    stats: collections.Counter[DropKey]
    json: list[dict[str, object]]
    packets: list[CapturedPacket]


def check_counts(
    dut: Dut,
    capture: Capture,
    expected: dict[DropKey, int],
    *,
    inner: dict[Annotation, int] | None = None,
    delivered: dict[Annotation, int] | None = None,
) -> Counts:
    """Assert that wgpy-stats, the JSON log and the capture's drop annotations all say exactly
    ``expected`` (``inner``: the annotations expected, by default none), and that the capture
    saw ``delivered`` packets delivered if given. Stops the capture."""
    want = collections.Counter(expected)
    stats = dut.settled_stats(want)
    log = dut.daemon.log()
    assert stats == want, f"wgpy-stats {dict(stats)} != expected {dict(want)}\n{log}"
    drops = dut.json_drops()
    assert json_drop_counts(drops) == want, (
        f"JSON log drops {dict(json_drop_counts(drops))} != expected {dict(want)}"
    )
    want_inner = collections.Counter(inner or {})
    want_delivered = collections.Counter(delivered or {})
    packets = capture.stop(sum(want_inner.values()) + sum(want_delivered.values()))
    dropped = annotation_counts(packets, "dropped")
    assert dropped == want_inner, f"capture drops {dict(dropped)} != {dict(want_inner)}"
    if delivered is not None:
        got = annotation_counts(packets, "delivered")
        assert got == want_delivered, f"capture deliveries {dict(got)} != {dict(want_delivered)}"
    return Counts(stats, list(drops), list(packets))


# ---------------------------------------------------------------------------------------------
# outgoing: no_peer (against wireguard-go), staged_overflow


def test_no_peer_against_wireguard_go(netns_factory: Callable[[], Netns]) -> None:
    """Pings to an address no peer holds: one no_peer drop each and an ICMP host unreachable;
    pings to the wireguard-go peer are delivered without any drop."""
    a, b = netns_factory(), netns_factory()
    json_log = a.workdir / "dut-events.log"
    command_a = ("env", "WGPY_LOG_FORMAT=json", f"WGPY_LOG_FILE={json_log}", *WGPYD)
    topo = two_peer_topology(a, b, command_a=command_a)
    node = topo.a
    dut = Dut(a, node.ifname, node.daemon, node.private_key, node.public_key, 51820, json_log)
    capture = Capture.start(a, dut.ifname)

    good = ping(a, topo.b.tunnel4, count=3)
    assert good.returncode == 0 and " 0% packet loss" in good.stdout, good.stdout
    bad = ping(a, NOBODY, count=3, wait=1)
    assert bad.returncode != 0
    assert bad.stdout.count("Destination Host Unreachable") == 3, bad.stdout

    go = topo.b.public_key
    counts = check_counts(
        dut,
        capture,
        {(None, "no_peer"): 3},
        inner={("out", "no_peer", None): 3},
        delivered={("in", None, go): 3},
    )
    for record in counts.json:
        assert record["direction"] == "out" and record["inner_dst"] == NOBODY, record
        assert record["inner_src"] == node.tunnel4 and "peer" not in record, record


def test_staged_overflow(bench: Bench) -> None:
    """130 packets for a peer whose endpoint is a black hole (no host answers ARP): 128 wait
    for the handshake, the 2 oldest are dropped."""
    ghost = base64.b64encode(crypto.public_key(crypto.generate_private_key())).decode()
    bench.dut.add_peer(ghost, "10.100.0.50/32", endpoint="10.99.0.99:51820")
    bench.core.handshake()
    bench.echo(2)
    sender = udp_socket(bench.a)
    try:
        for i in range(130):
            sender.sendto(b"staged %d" % i, ("10.100.0.50", 9))
    finally:
        sender.close()
    counts = bench.check(
        {(ghost, "staged_overflow"): 2},
        inner={("out", "staged_overflow", ghost): 2},
        delivered={("in", None, bench.core_key): 2},
    )
    # The oldest two are the ones dropped.
    dropped = [p for p in counts.packets if "dropped" in p.comment]
    assert [p.packet[28:] for p in dropped] == [b"staged 0", b"staged 1"]


# ---------------------------------------------------------------------------------------------
# incoming inner packets: disallowed_source, not_ip, bad_length


def test_disallowed_source(bench: Bench) -> None:
    """Inner sources outside the sender's AllowedIPs are dropped; the JSON line of a source
    that another peer holds names that peer as owner."""
    other = base64.b64encode(crypto.public_key(crypto.generate_private_key())).decode()
    bench.dut.add_peer(other, "10.100.0.3/32")
    bench.core.handshake()
    bench.echo(3)
    for i in range(2):
        bench.core.encrypt(icmp_echo("10.100.0.99", DUT_TUNNEL, 0x78, i))  # nobody's
        bench.core.encrypt(icmp_echo("10.100.0.3", DUT_TUNNEL, 0x79, i))  # the other peer's
    counts = bench.check(
        {(bench.core_key, "disallowed_source"): 4},
        inner={("in", "disallowed_source", bench.core_key): 4},
        delivered={("in", None, bench.core_key): 3},
    )
    owners = collections.Counter((r["inner_src"], r.get("owner")) for r in counts.json)
    assert owners == {("10.100.0.99", None): 2, ("10.100.0.3", other): 2}
    # `wgpy show` splits the count by who holds the sources
    (shown,) = json.loads(
        bench.a.run(sys.executable, "-m", "wgpy.cli", "show", bench.dut.ifname, "--json").stdout
    )
    (entry,) = [d for d in shown["drops"] if d["reason"] == "disallowed_source"]
    assert entry["count"] == 4
    assert sorted(entry["owners"], key=str) == sorted(
        [{"owner": None, "count": 2}, {"owner": other, "count": 2}], key=str
    )
    assert sorted(entry["sources"], key=str) == sorted(
        [
            {"address": "10.100.0.99", "count": 2, "error": 0},
            {"address": "10.100.0.3", "count": 2, "error": 0},
        ],
        key=str,
    )
    table = bench.a.run(
        sys.executable, "-m", "wgpy.cli", "show", bench.dut.ifname, env={"COLUMNS": "80"}
    ).stdout
    flat = " ".join(table.split())
    assert "sources held by:" in flat and "no peer ×2" in flat and other in flat, table
    # The spoofed packets never reached the kernel: only the 3 genuine echoes were answered.
    bench.core.pump(0.3)
    assert echo_replies(bench.core) == 3


def test_not_ip_and_bad_length(bench: Bench) -> None:
    """Authenticated plaintexts that are not IP packets, or whose IP length field disagrees with
    the plaintext; a keepalive and genuine packets alongside are not drops."""
    bench.core.handshake()
    not_ip = [
        bytes(20),  # version 0
        b"\x45" + bytes(9),  # IPv4 shorter than its header (padded to 16 bytes)
        b"\x60" + bytes(20),  # IPv6 shorter than its header (padded to 32 bytes)
    ]
    header = ipv4_packet(CORE_TUNNEL, DUT_TUNNEL, b"12345678")
    v6 = bytearray(48)
    v6[0] = 0x60
    struct.pack_into("!H", v6, 4, 1000)  # payload length 1000, 8 bytes present
    v6[8:24] = bytes(15) + b"\x02"
    bad_length = [
        header[:2] + struct.pack("!H", 1000) + header[4:],  # longer than the plaintext
        header[:2] + struct.pack("!H", 12) + header[4:],  # shorter than an IPv4 header
        bytes(v6),
    ]
    for plaintext in not_ip + bad_length:
        bench.core.encrypt(plaintext)
    bench.core.encrypt(b"")  # a keepalive
    bench.echo(2)
    core = bench.core_key
    bench.check(
        {(core, "not_ip"): 3, (core, "bad_length"): 3},
        inner={("in", "not_ip", core): 3, ("in", "bad_length", core): 3},
        delivered={("in", None, core): 2},
    )


# ---------------------------------------------------------------------------------------------
# datagrams: bad_size, unknown_type, invalid_mac1, unknown_index


def _bad_size(bench: Bench) -> list[bytes]:
    return [
        b"",
        b"\x01\x00\x00",
        b"\x01\x00\x00\x00" + bytes(100),  # initiation of the wrong size
        b"\x02\x00\x00\x00" + bytes(89),  # response of the wrong size
        b"\x03\x00\x00\x00" + bytes(59),  # cookie reply of the wrong size
        b"\x04\x00\x00\x00" + bytes(20),  # data shorter than a keepalive
    ]


def _unknown_type(bench: Bench) -> list[bytes]:
    return [
        b"\x05\x00\x00\x00" + bytes(60),
        b"\x01\x01\x00\x00" + bytes(144),  # initiation with non-zero reserved bytes
        b"\x04\x00\x00\x01" + bytes(40),  # data with non-zero reserved bytes
        b"GET / HTTP/1.1\r\n\r\n",
    ]


def _invalid_mac1(bench: Bench) -> list[bytes]:
    junk = crypto.generate_private_key()  # 32 random bytes
    return [
        b"\x01\x00\x00\x00" + (junk * 5)[:144],
        b"\x01\x00\x00\x00" + bytes(144),
        b"\x02\x00\x00\x00" + (junk * 3)[:88],
    ]


def _unknown_index(bench: Bench) -> list[bytes]:
    keypair = bench.core.peer.current
    assert keypair is not None
    unknown = keypair.remote_index ^ 0x5A5A5A5A
    return [
        messages.pack_data_header(unknown, 0) + bytes(16),  # a 32-byte "keepalive"
        messages.pack_data_header(unknown, 7) + bytes(84),
        forged_response(bench.dut.public_bytes, unknown),  # valid mac1, unknown receiver
        messages.CookieReply(unknown, bytes(24), bytes(32)).pack(),
    ]


@pytest.mark.parametrize(
    ("reason", "make"),
    [
        ("bad_size", _bad_size),
        ("unknown_type", _unknown_type),
        ("invalid_mac1", _invalid_mac1),
        ("unknown_index", _unknown_index),
    ],
)
def test_garbage_datagrams(bench: Bench, reason: str, make: Callable[[Bench], list[bytes]]) -> None:
    """Raw datagrams to the listen port from the peer's own socket, between genuine traffic:
    each is one drop with no peer, none is an inner packet."""
    bench.core.handshake()
    bench.echo(1)
    datagrams = make(bench)
    for datagram in datagrams:
        bench.core.send_raw(datagram)
    bench.echo(1, seq0=1)
    counts = bench.check(
        {(None, reason): len(datagrams)}, delivered={("in", None, bench.core_key): 2}
    )
    endpoints = {r.get("endpoint") for r in counts.json}
    assert endpoints == {f"{OUTSIDE_UNDERLAY}:{bench.core.sock.getsockname()[1]}"}


# ---------------------------------------------------------------------------------------------
# data messages: decryption_failed, replayed_counter


def test_decryption_failed(bench: Bench) -> None:
    """Data messages for the current keypair whose ciphertext, tag or counter was altered."""
    bench.core.handshake()
    sealed = [bench.core.seal(icmp_echo(CORE_TUNNEL, DUT_TUNNEL, 0x80, i)) for i in range(3)]
    ciphertext = bytearray(sealed[0])
    ciphertext[20] ^= 0x01
    tag = bytearray(sealed[1])
    tag[-1] ^= 0x80
    counter = bytearray(sealed[2])
    struct.pack_into("<Q", counter, 8, 1000)
    for datagram in (ciphertext, tag, counter):
        bench.core.send_raw(bytes(datagram))
    bench.echo(2, seq0=10)
    bench.check(
        {(bench.core_key, "decryption_failed"): 3}, delivered={("in", None, bench.core_key): 2}
    )


def test_replayed_counter(bench: Bench) -> None:
    """Resent copies of data messages that were delivered (an echo and the keepalive that
    confirmed the handshake) are replays; the originals are delivered once."""
    bench.core.handshake()
    keepalive = bench.core.sent[-1]
    assert len(keepalive) == messages.KEEPALIVE_SIZE
    bench.echo(2)
    echo = next(d for d in bench.core.sent if d[:4] == messages.HEADER_DATA and d is not keepalive)
    for datagram in (echo, echo, keepalive):
        bench.core.send_raw(datagram)
    bench.core.pump(0.3)
    assert echo_replies(bench.core) == 2, "a replayed echo request was answered"
    bench.check(
        {(bench.core_key, "replayed_counter"): 3}, delivered={("in", None, bench.core_key): 2}
    )


# ---------------------------------------------------------------------------------------------
# handshakes: replayed_initiation, handshake_failed, cookie_required (+ rate_limited)


def test_replayed_initiation(bench: Bench) -> None:
    """An accepted initiation sent again (well past the 20 ms flood window) is a replay; a
    fresh handshake afterwards is accepted."""
    bench.core.handshake()
    (initiation,) = bench.core.initiations_sent()
    for _ in range(2):
        time.sleep(0.05)
        bench.core.send_raw(initiation)
    bench.core.pump(0.2)
    bench.echo(1)
    bench.core.handshake()
    assert len(bench.core.initiations_sent()) == 2
    bench.echo(1, seq0=1)
    bench.check(
        {(bench.core_key, "replayed_initiation"): 2},
        delivered={("in", None, bench.core_key): 2},
    )


def test_handshake_failed(bench: Bench) -> None:
    """Initiations with a correct mac1 (it only takes the daemon's public key) from a key the
    daemon does not know, and one whose body does not decrypt. No response is sent."""
    stranger = new_core_peer(
        bench.b, bench.dut.public_key, (DUT_UNDERLAY, DUT_PORT), private_key=None
    )
    try:
        for _ in range(2):
            stranger.peer.last_sent_handshake = float("-inf")
            stranger.device._send_initiation(stranger.peer, time.monotonic(), is_retry=False)
            stranger.flush()
            time.sleep(0.03)
        stranger.send_raw(forged_initiation(bench.dut.public_bytes, 0x1234))
        assert len(stranger.initiations_sent()) == 2
        bench.core.handshake()
        bench.echo(1)
        stranger.pump(0.2)
        assert stranger.received == [], "the daemon answered a handshake it could not accept"
    finally:
        stranger.sock.close()
    counts = bench.check(
        {(None, "handshake_failed"): 3}, delivered={("in", None, bench.core_key): 1}
    )
    details = collections.Counter(r.get("detail") for r in counts.json)
    assert details == {
        "initiation from an unknown or unusable peer key": 2,
        "initiation does not decrypt": 1,
    }


FLOOD: Final = 200
UNDER_LOAD_AFTER: Final = 128  # handshake messages per second before cookies are required


def test_cookie_required_under_flood(bench: Bench) -> None:
    """More than 128 initiations with a valid mac1 within a second put the daemon under load:
    each further one is answered with a 64-byte cookie reply and counted as cookie_required.
    With a valid mac2 (from a received cookie) they pass, up to the per-source rate limit."""
    public = bench.dut.public_bytes
    flood = [forged_initiation(public, 0x10000 + i) for i in range(FLOOD)]
    start = time.monotonic()
    for i in range(0, FLOOD, 20):
        for datagram in flood[i : i + 20]:
            bench.core.send_raw(datagram)
        time.sleep(0.01)
    assert time.monotonic() - start < 0.6
    replies: list[bytes] = []
    deadline = time.monotonic() + 3
    while len(replies) < FLOOD - UNDER_LOAD_AFTER and time.monotonic() < deadline:
        replies += receive_all(bench.core.sock, quiet=0.05, timeout=0.2)
    assert replies, "no cookie reply came back"
    assert all(len(r) == messages.COOKIE_REPLY_SIZE and r[0] == 3 for r in replies)
    indexes = [messages.parse_cookie_reply(r).receiver_index for r in replies]
    assert indexes == [0x10000 + i for i in range(UNDER_LOAD_AFTER, FLOOD)]

    # Still under load: with the cookie in mac2, initiations pass the cookie check; the rate
    # limiter lets a new source through with a burst of 5, then limits it.
    last = flood[-1]
    cookie = open_cookie_reply(replies[-1], public, last[116:132])
    assert cookie is not None and len(cookie) == 16
    for i in range(10):
        bench.core.send_raw(with_mac2(forged_initiation(public, 0x20000 + i), cookie))
    assert receive_all(bench.core.sock, quiet=0.3) == []

    expected = {
        (None, "handshake_failed"): UNDER_LOAD_AFTER + 5,
        (None, "cookie_required"): FLOOD - UNDER_LOAD_AFTER,
        (None, "rate_limited"): 5,
    }
    stats = bench.dut.settled_stats(collections.Counter(expected))
    assert stats == expected, bench.dut.daemon.log()
    assert stats[(None, "cookie_required")] == len(replies)
    # The JSON log is rate-limited (burst 50 per reason): it holds at most that many lines.
    lines = json_drop_counts(bench.dut.json_drops())
    assert 50 <= lines[(None, "cookie_required")] < FLOOD - UNDER_LOAD_AFTER
    assert 50 <= lines[(None, "handshake_failed")] < UNDER_LOAD_AFTER
    assert lines[(None, "rate_limited")] == 5
    assert annotation_counts(bench.capture.stop(), "dropped") == {}

    # Once the load is over (1 s), a genuine handshake needs no cookie.
    time.sleep(1.1)
    bench.core.handshake()
    bench.echo(1)
    assert bench.dut.settled_stats(collections.Counter(expected)) == expected


# ---------------------------------------------------------------------------------------------
# tshark


def test_tshark_shows_annotations_as_packet_comments(bench: Bench) -> None:
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.fail("tshark is not installed (apt-get install tshark)")
    bench.core.handshake()
    bench.core.encrypt(bytes(20))
    bench.echo(1)
    bad = ping(bench.a, NOBODY, count=1, wait=1)
    assert "Destination Host Unreachable" in bad.stdout, bad.stdout
    core = bench.core_key
    counts = bench.check(
        {(core, "not_ip"): 1, (None, "no_peer"): 1},
        inner={("in", "not_ip", core): 1, ("out", "no_peer", None): 1},
        delivered={("in", None, core): 1},
    )
    assert counts.packets
    out = bench.a.run(tshark, "-r", str(bench.capture.path), "-V").stdout
    assert "Packet comments" in out, out
    assert f"wgpy: in dropped reason=not_ip peer={core}" in out, out
    assert "wgpy: out dropped reason=no_peer peer=(none)" in out, out
    assert f"wgpy: in delivered peer={core}" in out, out


# ---------------------------------------------------------------------------------------------
# secrets


METRICS_PORT: Final = 9586
_FETCH: Final = (
    "import sys, urllib.request\n"
    "with urllib.request.urlopen(sys.argv[1], timeout=5) as r:\n"
    "    sys.stdout.write(r.read().decode())\n"
)


def dut_records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _secret_forms(b64: str) -> dict[str, bytes]:
    raw = base64.b64decode(b64)
    return {
        "base64": b64.encode(),
        "base64 unpadded": b64.rstrip("=").encode(),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
        "raw bytes": raw,
    }


def test_no_output_contains_a_secret(netns_factory: Callable[[], Netns]) -> None:
    """A busy run (handshakes both ways, pings, drops, a capture, JSON logs, verbose text logs,
    `wgpy show`, Prometheus): no output holds a private key or the preshared key, in base64,
    hex or raw bytes."""
    a, b = netns_factory(), netns_factory()
    json_log = a.workdir / "dut-events.log"
    command_a = (
        "env",
        "WGPY_LOG_FORMAT=json",
        f"WGPY_LOG_FILE={json_log}",
        f"WGPY_METRICS=127.0.0.1:{METRICS_PORT}",
        *WGPYD,
    )
    topo = two_peer_topology(a, b, command_a=command_a, command_b=WGPYD, use_psk=True)
    assert topo.psk is not None
    capture = Capture.start(a, topo.a.ifname)

    for src, dst in ((topo.a, topo.b), (topo.b, topo.a)):
        for address in (dst.tunnel4, dst.tunnel6):
            result = ping(src.ns, address, count=2)
            assert result.returncode == 0, result.stdout + src.daemon.log() + dst.daemon.log()
    ping(a, NOBODY, count=2, wait=1)
    ping(b, NOBODY, count=2, wait=1)
    garbage = udp_socket(b)
    try:
        for datagram in (b"\x01\x00\x00\x00" + bytes(144), b"xyz", bytes(40)):
            garbage.sendto(datagram, (topo.a.underlay4, topo.a.listen_port))
    finally:
        garbage.close()

    outputs: dict[str, bytes] = {}

    def stats_of_a() -> dict[str, object] | None:
        stats = wgpy_stats(topo.a.ifname)
        # no_peer, invalid_mac1, bad_size, unknown_type
        return stats if stats is not None and len(str(stats["drops"]).split("reason")) > 4 else None

    outputs["wgpy-stats A"] = repr(wait_for(stats_of_a, 5, what="drops on A")).encode()
    outputs["wgpy-stats B"] = repr(wgpy_stats(topo.b.ifname)).encode()
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"

    def metrics() -> str | None:
        text = a.run(sys.executable, "-c", _FETCH, url, check=False).stdout
        return text if 'reason="no_peer"' in text else None

    outputs["metrics"] = wait_for(metrics, 5, what="drop metrics").encode()
    for node in (topo.a, topo.b):
        commands: list[tuple[str, ...]] = [
            ("show", node.ifname, "--json"),
            ("show", node.ifname),
            ("show", node.ifname, "--wide"),
            ("events", node.ifname),
            ("events", node.ifname, "--json"),
        ]
        for argv in commands:
            shown = node.ns.run(sys.executable, "-m", "wgpy.cli", *argv).stdout
            outputs[" ".join(("wgpy", *argv))] = shown.encode()
            assert node.public_key in shown or argv[0] == "events"
    packets = capture.stop(8)
    assert len(packets) >= 8
    outputs["capture file"] = capture.path.read_bytes()
    outputs["wgpy capture -r"] = a.run(
        sys.executable, "-m", "wgpy.cli", "capture", "-r", str(capture.path)
    ).stdout.encode()
    if shutil.which("tshark"):
        outputs["tshark -V"] = a.run("tshark", "-r", str(capture.path), "-V").stdout.encode()
    outputs["JSON log A"] = json_log.read_bytes()
    outputs["log A"] = topo.a.daemon.log().encode()
    outputs["verbose log B"] = topo.b.daemon.log().encode()

    # The run was busy: each output says something.
    events = {record["event"] for record in dut_records(json_log)}
    assert {"handshake_completed", "packet_dropped"} <= events, events
    assert b"Handshake completed" in outputs["verbose log B"], outputs["verbose log B"]
    assert b"wgpy_dropped_packets_total" in outputs["metrics"]
    assert all(outputs.values()), [name for name, value in outputs.items() if not value]

    secrets = {
        "private key of A": topo.a.private_key,
        "private key of B": topo.b.private_key,
        "preshared key": topo.psk,
    }
    leaks = [
        f"{what} ({form}) in {name}"
        for what, b64 in secrets.items()
        for form, needle in _secret_forms(b64).items()
        for name, data in outputs.items()
        if needle in data
    ]
    assert leaks == []
