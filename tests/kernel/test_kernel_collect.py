"""``wgpy collect`` on the kernel's own WireGuard interface (generic netlink), run chrooted in
the guest: the snapshot holds wg0's public key, port and peer, never its private or preshared
key, and ``wgpy net check`` on it and the host's wgpyd snapshot answers as the pings do.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.lab import (
    GUEST_IF,
    GUEST_PORT,
    GUEST_TUNNEL,
    HOST_PORT,
    HOST_TUNNEL,
    HOST_UNDERLAY,
    Side,
    TunnelFactory,
    TunnelOptions,
)
from tests.kernel.test_kernel_watch import WGPY, _wgpy
from tests.netns.harness import WG_RUN_DIR

pytestmark = [pytest.mark.kernel, pytest.mark.netns]


def test_collect_reads_the_kernel_interface(tunnel_factory: TunnelFactory, tmp_path: Path) -> None:
    tunnel = tunnel_factory(TunnelOptions.with_psk())
    # the chroot's /proc is the guest's own (its /proc/sys is what forwarding is read from)
    tunnel.guest.run_in_host_root(":")
    tunnel.guest.run("grep -q ' /host/proc ' /proc/mounts || mount -t proc proc /host/proc")
    result = _wgpy(tunnel, "collect", "--host", "guest", check=False)
    assert result.status == 0, (result.status, result.stderr)
    text = result.stdout
    snapshot: dict[str, Any] = json.loads(text)

    private = tunnel.guest.run(f"cat /tmp/{GUEST_IF}.key").stdout.strip()
    for secret in (private, tunnel.options.guest_psk):
        assert secret and secret not in text and base64.b64decode(secret).hex() not in text
    wireguard = [i for i in snapshot["interfaces"] if "wireguard" in i]
    assert [i["name"] for i in wireguard] == [GUEST_IF]  # not the host's sockets in /host
    assert any(WG_RUN_DIR.glob("*.sock"))  # the host daemon's socket exists meanwhile
    [wg0] = wireguard
    assert sorted(wg0["addresses"]) == sorted([f"{GUEST_TUNNEL[4]}/24", f"{GUEST_TUNNEL[6]}/64"])
    assert wg0["wireguard"] == {
        "public_key": tunnel.guest_public,
        "listen_port": GUEST_PORT,
        "peers": [
            {
                "public_key": tunnel.host_public,
                "allowed_ips": [f"{HOST_TUNNEL[4]}/32", f"{HOST_TUNNEL[6]}/128"],
                "endpoint": f"{HOST_UNDERLAY[4]}:{HOST_PORT}",
                "persistent_keepalive": 0,
            }
        ],
    }
    assert snapshot["sysctl"]["net.ipv4.ip_forward"] in (0, 1)

    guest_path = tmp_path / "guest.json"
    guest_path.write_text(text)
    host_path = tmp_path / "host.json"
    host = tunnel.ns.run(WGPY, "collect", "--host", "host", "-o", str(host_path), check=False)
    assert host.returncode == 0, host.stderr
    check = tunnel.ns.run(
        WGPY, "net", "check", "--json", str(host_path), str(guest_path), check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert report["pairs"] == 4 and report["reachable"] == 4
    for family in (4, 6):
        sides: list[tuple[Side, str]] = [
            ("host", GUEST_TUNNEL[family]),
            ("guest", HOST_TUNNEL[family]),
        ]
        for side, dest in sides:
            ping = tunnel.ping(side, dest)
            assert ping.status == 0, ping
