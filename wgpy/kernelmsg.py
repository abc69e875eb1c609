"""The Linux kernel WireGuard module's log lines, read as wgpy drop events. No I/O.

With dynamic debug on (``module wireguard +p``), the kernel module writes a line to the kernel
log for most things it does and for most packets it drops. :data:`MESSAGES` is the one table
that maps each of those lines to a :class:`~wgpy.events.DropReason` or to "not a drop"
(:data:`NOT_A_DROP`), with the fields the line carries, the interface counters the same drop
moves and what a user should try. :func:`parse_kmsg_record` reads a ``/dev/kmsg`` record,
:func:`parse_dmesg_line` a ``dmesg`` line, and :func:`classify` turns the text into a
:class:`KernelMessage`. The adapter that reads the log (``wgpy watch``) lives elsewhere.

The format strings are those of Debian's 6.1 (bookworm) and 7.2 (sid) ``wireguard.ko``, which
print the same set; where a line only exists in other versions, :attr:`MessageRule.kernels`
says so. docs/kernel-drops.md explains the lines and holds :func:`markdown_tables`.
"""

from __future__ import annotations

import errno
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final

from wgpy.events import Direction, DropReason

PREFIX: Final = "wireguard: "
"""What every line of the module starts with (its ``pr_fmt``)."""

NOT_A_DROP: Final = None
"""The reason of a table entry whose line reports no dropped packet."""

CURRENT_KERNELS: Final = "6.1–7.2"

# What each printk conversion of the module's format strings prints. %pISpfsc is an endpoint:
# a.b.c.d:port, [v6]:port/flowinfo%scope (scope after the flowinfo, never in the brackets),
# or "(einval)" for a peer that has none. %pISc is an address alone (IPv6 compressed), %pI6
# is an IPv6 address in full: eight groups of four hex digits.
_IPV4: Final = r"\d{1,3}(?:\.\d{1,3}){3}"
_CONVERSIONS: Final = {
    "%pISpfsc": rf"\(einval\)|{_IPV4}:\d{{1,5}}|\[[0-9a-fA-F:.]+\]:\d{{1,5}}/\d+%\d+",
    "%pISc": r"[0-9a-fA-F:.]+",
    "%pI4": _IPV4,
    "%pI6": r"[0-9a-f]{4}(?::[0-9a-f]{4}){7}",
    "%llu": r"\d+",
    "%d": r"-?\d+",
    "%s": r".+?",
}
_FIELD_PATTERNS: Final = {
    # dev_valid_name(): at most 15 bytes, no '/', ':' or white space.
    "interface": r"[^\s:/]{1,15}",
    "test": r"[a-z][a-z ]*",
    "failed_test": r"[a-z][a-z ]* self-test[^:]*",
}
_CONVERSION: Final = re.compile("|".join(re.escape(c) for c in _CONVERSIONS))

# The fields every caller knows; any other field goes into KernelMessage.detail.
STANDARD_FIELDS: Final = frozenset(
    {"interface", "peer_id", "endpoint", "inner_source", "inner_destination"}
)


def compile_format(fmt: str, fields: tuple[str, ...]) -> re.Pattern[str]:
    """A regex matching what the kernel prints for ``fmt``, one named group per conversion.

    ``fields`` names the conversions in order; a field in ``_FIELD_PATTERNS`` narrows what its
    conversion may match.
    """
    conversions = list(_CONVERSION.finditer(fmt))
    if len(conversions) != len(fields):
        raise ValueError(f"{len(fields)} fields for {len(conversions)} conversions in {fmt!r}")
    parts: list[str] = []
    position = 0
    for conversion, name in zip(conversions, fields, strict=True):
        parts.append(re.escape(fmt[position : conversion.start()]))
        pattern = _FIELD_PATTERNS.get(name, _CONVERSIONS[conversion.group()])
        parts.append(f"(?P<{name}>{pattern})")
        position = conversion.end()
    parts.append(re.escape(fmt[position:]))
    return re.compile("".join(parts))


