"""wgpy.uapi: get rendering, set semantics and errors, and the incremental connection parser.

Expected values follow wireguard-go (docs/wireguard-behaviour.md §8); the same requests are
compared against a real wireguard-go in tests/netns/test_uapi_vs_go.py.
"""

from __future__ import annotations

import itertools
import math
from ipaddress import IPv4Address, IPv6Address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy import crypto, messages
from wgpy.device import Device
from wgpy.peer import Peer
from wgpy.uapi import (
    MAX_LINE,
    NullHooks,
    UapiConnection,
    _format_address,
    _format_prefix_int,
    handle_get,
    handle_set,
)

PRIV = bytes(range(1, 33))
PRIV_HEX = PRIV.hex()
CLAMPED_HEX = crypto.clamp(PRIV).hex()
OWN_HEX = crypto.public_key(PRIV).hex()
A = "a1" * 32
B = "b2" * 32
C = "c3" * 32
PSK = "5a" * 32
ZERO = "00" * 32
KEY_A = bytes.fromhex(A)
KEY_B = bytes.fromhex(B)


def apply(device: Device, *lines: str, now: float = 0.0) -> int:
    return handle_set(device, list(lines), now, NullHooks(device))


def peer_block(
    key: str,
    *,
    psk: str = ZERO,
    endpoint: str | None = None,
    handshake: tuple[int, int] = (0, 0),
    tx: int = 0,
    rx: int = 0,
    keepalive: int = 0,
    allowed: tuple[str, ...] = (),
) -> str:
    text = f"public_key={key}\npreshared_key={psk}\nprotocol_version=1\n"
    if endpoint is not None:
        text += f"endpoint={endpoint}\n"
    text += (
        f"last_handshake_time_sec={handshake[0]}\nlast_handshake_time_nsec={handshake[1]}\n"
        f"tx_bytes={tx}\nrx_bytes={rx}\npersistent_keepalive_interval={keepalive}\n"
    )
    return text + "".join(f"allowed_ip={a}\n" for a in allowed)


def connection(device: Device | None = None) -> tuple[Device, UapiConnection]:
    device = Device() if device is None else device
    return device, UapiConnection(device, NullHooks(device), lambda: 100.0)


def peer(device: Device, key: str) -> Peer:
    return device.peers[bytes.fromhex(key)]


def prefixes(device: Device, key: str) -> list[str]:
    return [str(p) for p in device.allowed_ips.entries(peer(device, key))]


# ---------------------------------------------------------------------------------------- get


def test_get_fresh_device_is_only_errno() -> None:
    assert handle_get(Device()) == "errno=0\n\n"


def test_get_full_device_exact_text() -> None:
    device = Device(PRIV)
    device.listen_port = 51820
    device.fwmark = 0x1234
    a = device.add_peer(KEY_A)
    b = device.add_peer(KEY_B)
    c = device.add_peer(bytes.fromhex(C))
    assert a is not None and b is not None and c is not None
    device.set_preshared_key(a, bytes.fromhex(PSK))
    device.set_endpoint(a, ("192.0.2.1", 51820))
    a.persistent_keepalive = 25
    a.tx_bytes, a.rx_bytes = 172, 228
    a.last_handshake_wall = 1700000000.25
    for prefix in ("10.0.0.0/8", "fd00::/64", "192.0.2.0/24"):
        device.allowed_ips.insert(prefix, a)
    device.allowed_ips.insert("10.0.0.0/8", a)  # re-insertion moves it to the tail
    device.allowed_ips.insert("::ffff:1.2.3.4/96", b)  # masked, shown the Go way
    device.set_endpoint(b, ("2001:db8:0:0:0:0:0:1", 7))  # not canonical as stored
    device.set_endpoint(c, ("fe80::1%eth0", 8))
    expected = (
        f"private_key={CLAMPED_HEX}\nlisten_port=51820\nfwmark=4660\n"
        + peer_block(
            A,
            psk=PSK,
            endpoint="192.0.2.1:51820",
            handshake=(1700000000, 250000000),
            tx=172,
            rx=228,
            keepalive=25,
            allowed=("fd00::/64", "192.0.2.0/24", "10.0.0.0/8"),
        )
        + peer_block(B, endpoint="[2001:db8::1]:7", allowed=("::ffff:0.0.0.0/96",))
        + peer_block(C, endpoint="[fe80::1%eth0]:8")
        + "errno=0\n\n"
    )
    assert handle_get(device) == expected


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("::ffff:192.0.2.7", "[::ffff:192.0.2.7]:1"),
        ("::ffff:c000:207", "[::ffff:192.0.2.7]:1"),
        ("::1.2.3.4", "[::102:304]:1"),
        ("::", "[::]:1"),
        ("0.0.0.0", "0.0.0.0:1"),
        ("FE80::A%lo", "[fe80::a%lo]:1"),
        ("::ffff:1.2.3.4%x", "[::ffff:1.2.3.4%x]:1"),
    ],
)
def test_get_endpoint_formatting(host: str, shown: str) -> None:
    device = Device()
    p = device.add_peer(KEY_A)
    assert p is not None
    device.set_endpoint(p, (host, 1))
    assert f"\nendpoint={shown}\n" in handle_get(device)


