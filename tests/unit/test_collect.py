"""``wgpy collect`` without a namespace: the UAPI pairs → snapshot translation keeps no key
but public ones, nftables chains iptables cannot show are named, what the model cannot
represent reaches the answers, and ``-o FILE`` is all or nothing."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from wgpy import crypto
from wgpy.cli import main
from wgpy.io import collect as collect_module
from wgpy.io.collect import CollectError, _foreign_chains, _wireguard_json
from wgpy.net.model import Action
from wgpy.net.snapshot import host_from_snapshot
from wgpy.tools.network import collect_cli

PRIVATE = bytes(range(1, 33))
PEER_PUBLIC = bytes(range(33, 65))
PSK = bytes(range(65, 97))


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_wireguard_pairs_keep_public_keys_only() -> None:
    pairs = [
        ("private_key", PRIVATE.hex()),
        ("listen_port", "51820"),
        ("fwmark", "51820"),
        ("public_key", PEER_PUBLIC.hex()),
        ("preshared_key", PSK.hex()),
        ("endpoint", "[2001:db8::1]:51820"),
        ("last_handshake_time_sec", "1700000000"),
        ("persistent_keepalive_interval", "25"),
        ("allowed_ip", "10.0.0.2/32"),
        ("allowed_ip", "fd00::2/128"),
    ]
    found = _wireguard_json(pairs)
    assert found == {
        "public_key": _b64(crypto.public_key(PRIVATE)),
        "listen_port": 51820,
        "peers": [
            {
                "public_key": _b64(PEER_PUBLIC),
                "allowed_ips": ["10.0.0.2/32", "fd00::2/128"],
                "endpoint": "[2001:db8::1]:51820",
                "persistent_keepalive": 25,
            }
        ],
    }
    text = json.dumps(found)
    for secret in (PRIVATE, PSK):
        assert secret.hex() not in text and _b64(secret) not in text


def _chain(family: str, table: str, name: str, hook: str | None = None) -> dict[str, Any]:
    chain = {"family": family, "table": table, "name": name}
    return {"chain": chain if hook is None else {**chain, "hook": hook}}


def test_nftables_chains_outside_iptables_view_are_named() -> None:
    ruleset = {
        "nftables": [
            {"metainfo": {"json_schema_version": 1}},
            {"table": {"family": "ip", "name": "filter"}},
            _chain("ip", "filter", "FORWARD", "forward"),
            _chain("ip", "nat", "POSTROUTING", "postrouting"),
            _chain("inet", "fw", "fwd", "forward"),
            _chain("ip", "mine", "out", "postrouting"),
            _chain("inet", "fw", "in", "input"),
            _chain("bridge", "br", "f", "forward"),
            _chain("inet", "fw", "helper"),
        ]
    }
    assert _foreign_chains(ruleset) == [
        "inet fw fwd (hook forward)",
        "ip mine out (hook postrouting)",
    ]
    assert _foreign_chains({"nftables": []}) == []


def _snapshot(**extra: Any) -> dict[str, Any]:
    return {
        "wgpy_snapshot": 1,
        "host": "gw",
        "interfaces": [{"name": "lo", "up": True, "addresses": ["127.0.0.1/8"]}],
        "routes": [],
        "rules": [],
        "sysctl": {"net.ipv4.ip_forward": 1},
        "firewall": {"iptables_save": "", "ip6tables_save": "", "nft": None, "error": None},
        **extra,
    }


def test_unsupported_facts_reach_the_answers() -> None:
    host = host_from_snapshot(
        _snapshot(unsupported=["multipath route 10.8.0.0/16 table main"]), "gw.json"
    )
    assert host.unknown == ["gw: multipath route 10.8.0.0/16 table main (not in the model)"]
    assert host.firewall[4].forward_policy is Action.ACCEPT
    assert not host_from_snapshot(_snapshot(), "gw.json").unknown


def test_firewall_error_makes_it_unknown() -> None:
    firewall: dict[str, Any] = {
        "iptables_save": None,
        "ip6tables_save": None,
        "nft": {},
        "error": "no iptables",
    }
    host = host_from_snapshot(_snapshot(firewall=firewall), "gw.json")
    assert host.firewall[4].forward_policy is Action.UNKNOWN
    assert host.firewall[6].forward_policy is Action.UNKNOWN
    assert any("no iptables" in note for note in host.unknown)


def _fake_collect(monkeypatch: pytest.MonkeyPatch, result: dict[str, Any] | Exception) -> None:
    def fake(host: str | None = None) -> dict[str, Any]:
        if isinstance(result, Exception):
            raise result
        return {**result, "host": host or "default"}

    monkeypatch.setattr(collect_cli, "collect", fake)


def test_output_file_is_written_whole_and_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_collect(monkeypatch, _snapshot())
    target = tmp_path / "gw.json"
    target.write_text("old")
    assert main(["collect", "--host", "edge", "-o", str(target)]) == 0
    assert capsys.readouterr() == ("", "")
    data = json.loads(target.read_text())
    assert host_from_snapshot(data, target.name).name == "edge"
    assert [p.name for p in tmp_path.iterdir()] == ["gw.json"]  # no temporary file left
    assert main(["collect"]) == 0
    assert json.loads(capsys.readouterr().out)["host"] == "default"


def test_a_failed_read_writes_nothing_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_collect(monkeypatch, CollectError("cannot read /proc/sys/net/ipv4/ip_forward: gone"))
    target = tmp_path / "gw.json"
    assert main(["collect", "-o", str(target)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "wgpy collect: cannot read /proc/sys/net/ipv4/ip_forward: gone\n"
    assert list(tmp_path.iterdir()) == []
    target.write_text("kept")
    assert main(["collect", "-o", str(target)]) == 2
    assert target.read_text() == "kept"


def test_an_unwritable_output_exits_1_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_collect(monkeypatch, _snapshot())
    target = tmp_path / "missing" / "gw.json"
    assert main(["collect", "-o", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"wgpy collect: cannot write {target}: ") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []

    def broken(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", broken)
    target = tmp_path / "gw.json"
    assert main(["collect", "-o", str(target)]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_sysctl_is_read_from_proc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(collect_module, "_SYSCTLS", {"net.ipv4.ip_forward": True})
    found = collect_module._sysctls()
    assert set(found) == {"net.ipv4.ip_forward"} and found["net.ipv4.ip_forward"] in (0, 1)
    monkeypatch.setattr(collect_module, "_SYSCTLS", {"net.ipv4.no_such_switch": True})
    with pytest.raises(CollectError, match="no_such_switch"):
        collect_module._sysctls()
    monkeypatch.setattr(collect_module, "_SYSCTLS", {"net.ipv4.no_such_switch": False})
    assert collect_module._sysctls() == {}
