"""A tiny WireGuard "server" entirely in Python: no TUN, no root, no kernel networking.

It answers ICMP echo (ping) on IPv4 and IPv6 and runs a UDP echo service, all on its tunnel
addresses, for peers that reach it with any WireGuard client (``wg-quick``, wireguard-go, the
kernel module)::

    python examples/echo_server.py --peer CLIENT_PUBLIC_KEY --allowed-ips 10.8.0.2/32,fd08::2/128

prints a JSON line with its public key and port, then serves until interrupted. The client's
config then has ``[Peer] PublicKey = <that key>``, ``Endpoint = <host>:<port>`` and
``AllowedIPs = 10.8.0.1/32, fd08::1/128``; ``ping 10.8.0.1`` and ``ncat -u 10.8.0.1 7`` work.
On SIGINT/SIGTERM it prints a JSON summary: handshakes, packets answered, drops by reason.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import signal
import struct
import sys
from collections import Counter
from pathlib import Path

from wgpy.aio import WireGuardEndpoint, open_endpoint
from wgpy.device import Device
from wgpy.events import Event, HandshakeCompleted, PacketDropped
from wgpy.keys import decode_key, genkey, pubkey
from wgpy.packet import internet_checksum

ICMP, UDP, ICMPV6 = 1, 17, 58


def _checksum6(src: bytes, dst: bytes, proto: int, payload: bytes) -> int:
    pseudo = src + dst + struct.pack("!IxxxB", len(payload), proto)
    return internet_checksum(pseudo + payload)


def _checksum4(src: bytes, dst: bytes, proto: int, payload: bytes) -> int:
    pseudo = src + dst + struct.pack("!xBH", proto, len(payload))
    return internet_checksum(pseudo + payload)


def ipv4_packet(src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
    header = bytearray(
        struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0, src, dst)
    )
    struct.pack_into("!H", header, 10, internet_checksum(bytes(header)))
    return bytes(header) + payload


def ipv6_packet(src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), proto, 64, src, dst) + payload


def udp_datagram(src: bytes, dst: bytes, sport: int, dport: int, data: bytes) -> bytes:
    """A UDP header and ``data`` with the checksum for (IPv4 or IPv6) ``src`` and ``dst``."""
    segment = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data)
    checksum = (_checksum4 if len(src) == 4 else _checksum6)(src, dst, UDP, bytes(segment))
    struct.pack_into("!H", segment, 6, checksum or 0xFFFF)
    return bytes(segment)


def answer(packet: bytes, addresses: set[bytes], echo_port: int) -> bytes | None:
    """The reply to one inner packet, or None: ICMP/ICMPv6 echo and UDP echo on ``echo_port``,
    for packets addressed to one of ``addresses`` (packed IPv4/IPv6 addresses)."""
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        ihl = (packet[0] & 0x0F) * 4
        src, dst, proto, body = packet[12:16], packet[16:20], packet[9], packet[ihl:]
        if packet[6] & 0x3F or packet[7]:  # a fragment: not for this tiny server
            return None
    elif version == 6 and len(packet) >= 40:
        src, dst, proto, body = packet[8:24], packet[24:40], packet[6], packet[40:]
    else:
        return None
    if dst not in addresses:
        return None
    build = ipv4_packet if version == 4 else ipv6_packet
    if (version, proto) in ((4, ICMP), (6, ICMPV6)) and len(body) >= 8:
        if body[0] != (8 if version == 4 else 128):  # echo request
            return None
        icmp = bytearray(bytes([0 if version == 4 else 129, 0, 0, 0]) + body[4:])
        checksum = (
            internet_checksum(bytes(icmp))
            if version == 4
            else _checksum6(dst, src, ICMPV6, bytes(icmp))
        )
        struct.pack_into("!H", icmp, 2, checksum)
        return build(dst, src, proto, bytes(icmp))
    if proto == UDP and len(body) >= 8:
        sport, dport, length = struct.unpack_from("!HHH", body)
        if dport != echo_port or length < 8:
            return None
        return build(dst, src, UDP, udp_datagram(dst, src, dport, sport, body[8:length]))
    return None


class Stats:
    """What the server saw, from the device's events."""

    def __init__(self) -> None:
        self.handshakes = 0
        self.answered = 0
        self.drops: Counter[str] = Counter()

    def on_event(self, event: Event) -> None:
        if isinstance(event, HandshakeCompleted):
            self.handshakes += 1
        elif isinstance(event, PacketDropped):
            self.drops[event.reason.value] += 1


async def serve(
    endpoint: WireGuardEndpoint,
    addresses: list[str],
    echo_port: int = 7,
    stats: Stats | None = None,
) -> None:
    """Answer every packet that comes out of ``endpoint`` until it is closed."""
    packed = {ipaddress.ip_address(a).packed for a in addresses}
    async for packet in endpoint:
        reply = answer(packet, packed, echo_port)
        if reply is not None:
            endpoint.send(reply)
            if stats is not None:
                stats.answered += 1


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--private-key-file", type=Path, help="base64 key (default: a new one)")
    parser.add_argument("--peer", required=True, help="the client's public key (base64)")
    parser.add_argument("--allowed-ips", default="10.8.0.2/32,fd08::2/128")
    parser.add_argument("--address", default="10.8.0.1,fd08::1", help="our tunnel addresses")
    parser.add_argument("--port", type=int, default=51820, help="UDP listen port (0: any)")
    parser.add_argument("--echo-port", type=int, default=7, help="UDP echo service port")
    args = parser.parse_args(argv)

    private = args.private_key_file.read_text() if args.private_key_file else genkey()
    device = Device(decode_key(private))
    stats = Stats()
    endpoint = await open_endpoint(device, port=args.port, on_event=stats.on_event)
    async with endpoint:
        endpoint.add_peer(args.peer, allowed_ips=args.allowed_ips.split(","))
        print(json.dumps({"public_key": pubkey(private), "port": endpoint.port}), flush=True)
        loop = asyncio.get_running_loop()
        stop = loop.create_future()

        def request_stop() -> None:
            if not stop.done():
                stop.set_result(None)

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, request_stop)
        server = asyncio.ensure_future(
            serve(endpoint, args.address.split(","), args.echo_port, stats)
        )
        await stop
        server.cancel()
    peer = device.peers[decode_key(args.peer)]
    summary = {
        "handshakes": stats.handshakes,
        "answered": stats.answered,
        "drops": dict(stats.drops),
        "drop_counts": dict(Counter(r.value for (_, r) in device.drop_counts.elements())),
        "rx_bytes": peer.rx_bytes,
        "tx_bytes": peer.tx_bytes,
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