@pytest.mark.parametrize(
    ("wall", "sec", "nsec"),
    [
        (0.0, 0, 0),
        (-5.0, 0, 0),
        (1.5, 1, 500000000),
        (math.nextafter(2.0, 0.0), 2, 0),  # rounds up to a whole second: carried
        (1700000000.0, 1700000000, 0),
    ],
)
def test_get_last_handshake_split(wall: float, sec: int, nsec: int) -> None:
    device = Device()
    p = device.add_peer(KEY_A)
    assert p is not None
    p.last_handshake_wall = wall
    text = handle_get(device)
    assert f"\nlast_handshake_time_sec={sec}\nlast_handshake_time_nsec={nsec}\n" in text


def test_get_last_handshake_realistic_precision() -> None:
    device = Device()
    p = device.add_peer(KEY_A)
    assert p is not None
    p.last_handshake_wall = 1700000000.123456789
    lines = dict(line.split("=", 1) for line in handle_get(device).splitlines() if "=" in line)
    assert lines["last_handshake_time_sec"] == "1700000000"
    assert abs(int(lines["last_handshake_time_nsec"]) - 123456789) < 1000


# --------------------------------------------------------------------------------- set basics


def test_set_round_trip() -> None:
    device = Device()
    assert (
        apply(
            device,
            f"private_key={PRIV_HEX}",
            "listen_port=51820",
            "fwmark=4294967295",
            "replace_peers=true",
            f"public_key={A}",
            f"preshared_key={PSK}",
            "protocol_version=1",
            "endpoint=[2001:DB8::1]:51820",
            "persistent_keepalive_interval=25",
            "replace_allowed_ips=true",
            "allowed_ip=10.1.2.3/8",
            "allowed_ip=::ffff:1.2.3.4/128",
            f"public_key={B}",
            "endpoint=192.0.2.9:00009",
            "allowed_ip=0.0.0.0/0",
        )
        == 0
    )
    assert handle_get(device) == (
        f"private_key={CLAMPED_HEX}\nlisten_port=51820\nfwmark=4294967295\n"
        + peer_block(
            A,
            psk=PSK,
            endpoint="[2001:db8::1]:51820",
            tx=148,  # turning keepalive on sent a handshake initiation
            keepalive=25,
            allowed=("10.0.0.0/8", "::ffff:1.2.3.4/128"),
        )
        + peer_block(B, endpoint="192.0.2.9:9", allowed=("0.0.0.0/0",))
        + "errno=0\n\n"
    )


def test_set_stores_typed_values() -> None:
    device = Device()
    assert (
        apply(
            device,
            f"public_key={A.upper()}",
            f"preshared_key={PSK.upper()}",
            "endpoint=[FE80::1%eth0]:5",
            "allowed_ip=fd00::1/64",
        )
        == 0
    )
    p = peer(device, A)
    assert p.preshared_key == bytes.fromhex(PSK)
    assert p.endpoint == ("fe80::1%eth0", 5)
    assert device.allowed_ips.entries(p) == [ip_network("fd00::/64")]
    assert apply(device, f"public_key={A}", "endpoint=[::ffff:1.2.3.4]:6") == 0
    assert p.endpoint == ("::ffff:1.2.3.4", 6)  # stays IPv6; written the Go way
    assert apply(device, f"public_key={A}", f"preshared_key={ZERO}") == 0
    assert p.preshared_key == bytes(32)


def test_private_key_clamped_uppercase_and_removed() -> None:
    device = Device()
    assert apply(device, f"private_key={PRIV_HEX.upper()}") == 0
    assert device.private_key == crypto.clamp(PRIV)
    assert handle_get(device).startswith(f"private_key={CLAMPED_HEX}\n")
    assert apply(device, f"private_key={ZERO}") == 0
    assert device.private_key is None
    assert handle_get(device) == "errno=0\n\n"


def test_listen_port_and_fwmark_zero_are_omitted() -> None:
    device = Device()
    assert apply(device, "listen_port=5", "fwmark=6") == 0
    assert handle_get(device) == "listen_port=5\nfwmark=6\nerrno=0\n\n"
    assert apply(device, "listen_port=0", "fwmark=0000") == 0
    assert handle_get(device) == "errno=0\n\n"


def test_blank_line_in_body_ends_the_operation() -> None:
    device = Device()
    assert apply(device, "listen_port=5", "", "nonsense") == 0
    assert device.listen_port == 5


# ------------------------------------------------------------------------------------- errors

