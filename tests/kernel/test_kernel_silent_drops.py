"""`wgpy watch --trace-drops` counts the drops the kernel module neither logs nor counts.

The host sends the guest's wg0 datagrams too short for a data message, one of an unknown
type, data messages for a receiver index the guest never gave out and a captured data message
with its tag broken. None of them leaves a line in the kernel log or moves a counter of wg0;
the watch counts each under its reason from kprobe events, names the source of each count,
and removes its probes and trace instance when it ends.
"""

from __future__ import annotations

import random
import shlex
import struct
import sys
from typing import Any, Final

import pytest

from tests.kernel.image import REPO_ROOT
from tests.kernel.lab import GUEST_IF, GUEST_PORT, GUEST_TUNNEL, GUEST_UNDERLAY, KernelTunnel
from tests.kernel.test_kernel_watch import _prepare_host_root, _watch_state
from tests.netns.harness import wait_for

pytestmark = [pytest.mark.kernel, pytest.mark.netns]

VENV_BIN: Final = REPO_ROOT / ".venv" / "bin"
WGPY: Final = str(VENV_BIN / "wgpy") if (VENV_BIN / "wgpy").exists() else "wgpy"
TRACEFS: Final = "/sys/kernel/tracing"
#: What the watch must leave as it found it: the probes and instances (seen through a tracefs
#: the test mounts in the guest's own root) and the mounts (the watch runs chrooted in /host,
#: finds no tracefs there and mounts one).
TRACING_STATE: Final = (
    f"grep -q ' {TRACEFS} ' /proc/mounts || mount -t tracefs nodev {TRACEFS}\n"
    f"grep -c ' /host{TRACEFS} ' /proc/mounts; cat {TRACEFS}/kprobe_events; "
    f"ls {TRACEFS}/instances"
)


def _traced(state: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if state is None or not state.get("traced"):
        return {}
    return {entry["reason"]: entry for entry in state["traced"]["drops"]}


def _pcap_udp_payload(data: bytes) -> bytes:
    """The UDP payload of the first packet of a pcap file of Ethernet frames over IPv4."""
    (length,) = struct.unpack_from("<I", data, 24 + 8)
    frame = data[24 + 16 : 24 + 16 + length]
    header = (frame[14] & 0x0F) * 4
    return frame[14 + header + 8 :]


def _capture_data_message(tunnel: KernelTunnel) -> bytes:
    """A data message (not a keepalive) the host's daemon sends to the guest, as sent."""
    pcap = tunnel.ns.workdir / f"data-{random.getrandbits(32):08x}.pcap"
    rule = f"udp dst port {GUEST_PORT} and udp[8] = 4 and udp[4:2] > 48"
    capture = tunnel.ns.popen(
        "tcpdump", "-i", tunnel.lab.tap, "-U", "-c", "1", "-w", str(pcap), rule
    )
    try:
        wait_for(pcap.exists, 10, interval=0.1, what="tcpdump to open its file")
        wait_for(
            lambda: (
                tunnel.ping("host", GUEST_TUNNEL[4], count=1, wait=1.0).status == 0
                and capture.poll() is not None
            ),
            20,
            interval=0.2,
            what="a data message on the tap",
        )
    finally:
        if capture.poll() is None:
            capture.kill()
        capture.wait()
    return _pcap_udp_payload(pcap.read_bytes())


def _send(tunnel: KernelTunnel, payloads: list[bytes]) -> None:
    script = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"for payload in {payloads!r}:\n"
        f"    s.sendto(payload, ({GUEST_UNDERLAY[4]!r}, {GUEST_PORT}))\n"
    )
    tunnel.ns.run(sys.executable, "-c", script)