@dataclass(frozen=True, slots=True)
class MessageRule:
    """One line of the module: its format string, what it means, what to try.

    ``format`` is the kernel's format string after ``wireguard: `` (without the newline);
    ``fields`` names its conversions in order. ``also`` lists other wgpy reasons the same line
    can stand for (the kernel prints one text for several causes). ``counters`` are the
    interface statistics (``ip -s -s link``, /sys/class/net/IFACE/statistics) the same drop
    increments. ``rate_limited`` lines go through net_ratelimit() and can be suppressed;
    ``needs_debug`` lines (pr_debug) are printed only while dynamic debug is on for them.
    """

    name: str
    source: str
    format: str
    fields: tuple[str, ...]
    reason: DropReason | None
    fix: str
    direction: Direction | None = None
    also: tuple[DropReason, ...] = ()
    counters: tuple[str, ...] = ()
    rate_limited: bool = True
    needs_debug: bool = True
    kernels: str = CURRENT_KERNELS
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", compile_format(self.format, self.fields))


_IN: Final = Direction.INCOMING
_OUT: Final = Direction.OUTGOING
_PEER_EP: Final = ("interface", "peer_id", "endpoint")
_NOTHING: Final = "Nothing to do: "
_NOTHING_YET: Final = "Nothing to do yet: "


