"""wgpy.aio: two endpoints over loopback, the echo server example, filtering, events, close."""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import struct
import sys
from pathlib import Path
from types import ModuleType

import pytest

from wgpy.aio import EndpointClosed, WireGuardEndpoint, open_endpoint
from wgpy.device import Device
from wgpy.events import DropReason, Event, HandshakeCompleted, PacketDropped
from wgpy.keys import decode_key, genkey, pubkey

REPO = Path(__file__).resolve().parents[2]


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO / "examples" / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


echo = load_example("echo_server.py")

SERVER4, CLIENT4 = "10.8.0.1", "10.8.0.2"
SERVER6, CLIENT6 = "fd08::1", "fd08::2"


def packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


def icmp_echo_request(src: str, dst: str, seq: int, payload: bytes = b"ping") -> bytes:
    s, d = packed(src), packed(dst)
    if len(s) == 4:
        icmp = bytearray(struct.pack("!BBHHH", 8, 0, 0, 99, seq) + payload)
        struct.pack_into("!H", icmp, 2, echo.internet_checksum(bytes(icmp)))
        return bytes(echo.ipv4_packet(s, d, echo.ICMP, bytes(icmp)))
    icmp = bytearray(struct.pack("!BBHHH", 128, 0, 0, 99, seq) + payload)
    struct.pack_into("!H", icmp, 2, echo._checksum6(s, d, echo.ICMPV6, bytes(icmp)))
    return bytes(echo.ipv6_packet(s, d, echo.ICMPV6, bytes(icmp)))