INVALID_LINES: list[tuple[str, list[str]]] = [
    ("private-key-63", [f"private_key={PRIV_HEX[:63]}"]),
    ("private-key-65", [f"private_key={PRIV_HEX}0"]),
    ("private-key-not-hex", [f"private_key={'g' * 64}"]),
    ("private-key-whitespace", [f"private_key={PRIV_HEX[:62]} 0"]),
    ("private-key-0x", [f"private_key=0x{PRIV_HEX[:62]}"]),
    ("private-key-empty", ["private_key="]),
    ("listen-port-65536", ["listen_port=65536"]),
    ("listen-port-negative", ["listen_port=-1"]),
    ("listen-port-plus", ["listen_port=+1"]),
    ("listen-port-empty", ["listen_port="]),
    ("listen-port-space", ["listen_port= 1"]),
    ("listen-port-hex", ["listen_port=0x10"]),
    ("listen-port-underscore", ["listen_port=1_0"]),
    ("listen-port-unicode-digit", ["listen_port=\u0661"]),
    ("listen-port-huge", ["listen_port=" + "9" * 5000]),
    ("fwmark-2^32", ["fwmark=4294967296"]),
    ("fwmark-negative", ["fwmark=-1"]),
    ("replace-peers-false", ["replace_peers=false"]),
    ("replace-peers-upper", ["replace_peers=TRUE"]),
    ("unknown-device-key", ["foo=bar"]),
    ("empty-key", ["=x"]),
    ("peer-key-before-public-key", ["endpoint=192.0.2.1:1"]),
    ("protocol-version-before-public-key", ["protocol_version=1"]),
    ("public-key-short", [f"public_key={A[:62]}"]),
    ("public-key-empty", ["public_key="]),
    ("update-only-false", [f"public_key={A}", "update_only=false"]),
    ("remove-1", [f"public_key={A}", "remove=1"]),
    ("psk-bad", [f"public_key={A}", f"preshared_key={PSK[:63]}x"]),
    ("endpoint-hostname", [f"public_key={A}", "endpoint=localhost:51820"]),
    ("endpoint-no-port", [f"public_key={A}", "endpoint=192.0.2.1"]),
    ("endpoint-empty-port", [f"public_key={A}", "endpoint=192.0.2.1:"]),
    ("endpoint-no-host", [f"public_key={A}", "endpoint=:1"]),
    ("endpoint-v6-unbracketed", [f"public_key={A}", "endpoint=::1:51820"]),
    ("endpoint-v4-bracketed", [f"public_key={A}", "endpoint=[192.0.2.1]:1"]),
    ("endpoint-port-65536", [f"public_key={A}", "endpoint=192.0.2.1:65536"]),
    ("endpoint-port-service", [f"public_key={A}", "endpoint=[::1]:http"]),
    ("endpoint-empty-zone", [f"public_key={A}", "endpoint=[fe80::1%]:1"]),
    ("endpoint-v4-zone", [f"public_key={A}", "endpoint=192.0.2.1%lo:1"]),
    ("endpoint-v4-leading-zero", [f"public_key={A}", "endpoint=01.2.3.4:1"]),
    ("endpoint-missing-bracket", [f"public_key={A}", "endpoint=[::1:1"]),
    ("endpoint-empty-brackets", [f"public_key={A}", "endpoint=[]:1"]),
    ("endpoint-only-zone", [f"public_key={A}", "endpoint=[%lo]:1"]),
    ("keepalive-65536", [f"public_key={A}", "persistent_keepalive_interval=65536"]),
    ("keepalive-negative", [f"public_key={A}", "persistent_keepalive_interval=-1"]),
    ("replace-allowed-ips-false", [f"public_key={A}", "replace_allowed_ips=false"]),
    ("allowed-ip-no-cidr", [f"public_key={A}", "allowed_ip=10.0.0.1"]),
    ("allowed-ip-33", [f"public_key={A}", "allowed_ip=10.0.0.0/33"]),
    ("allowed-ip-129", [f"public_key={A}", "allowed_ip=::/129"]),
    ("allowed-ip-1000", [f"public_key={A}", "allowed_ip=::/1000"]),
    ("allowed-ip-short-address", [f"public_key={A}", "allowed_ip=10.0.0/8"]),
    ("allowed-ip-empty-cidr", [f"public_key={A}", "allowed_ip=10.0.0.1/"]),
    ("allowed-ip-zone", [f"public_key={A}", "allowed_ip=fe80::1%lo/64"]),
    ("allowed-ip-leading-zero-cidr", [f"public_key={A}", "allowed_ip=10.0.0.0/08"]),
    ("allowed-ip-plus-cidr", [f"public_key={A}", "allowed_ip=10.0.0.0/+8"]),
    ("allowed-ip-double-minus", [f"public_key={A}", "allowed_ip=--10.0.0.0/8"]),
    ("allowed-ip-minus-only", [f"public_key={A}", "allowed_ip=-"]),
    ("protocol-version-2", [f"public_key={A}", "protocol_version=2"]),
    ("protocol-version-01", [f"public_key={A}", "protocol_version=01"]),
    ("unknown-peer-key", [f"public_key={A}", "foo=bar"]),
    ("device-key-in-peer-section", [f"public_key={A}", "listen_port=1"]),
    ("after-remove-still-checked", [f"public_key={A}", "remove=true", "allowed_ip=10.0.0.1"]),
    ("after-update-only-still-checked", [f"public_key={A}", "update_only=true", "x=y"]),
]