def test_watch_counts_silent_drops_from_kprobes_and_restores_tracing(
    tunnel: KernelTunnel,
) -> None:
    tunnel.handshake()
    _prepare_host_root(tunnel)
    guest = tunnel.guest
    data = _capture_data_message(tunnel)
    assert data[:4] == b"\x04\x00\x00\x00" and len(data) > 32
    broken = data[:-1] + bytes([data[-1] ^ 0x01])
    unknown_index = b"\x04\x00\x00\x00" + bytes(reversed(data[4:8])) + data[8:]
    if unknown_index[4:8] == data[4:8]:  # a palindromic index: take another
        unknown_index = b"\x04\x00\x00\x00" + bytes(b ^ 0xFF for b in data[4:8]) + data[8:]

    tracing_before = guest.run(TRACING_STATE, check=False).stdout
    assert tracing_before.startswith("0\n"), tracing_before
    links_before = tunnel.guest_link_stats()
    port = random.randint(20000, 29999)
    watch = (
        f"{WGPY} watch {GUEST_IF} --enable-debug --unthrottle --trace-drops "
        f"--metrics {GUEST_UNDERLAY[4]}:{port}"
    )
    guest.run_in_host_root(
        f"setsid sh -c {shlex.quote(watch)} </dev/null >/run/silent.out 2>&1 &", timeout=30
    )
    try:
        wait_for(lambda: _watch_state(tunnel) is not None, 90, interval=0.5, what="the watch")
    except TimeoutError:
        said = guest.run_in_host_root("cat /run/silent.out", check=False).stdout
        pytest.fail(f"the watch did not start:\n{said}")

    too_short = [b"\x04\x00\x00\x00" + bytes(12)] * 3  # a data message is at least 32 bytes
    unknown_type = [b"\x09\x00\x00\x00" + bytes(60)]
    _send(tunnel, too_short + unknown_type + [unknown_index] * 2 + [broken] * 2)
    expected = {"bad_size": 4, "unknown_index": 2, "decryption_failed": 2, "expired_keypair": 0}

    def counted() -> bool:
        traced = _traced(_watch_state(tunnel))
        return all(traced.get(r, {}).get("count", -1) >= n for r, n in expected.items())

    try:
        wait_for(counted, 30, interval=0.5, what=f"the watch to count {expected}")
    except TimeoutError:
        said = guest.run_in_host_root("cat /run/silent.out", check=False).stdout
        pytest.fail(f"the watch did not count {expected}: {_watch_state(tunnel)}\n{said}")
    state = _watch_state(tunnel)
    traced = _traced(state)
    assert state is not None
    during = guest.run(TRACING_STATE, check=False).stdout
    assert f"wgpy_{state['pid']}/wg_consume consume_skb" in during, during
    assert f"wgpy-watch-{state['pid']}" in during, during
    assert {r: e["count"] for r, e in traced.items()} == expected, state
    assert traced["unknown_index"]["source"].startswith("kprobe: wg_index_hashtable_lookup()")
    assert traced["decryption_failed"]["source"].startswith(
        "kprobe: chacha20poly1305_decrypt_sg_inplace()"
    )
    assert traced["bad_size"]["source"].startswith("kprobe: consume_skb()")
    assert traced["expired_keypair"]["source"].startswith("kprobe: decrypt_packet()")
    assert "every network namespace" in state["traced"]["scope"]
    # the kernel neither logged nor counted them: no drop from the log, no counter moved
    assert state["drops"] == [], state
    links = tunnel.guest_link_stats()
    for name in ("rx_errors", "rx_dropped", "rx_length_errors", "rx_frame_errors"):
        assert links[name] == links_before[name], (name, links)

    text = guest.run_in_host_root(shlex.join([WGPY, "show", GUEST_IF])).stdout
    assert "4 × bad_size (kprobe: consume_skb()" in text, text
    assert "2 × decryption_failed (kprobe: chacha20poly1305_decrypt_sg_inplace()" in text, text
    said = guest.run_in_host_root("cat /run/silent.out").stdout
    assert "unknown_index: kprobe: wg_index_hashtable_lookup() returned NULL" in said, said
    fetch = (
        "import urllib.request; print(urllib.request.urlopen("
        f"'http://{GUEST_UNDERLAY[4]}:{port}/metrics', timeout=10).read().decode())"
    )
    metrics = tunnel.ns.run(sys.executable, "-c", fetch).stdout
    assert any(
        line.startswith('wgpy_kernel_module_dropped_packets_total{reason="unknown_index"')
        and line.endswith(" 2.0")
        for line in metrics.splitlines()
    ), metrics

    guest.run(f"kill -TERM {int(state['pid'])}")
    wait_for(lambda: _watch_state(tunnel) is None, 30, interval=0.5, what="the watch to end")
    assert guest.run(TRACING_STATE, check=False).stdout == tracing_before
