"""wgpy.config: wg-quick syntax, line numbers on every value, FILE:LINE errors, round trip."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.config import (
    ConfigError,
    Value,
    format_config,
    parse_config,
    parse_endpoint,
    parse_prefix,
    suggest_key,
)

TEXT = """\
# a comment
[interface]   # comments after sections too
privatekey=yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
ADDRESS = 10.0.0.1/24, fd00::1/64
Address = 10.9.0.1/24
DNS = 1.1.1.1,9.9.9.9
PostUp = iptables -A FORWARD -i %i -j ACCEPT; ip route add 10.5.0.0/16 dev %i # cut here
PostUp = echo second
Table = off

[Peer]
# Name = alice laptop
PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
AllowedIPs = 10.0.0.2/32,
AllowedIPs = fd00::2/128
Endpoint = [fd99::2]:51820
PersistentKeepalive = 25
Colour = blue
"""


def test_parse_everything_with_lines() -> None:
    config = parse_config(TEXT, "wg0.conf")
    iface = config.interface
    assert iface is not None and iface.line == 2
    assert [(v.text, v.line) for v in iface.addresses] == [
        ("10.0.0.1/24", 4),
        ("fd00::1/64", 4),
        ("10.9.0.1/24", 5),
    ]
    assert [v.text for v in iface.values("DNS")] == ["1.1.1.1", "9.9.9.9"]
    post = iface.hooks("PostUp")
    assert [v.text for v in post] == [
        "iptables -A FORWARD -i %i -j ACCEPT; ip route add 10.5.0.0/16 dev %i",
        "echo second",
    ]
    assert iface.table is not None and iface.table.text == "off"
    (peer,) = config.peers
    assert peer.name == "alice laptop" and peer.line == 11
    assert [(v.text, v.line) for v in peer.allowed_ips] == [
        ("10.0.0.2/32", 14),
        ("fd00::2/128", 15),
    ]
    assert [(e.key, e.value.line) for e in peer.unknown] == [("Colour", 18)]
    assert all(v.filename == "wg0.conf" for v in peer.allowed_ips)
    table = config.table()
    assert table.match("10.0.0.2") is not None


def test_round_trip() -> None:
    config = parse_config(TEXT, "a")
    again = parse_config(format_config(config), "b")
    assert format_config(again) == format_config(config)
    assert again.peers[0].name == "alice laptop"
    assert [v.text for v in again.peers[0].allowed_ips] == ["10.0.0.2/32", "fd00::2/128"]
    assert [v.text for v in again.interface.hooks("PostUp")] == [  # type: ignore[union-attr]
        v.text
        for v in config.interface.hooks("PostUp")  # type: ignore[union-attr]
    ]


def test_value_errors_carry_file_and_line() -> None:
    config = parse_config("[Peer]\nPublicKey = nope\nAllowedIPs = 10.0.0.0/8\n", "p.conf")
    with pytest.raises(ConfigError) as info:
        config.table()
    assert str(info.value).startswith("p.conf:2: key is not 44")
    bad = parse_config(
        "[Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n"
        "\nAllowedIPs = 1.2.3/8\n",
        "q.conf",
    )
    with pytest.raises(ConfigError, match=r"^q\.conf:4: invalid prefix '1\.2\.3/8'$"):
        bad.table()
    with pytest.raises(ConfigError, match=r"^r\.conf:1: \[Peer\] has no PublicKey$"):
        parse_config("[Peer]\nAllowedIPs = 10.0.0.0/8\n", "r.conf").table()


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("1.2.3.4:51820", True),
        ("[fd00::1]:1", True),
        ("vpn.example.com:443", True),
        ("fd00::1:51820", False),
        ("1.2.3.4", False),
        ("1.2.3.4:0", False),
        ("1.2.3.4:65536", False),
        ("[fd00::1]51820", False),
        ("bad host:1", False),
    ],
)
def test_endpoints(text: str, ok: bool) -> None:
    value = Value(text, 3, "e.conf")
    if ok:
        parse_endpoint(value)
    else:
        with pytest.raises(ConfigError, match=r"^e\.conf:3: "):
            parse_endpoint(value)


def test_bare_address_prefix() -> None:
    assert str(parse_prefix(Value("10.1.2.3", 1))) == "10.1.2.3/32"


@settings(max_examples=300)
@given(
    st.text(
        alphabet=st.sampled_from("[]=#,.:/ \nPeerInterfacAlowdIPsKy0123456789abc"), max_size=200
    )
)
def test_parser_raises_only_config_errors(text: str) -> None:
    """Garbage never escapes as anything but a located ConfigError."""
    try:
        config = parse_config(text, "f.conf")
    except ConfigError as error:
        assert str(error).startswith("f.conf:")
        return
    try:
        config.table()
    except ConfigError as error:
        assert str(error).startswith("f.conf:")


@pytest.mark.parametrize(
    ("key", "interface", "expected"),
    [
        ("Allowed IPs", False, "AllowedIPs"),
        ("allowed_ips", False, "AllowedIPs"),
        ("AllowedIP", False, "AllowedIPs"),
        ("Public-Key", False, "PublicKey"),
        ("PersistentKeepAlive ", False, "PersistentKeepalive"),
        ("Listen Port", True, "ListenPort"),
        ("PrivteKey", True, "PrivateKey"),
        ("Colour", False, None),
    ],
)
def test_suggest_key(key: str, interface: bool, expected: str | None) -> None:
    assert suggest_key(key, interface) == expected


def test_table_refuses_unknown_keys_with_a_suggestion() -> None:
    text = (
        "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\n[Peer]\n"
        "PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nAllowed IPs = 10.0.0.2/32\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "wg0.conf").table()
    assert str(caught.value).startswith(
        "wg0.conf:6: unknown key 'Allowed IPs' (did you mean AllowedIPs?)"
    )