@pytest.mark.parametrize(
    "lines", [lines for _, lines in INVALID_LINES], ids=[i for i, _ in INVALID_LINES]
)
def test_invalid_values_are_einval(lines: list[str]) -> None:
    assert apply(Device(), *lines) == -22


@pytest.mark.parametrize(
    "lines",
    [["listen_port"], [f"public_key={A}", "allowed_ip 10.0.0.0/8"], ["fwmark=1", "junk"]],
)
def test_line_without_equals_is_eproto(lines: list[str]) -> None:
    assert apply(Device(), *lines) == -71


def test_invalid_value_in_own_key_section_is_still_reported() -> None:
    device = Device(PRIV)
    assert apply(device, f"public_key={OWN_HEX}", "endpoint=nonsense") == -22
    assert apply(device, f"public_key={OWN_HEX}", "endpoint=192.0.2.1:1") == 0


class FailingHooks:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls: list[tuple[str, int]] = []

    def set_listen_port(self, port: int) -> None:
        self.calls.append(("port", port))
        raise self.error

    def set_fwmark(self, mark: int) -> None:
        self.calls.append(("fwmark", mark))
        raise self.error


@pytest.mark.parametrize(
    ("line", "call"), [("listen_port=51820", "port"), ("fwmark=51820", "fwmark")]
)
def test_hook_oserror_is_eaddrinuse(line: str, call: str) -> None:
    hooks = FailingHooks(OSError(98, "Address already in use"))
    device = Device()
    assert handle_set(device, [line, "fwmark=1"], 0.0, hooks) == -98
    assert hooks.calls == [(call, 51820)]  # processing stopped at the failure


def test_unexpected_hook_failure_is_enobufs_minus_55() -> None:
    hooks = FailingHooks(RuntimeError("bug"))
    assert handle_set(Device(), ["listen_port=1"], 0.0, hooks) == -55


def test_hooks_receive_parsed_numbers() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[str, int]] = []

        def set_listen_port(self, port: int) -> None:
            self.calls.append(("port", port))

        def set_fwmark(self, mark: int) -> None:
            self.calls.append(("fwmark", mark))

    hooks = Recorder()
    device = Device()
    assert handle_set(device, ["listen_port=00080", "fwmark=4294967295"], 0.0, hooks) == 0
    assert hooks.calls == [("port", 80), ("fwmark", 4294967295)]
    assert device.listen_port == 0  # the hook, not the protocol, stores the value


def test_partial_application_on_error() -> None:
    device = Device()
    errno = apply(
        device,
        "listen_port=1234",
        f"public_key={A}",
        "allowed_ip=10.0.0.0/8",
        "endpoint=not-an-address:1",
        "allowed_ip=10.1.0.0/16",
        f"public_key={B}",
    )
    assert errno == -22
    assert device.listen_port == 1234
    assert list(device.peers) == [KEY_A]
    assert prefixes(device, A) == ["10.0.0.0/8"]
    assert peer(device, A).endpoint is None


def test_too_many_peers(monkeypatch: pytest.MonkeyPatch) -> None:
    import wgpy.uapi

    monkeypatch.setattr(wgpy.uapi, "MAX_PEERS", 2)
    device = Device()
    assert apply(device, f"public_key={A}", f"public_key={B}") == 0
    assert apply(device, f"public_key={A}", "allowed_ip=10.0.0.0/8") == 0  # existing: fine
    assert apply(device, f"public_key={C}") == -22
    assert len(device.peers) == 2


# ---------------------------------------------------------------------------- peer semantics


def test_replace_peers() -> None:
    device = Device()
    assert apply(device, f"public_key={A}", "allowed_ip=10.0.0.0/8", f"public_key={B}") == 0
    assert apply(device, "replace_peers=true", f"public_key={C}", "allowed_ip=10.0.0.0/8") == 0
    assert list(device.peers) == [bytes.fromhex(C)]
    assert prefixes(device, C) == ["10.0.0.0/8"]
    assert len(device.allowed_ips) == 1


def test_replace_allowed_ips_only_touches_that_peer() -> None:
    device = Device()
    assert (
        apply(
            device,
            f"public_key={A}",
            "allowed_ip=10.0.0.0/8",
            "allowed_ip=fd00::/8",
            f"public_key={B}",
            "allowed_ip=10.2.0.0/16",
        )
        == 0
    )
    assert (
        apply(device, f"public_key={A}", "replace_allowed_ips=true", "allowed_ip=10.5.0.0/16") == 0
    )
    assert prefixes(device, A) == ["10.5.0.0/16"]
    assert prefixes(device, B) == ["10.2.0.0/16"]


