"""A minimal WireGuard peer made of the sans-I/O core and one UDP socket, for interop tests.

Run inside a network namespace (``ip netns exec NS python -m tests.netns.core_peer ...``). It
answers ICMP echo requests that reach it through the tunnel and can send its own; at the end it
prints a JSON report of what it saw. No TUN is involved: the inner packets stay in Python.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import select
import socket
import struct
import sys
import time

from wgpy.device import Device
from wgpy.events import HandshakeCompleted, PacketDropped
from wgpy.packet import internet_checksum


def icmp_echo(
    src: str,
    dst: str,
    ident: int,
    seq: int,
    *,
    reply: bool = False,
    payload: bytes = b"wgpy-interop-0123456789",
) -> bytes:
    icmp = bytearray(struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident, seq) + payload)
    struct.pack_into("!H", icmp, 2, internet_checksum(bytes(icmp)))
    total = 20 + len(icmp)
    header = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            total,
            0x1234,
            0,
            64,
            1,
            0,
            ipaddress.IPv4Address(src).packed,
            ipaddress.IPv4Address(dst).packed,
        )
    )
    struct.pack_into("!H", header, 10, internet_checksum(bytes(header)))
    return bytes(header + icmp)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--private-key", required=True)
    parser.add_argument("--peer", required=True, help="peer public key, base64")
    parser.add_argument("--psk", default=None)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--endpoint", default=None, help="peer endpoint host:port")
    parser.add_argument("--address", required=True, help="our tunnel address")
    parser.add_argument("--peer-address", required=True, help="the peer's tunnel address")
    parser.add_argument("--allowed", default=None, help="AllowedIPs for the peer (default /32)")
    parser.add_argument("--pings", type=int, default=0, help="echo requests to send")
    parser.add_argument("--spoof-source", default=None, help="send one echo with this source")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--port-file", default=None)
    args = parser.parse_args()

    device = Device(base64.b64decode(args.private_key), wall_offset=time.time() - time.monotonic())
    peer = device.add_peer(base64.b64decode(args.peer))
    assert peer is not None
    if args.psk:
        device.set_preshared_key(peer, base64.b64decode(args.psk))
    if args.endpoint:
        host, port = args.endpoint.rsplit(":", 1)
        device.set_endpoint(peer, (host, int(port)))
    device.allowed_ips.insert(args.allowed or f"{args.peer_address}/32", peer)

    host, port = args.listen.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, int(port)))
    sock.setblocking(False)
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(str(sock.getsockname()[1]))
        import os

        os.rename(args.port_file + ".tmp", args.port_file)

    report: dict[str, object] = {
        "echo_replies": [],
        "echo_requests_answered": 0,
        "handshakes": [],
        "drops": [],
    }
    replies: list[int] = report["echo_replies"]  # type: ignore[assignment]
    start = time.monotonic()
    next_ping = start
    sent = 0

    def pump(now: float) -> None:
        for datagram, endpoint in device.datagrams_to_send():
            try:
                sock.sendto(datagram, endpoint)
            except OSError as error:
                device.report_send_failure(datagram, endpoint, str(error))
        for packet in device.packets_to_deliver():
            if packet[9] == 1 and packet[20] == 8:  # echo request: answer it
                src = str(ipaddress.IPv4Address(packet[12:16]))
                ident, seq = struct.unpack_from("!HH", packet, 24)
                device.send_packet(
                    icmp_echo(args.address, src, ident, seq, reply=True, payload=packet[28:]), now
                )
                report["echo_requests_answered"] += 1  # type: ignore[operator]
            elif packet[9] == 1 and packet[20] == 0:
                replies.append(struct.unpack_from("!H", packet, 26)[0])
        for event in device.events():
            if isinstance(event, HandshakeCompleted):
                report["handshakes"].append({"initiator": event.initiator})  # type: ignore[attr-defined]
            elif isinstance(event, PacketDropped):
                report["drops"].append(event.reason.value)  # type: ignore[attr-defined]
        for datagram, endpoint in device.datagrams_to_send():
            sock.sendto(datagram, endpoint)

    while True:
        now = time.monotonic()
        if now - start > args.duration:
            break
        if args.pings and sent < args.pings and now >= next_ping:
            device.send_packet(icmp_echo(args.address, args.peer_address, 77, sent), now)
            sent += 1
            next_ping = now + 0.2
            if sent == args.pings and args.spoof_source:
                device.send_packet(icmp_echo(args.spoof_source, args.peer_address, 78, 0), now)
        if args.pings and len(replies) >= args.pings and now - start > 1.0:
            time.sleep(0.3)  # let the last keepalives settle
            pump(time.monotonic())
            break
        timer = device.get_timer()
        if timer is not None and timer <= now:
            device.handle_timer(now)
        pump(now)
        wait = 0.05 if timer is None else max(0.0, min(0.05, timer - now))
        readable, _, _ = select.select([sock], [], [], wait)
        if readable:
            while True:
                try:
                    data, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                device.receive_datagram(data, addr, time.monotonic())
            pump(time.monotonic())
    report["endpoint"] = list(peer.endpoint) if peer.endpoint else None
    report["rx_bytes"] = peer.rx_bytes
    report["tx_bytes"] = peer.tx_bytes
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