MESSAGES: Final[tuple[MessageRule, ...]] = (
    # device.c
    MessageRule(
        "interface_created",
        "device.c",
        "%s: Interface created",
        ("interface",),
        NOT_A_DROP,
        _NOTHING + "the interface was created.",
        rate_limited=False,
    ),
    MessageRule(
        "interface_destroyed",
        "device.c",
        "%s: Interface destroyed",
        ("interface",),
        NOT_A_DROP,
        _NOTHING + "the interface was deleted.",
        rate_limited=False,
    ),
    MessageRule(
        "creating_namespace_exiting",
        "device.c",
        "%s: Creating namespace exiting",
        ("interface",),
        NOT_A_DROP,
        "The namespace the interface was created in (where its UDP sockets live) is being"
        " deleted, so from now on it sends and receives nothing: recreate the interface in a"
        " namespace that stays.",
        rate_limited=False,
    ),
    MessageRule(
        "invalid_ip_packet",
        "device.c",
        "%s: Invalid IP packet",
        ("interface",),
        DropReason.NOT_IP,
        "Something handed the interface a packet that is neither IPv4 nor IPv6 (a packet"
        " socket, a bridge port): send only IP packets into it.",
        direction=_OUT,
        counters=("tx_errors",),
    ),
    MessageRule(
        "no_peer_ipv4",
        "device.c",
        "%s: No peer has allowed IPs matching %pI4",
        ("interface", "inner_destination"),
        DropReason.NO_PEER,
        "Add the destination (or a prefix holding it) to the AllowedIPs of the peer that"
        " should carry it, or stop routing it into this interface; the sender got ICMP host"
        ' unreachable (a local one ENOKEY, "Required key not available").',
        direction=_OUT,
        counters=("tx_errors",),
    ),
    MessageRule(
        "no_peer_ipv6",
        "device.c",
        "%s: No peer has allowed IPs matching %pI6",
        ("interface", "inner_destination"),
        DropReason.NO_PEER,
        "Add the destination (or a prefix holding it) to the AllowedIPs of the peer that"
        " should carry it, or stop routing it into this interface; the sender got ICMPv6"
        " address unreachable (a local one ENOKEY).",
        direction=_OUT,
        counters=("tx_errors",),
    ),
    MessageRule(
        "no_endpoint",
        "device.c",
        "%s: No valid endpoint has been configured or discovered for peer %llu",
        ("interface", "peer_id"),
        DropReason.NO_ENDPOINT,
        "Give the peer an Endpoint (`wg set IFACE peer KEY endpoint HOST:PORT`) or let it"
        " reach this side first; the sender got ICMP host unreachable (a local one"
        " EDESTADDRREQ).",
        direction=_OUT,
        counters=("tx_errors",),
    ),
    # receive.c
    MessageRule(
        "cookie_received",
        "receive.c",
        "%s: Receiving cookie response from %pISpfsc",
        ("interface", "endpoint"),
        NOT_A_DROP,
        _NOTHING + "the peer is under load and answered with a cookie; the next handshake"
        " message carries it.",
    ),
    MessageRule(
        "invalid_mac",
        "receive.c",
        "%s: Invalid MAC of handshake, dropping packet from %pISpfsc",
        ("interface", "endpoint"),
        DropReason.INVALID_MAC1,
        "The sender does not have this interface's public key: check the PublicKey the other"
        " side configured for this interface (under a handshake flood, a source over the"
        " rate limit is logged the same way).",
        direction=_IN,
        also=(DropReason.RATE_LIMITED,),
    ),
    MessageRule(
        "invalid_initiation",
        "receive.c",
        "%s: Invalid handshake initiation from %pISpfsc",
        ("interface", "endpoint"),
        DropReason.HANDSHAKE_FAILED,
        "The initiator's key is not a peer of this interface, or its initiation was a replay"
        " or came too soon: add it as a peer and check that its private key matches the"
        " PublicKey configured here.",
        direction=_IN,
        also=(DropReason.REPLAYED_INITIATION, DropReason.INITIATION_FLOOD),
    ),
    MessageRule(
        "invalid_response",
        "receive.c",
        "%s: Invalid handshake response from %pISpfsc",
        ("interface", "endpoint"),
        DropReason.HANDSHAKE_FAILED,
        "The response did not decrypt or answers no handshake in flight: check that both"
        " sides use the same PresharedKey (or none) and each other's right public key.",
        direction=_IN,
        also=(DropReason.UNKNOWN_INDEX,),
    ),
    MessageRule(
        "initiation_received",
        "receive.c",
        "%s: Receiving handshake initiation from peer %llu (%pISpfsc)",
        _PEER_EP,
        NOT_A_DROP,
        _NOTHING + "a handshake initiation was accepted.",
    ),
    MessageRule(
        "response_received",
        "receive.c",
        "%s: Receiving handshake response from peer %llu (%pISpfsc)",
        _PEER_EP,
        NOT_A_DROP,
        _NOTHING + "a handshake response was accepted.",
    ),
    MessageRule(
        "keepalive_received",
        "receive.c",
        "%s: Receiving keepalive packet from peer %llu (%pISpfsc)",
        _PEER_EP,
        NOT_A_DROP,
        _NOTHING + "a keepalive arrived.",
    ),
    MessageRule(
        "failed_to_userspace",
        "receive.c",
        "%s: Failed to give packet to userspace from peer %llu (%pISpfsc)",
        _PEER_EP,
        DropReason.TUN_WRITE_FAILED,
        "The network stack refused the decrypted packet: look at the host's load and"
        " net.core.netdev_max_backlog.",
        direction=_IN,
        counters=("rx_dropped",),
        kernels="5.6–5.7",
    ),
    MessageRule(
        "unallowed_source",
        "receive.c",
        "%s: Packet has unallowed src IP (%pISc) from peer %llu (%pISpfsc)",
        ("interface", "inner_source", "peer_id", "endpoint"),
        DropReason.DISALLOWED_SOURCE,
        "Add the source (or its prefix) to this peer's AllowedIPs here, or make the peer send"
        " from an address it is allowed (its Address, NAT or routing).",
        direction=_IN,
        counters=("rx_errors", "rx_frame_errors"),
    ),
    MessageRule(
        "not_ip_received",
        "receive.c",
        "%s: Packet is neither ipv4 nor ipv6 from peer %llu (%pISpfsc)",
        _PEER_EP,
        DropReason.NOT_IP,
        "The peer tunnelled something that is not IP: look at what writes into the tunnel on"
        " the peer's side.",
        direction=_IN,
        counters=("rx_errors", "rx_frame_errors"),
    ),
    MessageRule(
        "incorrect_size",
        "receive.c",
        "%s: Packet has incorrect size from peer %llu (%pISpfsc)",
        _PEER_EP,
        DropReason.BAD_LENGTH,
        "The inner packet's IP length disagrees with what was decrypted: look at the peer's"
        " WireGuard implementation or at what writes into its tunnel.",
        direction=_IN,
        counters=("rx_errors", "rx_length_errors"),
    ),
    MessageRule(
        "invalid_nonce",
        "receive.c",
        "%s: Packet has invalid nonce %llu (max %llu)",
        ("interface", "nonce", "max"),
        DropReason.REPLAYED_COUNTER,
        "A data message was replayed or arrived behind the replay window: look for duplicated"
        " or heavily reordered packets on the path, or two hosts using the same keys.",
        direction=_IN,
    ),
    MessageRule(
        "handshake_queue_full",
        "receive.c",
        "%s: Dropping handshake packet from %pISpfsc",
        ("interface", "endpoint"),
        DropReason.HANDSHAKE_QUEUE_FULL,
        "Too many handshake messages wait to be processed (a flood), or the kernel's random"
        " number generator is not ready yet (early boot): find the flood's source, or wait.",
        direction=_IN,
    ),
    # send.c
    MessageRule(
        "initiation_sent",
        "send.c",
        "%s: Sending handshake initiation to peer %llu (%pISpfsc)",
        _PEER_EP,
        NOT_A_DROP,
        _NOTHING + "a handshake initiation was sent.",
    ),
    MessageRule(
        "response_sent",
        "send.c",
        "%s: Sending handshake response to peer %llu (%pISpfsc)",
        _PEER_EP,
        NOT_A_DROP,
        _NOTHING + "a handshake response was sent.",
    ),
    MessageRule(
        "cookie_sent",
        "send.c",
        "%s: Sending cookie response for denied handshake message for %pISpfsc",
        ("interface", "endpoint"),
        DropReason.COOKIE_REQUIRED,
        "This interface is under load and the handshake message carried no valid cookie: a"
        " genuine peer retries with the cookie; if it goes on, look for a handshake flood.",
        direction=_IN,
    ),
    MessageRule(
        "keepalive_sent",
        "send.c",
        "%s: Sending keepalive packet to peer %llu (%pISpfsc)",
        _PEER_EP,
        NOT_A_DROP,
        _NOTHING + "a keepalive was sent.",
    ),
    # socket.c
    MessageRule(
        "no_route",
        "socket.c",
        "%s: No route to %pISpfsc, error %d",
        ("interface", "endpoint", "error"),
        DropReason.SEND_FAILED,
        "The host has no route to the peer's endpoint: check `ip route get ADDRESS` (with the"
        " interface's fwmark), the Endpoint and the outer network.",
        direction=_OUT,
    ),
    MessageRule(
        "socket4_failed",
        "socket.c",
        "%s: Could not create IPv4 socket",
        ("interface",),
        NOT_A_DROP,
        "Bringing the interface up failed, usually because its ListenPort is taken: choose"
        " another port or stop what holds it.",
        rate_limited=False,
        needs_debug=False,
    ),
    MessageRule(
        "socket6_failed",
        "socket.c",
        "%s: Could not create IPv6 socket",
        ("interface",),
        NOT_A_DROP,
        "Bringing the interface up failed, usually because its ListenPort is taken on IPv6:"
        " choose another port or stop what holds it.",
        rate_limited=False,
        needs_debug=False,
    ),
    # noise.c
    MessageRule(
        "keypair_created",
        "noise.c",
        "%s: Keypair %llu created for peer %llu",
        ("interface", "keypair", "peer_id"),
        NOT_A_DROP,
        _NOTHING + "a handshake made new session keys.",
    ),
    MessageRule(
        "keypair_destroyed",
        "noise.c",
        "%s: Keypair %llu destroyed for peer %llu",
        ("interface", "keypair", "peer_id"),
        NOT_A_DROP,
        _NOTHING + "old session keys were erased.",
    ),
    # cookie.c
    MessageRule(
        "invalid_cookie",
        "cookie.c",
        "%s: Could not decrypt invalid cookie response",
        ("interface",),
        DropReason.INVALID_COOKIE,
        "A cookie reply did not decrypt (it answers none of our last handshake messages, or"
        " is forged): if it repeats, check this side has the peer's right public key.",
        direction=_IN,
    ),
    # peer.c
    MessageRule(
        "peer_created",
        "peer.c",
        "%s: Peer %llu created",
        ("interface", "peer_id"),
        NOT_A_DROP,
        _NOTHING + "a peer was added; the number names it in later lines.",
        rate_limited=False,
    ),
    MessageRule(
        "peer_destroyed",
        "peer.c",
        "%s: Peer %llu (%pISpfsc) destroyed",
        _PEER_EP,
        NOT_A_DROP,
        _NOTHING + "the peer was removed; packets still waiting for it were dropped and"
        " counted in tx_dropped.",
        rate_limited=False,
    ),
    # timers.c
    MessageRule(
        "handshake_retry",
        "timers.c",
        "%s: Handshake for peer %llu (%pISpfsc) did not complete after %d seconds,"
        " retrying (try %d)",
        (*_PEER_EP, "seconds", "try"),
        NOT_A_DROP,
        _NOTHING_YET + "no response within 5 s, so the initiation is sent again; if it"
        " keeps retrying, check that the endpoint is reachable and the keys match.",
        rate_limited=False,
    ),
    MessageRule(
        "handshake_gave_up",
        "timers.c",
        "%s: Handshake for peer %llu (%pISpfsc) did not complete after %d attempts, giving up",
        (*_PEER_EP, "attempts"),
        DropReason.HANDSHAKE_TIMEOUT,
        "No handshake completed in 20 attempts (about 90 s) and the packets waiting for one"
        " were dropped: check that the peer is up and reachable at its Endpoint (UDP port,"
        " firewall, NAT) and that the keys match.",
        direction=_OUT,
        counters=("tx_dropped",),
        rate_limited=False,
    ),
    MessageRule(
        "handshake_stale",
        "timers.c",
        "%s: Retrying handshake with peer %llu (%pISpfsc) because we stopped hearing back"
        " after %d seconds",
        (*_PEER_EP, "seconds"),
        NOT_A_DROP,
        _NOTHING_YET + "data went out but nothing came back for 15 s, so a new handshake"
        " starts; if it never completes, check the path to the peer.",
        rate_limited=False,
    ),
    MessageRule(
        "keys_zeroed",
        "timers.c",
        "%s: Zeroing out all keys for peer %llu (%pISpfsc), since we haven't received a new"
        " one in %d seconds",
        (*_PEER_EP, "seconds"),
        NOT_A_DROP,
        _NOTHING + "no new session for 9 minutes, so the old keys were erased; the next"
        " packet starts a handshake.",
        rate_limited=False,
    ),
    # main.c
    MessageRule(
        "module_loaded",
        "main.c",
        "WireGuard 1.0.0 loaded. See www.wireguard.com for information.",
        (),
        NOT_A_DROP,
        _NOTHING + "the module was loaded.",
        rate_limited=False,
        needs_debug=False,
    ),
    MessageRule(
        "copyright",
        "main.c",
        "Copyright (C) 2015-2019 Jason A. Donenfeld <Jason@zx2c4.com>. All Rights Reserved.",
        (),
        NOT_A_DROP,
        _NOTHING + "printed when the module loads.",
        rate_limited=False,
        needs_debug=False,
    ),
    # selftest/*.c, built only with CONFIG_WIREGUARD_DEBUG
    MessageRule(
        "selftest_passed",
        "selftest/*.c",
        "%s self-tests: pass",
        ("test",),
        NOT_A_DROP,
        _NOTHING + "a self-test of the module passed.",
        rate_limited=False,
        needs_debug=False,
        kernels="CONFIG_WIREGUARD_DEBUG builds; %s names the test",
    ),
    MessageRule(
        "selftest_failed",
        "selftest/*.c",
        "%s: FAIL",
        ("failed_test",),
        NOT_A_DROP,
        "A self-test of the module failed and the module refused to load: report it with"
        " the kernel version.",
        rate_limited=False,
        needs_debug=False,
        kernels="CONFIG_WIREGUARD_DEBUG builds; %s names the test",
    ),
)
"""Every line of the module, in source order. The docs and tests iterate it."""