def test_remove_deletes_peer_and_ignores_rest_of_section() -> None:
    device = Device()
    assert apply(device, f"public_key={A}", "allowed_ip=10.0.0.0/8", f"public_key={B}") == 0
    assert (
        apply(
            device,
            f"public_key={A}",
            "remove=true",
            "allowed_ip=10.9.0.0/16",
            "endpoint=192.0.2.1:1",
        )
        == 0
    )
    assert list(device.peers) == [KEY_B]
    assert len(device.allowed_ips) == 0
    assert apply(device, f"public_key={C}", "remove=true") == 0  # unknown: created, removed
    assert list(device.peers) == [KEY_B]


def test_update_only_new_peer_is_not_created() -> None:
    device = Device()
    assert apply(device, f"public_key={A}", "update_only=true", "allowed_ip=10.0.0.0/8") == 0
    assert device.peers == {}
    assert len(device.allowed_ips) == 0


def test_update_only_after_other_lines_removes_the_new_peer() -> None:
    device = Device()
    assert apply(device, f"public_key={A}", "allowed_ip=10.0.0.0/8", "update_only=true") == 0
    assert device.peers == {}
    assert len(device.allowed_ips) == 0


def test_update_only_existing_peer_is_updated() -> None:
    device = Device()
    assert apply(device, f"public_key={A}") == 0
    assert apply(device, f"public_key={A}", "update_only=true", "allowed_ip=10.0.0.0/8") == 0
    assert prefixes(device, A) == ["10.0.0.0/8"]


def test_allowed_ip_moves_between_peers() -> None:
    device = Device()
    assert apply(device, f"public_key={A}", "allowed_ip=10.0.0.0/8", "allowed_ip=10.9.0.0/16") == 0
    assert apply(device, f"public_key={B}", "allowed_ip=10.1.2.3/8") == 0
    assert prefixes(device, A) == ["10.9.0.0/16"]
    assert prefixes(device, B) == ["10.0.0.0/8"]
    assert device.allowed_ips.lookup("10.1.1.1") is peer(device, B)


def test_allowed_ip_reinsert_moves_to_tail() -> None:
    device = Device()
    assert (
        apply(
            device,
            f"public_key={A}",
            "allowed_ip=10.0.0.0/8",
            "allowed_ip=fd00::/8",
            "allowed_ip=10.0.0.0/8",
        )
        == 0
    )
    assert prefixes(device, A) == ["fd00::/8", "10.0.0.0/8"]


def test_allowed_ip_minus_removes_only_own_entry() -> None:
    device = Device()
    assert apply(device, f"public_key={A}", "allowed_ip=10.0.0.0/8", "allowed_ip=10.1.0.0/16") == 0
    assert apply(device, f"public_key={B}", "allowed_ip=10.2.0.0/16") == 0
    assert (
        apply(
            device,
            f"public_key={A}",
            "allowed_ip=-10.0.0.5/8",  # host bits are masked here too
            "allowed_ip=-10.2.0.0/16",  # B's: untouched, no error
            "allowed_ip=-10.7.0.0/16",  # absent: no error
        )
        == 0
    )
    assert prefixes(device, A) == ["10.1.0.0/16"]
    assert prefixes(device, B) == ["10.2.0.0/16"]


def test_own_key_section_is_ignored() -> None:
    device = Device(PRIV)
    assert (
        apply(
            device,
            f"public_key={OWN_HEX}",
            "allowed_ip=10.0.0.0/8",
            "endpoint=192.0.2.1:1",
            "persistent_keepalive_interval=5",
            f"public_key={A}",
            "allowed_ip=10.1.0.0/16",
        )
        == 0
    )
    assert list(device.peers) == [KEY_A]
    assert device.allowed_ips.lookup("10.0.0.1") is None


def test_setting_private_key_removes_peer_with_that_public_key() -> None:
    device = Device()
    assert apply(device, f"public_key={OWN_HEX}", "allowed_ip=10.0.0.0/8", f"public_key={A}") == 0
    assert apply(device, f"private_key={PRIV_HEX}") == 0
    assert list(device.peers) == [KEY_A]
    assert len(device.allowed_ips) == 0


# ------------------------------------------------------------- keepalive and section endings


def test_keepalive_enabled_goes_out_at_section_end_to_a_later_endpoint() -> None:
    device = Device(PRIV)
    assert (
        apply(
            device,
            f"public_key={A}",
            "persistent_keepalive_interval=25",
            "endpoint=192.0.2.1:51820",
        )
        == 0
    )
    sent = device.datagrams_to_send()
    assert len(sent) == 1
    datagram, endpoint = sent[0]
    assert endpoint == ("192.0.2.1", 51820)
    assert datagram[0] == messages.TYPE_INITIATION
    assert peer(device, A).persistent_keepalive == 25


