"""``wgpy collect`` in real namespaces: the snapshot holds exactly what the namespace has (its
own WireGuard interfaces, wireguard-go's and wgpyd's, not those of other namespaces sharing
/var/run/wireguard; routes of every table, rules, forwarding, the FORWARD and NAT rules) and
never a private or preshared key; ``wgpy net check`` on collected snapshots answers as on the
wg-quick files they came from, and as real pings do.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest

from tests import net_scenarios
from tests.netns.dropkit import WGPYD
from tests.netns.harness import (
    WG_RUN_DIR,
    WIREGUARD_GO,
    Netns,
    ping,
    two_peer_topology,
    unique_ifname,
    veth_pair,
)
from wgpy.net.model import Action, FilterRule, Host
from wgpy.net.snapshot import host_from_snapshot

pytestmark = pytest.mark.netns

VENV_BIN = Path(sys.executable).parent
WGPY = (sys.executable, "-m", "wgpy.cli")


def _workdir(ns: Netns) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=f"{ns.name}-collect-"))
    ns.add_cleanup(lambda: shutil.rmtree(directory, ignore_errors=True))
    return directory


def collect(ns: Netns, host: str, directory: Path) -> tuple[Path, dict[str, Any]]:
    """``wgpy collect --host HOST -o FILE`` inside ``ns``: the file and its JSON."""
    path = directory / f"{host}.json"
    result = ns.run(*WGPY, "collect", "--host", host, "-o", str(path), check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "", result.stdout  # -o: nothing on stdout
    return path, json.loads(path.read_text())


def _secrets(*keys: str) -> list[str]:
    """Each key as base64 (wg's form) and as hex (UAPI's form)."""
    found = []
    for key in keys:
        found += [key, base64.b64decode(key).hex()]
    return found


def _routes(snapshot: dict[str, Any]) -> set[tuple[Any, ...]]:
    return {
        (r["table"], r["dst"], r["dev"], r["via"], r["type"], r["metric"])
        for r in snapshot["routes"]
    }


def _interface(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [i for i in snapshot["interfaces"] if i["name"] == name]
    assert len(found) == 1, found
    return found[0]


def test_collect_reads_exactly_this_namespace(netns_factory: Callable[[], Netns]) -> None:
    a, b = netns_factory(), netns_factory()
    topo = two_peer_topology(a, b, command_a=WIREGUARD_GO, command_b=WGPYD, use_psk=True)
    assert topo.psk is not None
    wg_a, veth_a = topo.a.ifname, topo.a.veth
    # on a (wireguard-go): another table, a blackhole, policy rules, forwarding on, a FORWARD
    # chain that drops but for the tunnel into the LAN, and a MASQUERADE
    a.run("ip", "route", "add", "10.50.0.0/16", "dev", wg_a, "table", "100")
    a.run("ip", "route", "add", "blackhole", "10.66.0.0/16")
    a.run("ip", "rule", "add", "from", "10.100.0.0/24", "table", "100", "priority", "1000")
    a.run("ip", "rule", "add", "not", "fwmark", "51820", "table", "51820", "priority", "1001")
    a.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    a.run("iptables", "-P", "FORWARD", "DROP")
    a.run("iptables", "-A", "FORWARD", "-i", wg_a, "-o", veth_a, "-j", "ACCEPT")
    a.run("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", veth_a, "-j", "MASQUERADE")
    directory = _workdir(a)
    path_a, snap_a = collect(a, "alpha", directory)
    path_b, snap_b = collect(b, "beta", directory)

    for text in (path_a.read_text(), path_b.read_text()):
        for secret in _secrets(topo.a.private_key, topo.b.private_key, topo.psk):
            assert secret not in text

    assert snap_a["wgpy_snapshot"] == 1 and snap_a["host"] == "alpha"
    # each namespace sees its own interface only, though both sockets are in one directory
    assert {i["name"] for i in snap_a["interfaces"]} == {"lo", veth_a, wg_a}
    assert {i["name"] for i in snap_b["interfaces"]} == {"lo", topo.b.veth, topo.b.ifname}
    assert [i["name"] for i in snap_a["interfaces"] if "wireguard" in i] == [wg_a]
    for node, other, snap in ((topo.a, topo.b, snap_a), (topo.b, topo.a, snap_b)):
        tunnel = _interface(snap, node.ifname)
        assert tunnel["up"] is True
        assert sorted(tunnel["addresses"]) == sorted([f"{node.tunnel4}/24", f"{node.tunnel6}/64"])
        assert sorted(_interface(snap, node.veth)["addresses"]) == sorted(
            [f"{node.underlay4}/24", f"{node.underlay6}/64"]
        )
        assert tunnel["wireguard"] == {
            "public_key": node.public_key,
            "listen_port": node.listen_port,
            "peers": [
                {
                    "public_key": other.public_key,
                    "allowed_ips": [f"{other.tunnel4}/32", f"{other.tunnel6}/128"],
                    "endpoint": f"{other.underlay4}:{other.listen_port}",
                    "persistent_keepalive": 0,
                }
            ],
        }
    assert _routes(snap_a) == {
        ("main", "10.99.0.0/24", veth_a, None, "unicast", 0),
        ("main", "10.100.0.0/24", wg_a, None, "unicast", 0),
        ("main", "10.66.0.0/16", None, None, "blackhole", 0),
        ("100", "10.50.0.0/16", wg_a, None, "unicast", 0),
        ("main", "fd99::/64", veth_a, None, "unicast", 256),
        ("main", "fd00:100::/64", wg_a, None, "unicast", 256),
    }
    assert snap_a["rules"] == [
        {"priority": 0, "table": "local"},
        {"priority": 1000, "table": "100", "src": "10.100.0.0/24"},
        {"priority": 1001, "table": "51820", "fwmark": 51820, "not": True},
        {"priority": 32766, "table": "main"},
        {"priority": 32767, "table": "default"},
    ]
    assert snap_a["sysctl"] == {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 0}
    assert snap_b["sysctl"] == {"net.ipv4.ip_forward": 0, "net.ipv6.conf.all.forwarding": 0}
    assert snap_a["unsupported"] == [] and snap_a["firewall"]["error"] is None

    host = host_from_snapshot(snap_a, path_a.name)
    assert isinstance(host, Host) and host.name == "alpha"
    assert host.forwarding[4][0] is True and host.forwarding[6][0] is False
    assert [r.prefix for r in host.routes if r.table == "100"] == [ip_network("10.50.0.0/16")]
    firewall = host.firewall[4]
    assert firewall.forward_policy is Action.DROP
    assert [_rule(r) for r in firewall.forward] == [(Action.ACCEPT, wg_a, veth_a)]
    assert [_rule(r) for r in firewall.postrouting] == [(Action.MASQUERADE, None, veth_a)]
    assert host.firewall[6].forward_policy is Action.ACCEPT and not host.firewall[6].forward
    assert not host.unknown

    # the two snapshots join by key, and the model's answer is what the tunnel does
    check = a.run(*WGPY, "net", "check", str(path_a), str(path_b), "--json", check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert report["pairs"] == 4 and report["reachable"] == 4
    for ns, dest in ((a, topo.b.tunnel4), (b, topo.a.tunnel4), (a, topo.b.tunnel6)):
        assert ping(ns, dest).returncode == 0


def _rule(rule: FilterRule) -> tuple[Action, str | None, str | None]:
    return rule.action, rule.in_iface, rule.out_iface


def test_what_the_model_cannot_read_is_named_not_guessed(
    netns_factory: Callable[[], Netns],
) -> None:
    ns, other = netns_factory(), netns_factory()
    veth, _ = veth_pair(ns, other, "10.97.0.1", "10.97.0.2")
    # an nftables forward chain iptables-save does not show, and a multipath route
    ns.run("nft", "add", "table", "inet", "wgpyfw")
    ns.run(
        "nft", "add", "chain", "inet", "wgpyfw", "wgpyforward",
        "{ type filter hook forward priority 0; policy drop; }",
    )  # fmt: skip
    ns.run(
        "ip", "route", "add", "10.8.0.0/16",
        "nexthop", "via", "10.97.0.2", "nexthop", "via", "10.97.0.3",
    )  # fmt: skip
    path, snap = collect(ns, "gw", _workdir(ns))
    firewall = snap["firewall"]
    assert firewall["iptables_save"] is None and firewall["ip6tables_save"] is None
    assert "inet wgpyfw wgpyforward (hook forward)" in firewall["error"]
    assert any(
        item.get("chain", {}).get("name") == "wgpyforward" for item in firewall["nft"]["nftables"]
    )
    assert snap["unsupported"] == ["multipath route 10.8.0.0/16 table main"]
    assert "10.8.0.0/16" not in {r["dst"] for r in snap["routes"]}
    host = host_from_snapshot(snap, path.name)
    assert host.firewall[4].forward_policy is Action.UNKNOWN
    assert host.firewall[6].forward_policy is Action.UNKNOWN
    assert any("multipath route 10.8.0.0/16" in note for note in host.unknown)
    assert any("inet wgpyfw wgpyforward" in note for note in host.unknown)
    assert veth in {i["name"] for i in snap["interfaces"]}


# ------------------------------------------------------------------ the hub and spoke

HUB_OUTER = "10.98.0.1"


def _wg_quick_up(ns: Netns, conf: Path, implementation: str) -> None:
    ifname = conf.stem
    socket_path = WG_RUN_DIR / f"{ifname}.sock"
    ns.add_cleanup(lambda: socket_path.unlink(missing_ok=True))
    env = {
        "WG_QUICK_USERSPACE_IMPLEMENTATION": implementation,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    up = ns.run("wg-quick", "up", str(conf), env=env, check=False, timeout=60)
    assert up.returncode == 0, f"wg-quick up {conf.name}:\n{up.stdout}{up.stderr}"
    assert f"[#] {implementation} {ifname}" in up.stderr, up.stderr


def _answers(ns: Netns, paths: list[Path]) -> dict[str, Any]:
    result = ns.run(*WGPY, "net", "check", "--json", *map(str, paths), check=False)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    answer["exit"] = result.returncode
    return answer


def _groups(answer: dict[str, Any]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            g["cause"]["kind"],
            g["cause"]["host"],
            g["cause"]["interface"],
            g["cause"]["peer"],
            g["leg"],
            g["pairs"],
        )
        for g in answer["groups"]
    )


def _verdicts(answer: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(r["from"]["address"], r["to"]["address"]): r["verdict"] for r in answer["results"]}


def test_hub_and_spoke_mistake_from_collected_snapshots(
    netns_factory: Callable[[], Netns],
) -> None:
    scenario = net_scenarios.hub_and_spoke_mistake()
    names = {h.name: unique_ifname(h.name[:3]) for h in scenario.hosts}  # host -> interface
    spaces = {name: netns_factory() for name in names}
    hub = spaces["hub"]
    # the underlay: one veth per spoke, the hub's endpoint on its loopback
    hub.run("ip", "addr", "add", f"{HUB_OUTER}/32", "dev", "lo")
    for number, spoke in enumerate(("a", "b"), start=1):
        veth_pair(hub, spaces[spoke], f"10.98.{number}.1", f"10.98.{number}.2")
        spaces[spoke].run("ip", "route", "add", f"{HUB_OUTER}/32", "via", f"10.98.{number}.1")
    directory = _workdir(hub)
    configs = scenario.configs(underlay={"hub": HUB_OUTER})
    implementations = {"hub": "wgpyd", "a": "wireguard-go", "b": "wgpyd"}
    conf_paths: list[Path] = []
    for host, text in configs.items():
        conf = directory / f"{names[host]}.conf"
        conf.touch(mode=0o600)
        conf.write_text(text)
        conf_paths.append(conf)
        _wg_quick_up(spaces[host], conf, implementations[host])
    snapshots = [collect(spaces[h], names[h], directory)[0] for h in configs]

    offline, collected = _answers(hub, conf_paths), _answers(hub, snapshots)
    assert offline["exit"] == collected["exit"] == 1
    assert _groups(collected) == _groups(offline)
    # both directions of a <-> b: a has no peer for b, and a drops b's packets from the hub
    assert {(g[0], g[1], g[4]) for g in _groups(collected)} == {
        ("no_peer", names["a"], "request"),
        ("disallowed_source", names["a"], "request"),
    }
    verdicts = _verdicts(collected)
    assert verdicts == _verdicts(offline)

    # the real pings agree, pair by pair (spokes first: the hub learns their endpoints)
    address = {names[h.name]: h.address.split("/")[0] for h in scenario.hosts}
    by_address = {v: k for k, v in address.items()}
    order = sorted(verdicts, key=lambda pair: by_address[pair[0]] == names["hub"])
    for source, target in order:
        host = next(h for h, i in names.items() if i == by_address[source])
        result = ping(spaces[host], target, count=4, wait=1.5)
        real = "reachable" if result.returncode == 0 else "unreachable"
        assert real == verdicts[(source, target)], (source, target, result.stdout)
