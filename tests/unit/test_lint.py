"""wgpy lint: every finding has a config that triggers it and a corrected one that does not."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from wgpy import crypto
from wgpy.cli import main
from wgpy.config import parse_config
from wgpy.tools.files.lint import Finding, lint


def keypair(seed: int) -> tuple[str, str]:
    private = crypto.clamp(bytes([seed]) * 32)
    return (
        base64.b64encode(private).decode(),
        base64.b64encode(crypto.public_key(private)).decode(),
    )


HUB_PRIV, HUB_PUB = keypair(1)
A_PRIV, A_PUB = keypair(2)
B_PRIV, B_PUB = keypair(3)
PSK = base64.b64encode(bytes(range(32))).decode()


def iface(extra: str = "") -> str:
    return (
        f"[Interface]\nPrivateKey = {HUB_PRIV}\nListenPort = 51820\nAddress = 10.0.0.1/24\n{extra}"
    )


def peer(key: str, allowed: str, extra: str = "") -> str:
    return f"\n[Peer]\nPublicKey = {key}\nAllowedIPs = {allowed}\n{extra}"


def codes(*texts: str) -> list[str]:
    configs = [parse_config(text, f"c{i}.conf") for i, text in enumerate(texts)]
    return [f.code for f in lint(configs)]


def findings(text: str) -> list[Finding]:
    return lint([parse_config(text, "x.conf")])


CLEAN = iface() + peer(A_PUB, "10.0.0.2/32") + peer(B_PUB, "10.0.0.3/32, fd00::3/128")

# (code, triggering config, corrected config)
CASES = [
    (
        "duplicate-prefix",
        iface() + peer(A_PUB, "10.0.5.0/24") + peer(B_PUB, "10.0.5.0/24, 10.0.0.3/32"),
        iface() + peer(A_PUB, "10.0.5.0/24") + peer(B_PUB, "10.0.6.0/24, 10.0.0.3/32"),
    ),
    (
        "host-bits",
        iface() + peer(A_PUB, "10.0.5.7/24"),
        iface() + peer(A_PUB, "10.0.5.0/24"),
    ),
    (
        "empty-allowed-ips",
        iface() + f"\n[Peer]\nPublicKey = {A_PUB}\n",
        iface() + peer(A_PUB, "10.0.0.2/32"),
    ),
    (
        "shadowed-peer",
        iface() + peer(A_PUB, "10.0.0.0/31") + peer(B_PUB, "10.0.0.0/32, 10.0.0.1/32"),
        iface() + peer(A_PUB, "10.0.0.0/30") + peer(B_PUB, "10.0.0.0/32, 10.0.0.1/32"),
    ),
    (
        "half-default",
        iface() + peer(A_PUB, "0.0.0.0/0"),
        iface() + peer(A_PUB, "0.0.0.0/0, ::/0"),
    ),
    (
        "no-route",
        iface("Table = off\n") + peer(A_PUB, "192.168.7.0/24"),
        iface("Table = off\nPostUp = ip route add 192.168.7.0/24 dev %i\n")
        + peer(A_PUB, "192.168.7.0/24"),
    ),
    (
        "duplicate-public-key",
        iface() + peer(A_PUB, "10.0.0.2/32") + peer(A_PUB, "10.0.0.3/32"),
        iface() + peer(A_PUB, "10.0.0.2/32") + peer(B_PUB, "10.0.0.3/32"),
    ),
    (
        "own-key",
        iface() + peer(HUB_PUB, "10.0.0.2/32"),
        iface() + peer(A_PUB, "10.0.0.2/32"),
    ),
    (
        "low-order-key",
        iface() + peer("AQ" + "A" * 41 + "=", "10.0.0.2/32"),
        iface() + peer(A_PUB, "10.0.0.2/32"),
    ),
    (
        "invalid-key",
        iface() + peer(A_PUB[:-2] + "=", "10.0.0.2/32"),
        iface() + peer(A_PUB, "10.0.0.2/32"),
    ),
    (
        "bad-endpoint",
        iface() + peer(A_PUB, "10.0.0.2/32", "Endpoint = fd00::1:51820\n"),
        iface() + peer(A_PUB, "10.0.0.2/32", "Endpoint = [fd00::1]:51820\n"),
    ),
    (
        "unknown-key",
        iface("PublicKey = " + A_PUB + "\n") + peer(A_PUB, "10.0.0.2/32"),
        iface() + peer(A_PUB, "10.0.0.2/32"),
    ),
    (
        "invalid-prefix",
        iface() + peer(A_PUB, "10.0.0.300/32"),
        iface() + peer(A_PUB, "10.0.0.30/32"),
    ),
    (
        "bad-value",
        iface().replace("51820", "70000") + peer(A_PUB, "10.0.0.2/32"),
        iface() + peer(A_PUB, "10.0.0.2/32"),
    ),
]


@pytest.mark.parametrize(("code", "bad", "good"), CASES, ids=[c[0] for c in CASES])
def test_finding_triggered_and_fixed(code: str, bad: str, good: str) -> None:
    assert code in codes(bad)
    assert code not in codes(good)
    assert codes(good) == [], codes(good)


def test_clean_config_has_no_findings() -> None:
    assert codes(CLEAN) == []


def test_duplicate_prefix_names_the_peer_that_loses_it() -> None:
    text = (
        iface()
        + "\n[Peer]\n# Name = alice\n"
        + f"PublicKey = {A_PUB}\nAllowedIPs = 10.0.5.0/24\n"
        + "\n[Peer]\n# Name = bob\n"
        + f"PublicKey = {B_PUB}\nAllowedIPs = 10.0.5.0/24\n"
    )
    (dup,) = [f for f in findings(text) if f.code == "duplicate-prefix"]
    assert dup.line == 9  # alice's AllowedIPs line
    assert "alice loses it" in dup.message and "bob" in dup.message
    # and the table agrees: alice keeps nothing, so she is reported as shadowed too
    assert "shadowed-peer" in [f.code for f in findings(text)]


def test_host_bits_line_and_severity() -> None:
    (found,) = findings(iface() + peer(A_PUB, "10.0.5.7/24"))
    assert (found.file, found.line, found.severity) == ("x.conf", 8, "warning")
    assert "10.0.5.0/24" in found.message


def test_reverse_half_default() -> None:
    (found,) = findings(iface() + peer(A_PUB, "::/0"))
    assert found.code == "half-default" and "IPv4" in found.message


def test_table_off_inside_address_subnet_is_fine() -> None:
    assert codes(iface("Table = off\n") + peer(A_PUB, "10.0.0.2/32")) == []


# ----------------------------------------------------------------------- hub and spokes


def hub(a_allowed: str = "10.0.0.2/32", a_psk: str = "") -> str:
    return iface() + peer(A_PUB, a_allowed, a_psk)


def spoke_a(endpoint: str = "hub.example:51820", psk: str = "") -> str:
    return f"[Interface]\nPrivateKey = {A_PRIV}\nAddress = 10.0.0.2/24\n" + peer(
        HUB_PUB, "10.0.0.0/24", f"Endpoint = {endpoint}\n{psk}"
    )


def test_hub_and_spoke_clean() -> None:
    assert codes(hub(), spoke_a()) == []


def test_cross_allowed_ips_does_not_cover_address() -> None:
    found = codes(hub("10.0.0.9/32"), spoke_a())
    assert "cross-allowed-ips" in found


def test_cross_allowed_ips_address_owned_by_another_peer() -> None:
    text = hub("10.0.0.0/24") + peer(B_PUB, "10.0.0.2/32")
    found = lint([parse_config(text, "hub.conf"), parse_config(spoke_a(), "a.conf")])
    cross = [f for f in found if f.code == "cross-allowed-ips"]
    assert cross and "belongs to peer" in cross[0].message


def test_cross_missing_peer() -> None:
    other = iface().replace(HUB_PRIV, A_PRIV).replace("10.0.0.1", "10.0.0.2")
    assert "cross-missing-peer" in codes(hub(), other + peer(B_PUB, "10.0.0.0/24"))


def test_cross_psk_mismatch() -> None:
    assert "cross-psk" in codes(hub(a_psk=f"PresharedKey = {PSK}\n"), spoke_a())
    both = f"PresharedKey = {PSK}\n"
    assert "cross-psk" not in codes(hub(a_psk=both), spoke_a(psk=both))


def test_cross_endpoint_port_disagrees() -> None:
    assert "cross-endpoint" in codes(hub(), spoke_a("hub.example:51999"))


def test_cross_endpoint_inside_tunnel() -> None:
    assert "cross-endpoint" in codes(hub(), spoke_a("10.0.0.1:51820"))


def test_cross_no_endpoint_either_side() -> None:
    spoke = f"[Interface]\nPrivateKey = {A_PRIV}\nAddress = 10.0.0.2/24\n" + peer(
        HUB_PUB, "10.0.0.0/24"
    )
    assert "cross-no-endpoint" in codes(hub(), spoke)


# ------------------------------------------------------------------------------ the CLI


def test_cli_exit_status_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.conf"
    good.write_text(CLEAN)
    bad = tmp_path / "bad.conf"
    bad.write_text(iface() + peer(A_PUB, "10.0.5.7/24"))
    assert main(["lint", str(good)]) == 0
    capsys.readouterr()
    assert main(["lint", "--json", str(bad)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out == [
        {
            "file": str(bad),
            "line": 8,
            "severity": "warning",
            "code": "host-bits",
            "message": "10.0.5.7/24 has host bits set: it means 10.0.5.0/24",
            "fix": "write 10.0.5.0/24 if that is meant, or the single address as /32",
        }
    ]
    assert main(["lint", str(bad)]) == 1
    assert f"{bad}:8: warning:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("[Interface]\nPrivateKey = x\nthis is not a key value\n", 3, "expected 'Key = Value'"),
        ("PrivateKey = x\n[Interface]\n", 1, "outside of any"),
        ("[Interface]\n\n[Peers]\n", 3, "unknown section"),
        ("[Interface]\n[Interface]\n", 2, "second [Interface]"),
        ("[Interface\n", 1, "malformed section"),
    ],
)
def test_cli_bad_file_is_file_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, line: int, needle: str
) -> None:
    path = tmp_path / "broken.conf"
    path.write_text(text)
    for argv in (["lint", str(path)], ["explain", str(path), "to", "10.0.0.1"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{path}:{line}: " in err and needle in err
        assert "Traceback" not in err


def test_cli_unreadable_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", str(tmp_path / "missing.conf")]) == 2
    assert "missing.conf: No such file" in capsys.readouterr().err
    binary = tmp_path / "bin.conf"
    binary.write_bytes(b"[Interface]\n\xff\xfe\n")
    assert main(["lint", str(binary)]) == 2
    assert f"{binary}:2: not UTF-8" in capsys.readouterr().err


def test_unknown_key_did_you_mean() -> None:
    text = (
        iface("Listen_Port = 51821\n")
        + f"\n[Peer]\nPublicKey = {A_PUB}\nAllowed IPs = 10.0.0.2/32\n"
    )
    texts = [str(f) for f in findings(text) if f.code == "unknown-key"]
    assert len(texts) == 2, texts
    assert "x.conf:5: error: unknown key 'Listen_Port' (did you mean ListenPort?)" in texts[0]
    assert "x.conf:9: error: unknown key 'Allowed IPs' (did you mean AllowedIPs?)" in texts[1]
    misplaced = iface("AllowedIPs = 10.0.0.0/8\n")
    assert any("it belongs in a [Peer] section" in str(f) for f in findings(misplaced))


def test_every_finding_says_what_to_change() -> None:
    """Each finding carries its fix apart from the problem (``wgpy doctor`` shows it as the
    finding's fix), and the text line gives both."""
    text = (
        iface("Table = off\nListen_Port = 1\n")
        + peer(A_PUB, "10.0.5.7/24, 0.0.0.0/0")
        + peer(A_PUB, "10.0.5.0/24")
        + "[Peer]\nAllowedIPs = 10.9.0.0/16\n"
    )
    found = findings(text)
    assert {f.code for f in found} >= {"host-bits", "half-default", "duplicate-public-key"}
    for finding in found:
        assert finding.fix, finding
        assert str(finding).endswith(f"; fix: {finding.fix} [{finding.code}]")
    (half,) = [f for f in found if f.code == "half-default"]
    assert "(add" not in half.message and half.fix == "add ::/0 to send it through, or block it"