@pytest.mark.parametrize(
    "lines",
    [
        ["persistent_keepalive_interval=25", "persistent_keepalive_interval=30"],  # go: pkaOn off
        ["persistent_keepalive_interval=25", "persistent_keepalive_interval=0"],
        ["persistent_keepalive_interval=0"],
    ],
)
def test_keepalive_not_sent_unless_last_line_turned_it_on(lines: list[str]) -> None:
    device = Device(PRIV)
    assert apply(device, f"public_key={A}", "endpoint=192.0.2.1:51820", *lines) == 0
    assert device.datagrams_to_send() == []
    assert peer(device, A).persistent_keepalive == int(lines[-1].split("=")[1])


def test_keepalive_stored_but_not_sent_when_down_or_on_error() -> None:
    device = Device(PRIV)
    device.down(0.0)
    assert (
        apply(device, f"public_key={A}", "endpoint=192.0.2.1:1", "persistent_keepalive_interval=9")
        == 0
    )
    assert device.datagrams_to_send() == []
    assert peer(device, A).persistent_keepalive == 9
    device = Device(PRIV)
    errno = apply(
        device, f"public_key={A}", "endpoint=192.0.2.1:1", "persistent_keepalive_interval=9", "x=1"
    )
    assert errno == -22
    assert device.datagrams_to_send() == []  # go: no end of section after an error
    assert peer(device, A).persistent_keepalive == 9


class SpyDevice(Device):
    def __init__(self) -> None:
        super().__init__()
        self.configured: list[bytes] = []

    def peer_configured(self, peer: Peer, now: float) -> None:
        self.configured.append(peer.public_key)
        super().peer_configured(peer, now)


def test_peer_configured_once_per_live_section() -> None:
    device = SpyDevice()
    assert (
        apply(
            device,
            f"public_key={A}",
            "allowed_ip=10.0.0.0/8",
            f"public_key={B}",
            "remove=true",
            f"public_key={C}",
            f"public_key={A}",
        )
        == 0
    )
    assert device.configured == [KEY_A, bytes.fromhex(C), KEY_A]


def test_peer_configured_not_called_for_failing_section() -> None:
    device = SpyDevice()
    assert apply(device, f"public_key={A}", f"public_key={B}", "bogus=1") == -22
    assert device.configured == [KEY_A]


# -------------------------------------------------------------------------------- connection


def test_connection_get_and_set_sequence() -> None:
    _, conn = connection()
    out = conn.feed(b"get=1\n\nset=1\nlisten_port=7\npublic_key=" + A.encode() + b"\n\nget=1\n\n")
    assert out == (
        b"errno=0\n\nerrno=0\n\nlisten_port=7\n" + peer_block(A).encode() + b"errno=0\n\n"
    )
    assert not conn.closed
    assert conn.buffered == 0


def test_connection_set_error_skips_rest_of_request_and_stays_open() -> None:
    device, conn = connection()
    out = conn.feed(b"set=1\nfwmark=1\nfoo=bar\nfwmark=2\npublic_key=" + A.encode() + b"\n\n")
    assert out == b"errno=-22\n\n"
    assert device.fwmark == 1 and device.peers == {}
    assert conn.feed(b"get=1\n\n") == b"fwmark=1\nerrno=0\n\n"
    assert not conn.closed


def test_connection_error_reply_is_immediate() -> None:
    _, conn = connection()
    assert conn.feed(b"set=1\nfoo=bar\n") == b"errno=-22\n\n"
    assert conn.feed(b"more=lines\n") == b""
    assert conn.feed(b"\nget=1\n\n") == b"errno=0\n\n"


@pytest.mark.parametrize(
    "data", [b"foo=1\n", b"\n", b"set=1\r\n", b"get=1 \n", b"GET=1\n", b"set=2\n", b"get=1\n\nx\n"]
)
def test_connection_unknown_operation_closes_without_reply(data: bytes) -> None:
    _, conn = connection()
    out = conn.feed(data + b"get=1\n\n")
    assert out == (b"errno=0\n\n" if data.startswith(b"get=1\n\n") else b"")
    assert conn.closed
    assert conn.feed(b"get=1\n\n") == b""
    assert conn.feed_eof() == b""


def test_connection_get_with_trailing_byte() -> None:
    _, conn = connection()
    # go consumes exactly one byte after "get=1\n"; the rest is read as the next operation
    assert conn.feed(b"get=1\nxget=1\n\n") == b"errno=-22\n\nerrno=0\n\n"
    assert not conn.closed
    assert conn.feed(b"get=1\nx\n") == b"errno=-22\n\n"
    assert conn.closed  # "\n" alone is an unknown operation


def test_connection_crlf_in_body() -> None:
    device, conn = connection()
    assert conn.feed(b"set=1\nlisten_port=5\r\npublic_key=" + A.encode() + b"\r\n\r\n") == (
        b"errno=0\n\n"
    )
    assert device.listen_port == 5 and KEY_A in device.peers
    assert conn.feed(b"set=1\nlisten_port=6\r\n\r") == b""
    assert conn.feed(b"\n") == b"errno=0\n\n"  # "\r" then "\n" in another chunk: blank line
    assert device.listen_port == 6


