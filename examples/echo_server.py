"""A tiny WireGuard "server" entirely in Python: no TUN, no root, no kernel networking.

It answers ICMP echo (ping) on IPv4 and IPv6 and runs a UDP echo service, all on its tunnel
addresses, for peers that reach it with any WireGuard client (``wg-quick``, wireguard-go, the
kernel module)::

    .venv/bin/python examples/echo_server.py --peer CLIENT_PUBLIC_KEY

(any Python with wgpy's dependencies works from a checkout: the script finds the ``wgpy`` beside
it). It prints a JSON line with its public key and port, then a wg-quick config for the client,
ready to paste (without ``--peer`` it makes the client's key pair and the config holds the
client's private key; the server's private key is never printed), and serves until
interrupted: ``ping 10.8.0.1`` and ``ncat -u 10.8.0.1 7`` work from the client. On
SIGINT/SIGTERM it prints a JSON summary: handshakes, packets answered, drops by reason. A bad
argument or a port in use is one line on stderr and exit status 2 or 1.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import signal
import socket
import struct
import sys
from collections import Counter
from pathlib import Path

try:
    import wgpy  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without installing: use the wgpy beside us
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
try:
    from wgpy.aio import WireGuardEndpoint, open_endpoint
    from wgpy.device import Device
    from wgpy.events import Event, HandshakeCompleted, PacketDropped
    from wgpy.keys import decode_key, encode_key, genkey, pubkey
    from wgpy.packet import internet_checksum
except ModuleNotFoundError as error:  # wgpy's own dependencies (cryptography, ...)
    sys.exit(
        f"echo_server: {error} (wgpy's dependencies are missing from this Python: run it with "
        "the checkout's .venv/bin/python, or `pip install -e .` first)"
    )

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


class UsageError(Exception):
    """A bad argument: one line on stderr, exit status 2."""


def _prefixes(text: str, option: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    try:
        return [ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p]
    except ValueError as error:
        raise UsageError(f"{option}: {error}") from None


def _addresses(text: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(a.strip())) for a in text.split(",") if a.strip()]
    except ValueError as error:
        raise UsageError(f"--address: {error}") from None


def _key(text: str, what: str, tool: str = "wg pubkey") -> bytes:
    try:
        return decode_key(text)
    except ValueError:
        raise UsageError(
            f"{what} is not a WireGuard key (44 base64 characters, as `{tool}` prints)"
        ) from None


def guess_host() -> str:
    """This host's address on its default route (no packet is sent), or a placeholder."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            host: str = probe.getsockname()[0]
            return host
    except OSError:
        return "SERVER_HOST"


def client_config(
    server_public: str,
    endpoint: str,
    server_addresses: list[str],
    client_prefixes: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    client_private: str | None,
) -> str:
    """The wg-quick config of the client: its addresses are what the server allows from it."""
    addresses = [
        str(p)
        if p.num_addresses == 1
        else f"{next(p.hosts(), p.network_address)}/{p.max_prefixlen}"
        for p in client_prefixes
    ]
    allowed = [f"{a}/{ipaddress.ip_address(a).max_prefixlen}" for a in server_addresses]
    private = (
        client_private
        if client_private is not None
        else "<the client's private key: the one whose public key you gave with --peer>"
    )
    return "\n".join(
        [
            "[Interface]",
            f"PrivateKey = {private}",
            f"Address = {', '.join(addresses)}",
            "",
            "[Peer]",
            "# the Python echo server",
            f"PublicKey = {server_public}",
            f"Endpoint = {endpoint}",
            f"AllowedIPs = {', '.join(allowed)}",
        ]
    )


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--private-key-file", type=Path, help="base64 key (default: a new one)")
    parser.add_argument(
        "--peer",
        help="the client's public key (base64); default: make a client key pair and put its "
        "private key in the printed client config",
    )
    parser.add_argument("--allowed-ips", default="10.8.0.2/32,fd08::2/128")
    parser.add_argument("--address", default="10.8.0.1,fd08::1", help="our tunnel addresses")
    parser.add_argument("--port", type=int, default=51820, help="UDP listen port (0: any)")
    parser.add_argument("--echo-port", type=int, default=7, help="UDP echo service port")
    parser.add_argument(
        "--public-host",
        help="the address clients reach this host at, for the printed Endpoint "
        "(default: this host's address on its default route)",
    )
    args = parser.parse_args(argv)
    try:
        return await serve_until_stopped(args)
    except UsageError as error:
        print(f"echo_server: {error}", file=sys.stderr, flush=True)
        return 2


async def serve_until_stopped(args: argparse.Namespace) -> int:
    if args.private_key_file is not None:
        try:
            private = args.private_key_file.read_text()
        except OSError as error:
            raise UsageError(
                f"--private-key-file {args.private_key_file}: {error.strerror or error}"
            ) from None
        except UnicodeDecodeError:
            private = ""
        private_raw = _key(private, f"--private-key-file {args.private_key_file}", "wg genkey")
    else:
        private_raw = decode_key(genkey())
    client_private = None
    if args.peer is None:
        client_private = genkey()
        peer_text = pubkey(client_private)
    else:
        peer_text = args.peer
    peer_raw = _key(peer_text, "--peer")
    client_prefixes = _prefixes(args.allowed_ips, "--allowed-ips")
    addresses = _addresses(args.address)
    if not addresses or not client_prefixes:
        raise UsageError("--address and --allowed-ips need at least one address each")
    if not 0 <= args.port <= 65535 or not 1 <= args.echo_port <= 65535:
        raise UsageError("--port must be 0-65535 and --echo-port 1-65535")

    device = Device(private_raw)
    stats = Stats()
    try:
        endpoint = await open_endpoint(device, port=args.port, on_event=stats.on_event)
    except OSError as error:
        print(
            f"echo_server: cannot listen on UDP port {args.port}: "
            f"{error.strerror or error} (choose another with --port, or --port 0 for any)",
            file=sys.stderr,
            flush=True,
        )
        return 1
    async with endpoint:
        try:
            endpoint.add_peer(peer_raw, allowed_ips=[str(p) for p in client_prefixes])
        except ValueError as error:
            raise UsageError(f"--peer: {error}") from None
        # the handlers before anything is printed: a caller that reads the output and then
        # stops the server must get its summary, not a process killed by the signal
        loop = asyncio.get_running_loop()
        stop = loop.create_future()

        def request_stop() -> None:
            if not stop.done():
                stop.set_result(None)

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, request_stop)
        server_public = pubkey(encode_key(private_raw))
        print(json.dumps({"public_key": server_public, "port": endpoint.port}), flush=True)
        host = args.public_host or guess_host()
        shown_host = f"[{host}]" if ":" in host else host
        print(
            "# wg-quick config for the client, e.g. /etc/wireguard/echo.conf, then "
            "`wg-quick up echo`\n"
            + (
                "# (it holds the client's new private key: keep it to that machine)\n"
                if client_private is not None
                else ""
            )
            + client_config(
                server_public,
                f"{shown_host}:{endpoint.port}",
                addresses,
                client_prefixes,
                client_private,
            )
            + f"\n# then from the client: ping {addresses[0]}; "
            f"ncat -u {addresses[0]} {args.echo_port}\n",
            flush=True,
        )
        server = asyncio.ensure_future(serve(endpoint, addresses, args.echo_port, stats))
        await stop
        server.cancel()
    peer = device.peers[peer_raw]
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
