"""Prometheus metrics: prometheus_wireguard_exporter's names, plus drops per peer and reason.

The HTTP server runs in prometheus_client's thread; it only ever reads a :class:`Snapshot`
that the event loop replaces wholesale (an atomic reference swap), so it never iterates the
device's live dictionaries.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from wgpy.device import Device
from wgpy.events import key_b64


@dataclass(frozen=True)
class PeerSample:
    public_key: str
    allowed_ips: str
    rx_bytes: int
    tx_bytes: int
    latest_handshake: float


@dataclass(frozen=True)
class Snapshot:
    interface: str
    peers: tuple[PeerSample, ...] = ()
    drops: tuple[tuple[str, str, int], ...] = field(default=())
    #: the kernel module's silent drops (``wgpy watch --trace-drops``): reason, source, count
    module_drops: tuple[tuple[str, str, int], ...] = field(default=())


def take_snapshot(device: Device, interface: str) -> Snapshot:
    peers = tuple(
        PeerSample(
            key_b64(peer.public_key) or "",
            ",".join(str(p) for p in device.allowed_ips.entries(peer)),
            peer.rx_bytes,
            peer.tx_bytes,
            peer.last_handshake_wall,
        )
        for peer in device.peers.values()
    )
    drops = tuple(
        (key_b64(peer) or "", reason.value, count)
        for (peer, reason), count in device.drop_counts.items()
    )
    return Snapshot(interface, peers, drops)


class DeviceCollector(Collector):
    def __init__(self, interface: str) -> None:
        self.snapshot = Snapshot(interface)

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        labels = ["interface", "public_key", "allowed_ips"]
        sent = CounterMetricFamily("wireguard_sent_bytes", "Bytes sent to the peer", labels=labels)
        received = CounterMetricFamily(
            "wireguard_received_bytes", "Bytes received from the peer", labels=labels
        )
        handshake = GaugeMetricFamily(
            "wireguard_latest_handshake_seconds",
            "UNIX timestamp of the latest handshake with the peer (0 if none)",
            labels=labels,
        )
        for peer in snap.peers:
            values = [snap.interface, peer.public_key, peer.allowed_ips]
            sent.add_metric(values, peer.tx_bytes)
            received.add_metric(values, peer.rx_bytes)
            handshake.add_metric(values, peer.latest_handshake)
        drops = CounterMetricFamily(
            "wgpy_dropped_packets",
            "Packets and datagrams not delivered, by peer ('' = none known) and reason",
            labels=["interface", "peer", "reason"],
        )
        for peer_key, reason, count in snap.drops:
            drops.add_metric([snap.interface, peer_key, reason], count)
        module = CounterMetricFamily(
            "wgpy_kernel_module_dropped_packets",
            "Datagrams the kernel module dropped without a log line or counter, all of its "
            "interfaces (wgpy watch --trace-drops), by reason and where the count comes from",
            labels=["reason", "source"],
        )
        for reason, source, count in snap.module_drops:
            module.add_metric([reason, source], count)
        yield from (sent, received, handshake, drops, module)


def make_registry(interface: str) -> tuple[CollectorRegistry, DeviceCollector]:
    registry = CollectorRegistry()
    collector = DeviceCollector(interface)
    registry.register(collector)
    return registry, collector


def parse_address(address: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [addr]:port; no host is 127.0.0.1) as (host, port); ValueError."""
    host, _, port = address.rpartition(":")
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port {number} out of range")
    return host.strip("[]") or "127.0.0.1", number


def check_address(address: str) -> None:
    """Raise OSError or ValueError unless the metrics server could listen on `address` now
    (bound the way its server binds, with SO_REUSEADDR, then released)."""
    host, port = parse_address(address)
    family, kind, proto, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(sockaddr)


def start_server(address: str, registry: CollectorRegistry) -> None:
    """Serve /metrics on HOST:PORT (IPv6 as [addr]:port) in a background thread."""
    from prometheus_client import start_http_server

    host, port = parse_address(address)
    start_http_server(port, addr=host, registry=registry)