def test_connection_non_utf8_bytes() -> None:
    _, conn = connection()
    assert conn.feed(b"set=1\nlisten_port=\xff\n\n") == b"errno=-22\n\n"
    request = b"set=1\npublic_key=" + A.encode() + b"\nendpoint=[fe80::1%\xff\xfe]:9\n\n"
    assert conn.feed(request) == b"errno=0\n\n"
    assert b"\nendpoint=[fe80::1%\xff\xfe]:9\n" in conn.feed(b"get=1\n\n")


def test_connection_line_limit_exactly_like_go() -> None:
    # 65535 bytes plus "\n" is accepted (leading zeros keep the value a valid port)
    line = b"listen_port=" + b"0" * (MAX_LINE - 1 - 12 - 2) + b"42"
    assert len(line) == MAX_LINE - 1
    device, conn = connection()
    assert conn.feed(b"set=1\n" + line + b"\n\n") == b"errno=0\n\n"
    assert device.listen_port == 42
    # one more byte: go's scanner fails with errno=-5 and the connection ends
    device, conn = connection()
    line = b"listen_port=" + b"0" * (MAX_LINE - 12 - 2) + b"42"
    assert len(line) == MAX_LINE
    out = conn.feed(b"set=1\npublic_key=" + A.encode() + b"\n" + line + b"\n\n")
    assert out == b"errno=-5\n\n"
    assert conn.closed
    assert KEY_A in device.peers


def test_connection_overlong_set_line_detected_before_newline() -> None:
    device = SpyDevice()
    _, conn = connection(device)
    assert conn.feed(b"set=1\npublic_key=" + A.encode() + b"\nallowed_ip=") == b""
    out = b""
    for _ in range(MAX_LINE // 4096 + 1):
        out += conn.feed(b"1" * 4096)
        assert conn.buffered <= MAX_LINE
    assert out == b"errno=-5\n\n"
    assert conn.closed
    assert device.configured == [KEY_A]  # the section still ended, as in go


def test_connection_overlong_operation_line_closes() -> None:
    _, conn = connection()
    assert conn.feed(b"x" * (MAX_LINE - 1)) == b""
    assert not conn.closed
    assert conn.feed(b"x") == b""
    assert conn.closed
    assert conn.buffered == 0


def test_connection_skipped_lines_are_not_buffered() -> None:
    _, conn = connection()
    assert conn.feed(b"set=1\nfoo=bar\n") == b"errno=-22\n\n"
    for _ in range(100):
        assert conn.feed(b"y" * 100_000) == b""
        assert conn.buffered <= 1
    assert conn.feed(b"\n\n") == b""  # end of the long line, then the blank line
    assert not conn.closed
    assert conn.feed(b"get=1\n\n") == b"errno=0\n\n"


def test_connection_feed_eof() -> None:
    device, conn = connection()
    assert conn.feed(b"set=1\nlisten_port=5\nfwmark=7\r") == b""
    assert conn.feed_eof() == b"errno=0\n\n"  # last partial line applied, as go's scanner
    assert (device.listen_port, device.fwmark) == (5, 7)
    assert conn.closed
    _, conn = connection()
    assert conn.feed(b"set=1\nfwmark=x") == b""
    assert conn.feed_eof() == b"errno=-22\n\n"
    for partial in (b"get=1\n", b"get=", b"set=1\nfoo=bar\n"):
        _, conn = connection()
        conn.feed(partial)
        assert conn.feed_eof() == b""
        assert conn.closed


# A script of operations with its expected replies, fed in arbitrary pieces.
SCRIPT = (
    b"get=1\n\n"
    b"set=1\nprivate_key=" + PRIV_HEX.encode() + b"\nlisten_port=51820\r\n"
    b"public_key=" + A.encode() + b"\nendpoint=[2001:db8::1]:1\nallowed_ip=10.0.0.0/8\n\n"
    b"set=1\nlisten_port=70000\npublic_key=" + B.encode() + b"\n\n"
    b"get=1\nx"
    b"set=1\npublic_key=" + B.encode() + b"\nallowed_ip=10.1.2.3/8\n\n"
    b"get=1\n\n"
)
SCRIPT_REPLY = (
    b"errno=0\n\n"
    b"errno=0\n\n"
    b"errno=-22\n\n"
    b"errno=-22\n\n"
    b"errno=0\n\n"
    + (
        f"private_key={CLAMPED_HEX}\nlisten_port=51820\n"
        + peer_block(A, endpoint="[2001:db8::1]:1")
        + peer_block(B, allowed=("10.0.0.0/8",))
        + "errno=0\n\n"
    ).encode()
)


def test_connection_script_in_one_piece() -> None:
    _, conn = connection()
    assert conn.feed(SCRIPT) == SCRIPT_REPLY
    assert not conn.closed


def test_connection_script_byte_by_byte() -> None:
    _, conn = connection()
    assert b"".join(conn.feed(SCRIPT[i : i + 1]) for i in range(len(SCRIPT))) == SCRIPT_REPLY


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(SCRIPT)), max_size=40))
def test_connection_script_in_arbitrary_chunks(cuts: list[int]) -> None:
    device, conn = connection()
    bounds = [0, *sorted(cuts), len(SCRIPT)]
    out = b"".join(conn.feed(SCRIPT[a:b]) for a, b in itertools.pairwise(bounds))
    assert out == SCRIPT_REPLY
    assert not conn.closed
    assert conn.buffered == 0
    assert prefixes(device, B) == ["10.0.0.0/8"]


