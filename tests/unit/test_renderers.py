"""Renderers of core events: drop-reason docs, JSON logs, pcapng captures, show output."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from tests.packets import ipv4_udp
from wgpy.events import (
    DROP_REASON_HELP,
    Direction,
    DropReason,
    HandshakeCompleted,
    InnerInfo,
    PacketDropped,
    Verdict,
    key_b64,
)
from wgpy.sinks import pcapng
from wgpy.sinks.eventlog import JsonEventLog, LineRateLimiter, event_record
from wgpy.tools.interface.show import InterfaceView, ago, human_bytes, parse_get, render_text
from wgpy.tools.reasons_doc import render

REPO = Path(__file__).resolve().parents[2]


def test_every_reason_is_documented_and_the_doc_is_current() -> None:
    assert set(DROP_REASON_HELP) == set(DropReason)
    assert (REPO / "docs" / "drop-reasons.md").read_text() == render()


def test_json_record_fields() -> None:
    event = PacketDropped(
        DropReason.DISALLOWED_SOURCE,
        Direction.INCOMING,
        bytes(32),
        endpoint=("fd99::1", 51820),
        inner=InnerInfo(4, "10.1.2.3", "10.0.0.1", 1, 84),
        owner=bytes([1]) * 32,
        size=84,
    )
    record = event_record(event, "wg0", 1_700_000_000.25)
    assert record == {
        "time": "2023-11-14T22:13:20.250+00:00",
        "interface": "wg0",
        "event": "packet_dropped",
        "reason": "disallowed_source",
        "direction": "in",
        "peer": "A" * 43 + "=",
        "endpoint": "[fd99::1]:51820",
        "inner_src": "10.1.2.3",
        "inner_dst": "10.0.0.1",
        "inner_proto": 1,
        "owner": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        "size": 84,
    }
    assert event_record(HandshakeCompleted(bytes(32), True), "wg0", 0.0)["initiator"] is True


def test_json_log_is_rate_limited_per_reason() -> None:
    log = JsonEventLog("wg0", LineRateLimiter(per_second=1.0, burst=3.0))
    flood = PacketDropped(DropReason.INVALID_MAC1, Direction.INCOMING, None)
    other = PacketDropped(DropReason.UNKNOWN_INDEX, Direction.INCOMING, None)
    lines = [log.render(flood, 0.0, 0.0) for _ in range(10)]
    assert sum(line is not None for line in lines) == 3
    assert log.render(other, 0.0, 0.0) is not None  # another reason has its own budget
    later = log.render(flood, 2.0, 2.0)
    assert later is not None and json.loads(later)["suppressed_before"] == 7


def test_pcapng_round_trip_and_tshark_shows_comments(tmp_path: Path) -> None:
    packet = ipv4_udp("10.0.0.1", "10.0.0.2", b"x" * 13)
    comment = pcapng.annotation(
        Direction.INCOMING, Verdict.DROPPED, bytes(32), DropReason.DISALLOWED_SOURCE
    )
    data = pcapng.header("wg0") + pcapng.packet_block(
        1_700_000_000.5, packet, Direction.INCOMING, comment
    )
    (captured,) = pcapng.read(io.BytesIO(data))
    assert captured.packet == packet and captured.comment == comment
    assert captured.direction is Direction.INCOMING
    assert captured.timestamp == 1_700_000_000.5
    path = tmp_path / "c.pcapng"
    path.write_bytes(data)
    shown = subprocess.run(
        ["tshark", "-r", str(path), "-V"], capture_output=True, text=True, check=True
    ).stdout
    assert "Packet comments" in shown
    assert "wgpy: in dropped reason=disallowed_source" in shown
    assert "Direction: Inbound" in shown


def test_pcapng_reader_rejects_garbage() -> None:
    with pytest.raises(pcapng.PcapngError):
        list(pcapng.read(io.BytesIO(b"\x01\x02\x03\x04" * 5)))
    with pytest.raises(pcapng.PcapngError):
        list(pcapng.read(io.BytesIO(pcapng.header("wg0")[:-3])))


def test_show_renders_like_wg() -> None:
    assert ago(65) == "1 minute, 5 seconds"
    assert ago(3600) == "1 hour"
    assert human_bytes(1000) == "1000 B" and human_bytes(1536) == "1.50 KiB"
    view = parse_get(
        "wg0",
        [
            ("private_key", "a0" * 32),
            ("listen_port", "51820"),
            ("public_key", "01" * 32),
            ("preshared_key", "0" * 64),
            ("protocol_version", "1"),
            ("endpoint", "192.0.2.1:51820"),
            ("last_handshake_time_sec", "1000"),
            ("last_handshake_time_nsec", "0"),
            ("tx_bytes", "2048"),
            ("rx_bytes", "100"),
            ("persistent_keepalive_interval", "25"),
            ("allowed_ip", "10.0.0.0/8"),
            ("allowed_ip", "fd00::/64"),
        ],
    )
    assert isinstance(view, InterfaceView)
    text = render_text(view, now=1065)
    assert "  listening port: 51820" in text
    assert "peer: AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=" in text
    assert "  allowed ips: 10.0.0.0/8, fd00::/64" in text
    assert "  latest handshake: 1 minute, 5 seconds ago" in text
    assert "  transfer: 100 B received, 2.00 KiB sent" in text
    assert "  persistent keepalive: every 25 seconds" in text
    assert "preshared key" not in text


def test_metrics_use_exporter_names_and_count_drops() -> None:
    from prometheus_client import generate_latest

    from wgpy import crypto
    from wgpy.device import Device
    from wgpy.sinks.metrics import make_registry, take_snapshot

    device = Device(crypto.generate_private_key())
    peer = device.add_peer(crypto.public_key(crypto.generate_private_key()))
    assert peer is not None
    device.allowed_ips.insert("10.0.0.0/8", peer)
    peer.rx_bytes, peer.tx_bytes = 1234, 5678
    device.send_packet(ipv4_udp("10.0.0.1", "192.168.1.1"), 0.0)  # no peer
    device.send_packet(ipv4_udp("10.0.0.1", "192.168.1.2"), 0.0)
    registry, collector = make_registry("wg0")
    collector.snapshot = take_snapshot(device, "wg0")
    text = generate_latest(registry).decode()
    assert f'public_key="{key_b64(peer.public_key)}"' in text
    assert 'wireguard_sent_bytes_total{allowed_ips="10.0.0.0/8",interface="wg0"' in text
    assert "} 5678.0" in text and "} 1234.0" in text
    assert 'wgpy_dropped_packets_total{interface="wg0",peer="",reason="no_peer"} 2.0' in text
    private = device.private_key
    assert private is not None and private.hex() not in text
