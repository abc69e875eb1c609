"""wgpy explain on config files and on UAPI get output (the live path without a daemon)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.unit.test_lint import A_PUB, B_PUB, iface
from wgpy.cli import main
from wgpy.config import parse_config
from wgpy.tools.files.explain import ExplainError, Source, explain_from, explain_to
from wgpy.tools.interface.routes import RouteInfo

CONF = (
    iface()
    + f"\n[Peer]\n# Name = alice\nPublicKey = {A_PUB}\nAllowedIPs = 10.100.0.0/16, 10.0.0.0/8\n"
    + f"\n[Peer]\n# Name = bob\nPublicKey = {B_PUB}\nAllowedIPs = 10.100.5.0/24\n"
)


@pytest.fixture
def source() -> Source:
    return Source.from_config(parse_config(CONF, "hub.conf"))


def test_to_longest_prefix_and_beaten(source: Source) -> None:
    result = explain_to(source, "10.100.5.7")
    assert result["verdict"] == "sent"
    assert (result["peer"], result["peer_name"], result["prefix"]) == (
        B_PUB,
        "bob",
        "10.100.5.0/24",
    )
    assert [(b["prefix"], b["peer_name"]) for b in result["beaten"]] == [
        ("10.100.0.0/16", "alice"),
        ("10.0.0.0/8", "alice"),
    ]
    other = explain_to(source, "10.100.7.1")
    assert other["peer_name"] == "alice" and other["beaten"] == []
    assert [e["prefix"] for e in other["also_matching"]] == ["10.0.0.0/8"]


def test_to_nobody(source: Source) -> None:
    result = explain_to(source, "192.0.2.1")
    assert result["verdict"] == "not sent" and result["peer"] is None


def test_to_route_elsewhere(source: Source) -> None:
    result = explain_to(source, "10.100.5.7", RouteInfo("eth0", "unicast", 254))
    assert result["verdict"] == "not sent"
    assert "routes 10.100.5.7 to eth0, not into hub.conf" in result["reasons"][0]
    assert result["route"]["into_interface"] is False
    assert explain_to(source, "10.100.5.7", RouteInfo("hub.conf", "unicast"))["verdict"] == "sent"


def test_from(source: Source) -> None:
    assert explain_from(source, "10.100.7.1", "alice")["verdict"] == "delivered"
    dropped = explain_from(source, "10.100.5.9", "alice")
    assert dropped["verdict"] == "dropped" and dropped["owner_name"] == "bob"
    assert dropped["via_prefixes"] == ["10.100.0.0/16", "10.0.0.0/8"]
    assert explain_from(source, "192.0.2.1", B_PUB)["owner"] is None
    assert explain_from(source, "10.100.5.9", B_PUB[:6])["verdict"] == "delivered"
    with pytest.raises(ExplainError):
        explain_from(source, "10.100.5.9", "carol")
    with pytest.raises(ExplainError):
        explain_to(source, "10.100.5.300")


def test_from_uapi_pairs() -> None:
    def hexkey(b64: str) -> str:
        return base64.b64decode(b64).hex()

    pairs = [
        ("listen_port", "51820"),
        ("public_key", hexkey(A_PUB)),
        ("allowed_ip", "10.100.0.0/16"),
        ("public_key", hexkey(B_PUB)),
        ("endpoint", "10.99.0.2:51821"),
        ("allowed_ip", "10.100.5.0/24"),
    ]
    source = Source.from_uapi("wg9", pairs)
    result = explain_to(source, "10.100.5.1")
    assert result["peer"] == B_PUB and result["beaten"][0]["peer"] == A_PUB
    assert "no endpoint" in " ".join(explain_to(source, "10.100.7.1")["reasons"])


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hub.conf"
    path.write_text(CONF)
    assert main(["explain", str(path), "to", "10.100.5.7"]) == 0
    out = capsys.readouterr().out
    assert "SENT to peer bob" in out and "beats the less specific 10.100.0.0/16" in out
    assert main(["explain", str(path), "to", "192.0.2.1", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "not sent"
    assert main(["explain", str(path), "from", "10.100.5.9", "via", "alice"]) == 1
    assert "DROPPED" in capsys.readouterr().out
    assert main(["explain", str(path), "from", "10.100.5.9", "via", "bob"]) == 0
    capsys.readouterr()
    assert main(["explain", str(path), "from", "10.100.5.9", "via", "nobody"]) == 2
    assert main(["explain", str(path), "sideways", "10.1.1.1"]) == 2
    assert main(["explain", "wgpy-no-such-if", "to", "10.1.1.1"]) == 2
    assert "Unable to access interface wgpy-no-such-if" in capsys.readouterr().err


def test_duplicate_key_sections_are_one_peer_with_both_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # wg setconf merges [Peer] sections with the same key: one peer holding both sections'
    # prefixes; explain names it by both names instead of the last section's alone
    conf = (
        iface()
        + f"\n[Peer]\n# Name = alice\nPublicKey = {A_PUB}\nAllowedIPs = 10.1.0.0/24\n"
        + f"\n[Peer]\n# Name = bob\nPublicKey = {A_PUB}\nAllowedIPs = 10.2.0.0/24\n"
        + f"\n[Peer]\n# Name = carol\nPublicKey = {B_PUB}\nAllowedIPs = 10.3.0.0/24\n"
    )
    source = Source.from_config(parse_config(conf, "dup.conf"))
    result = explain_to(source, "10.1.0.5")
    assert result["peer"] == A_PUB and result["peer_name"] == "alice / bob"
    assert any("named alice and bob have the same PublicKey" in r for r in result["reasons"])
    for name in ("alice", "bob"):
        assert explain_from(source, "10.1.0.5", name)["verdict"] == "delivered"
        assert explain_from(source, "10.2.0.5", name)["verdict"] == "delivered"
    dropped = explain_from(source, "10.3.0.5", "alice")
    assert dropped["verdict"] == "dropped" and dropped["owner_name"] == "carol"
    path = tmp_path / "dup.conf"
    path.write_text(conf)
    assert main(["explain", str(path), "to", "10.1.0.5"]) == 0
    out = capsys.readouterr().out
    assert f"SENT to peer alice / bob ({A_PUB}) via 10.1.0.0/24" in out


def test_unknown_key_is_an_error_with_a_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.conf"
    path.write_text(iface() + f"\n[Peer]\nPublicKey = {A_PUB}\nAllowed IPs = 10.1.0.0/24\n")
    assert main(["explain", str(path), "to", "10.1.0.5"]) == 2
    err = capsys.readouterr().err
    assert "typo.conf:8: unknown key 'Allowed IPs' (did you mean AllowedIPs?)" in err