@dataclass(frozen=True, slots=True)
class KernelMessage:
    """One line of the wireguard module, classified.

    ``reason`` is None for a line that reports no drop; a line no rule knows has
    ``recognised=False`` and reason :attr:`~wgpy.events.DropReason.UNRECOGNISED`. ``endpoint``
    is the outer (host, port), the host without brackets and with ``%SCOPE`` when the kernel
    printed a non-zero IPv6 scope id. ``peer_id`` is the module's internal peer number (global
    to the module, never reused, not shown by ``wg``). Inner addresses are normalised (IPv6
    compressed). ``detail`` holds the other fields as ``name=value`` words.
    """

    text: str
    interface: str | None
    reason: DropReason | None
    recognised: bool
    peer_id: int | None = None
    endpoint: tuple[str, int] | None = None
    inner_source: str | None = None
    inner_destination: str | None = None
    detail: str = ""
    rule: MessageRule | None = None

    @property
    def is_drop(self) -> bool:
        return self.reason is not None

    @property
    def direction(self) -> Direction | None:
        return None if self.rule is None else self.rule.direction


def parse_endpoint(text: str) -> tuple[str, int] | None:
    """(host, port) of what %pISpfsc printed; None for "(einval)" (no endpoint) or garbage.

    ``[fe80::1]:51820/0%3`` is ``("fe80::1%3", 51820)``; a zero scope id is left out and the
    flow label is dropped.
    """
    if text.startswith("["):
        match = _V6_ENDPOINT.fullmatch(text)
        if match is None:
            return None
        host, port, scope = match.group("host", "port", "scope")
        return (host if scope == "0" else f"{host}%{scope}", int(port))
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or re.fullmatch(_IPV4, host) is None:
        return None
    return host, int(port)


