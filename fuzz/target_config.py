"""Fuzz target: the wg-quick config parser (``wgpy.config``).

The input, decoded as UTF-8 (undecodable bytes become U+FFFD, as a file read by ``load``
would be refused before parsing), is parsed; every value of every section is then given to the
typed parsers, and (one input in 32) the whole config to ``wgpy lint``'s checks. Invariants:
the only exception is ``ConfigError`` whose text is ``FILE:LINE: message`` (or ``FILE:
message``) with a line inside the text; ``format_config`` of a parsed config parses again to
the same sections, keys, values and names.
"""

from __future__ import annotations

import re

from wgpy.config import (
    Config,
    ConfigError,
    _Section,
    format_config,
    has_host_bits,
    parse_address,
    parse_config,
    parse_endpoint,
    parse_int,
    parse_key,
    parse_prefix,
)
from wgpy.tools.files.lint import exit_status, lint, render_text

FILENAME = "fuzz.conf"
_LOCATION = re.compile(re.escape(FILENAME) + r"(?::([0-9]+))?: .")


def _check_error(error: ConfigError, lines: int) -> None:
    match = _LOCATION.match(str(error))
    assert match is not None, f"not FILE:LINE: message: {str(error)[:200]!r}"
    if match.group(1) is not None:
        assert 1 <= int(match.group(1)) <= max(lines, 1), str(error)[:200]


def _shape(config: Config) -> list[tuple[str, str | None, list[tuple[str, list[str]]]]]:
    """What a config means: sections in order, their names, each key's values (lists split)."""
    sections: list[tuple[str, _Section]] = [("peer", p) for p in config.peers]
    if config.interface is not None:
        sections.insert(0, ("interface", config.interface))
    return [
        (
            kind,
            section.name,
            [
                (key, [v.text for v in section.values(key)])
                for key in dict.fromkeys(e.key for e in section.entries)
            ],
        )
        for kind, section in sections
    ]


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    lines = len(text.splitlines())
    try:
        config = parse_config(text, FILENAME)
    except ConfigError as error:
        _check_error(error, lines)
        return
    sections = ([config.interface] if config.interface else []) + list(config.peers)
    for section in sections:
        for entry in section.entries:
            value = entry.value
            for parse in (
                parse_prefix,
                parse_address,
                parse_key,
                parse_endpoint,
                lambda v: parse_int(v, 0, 65535, "port"),
            ):
                try:
                    parse(value)
                except ConfigError as error:
                    _check_error(error, lines)
            has_host_bits(value)
    try:
        config.table()
        config.peer_names()
    except ConfigError as error:
        _check_error(error, lines)
    if data and data[-1] % 32 == 0:  # one input in 32, deterministically: lint takes ~1 ms
        try:
            findings = lint([config])  # `wgpy lint`: every finding, never a traceback
        except ConfigError as error:
            _check_error(error, lines)
        else:
            exit_status(findings)
            render_text(findings)
    again = parse_config(format_config(config), FILENAME)
    assert _shape(again) == _shape(config), "format_config does not round-trip"


def seeds() -> list[bytes]:
    return [
        b"",
        b"[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n"
        b"ListenPort = 51820\nAddress = 10.0.0.1/24, fd00::1/64\nDNS = 1.1.1.1\nMTU = 1420\n"
        b"PostUp = iptables -A FORWARD -i %i -j ACCEPT\nTable = off\nFwMark = 0x1234\n\n"
        b"[Peer]\n# Name = laptop\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n"
        b"PresharedKey = HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\n"
        b"AllowedIPs = 10.0.0.2/32, fd00::2/128 # comment\nEndpoint = [2001:db8::1]:51820\n"
        b"PersistentKeepalive = 25\n",
        b"[Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n"
        b"Endpoint = vpn.example.com:51820\nAllowedIPs = 0.0.0.0/0, ::/0\n",
        b"[Interface]\n[Interface]\n",
        b"key = value\n",
        b"[Bogus]\n",
        b"[Peer\n",
        b"[Peer]\nno equals sign\n",
        b"[Peer]\nAllowedIPs = 10.0.0.1/33, 1.2.3.4%eth0\nEndpoint = 1.2.3.4:0\n",
    ]