# ----------------------------------------------------- bulk allowed_ip runs vs the exact path

_prefix_text = st.one_of(
    st.builds(
        lambda a, n: f"{'.'.join(str(x) for x in a)}/{n}",
        st.lists(st.integers(0, 255), min_size=4, max_size=4),
        st.integers(0, 33),
    ),
    st.builds(
        lambda groups, n: f"{':'.join(f'{g:x}' for g in groups)}/{n}",
        st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8),
        st.integers(0, 129),
    ),
    st.sampled_from(
        [
            "::/0",
            "::1/128",
            "fd00:1:2::/48",
            "::ffff:10.0.0.1/120",
            "::10.0.0.1/128",
            "FD00::AB/64",
            "10.0.0.1/08",
            "10.0.0.01/32",
            "1.2.3/24",
            "1.2.3.4.5/32",
            "1.2:3::/64",
            "::1::/64",
            "12345::/16",
            "0.0.0.0/0",
            "10.0.0.0/032",
            "fd00::/00",
            "1.2.3.4/",
            "/24",
            "a.b.c.d/8",
            "::ffff:1.2.3.04/128",
            "1:2:3:4:5:6:7::/128",
        ]
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([A, B, None]), st.lists(_prefix_text, min_size=1, max_size=12)),
        min_size=1,
        max_size=4,
    )
)
def test_allowed_ip_run_fast_path_equals_line_by_line(
    sections: list[tuple[str | None, list[str]]],
) -> None:
    """Plain ``allowed_ip`` lines ending in ``\\n`` take the bulk path; the same lines ending
    in ``\\r\\n`` take the exact per-line path (go drops the ``\\r``). Both must leave the same
    table, in the same order, and give the same reply (also in the device section, where
    allowed_ip is an invalid key)."""
    body = "".join(
        ("" if key is None else f"public_key={key}\n")  # None: no new section
        + "".join(f"allowed_ip={p}\n" for p in section)
        for key, section in sections
    )
    results = []
    for newline in ("\n", "\r\n"):
        device, conn = connection()
        request = ("set=1\n" + (body + "\n").replace("\n", newline)).encode()
        reply = conn.feed(request) + conn.feed(b"get=1\n\n")
        table = {
            key: [str(p) for p in device.allowed_ips.entries(p_)]
            for key, p_ in ((k.hex(), p) for k, p in device.peers.items())
        }
        results.append((reply, table))
    assert results[0] == results[1]


def test_allowed_ip_run_error_in_the_middle_keeps_earlier_lines() -> None:
    device, conn = connection()
    request = f"set=1\npublic_key={A}\nallowed_ip=10.0.0.0/8\nallowed_ip=10.1.0.0/33\n"
    request += "allowed_ip=10.2.0.0/16\n\nget=1\n\n"
    reply = conn.feed(request.encode())
    assert reply.startswith(b"errno=-22\n\n")
    assert prefixes(device, A) == ["10.0.0.0/8"]
    assert b"allowed_ip=10.0.0.0/8\n" in reply and b"10.2.0.0" not in reply


def test_allowed_ip_run_in_the_device_section_is_einval() -> None:
    device, conn = connection()
    assert conn.feed(b"set=1\nallowed_ip=10.0.0.0/8\nallowed_ip=10.0.0.0/9\n\n") == (
        b"errno=-22\n\n"
    )
    assert not device.peers and len(device.allowed_ips) == 0


def _v6_with_zero_runs() -> st.SearchStrategy[int]:
    """IPv6 addresses rich in zero groups (where the :: placement matters), mapped and
    IPv4-compatible forms."""
    groups = st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0xABC]), min_size=8, max_size=8)
    patterned = groups.map(lambda g: int.from_bytes(b"".join(x.to_bytes(2, "big") for x in g)))
    return st.one_of(
        patterned,
        st.integers(0, 2**128 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1).map(lambda v: 0xFFFF << 32 | v),
    )


@settings(max_examples=500)
@given(
    st.one_of(
        st.tuples(st.just(4), st.integers(0, 2**32 - 1), st.integers(0, 32)),
        st.tuples(st.just(6), _v6_with_zero_runs(), st.integers(0, 128)),
    )
)
def test_get_formats_prefixes_from_ints_as_from_objects(item: tuple[int, int, int]) -> None:
    version, address, length = item
    expected = _format_address(IPv4Address(address) if version == 4 else IPv6Address(address))
    assert _format_prefix_int(version, address, length) == f"{expected}/{length}"
