"""The ICMP error sent from the interface's stack (wgpy.packet.icmp_unreachable_message) and the
conntrack query that finds the pre-NAT source (wgpy.io.icmp_errors)."""

from __future__ import annotations

import socket
import struct

from wgpy.io import icmp_errors, netlink
from wgpy.packet import icmp_unreachable, icmp_unreachable_message, internet_checksum


def _ipv4_echo(src: str, dst: str, ident: int = 0x1234) -> bytes:
    icmp = bytearray(struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"x" * 56)
    struct.pack_into("!H", icmp, 2, internet_checksum(bytes(icmp)))
    header = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45, 0, 20 + len(icmp), 7, 0x4000, 64, 1, 0,
            socket.inet_aton(src), socket.inet_aton(dst),
        )
    )  # fmt: skip
    struct.pack_into("!H", header, 10, internet_checksum(bytes(header)))
    return bytes(header + icmp)


def _ipv6_udp(src: str, dst: str) -> bytes:
    payload = struct.pack("!HHHH", 40000, 53, 12, 0) + b"abcd"
    header = struct.pack(
        "!IHBB16s16s",
        0x60000000, len(payload), 17, 64,
        socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst),
    )  # fmt: skip
    return header + payload


def test_message_without_nat_quotes_the_packet_and_goes_to_its_source() -> None:
    packet = _ipv4_echo("192.168.241.2", "192.168.241.1")
    message = icmp_unreachable_message(packet)
    assert message is not None
    version, destination, icmp = message
    assert (version, destination) == (4, socket.inet_aton("192.168.241.2"))
    assert icmp[:2] == bytes([3, 1]) and internet_checksum(icmp) == 0
    assert icmp[8:] == packet
    # the same ICMP body as the TUN answer carries
    tun_answer = icmp_unreachable(packet)
    assert tun_answer is not None and tun_answer[20:] == icmp


def test_message_with_nat_undone_quotes_the_original_source() -> None:
    packet = _ipv4_echo("192.168.241.2", "192.168.241.1")
    message = icmp_unreachable_message(packet, socket.inet_aton("10.0.0.1"))
    assert message is not None
    _, destination, icmp = message
    assert destination == socket.inet_aton("10.0.0.1")
    quote = icmp[8:]
    assert quote[12:16] == socket.inet_aton("10.0.0.1")
    assert quote[16:20] == packet[16:20] and quote[20:] == packet[20:]
    assert internet_checksum(quote[:20]) == 0  # the quoted header's checksum still holds
    assert internet_checksum(icmp) == 0


def test_ipv6_message_with_nat_undone() -> None:
    packet = _ipv6_udp("fd00::2", "fd00::1")
    original = socket.inet_pton(socket.AF_INET6, "fd10::1")
    message = icmp_unreachable_message(packet, original)
    assert message is not None
    version, destination, icmp = message
    assert (version, destination) == (6, original)
    assert icmp[:2] == bytes([1, 3])
    assert icmp[8 + 8 : 8 + 24] == original and icmp[8 + 24 :] == packet[24:]


def test_no_message_for_icmp_errors_and_multicast() -> None:
    error = bytearray(_ipv4_echo("10.0.0.1", "10.0.0.2"))
    error[20] = 3  # an ICMP error itself
    assert icmp_unreachable_message(bytes(error)) is None
    assert icmp_unreachable_message(_ipv4_echo("10.0.0.1", "224.0.0.1")) is None


def test_conntrack_reply_tuple_swaps_addresses_and_turns_echo_into_reply() -> None:
    packet = _ipv4_echo("192.168.241.2", "192.168.241.1", ident=0xBEEF)
    attrs = icmp_errors._reply_tuple(packet)
    assert attrs is not None
    outer = netlink.attributes(attrs)
    ip = netlink.attributes(outer[icmp_errors.CTA_TUPLE_IP])
    assert ip[icmp_errors.CTA_IP_V4_SRC] == socket.inet_aton("192.168.241.1")
    assert ip[icmp_errors.CTA_IP_V4_DST] == socket.inet_aton("192.168.241.2")
    proto = netlink.attributes(outer[icmp_errors.CTA_TUPLE_PROTO])
    assert proto[icmp_errors.CTA_PROTO_NUM] == b"\x01"
    assert proto[icmp_errors.CTA_PROTO_ICMP_TYPE] == b"\x00"  # the echo reply
    assert proto[icmp_errors.CTA_PROTO_ICMP_ID] == b"\xbe\xef"


def test_conntrack_reply_tuple_swaps_ports() -> None:
    attrs = icmp_errors._reply_tuple(_ipv6_udp("fd00::2", "fd00::1"))
    assert attrs is not None
    proto = netlink.attributes(netlink.attributes(attrs)[icmp_errors.CTA_TUPLE_PROTO])
    assert proto[icmp_errors.CTA_PROTO_SRC_PORT] == struct.pack("!H", 53)
    assert proto[icmp_errors.CTA_PROTO_DST_PORT] == struct.pack("!H", 40000)


def test_snat_status_decides_whether_a_source_is_restored() -> None:
    orig_ip = netlink.attribute(icmp_errors.CTA_IP_V4_SRC, socket.inet_aton("10.0.0.1"))
    orig = netlink.attribute(icmp_errors.CTA_TUPLE_IP | netlink.NLA_F_NESTED, orig_ip)
    for status, expected in ((icmp_errors.IPS_SRC_NAT | 0x8, b"\n\0\0\1"), (0x8, None)):
        attrs = netlink.attributes(
            netlink.attribute(icmp_errors.CTA_TUPLE_ORIG | netlink.NLA_F_NESTED, orig)
            + netlink.attribute(icmp_errors.CTA_STATUS, struct.pack("!I", status))
        )
        assert icmp_errors._source_if_snat(attrs, socket.AF_INET) == expected


def _udp4(payload: bytes, frag_offset: int = 0) -> bytes:
    udp = struct.pack("!HHHH", 51820, 7, 8 + len(payload), 0) + payload
    return struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 20 + len(udp), 1, frag_offset, 64, 17, 0,
        socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.0.2"),
    ) + udp  # fmt: skip


def test_a_tunnel_inside_the_tunnel_is_recognised() -> None:
    from wgpy.batch import carries_wireguard

    data_message = b"\x04\0\0\0" + bytes(12) + bytes(600)
    assert carries_wireguard(_udp4(data_message))
    assert carries_wireguard(_udp4(b"\x01\0\0\0" + bytes(144)))  # an initiation
    ipv6 = _ipv6_udp("fd00::1", "fd00::2")
    assert not carries_wireguard(ipv6)  # a DNS-looking payload
    assert carries_wireguard(ipv6[:48] + data_message)
    assert not carries_wireguard(_udp4(b"\x04\0\0\x01" + bytes(12)))  # reserved bytes set
    assert not carries_wireguard(_udp4(b"\x05\0\0\0" + bytes(12)))  # no such message type
    assert not carries_wireguard(_udp4(data_message, frag_offset=100))  # a later fragment
    tcp = bytearray(_udp4(data_message))
    tcp[9] = 6
    assert not carries_wireguard(bytes(tcp))
