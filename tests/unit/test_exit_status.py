"""One exit-status convention for every ``wgpy`` command (the README's table):
0 fine, 1 found something or failed, 2 could not read its input (a missing interface or
file, a malformed file, address or prefix, bad usage).

Run in this process against names that exist nowhere (unique per run) and files in a
temporary directory: a missing interface must give 2 from every command that reads one, a
missing file 2 from every command that takes files, and the cheap 0/1 cases their meaning.
"""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from wgpy import keys
from wgpy.cli import main
from wgpy.exit_status import Exit

#: Every command of `wgpy` (and what a test below covers for it).
COMMANDS = frozenset(
    {"demo", "genkey", "pubkey", "genpsk", "show", "events", "capture", "watch"}
    | {"explain", "lint", "calc", "doctor", "top", "map", "web", "net", "collect"}
)


def _missing_interface() -> str:
    return f"nosuch{secrets.token_hex(4)}"  # 14 characters, in no namespace


def _config(path: Path, peers: list[tuple[str, str]]) -> Path:
    lines = ["[Interface]", f"PrivateKey = {keys.genkey()}", "Address = 10.0.0.1/24", ""]
    for name, allowed in peers:
        public = keys.pubkey(keys.genkey())
        lines += ["[Peer]", f"# Name = {name}", f"PublicKey = {public}", f"AllowedIPs = {allowed}"]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    return _config(tmp_path / "clean.conf", [("alice", "10.0.0.2/32")])


@pytest.fixture
def faulty(tmp_path: Path) -> Path:
    """Two peers claiming the same prefix: a lint (and doctor) finding."""
    return _config(tmp_path / "faulty.conf", [("alice", "10.0.0.2/32"), ("bob", "10.0.0.2/32")])


INTERFACE_ARGV: dict[str, Callable[[str], list[str]]] = {
    "show": lambda name: ["show", name],
    "show --json": lambda name: ["show", name, "--json"],
    "events": lambda name: ["events", name],
    "capture": lambda name: ["capture", name, "-w", "/dev/null"],
    "watch": lambda name: ["watch", name, "--duration", "0"],
    "explain": lambda name: ["explain", name, "to", "10.0.0.1"],
    "lint": lambda name: ["lint", name],
    "doctor": lambda name: ["doctor", name],
    "top": lambda name: ["top", name],
    "top --once": lambda name: ["top", name, "--once", "-n", "0"],
    "map": lambda name: ["map", name],
    "web": lambda name: ["web", name, "--listen", "127.0.0.1:0"],
}


@pytest.mark.parametrize("command", INTERFACE_ARGV)
def test_missing_interface_exits_2(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    name = _missing_interface()
    assert int(Exit.UNREADABLE) == 2
    assert main(INTERFACE_ARGV[command](name)) == Exit.UNREADABLE
    err = capsys.readouterr().err
    assert name in err and err.startswith("wgpy"), err
    assert "Traceback" not in err


FILE_ARGV: dict[str, Callable[[str, str], list[str]]] = {
    "explain": lambda missing, _: ["explain", missing, "to", "10.0.0.1"],
    "lint": lambda missing, _: ["lint", missing],
    "lint (second file)": lambda missing, good: ["lint", good, missing],
    "doctor": lambda missing, _: ["doctor", missing],
    "map": lambda missing, _: ["map", missing],
    "map --names": lambda missing, good: ["map", good, "--names", missing],
    "web": lambda missing, _: ["web", missing, "--listen", "127.0.0.1:0"],
    "web --names": lambda missing, good: ["web", good, "--names", missing],
    "top --names": lambda missing, _: ["top", _missing_interface(), "--names", missing],
    "capture -r": lambda missing, _: ["capture", "-r", missing],
}


@pytest.mark.parametrize("command", FILE_ARGV)
def test_missing_file_exits_2(
    command: str, clean: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.conf")
    assert main(FILE_ARGV[command](missing, str(clean))) == 2
    err = capsys.readouterr().err
    assert "missing.conf" in err and "Traceback" not in err, err


def test_unreadable_capture_file_exits_2(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pcapng"
    garbage.write_bytes(b"not a capture at all")
    assert main(["capture", "-r", str(garbage)]) == 2


def test_lint_doctor_explain_zero_and_one(clean: Path, faulty: Path) -> None:
    assert main(["lint", str(clean)]) == 0
    assert main(["lint", str(faulty)]) == 1
    assert main(["doctor", str(clean)]) == 0
    assert main(["doctor", str(faulty)]) == 1
    assert main(["explain", str(clean), "to", "10.0.0.2"]) == 0  # sent to alice
    assert main(["explain", str(clean), "to", "10.9.9.9"]) == 1  # no peer: not sent
    assert main(["explain", str(clean), "to", "not-an-address"]) == 2


def test_calc_zero_one_two() -> None:
    assert main(["calc", "10.0.0.0/8", "--exclude", "10.1.0.0/16"]) == 0
    assert main(["calc", "10.0.0.0/8", "--exclude", "0.0.0.0/0"]) == 1  # nothing left
    assert main(["calc", "10.0.0.0/33"]) == 2


def test_map_zero_and_an_output_it_cannot_write_is_a_failure(clean: Path, tmp_path: Path) -> None:
    assert main(["map", str(clean), "-o", str(tmp_path / "map.svg")]) == 0
    # the input was read; writing the result failed: 1, not 2
    assert main(["map", str(clean), "-o", str(tmp_path / "no" / "such" / "dir.svg")]) == 1


def test_web_that_cannot_listen_fails_with_1(clean: Path) -> None:
    pytest.importorskip("aiohttp")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["web", str(clean), "--listen", f"127.0.0.1:{port}"]) == 1
    # a usage error (a non-loopback address without --token) is 2
    assert main(["web", str(clean), "--listen", "192.0.2.1:0"]) == 2


def test_key_commands(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    assert main(["genkey"]) == 0
    assert main(["genpsk"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(keys.genkey() + "\n"))
    assert main(["pubkey"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("garbage\n"))
    assert main(["pubkey"]) == 1  # as `wg pubkey` (a rejected key), see test_cli_keys


def test_demo_without_root_fails_with_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert main(["demo"]) == 1


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as raised:
        main(["show", "--no-such-option"])
    assert raised.value.code == 2


def test_every_command_is_covered_and_in_the_readme_table() -> None:
    covered = {argv.split()[0] for argv in INTERFACE_ARGV} | {"demo", "genkey", "pubkey"}
    covered |= {"genpsk", "calc", "net", "collect"}  # tests/unit/test_net_check.py, test_collect.py
    assert covered == COMMANDS
    from wgpy.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == COMMANDS  # type: ignore[arg-type]
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme.split("## Exit status", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `wgpy ")]
    named = {name for row in rows for name in re.findall(r"`wgpy (\w+)", row.split(" | ")[0])}
    assert named == COMMANDS, rows