_V6_ENDPOINT: Final = re.compile(r"\[(?P<host>[0-9a-fA-F:.]+)\]:(?P<port>\d+)/\d+%(?P<scope>\d+)")
_DECORATION: Final = re.compile(r"(?:\[\d+\] |<intr> )?((?:[^\s:]+:)+ )?")
_INTERFACE: Final = re.compile(r"([^\s:/]{1,15}): ")


def _bodies(text: str) -> list[str]:
    """The text after ``wireguard: ``: as it is, and without a dynamic debug decoration.

    With flags beyond ``+p`` (``+ptmfl``) a line starts ``[PID] wireguard:FUNCTION:LINE: ``
    before the module's own prefix.
    """
    bodies = [text[len(PREFIX) :]] if text.startswith(PREFIX) else []
    decoration = _DECORATION.match(text)
    if decoration is not None:  # the thread id alone, or with the call site after it
        ends = {decoration.start(1) if decoration.group(1) else decoration.end(), decoration.end()}
        for end in sorted(ends):
            if end and text.startswith(PREFIX, end):
                bodies.append(text[end + len(PREFIX) :])
    return bodies


def _address(text: str) -> str:
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return text


def _detail(name: str, value: str) -> str:
    if name == "error" and value.lstrip("-").isdigit():
        code = errno.errorcode.get(abs(int(value)))
        return f"error={value} ({code})" if code else f"error={value}"
    return f"{name}={value}"


