"""`wgpy genkey|pubkey|genpsk` and wgpy.keys are interchangeable with `wg`; `wgpy --help` lists
every command with a description; exit codes: 0 success, 1 failure, 2 usage error."""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import sys

import pytest

from wgpy import keys
from wgpy.cli import build_parser

WGPY = (sys.executable, "-m", "wgpy.cli")


def run(argv: tuple[str, ...], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=30, check=False
    )


def wg(*args: str, stdin: str = "") -> str:
    if shutil.which("wg") is None:
        if os.environ.get("WGPY_SKIP_NETNS") == "1":
            pytest.skip("`wg` not installed (WGPY_SKIP_NETNS=1)")
        pytest.fail("`wg` is not installed: run scripts/setup.sh", pytrace=False)
    result = run(("wg", *args), stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


def wgpy(*args: str, stdin: str = "") -> str:
    result = run((*WGPY, *args), stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


def subcommands() -> dict[str, str | None]:
    """Every `wgpy` command and its one-line help, from the real parser."""
    found: dict[str, str | None] = {}
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                found[choice.dest] = choice.help
    return found


def is_clamped(key: bytes) -> bool:
    return key[0] & 7 == 0 and key[31] & 0x80 == 0 and key[31] & 0x40 == 0x40


def test_wg_pubkey_of_our_genkey_equals_our_pubkey() -> None:
    for _ in range(3):
        private = wgpy("genkey")
        assert private.endswith("\n") and len(private) == 45
        assert is_clamped(base64.b64decode(private))
        assert wg("pubkey", stdin=private) == wgpy("pubkey", stdin=private)
        assert keys.pubkey(private) + "\n" == wg("pubkey", stdin=private)


def test_our_pubkey_of_wg_genkey_equals_wg_pubkey() -> None:
    for _ in range(3):
        private = wg("genkey")
        assert wgpy("pubkey", stdin=private) == wg("pubkey", stdin=private)
        assert keys.pubkey(private) + "\n" == wg("pubkey", stdin=private)


def test_library_genkey_is_accepted_by_wg() -> None:
    private = keys.genkey()
    assert is_clamped(keys.decode_key(private))
    assert wg("pubkey", stdin=private + "\n").strip() == keys.pubkey(private)


def test_genpsk_has_wg_genpsk_format() -> None:
    ours, theirs = wgpy("genpsk"), wg("genpsk")
    for psk in (ours, theirs, keys.genpsk() + "\n"):
        assert len(psk) == 45 and psk.endswith("=\n")
        assert len(base64.b64decode(psk.strip(), validate=True)) == 32
    # wg accepts our PSK where it takes one (it parses it as a key)
    wg("pubkey", stdin=ours)
    assert ours != wgpy("genpsk")


@pytest.mark.parametrize("bad", ["", "garbage\n", base64.b64encode(bytes(31)).decode() + "\n"])
def test_pubkey_rejects_what_wg_rejects_with_exit_1(bad: str) -> None:
    ours = run((*WGPY, "pubkey"), bad)
    wg("--version")  # makes sure wg is there
    theirs = run(("wg", "pubkey"), bad)
    assert ours.returncode == theirs.returncode == 1
    assert ours.stdout == theirs.stdout == ""
    assert "Key is not the correct length or format" in ours.stderr
    with pytest.raises(ValueError, match="correct length or format"):
        keys.decode_key(bad)


def test_help_lists_every_command_with_a_one_line_description() -> None:
    result = run((*WGPY, "--help"))
    assert result.returncode == 0
    commands = subcommands()
    assert {"genkey", "pubkey", "genpsk", "show", "capture", "demo"} <= commands.keys()
    for name, description in commands.items():
        assert description, f"`wgpy {name}` has no description in --help"
        assert "\n" not in description
        assert any(line.split()[:1] == [name] for line in result.stdout.splitlines()), name


def test_every_command_has_help_with_exit_0() -> None:
    for name in subcommands():
        result = run((*WGPY, name, "--help"))
        assert result.returncode == 0, (name, result.stderr)
        assert result.stdout.startswith(f"usage: wgpy {name}"), name


def test_usage_errors_exit_2_and_no_command_prints_help() -> None:
    bogus = run((*WGPY, "no-such-command"))
    assert bogus.returncode == 2 and "invalid choice" in bogus.stderr
    bad_option = run((*WGPY, "genkey", "--no-such-option"))
    assert bad_option.returncode == 2
    bare = run(WGPY)
    assert bare.returncode == 0 and bare.stdout.startswith("usage: wgpy")
    version = run((*WGPY, "--version"))
    assert version.returncode == 0 and version.stdout.startswith("wgpy ")