def udp_packet(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    s, d = packed(src), packed(dst)
    build = echo.ipv4_packet if len(s) == 4 else echo.ipv6_packet
    return bytes(build(s, d, echo.UDP, echo.udp_datagram(s, d, sport, dport, data)))


async def make_pair(
    host: str = "127.0.0.1", client_allowed: tuple[str, ...] = (f"{CLIENT4}/32", f"{CLIENT6}/128")
) -> tuple[WireGuardEndpoint, WireGuardEndpoint, list[Event]]:
    server_key, client_key = genkey(), genkey()
    server_events: list[Event] = []
    server = await open_endpoint(
        Device(decode_key(server_key)), host=host, port=0, on_event=server_events.append
    )
    client = await open_endpoint(Device(decode_key(client_key)), host=host, port=0)
    server.add_peer(pubkey(client_key), allowed_ips=client_allowed)
    client.add_peer(
        pubkey(server_key),
        allowed_ips=[f"{SERVER4}/32", f"{SERVER6}/128"],
        endpoint=(host, server.port),
    )
    return server, client, server_events


async def recv(endpoint: WireGuardEndpoint, timeout: float = 5.0) -> bytes:
    return await asyncio.wait_for(endpoint.recv(), timeout)


def test_echo_server_example_answers_ping_and_udp_v4_v6() -> None:
    async def scenario() -> None:
        server, client, server_events = await make_pair()
        stats = echo.Stats()
        task = asyncio.ensure_future(echo.serve(server, [SERVER4, SERVER6], 7, stats))
        async with server, client:
            client.send(icmp_echo_request(CLIENT4, SERVER4, 1))
            reply = await recv(client)
            assert reply[9] == echo.ICMP and reply[20] == 0  # echo reply
            assert reply[12:16] == packed(SERVER4) and reply[16:20] == packed(CLIENT4)
            assert echo.internet_checksum(reply[:20]) == 0
            assert echo.internet_checksum(reply[20:]) == 0
            assert reply[28:] == b"ping"

            client.send(icmp_echo_request(CLIENT6, SERVER6, 2))
            reply6 = await recv(client)
            assert reply6[6] == echo.ICMPV6 and reply6[40] == 129
            s, d = reply6[8:24], reply6[24:40]
            assert echo._checksum6(s, d, echo.ICMPV6, reply6[40:]) == 0

            for src, dst in ((CLIENT4, SERVER4), (CLIENT6, SERVER6)):
                client.send(udp_packet(src, dst, 4242, 7, b"hello " + dst.encode()))
                got = await recv(client)
                offset = 20 if got[0] >> 4 == 4 else 40
                sport, dport = struct.unpack_from("!HH", got, offset)
                assert (sport, dport) == (7, 4242)
                assert got[offset + 8 :] == b"hello " + dst.encode()
            assert stats.answered == 4
            assert any(isinstance(e, HandshakeCompleted) for e in server_events)
            peer = next(iter(server.device.peers.values()))
            assert peer.rx_bytes > 0 and peer.tx_bytes > 0
        assert task.done() or await asyncio.wait_for(task, 2) is None

    asyncio.run(scenario())


def test_disallowed_source_is_dropped_and_counted_like_the_daemon() -> None:
    async def scenario() -> None:
        server, client, server_events = await make_pair(client_allowed=(f"{CLIENT4}/32",))
        async with server, client:
            # the client routes 10.8.0.1 to the server; the server allows only 10.8.0.2
            client.send(icmp_echo_request("10.8.0.99", SERVER4, 1))
            client.send(icmp_echo_request(CLIENT4, SERVER4, 2))
            packet = await recv(server)
            assert packet[12:16] == packed(CLIENT4)  # only the allowed one came through
            client_key = next(iter(server.device.peers))
            assert server.device.drop_counts[(client_key, DropReason.DISALLOWED_SOURCE)] == 1
            drops = [e for e in server_events if isinstance(e, PacketDropped)]
            assert [d.reason for d in drops] == [DropReason.DISALLOWED_SOURCE]
            assert drops[0].inner is not None and drops[0].inner.src == "10.8.0.99"

            # outgoing: no peer holds the destination
            server.send(icmp_echo_request(SERVER4, "192.0.2.1", 3))
            await asyncio.sleep(0.05)
            assert server.device.drop_counts[(None, DropReason.NO_PEER)] == 1

    asyncio.run(scenario())


def test_events_iterator_and_close_end_iteration() -> None:
    async def scenario() -> None:
        server, client, _ = await make_pair(host="::1")
        seen: list[Event] = []

        async def watch() -> None:
            async for event in server.events():
                seen.append(event)

        watcher = asyncio.ensure_future(watch())
        received: list[bytes] = []

        async def read_all() -> None:
            async for packet in server:
                received.append(packet)

        reader = asyncio.ensure_future(read_all())
        await asyncio.sleep(0)
        client.send(icmp_echo_request(CLIENT6, SERVER6, 1))
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.02)
        assert len(received) == 1
        await server.close()
        await client.close()
        await asyncio.wait_for(asyncio.gather(watcher, reader), 2)  # both ended by close
        assert any(isinstance(e, HandshakeCompleted) for e in seen)
        with pytest.raises(EndpointClosed):
            server.send(received[0])
        with pytest.raises(EndpointClosed):
            await server.recv()
        await server.close()  # idempotent

    asyncio.run(scenario())


def test_full_receive_queue_drops_as_tun_write_failed() -> None:
    async def scenario() -> None:
        server_key, client_key = genkey(), genkey()
        server = await open_endpoint(Device(decode_key(server_key)), host="127.0.0.1", max_queued=2)
        client = await open_endpoint(Device(decode_key(client_key)), host="127.0.0.1")
        server.add_peer(pubkey(client_key), allowed_ips=[f"{CLIENT4}/32"])
        client.add_peer(
            pubkey(server_key), allowed_ips=[f"{SERVER4}/32"], endpoint=("127.0.0.1", server.port)
        )
        async with server, client:
            for seq in range(5):
                client.send(icmp_echo_request(CLIENT4, SERVER4, seq))
            for _ in range(100):
                if sum(server.device.drop_counts.values()) >= 3:
                    break
                await asyncio.sleep(0.02)
            assert server.device.drop_counts[(None, DropReason.TUN_WRITE_FAILED)] == 3
            assert len([await recv(server), await recv(server)]) == 2

    asyncio.run(scenario())


def test_port_zero_binds_both_families_and_sets_listen_port() -> None:
    async def scenario() -> None:
        device = Device(decode_key(genkey()))
        async with WireGuardEndpoint(device, port=0) as endpoint:
            assert endpoint.port > 0 and device.listen_port == endpoint.port
            assert "port=" in repr(endpoint)
        assert endpoint.closed

    asyncio.run(scenario())