def _message(text: str, rule: MessageRule, match: re.Match[str]) -> KernelMessage:
    values = match.groupdict()
    peer_id = values.get("peer_id")
    endpoint = values.get("endpoint")
    source = values.get("inner_source")
    destination = values.get("inner_destination")
    return KernelMessage(
        text=text,
        interface=values.get("interface"),
        reason=rule.reason,
        recognised=True,
        peer_id=None if peer_id is None else int(peer_id),
        endpoint=None if endpoint is None else parse_endpoint(endpoint),
        inner_source=None if source is None else _address(source),
        inner_destination=None if destination is None else _address(destination),
        detail=" ".join(
            _detail(name, value) for name, value in values.items() if name not in STANDARD_FIELDS
        ),
        rule=rule,
    )


def classify(text: str) -> KernelMessage | None:
    """The meaning of one log line's text; None when it is not from the wireguard module."""
    line = text.rstrip("\r\n")
    bodies = _bodies(line)
    if not bodies:
        return None
    for body in bodies:
        for rule in MESSAGES:
            match = rule.regex.fullmatch(body)
            if match is not None:
                return _message(line, rule, match)
    interface = _INTERFACE.match(bodies[-1])
    return KernelMessage(
        text=line,
        interface=None if interface is None else interface.group(1),
        reason=DropReason.UNRECOGNISED,
        recognised=False,
    )


@dataclass(frozen=True, slots=True)
class KmsgRecord:
    """One /dev/kmsg record: ``PRIO,SEQ,USEC,FLAGS[,...];TEXT`` (continuation lines ignored)."""

    seq: int
    timestamp_us: int  # CLOCK_MONOTONIC microseconds, as the kernel stamped it
    level: int  # 0 (emerg) .. 7 (debug): pr_debug lines are 7
    facility: int  # 0 for the kernel's own messages
    text: str  # with the kernel's \xNN escapes undone


