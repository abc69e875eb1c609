"""wgpy.kernelmsg: the kernel module's lines, each one exactly once, with its fields."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wgpy.events import Direction, DropReason
from wgpy.kernelmsg import (
    CURRENT_KERNELS,
    MESSAGES,
    PREFIX,
    MessageRule,
    classify,
    compile_format,
    markdown_tables,
    parse_dmesg_line,
    parse_endpoint,
    parse_kmsg_record,
    suppressed_messages,
)

REPO = Path(__file__).resolve().parents[2]

# `strings wireguard.ko | grep '^[0-9]*wireguard: '` (the leading digit is the printk level of
# pr_info/pr_err; pr_debug formats have none), identical for Debian's linux-image-6.1.0-57-amd64
# and linux-image-7.2.13+deb14-amd64. The table must hold each, and nothing else current.
DEBIAN_FORMATS = """\
wireguard: %s: Could not decrypt invalid cookie response
wireguard: %s: Creating namespace exiting
wireguard: %s: Dropping handshake packet from %pISpfsc
wireguard: %s: Handshake for peer %llu (%pISpfsc) did not complete after %d attempts, giving up
wireguard: %s: Handshake for peer %llu (%pISpfsc) did not complete after %d seconds, retrying (try %d)
wireguard: %s: Interface created
wireguard: %s: Interface destroyed
wireguard: %s: Invalid IP packet
wireguard: %s: Invalid MAC of handshake, dropping packet from %pISpfsc
wireguard: %s: Invalid handshake initiation from %pISpfsc
wireguard: %s: Invalid handshake response from %pISpfsc
wireguard: %s: Keypair %llu created for peer %llu
wireguard: %s: Keypair %llu destroyed for peer %llu
wireguard: %s: No peer has allowed IPs matching %pI4
wireguard: %s: No peer has allowed IPs matching %pI6
wireguard: %s: No route to %pISpfsc, error %d
wireguard: %s: No valid endpoint has been configured or discovered for peer %llu
wireguard: %s: Packet has incorrect size from peer %llu (%pISpfsc)
wireguard: %s: Packet has invalid nonce %llu (max %llu)
wireguard: %s: Packet has unallowed src IP (%pISc) from peer %llu (%pISpfsc)
wireguard: %s: Packet is neither ipv4 nor ipv6 from peer %llu (%pISpfsc)
wireguard: %s: Peer %llu (%pISpfsc) destroyed
wireguard: %s: Peer %llu created
wireguard: %s: Receiving cookie response from %pISpfsc
wireguard: %s: Receiving handshake initiation from peer %llu (%pISpfsc)
wireguard: %s: Receiving handshake response from peer %llu (%pISpfsc)
wireguard: %s: Receiving keepalive packet from peer %llu (%pISpfsc)
wireguard: %s: Retrying handshake with peer %llu (%pISpfsc) because we stopped hearing back after %d seconds
wireguard: %s: Sending cookie response for denied handshake message for %pISpfsc
wireguard: %s: Sending handshake initiation to peer %llu (%pISpfsc)
wireguard: %s: Sending handshake response to peer %llu (%pISpfsc)
wireguard: %s: Sending keepalive packet to peer %llu (%pISpfsc)
wireguard: %s: Zeroing out all keys for peer %llu (%pISpfsc), since we haven't received a new one in %d seconds
3wireguard: %s: Could not create IPv4 socket
3wireguard: %s: Could not create IPv6 socket
6wireguard: Copyright (C) 2015-2019 Jason A. Donenfeld <Jason@zx2c4.com>. All Rights Reserved.
6wireguard: WireGuard 1.0.0 loaded. See www.wireguard.com for information.
""".splitlines()  # noqa: E501

# What the kernel prints for each field, in the way it prints it (see vsprintf's %pI*).
IPV4_ENDPOINT = ("192.0.2.1:51820", ("192.0.2.1", 51820))
IPV6_ENDPOINTS = [
    ("[2001:db8::1]:51820/0%0", ("2001:db8::1", 51820)),
    ("[fe80::1]:51820/0%3", ("fe80::1%3", 51820)),  # link-local: scope after the flow label
    ("[fd00::5:2]:5/0%0", ("fd00::5:2", 5)),
    ("[2001:db8::7]:443/74565%0", ("2001:db8::7", 443)),  # a flow label is dropped
    ("[::ffff:192.0.2.9]:51820/0%0", ("::ffff:192.0.2.9", 51820)),  # IPv4-mapped
]
NO_ENDPOINT = ("(einval)", None)
VALUES = {
    "interface": "wg0",
    "peer_id": "7",
    "inner_source": "10.0.0.9",
    "nonce": "5",
    "max": "9",
    "keypair": "11",
    "seconds": "5",
    "try": "2",
    "attempts": "20",
    "error": "-101",
    "test": "nonce counter",
    "failed_test": "ratelimiter self-test 3",
}
INNER_DESTINATION = {"%pI4": ("10.0.0.77", "10.0.0.77"), "%pI6": (
    "fd00:0000:0000:0000:0000:0000:0000:0077", "fd00::77")}  # fmt: skip
CONVERSION = re.compile(r"%(?:pISpfsc|pISc|pI4|pI6|llu|d|s)")


def render(rule: MessageRule, endpoint: str = IPV4_ENDPOINT[0]) -> str:
    """The line the kernel prints for ``rule`` with the values above, done like printf."""
    names = iter(rule.fields)

    def value(conversion: re.Match[str]) -> str:
        name = next(names)
        if name == "endpoint":
            return endpoint
        if name == "inner_destination":
            return INNER_DESTINATION[conversion.group()][0]
        return VALUES[name]

    return PREFIX + CONVERSION.sub(value, rule.format)


def ids(rule: MessageRule) -> str:
    return rule.name


# ------------------------------------------------------------------------------ the table


def test_the_table_has_every_line_of_debians_modules_and_nothing_else_current() -> None:
    formats = {re.sub(r"^\d", "", line) for line in DEBIAN_FORMATS}
    assert len(formats) == 37
    current = {PREFIX + rule.format for rule in MESSAGES if rule.kernels == CURRENT_KERNELS}
    assert current == formats
    for rule in MESSAGES:
        if rule.kernels != CURRENT_KERNELS:
            assert PREFIX + rule.format not in formats


def test_only_pr_info_and_pr_err_lines_print_without_dynamic_debug() -> None:
    levelled = {re.sub(r"^\d", "", line) for line in DEBIAN_FORMATS if line[0].isdigit()}
    for rule in MESSAGES:
        if rule.kernels == CURRENT_KERNELS:
            assert rule.needs_debug == (PREFIX + rule.format not in levelled), rule.name
            assert (
                rule.rate_limited
                or not rule.needs_debug
                or rule.source
                in (
                    "device.c",
                    "peer.c",
                    "timers.c",
                )
            ), rule.name
        else:
            assert rule.needs_debug == (rule.source != "selftest/*.c"), rule.name


def test_names_and_formats_are_unique() -> None:
    assert len({rule.name for rule in MESSAGES}) == len(MESSAGES)
    assert len({rule.format for rule in MESSAGES}) == len(MESSAGES)


@pytest.mark.parametrize("rule", MESSAGES, ids=ids)
def test_entries_are_consistent(rule: MessageRule) -> None:
    assert rule.fix and rule.fix.endswith(".")
    if rule.reason is None:
        assert rule.direction is None and not rule.counters and not rule.also
    else:
        assert rule.direction in (Direction.INCOMING, Direction.OUTGOING)
        assert rule.reason not in rule.also
        assert not rule.fix.startswith("Nothing to do")
    assert set(rule.counters) <= {
        "tx_errors",
        "tx_dropped",
        "rx_errors",
        "rx_frame_errors",
        "rx_length_errors",
        "rx_dropped",
    }


def test_compile_format_wants_one_field_per_conversion() -> None:
    with pytest.raises(ValueError):
        compile_format("%s: Peer %llu created", ("interface",))
    with pytest.raises(ValueError):
        compile_format("%s: Interface created", ("interface", "peer_id"))
    regex = compile_format("%s: No route to %pISpfsc, error %d", ("interface", "endpoint", "e"))
    assert regex.fullmatch("wg0: No route to 192.0.2.1:1, error -22")
    assert not regex.fullmatch("wg 0: No route to 192.0.2.1:1, error -22")


# -------------------------------------------------------------------- one sample per entry


@pytest.mark.parametrize("rule", MESSAGES, ids=ids)
def test_every_entry_classifies_its_own_line(rule: MessageRule) -> None:
    line = render(rule)
    message = classify(line)
    assert message is not None, line
    assert message.rule is rule
    assert message.recognised
    assert message.reason is rule.reason
    assert message.is_drop == (rule.reason is not None)
    assert message.direction is rule.direction
    assert message.text == line
    assert message.interface == ("wg0" if "interface" in rule.fields else None)
    assert message.peer_id == (7 if "peer_id" in rule.fields else None)
    assert message.endpoint == (IPV4_ENDPOINT[1] if "endpoint" in rule.fields else None)
    assert message.inner_source == ("10.0.0.9" if "inner_source" in rule.fields else None)
    if "inner_destination" in rule.fields:
        conversion = "%pI6" if rule.format.endswith("%pI6") else "%pI4"
        assert message.inner_destination == INNER_DESTINATION[conversion][1]
    else:
        assert message.inner_destination is None


@pytest.mark.parametrize("rule", MESSAGES, ids=ids)
def test_no_two_entries_match_the_same_line(rule: MessageRule) -> None:
    endpoints = [IPV4_ENDPOINT[0], NO_ENDPOINT[0], *(text for text, _ in IPV6_ENDPOINTS)]
    for endpoint in endpoints:
        body = render(rule, endpoint).removeprefix(PREFIX)
        matching = [other.name for other in MESSAGES if other.regex.fullmatch(body)]
        assert matching == [rule.name], body


@pytest.mark.parametrize(("printed", "expected"), [IPV4_ENDPOINT, NO_ENDPOINT, *IPV6_ENDPOINTS])
def test_endpoints_as_printed_by_pISpfsc(printed: str, expected: tuple[str, int] | None) -> None:
    assert parse_endpoint(printed) == expected
    for rule in MESSAGES:
        if "endpoint" in rule.fields:
            message = classify(render(rule, printed))
            assert message is not None and message.rule is rule
            assert message.endpoint == expected


@pytest.mark.parametrize(
    "printed",
    [
        "[fe80::1%3]:51820/0%3",  # the scope inside the brackets: the kernel never prints it
        "[fe80::1]:51820",  # without flow label and scope: not %pISpfsc
        "192.0.2.1",
        "192.0.2.1:port",
        "fe80::1:51820",
    ],
)
def test_endpoints_the_kernel_does_not_print(printed: str) -> None:
    assert parse_endpoint(printed) is None
    message = classify(f"wireguard: wg0: Invalid handshake initiation from {printed}")
    assert message is not None and not message.recognised


def test_details_carry_the_other_fields() -> None:
    nonce = classify("wireguard: wg0: Packet has invalid nonce 7 (max 8)")
    assert nonce is not None and nonce.detail == "nonce=7 max=8"
    route = classify("wireguard: wg0: No route to [2001:db8::1]:51820/0%0, error -101")
    assert route is not None and route.reason is DropReason.SEND_FAILED
    assert route.detail == "error=-101 (ENETUNREACH)"
    gave_up = classify(
        "wireguard: wg0: Handshake for peer 3 ((einval)) did not complete after 20 attempts,"
        " giving up"
    )
    assert gave_up is not None and gave_up.reason is DropReason.HANDSHAKE_TIMEOUT
    assert (gave_up.peer_id, gave_up.endpoint, gave_up.detail) == (3, None, "attempts=20")


# ---------------------------------------------------------- lines measured on Debian's 6.1


@pytest.mark.parametrize(
    ("line", "reason", "peer_id", "endpoint"),
    [
        (
            "wireguard: wg0: Packet has unallowed src IP (10.200.0.99) from peer 1"
            " (192.168.244.1:51820)",
            DropReason.DISALLOWED_SOURCE,
            1,
            ("192.168.244.1", 51820),
        ),
        (
            "wireguard: wg0: Invalid MAC of handshake, dropping packet from 192.168.244.1:40312",
            DropReason.INVALID_MAC1,
            None,
            ("192.168.244.1", 40312),
        ),
        (
            "wireguard: wg0: No peer has allowed IPs matching 10.200.0.77",
            DropReason.NO_PEER,
            None,
            None,
        ),
        (
            "wireguard: wg0: Invalid handshake initiation from 192.168.244.1:51820",
            DropReason.HANDSHAKE_FAILED,
            None,
            ("192.168.244.1", 51820),
        ),
        (
            "wireguard: wg0: Invalid handshake response from 192.168.244.1:51820",
            DropReason.HANDSHAKE_FAILED,
            None,
            ("192.168.244.1", 51820),
        ),
        (
            "wireguard: wg0: Packet has incorrect size from peer 1 (192.168.244.1:51820)",
            DropReason.BAD_LENGTH,
            1,
            ("192.168.244.1", 51820),
        ),
        ("wireguard: wg0: Packet has invalid nonce 7 (max 8)", DropReason.REPLAYED_COUNTER,
         None, None),
        ("wireguard: wg0: Receiving cookie response from 192.168.244.1:51820", None, None,
         ("192.168.244.1", 51820)),
        ("wireguard: wg1: Sending handshake initiation to peer 3 ([fd00::5:2]:5/0%0)", None, 3,
         ("fd00::5:2", 5)),
        ("wireguard: wg1: Keypair 1 created for peer 2", None, 2, None),
        ("wireguard: wg1: Peer 2 (127.0.0.1:1) destroyed", None, 2, ("127.0.0.1", 1)),
        ("wireguard: wg1: Interface created", None, None, None),
    ],
)  # fmt: skip
def test_lines_seen_on_debians_kernel(
    line: str, reason: DropReason | None, peer_id: int | None, endpoint: tuple[str, int] | None
) -> None:
    message = classify(line)
    assert message is not None and message.recognised
    assert message.reason is reason
    assert (message.peer_id, message.endpoint) == (peer_id, endpoint)
    assert message.interface in ("wg0", "wg1")


def test_ipv6_inner_addresses_are_compressed() -> None:
    unallowed = classify(
        "wireguard: wg0: Packet has unallowed src IP (fd00::99) from peer 4 ([fd00::1]:51820/0%0)"
    )
    assert unallowed is not None and unallowed.inner_source == "fd00::99"
    no_peer = classify(
        "wireguard: wg0: No peer has allowed IPs matching fd00:0000:0000:0000:0000:0000:0005:0002"
    )
    assert no_peer is not None and no_peer.inner_destination == "fd00::5:2"


# -------------------------------------------------------- unrecognised and foreign lines


def test_an_unknown_wireguard_line_is_counted_with_its_text() -> None:
    line = "wireguard: wg0: Packet was eaten by a grue from peer 1 (192.0.2.1:51820)"
    message = classify(line)
    assert message is not None
    assert not message.recognised and message.rule is None
    assert message.reason is DropReason.UNRECOGNISED
    assert (message.interface, message.text) == ("wg0", line)
    module = classify("wireguard: Something about the module")
    assert module is not None and module.interface is None and not module.recognised


@pytest.mark.parametrize(
    "text",
    [
        "",
        "wireguard:wg0: Interface created",
        "wireguardx: wg0: Interface created",
        " wireguard: wg0: Interface created",
        "e1000e: eth0 NIC Link is Up 1000 Mbps Full Duplex",
        "net_ratelimit: 3 callbacks suppressed",
        "WARNING: CPU: 0 PID: 1 at drivers/net/wireguard/receive.c:200",
    ],
)
def test_lines_of_others_are_not_wireguards(text: str) -> None:
    assert classify(text) is None


@pytest.mark.parametrize(
    "line",
    [
        "[1234] wireguard:wg_xmit:170: wireguard: wg0: Invalid IP packet",
        "<intr> wireguard:wg_xmit: wireguard: wg0: Invalid IP packet",
        "[99] wireguard: wg0: Invalid IP packet",
        "wireguard:wg_xmit:drivers/net/wireguard/device.c:170: wireguard: wg0: Invalid IP packet",
        "wireguard: wireguard: wg0: Invalid IP packet",  # +pm: the module name twice
        "wireguard: wg0: Invalid IP packet\n",
    ],
)
def test_dynamic_debug_decorations_are_read_past(line: str) -> None:
    message = classify(line)
    assert message is not None and message.recognised
    assert (message.interface, message.reason) == ("wg0", DropReason.NOT_IP)


def test_an_interface_named_wireguard() -> None:
    message = classify("wireguard: wireguard: Interface created")
    assert message is not None and message.interface == "wireguard"


def test_suppressed_messages() -> None:
    assert suppressed_messages("net_ratelimit: 42 callbacks suppressed") == 42
    assert suppressed_messages("wireguard: wg0: Interface created") is None


# ------------------------------------------------------------------------- the log formats


def test_kmsg_record() -> None:
    record = parse_kmsg_record(
        "7,1204,81234567,-;wireguard: wg0: No peer has allowed IPs matching 10.0.0.2\n"
    )
    assert record is not None
    assert (record.seq, record.timestamp_us, record.level, record.facility) == (
        1204,
        81234567,
        7,
        0,
    )
    assert record.text == "wireguard: wg0: No peer has allowed IPs matching 10.0.0.2"
    message = classify(record.text)
    assert message is not None and message.inner_destination == "10.0.0.2"


def test_kmsg_record_with_more_fields_and_continuation_lines() -> None:
    record = parse_kmsg_record(
        "30,77,5,c,caller=T42;wireguard: wg0: Interface created\n SUBSYSTEM=net\n DEVICE=n9\n"
    )
    assert record is not None
    assert (record.seq, record.level, record.facility) == (77, 6, 3)
    assert record.text == "wireguard: wg0: Interface created"


def test_kmsg_escapes_are_undone() -> None:
    record = parse_kmsg_record("6,1,2,-;a\\x5cb tab\\x09 caf\\xc3\\xa9")
    assert record is not None and record.text == "a\\b tab\t café"


def test_a_kmsg_record_that_is_not_wireguards() -> None:
    record = parse_kmsg_record("6,3,4,-;e1000e: eth0 NIC Link is Up")
    assert record is not None and classify(record.text) is None


@pytest.mark.parametrize(
    "record",
    ["", "no header", "7,1;text", "x,1,2,-;text", "7,1,2,-", "-1,1,2,-;text", "7,1,-2,-;t"],
)
def test_malformed_kmsg_records(record: str) -> None:
    assert parse_kmsg_record(record) is None


def test_dmesg_lines() -> None:
    line = parse_dmesg_line("[   12.345678] wireguard: wg0: Interface created")
    assert line is not None
    assert (line.timestamp_us, line.level, line.text) == (
        12_345_678,
        None,
        "wireguard: wg0: Interface created",
    )
    raw = parse_dmesg_line("<7>[    1.5] wireguard: wg0: Packet has invalid nonce 1 (max 2)\n")
    assert raw is not None and (raw.timestamp_us, raw.level) == (1_500_000, 7)
    message = classify(raw.text)
    assert message is not None and message.reason is DropReason.REPLAYED_COUNTER
    assert parse_dmesg_line("Nov 30 05:13:00 host kernel: wireguard: wg0: x") is None


# ------------------------------------------------------------------------------- the docs


def test_the_page_holds_the_generated_tables() -> None:
    page = (REPO / "docs" / "kernel-drops.md").read_text()
    begin = "<!-- BEGIN MESSAGES (generated: wgpy.kernelmsg.markdown_tables) -->\n"
    start = page.index(begin) + len(begin)
    end = page.index("<!-- END MESSAGES -->")
    assert page[start:end].strip("\n") == markdown_tables().strip("\n"), (
        "docs/kernel-drops.md is out of date: paste wgpy.kernelmsg.markdown_tables() between"
        " its BEGIN/END MESSAGES markers"
    )
    for rule in MESSAGES:
        assert f"`{rule.format}`" in page


def test_the_page_is_in_the_nav_after_drop_reasons() -> None:
    nav = (REPO / "mkdocs.yml").read_text()
    assert (
        "- Drop reasons: drop-reasons.md\n  - Why did the kernel drop my packet: kernel-drops.md"
        in nav
    )