_ESCAPE: Final = re.compile(r"\\x([0-9a-fA-F]{2})")


def _unescape(text: str) -> str:
    """Undo /dev/kmsg's escaping of bytes below 0x20, from 0x7f, and of the backslash."""
    if "\\x" not in text:
        return text
    raw = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    try:
        return raw.encode("latin-1").decode("utf-8", errors="replace")
    except UnicodeEncodeError:
        return raw


def parse_kmsg_record(record: str) -> KmsgRecord | None:
    """The record read from /dev/kmsg (one read() is one record), or None if malformed."""
    first = record.split("\n", 1)[0]
    header, semicolon, text = first.partition(";")
    fields = header.split(",")
    if not semicolon or len(fields) < 4:
        return None
    try:
        prio, seq, usec = int(fields[0]), int(fields[1]), int(fields[2])
    except ValueError:
        return None
    if prio < 0 or seq < 0 or usec < 0:
        return None
    return KmsgRecord(seq, usec, prio & 7, prio >> 3, _unescape(text))


@dataclass(frozen=True, slots=True)
class DmesgLine:
    """One line of ``dmesg`` output: ``[SECONDS.MICROS] TEXT``, optionally ``<PRIO>`` first."""

    timestamp_us: int
    level: int | None  # only when dmesg printed the raw <PRIO> (dmesg -r)
    text: str


_DMESG: Final = re.compile(
    r"(?:<(?P<prio>\d+)>)?\[\s*(?P<sec>\d+)\.(?P<frac>\d{1,9})\] ?(?P<text>.*)"
)


def parse_dmesg_line(line: str) -> DmesgLine | None:
    """A ``dmesg`` (or ``dmesg -r``) line; None for other formats (``dmesg -T``, journal)."""
    match = _DMESG.fullmatch(line.rstrip("\r\n"))
    if match is None:
        return None
    frac = match.group("frac")
    micros = int(frac[:6].ljust(6, "0"))
    prio = match.group("prio")
    level = None if prio is None else int(prio) & 7
    return DmesgLine(int(match.group("sec")) * 1_000_000 + micros, level, match.group("text"))


_SUPPRESSED: Final = re.compile(r"net_ratelimit: (\d+) callbacks suppressed")


def suppressed_messages(text: str) -> int | None:
    """N of the kernel's ``net_ratelimit: N callbacks suppressed`` line, else None.

    net_ratelimit() is shared by every network message of the kernel, so N counts lines of any
    module that were not printed, wireguard's rate-limited ones among them.
    """
    match = _SUPPRESSED.fullmatch(text.rstrip("\r\n"))
    return None if match is None else int(match.group(1))


def _reason_cell(rule: MessageRule) -> str:
    if rule.reason is None:
        return "not a drop"
    cell = f"`{rule.reason.value}`"
    if rule.also:
        cell += " (or " + ", ".join(f"`{r.value}`" for r in rule.also) + ")"
    return cell


def _source_cell(rule: MessageRule) -> str:
    return rule.source if rule.kernels == CURRENT_KERNELS else f"{rule.source} ({rule.kernels})"


def markdown_tables() -> str:
    """The two tables of docs/kernel-drops.md (drops, then other lines), from :data:`MESSAGES`."""
    drops = [
        "| kernel text (after `wireguard: `) | file | wgpy reason | counters | what to try |",
        "| --- | --- | --- | --- | --- |",
    ]
    others = [
        "| kernel text (after `wireguard: `) | file | meaning |",
        "| --- | --- | --- |",
    ]
    for rule in MESSAGES:
        text = f"`{rule.format}`" + ("" if rule.rate_limited else " ¹")
        text += "" if rule.needs_debug else " ²"
        if rule.reason is None:
            others.append(f"| {text} | {_source_cell(rule)} | {rule.fix} |")
        else:
            counters = ", ".join(f"`{c}`" for c in rule.counters) or "—"
            cells = [text, _source_cell(rule), _reason_cell(rule), counters, rule.fix]
            drops.append("| " + " | ".join(cells) + " |")
    notes = [
        "¹ not rate limited (printed without net_ratelimit()).",
        "",
        "² printed even while dynamic debug is off (pr_info() or pr_err()).",
    ]
    return "\n".join([*drops, "", *others, "", *notes]) + "\n"
