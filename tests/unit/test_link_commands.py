"""scripts/link-commands.sh, which scripts/setup.sh runs: `wgpy` and `wgpyd` end up on PATH as
links to this checkout's .venv/bin, replacing a link to another checkout (saying so), never a
file that is not a link; and setup.sh runs it for /usr/local/bin, which root's PATH holds.

The links are made in a temporary directory here, never in the host's /usr/local/bin."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "link-commands.sh"
COMMANDS = ("wgpy", "wgpyd")


def _link(bindir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), str(bindir)], capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    for name in COMMANDS:
        assert (REPO / ".venv" / "bin" / name).is_file(), "install wgpy into .venv first"
    path = tmp_path / "bin"
    path.mkdir()
    return path


def test_links_both_commands_and_says_so_once(bindir: Path) -> None:
    first = _link(bindir)
    assert first.returncode == 0, first.stderr
    for name in COMMANDS:
        link = bindir / name
        assert link.is_symlink() and os.readlink(link) == str(REPO / ".venv" / "bin" / name)
    assert first.stderr.count("\n") == 1 and str(bindir) in first.stderr, first.stderr
    # the commands run from there, by name, with a PATH that has no .venv/bin
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}
    help_ = subprocess.run(["wgpy", "--help"], env=env, capture_output=True, text=True)
    assert help_.returncode == 0 and "demo" in help_.stdout, help_.stderr
    # again: nothing to do, nothing said
    again = _link(bindir)
    assert (again.returncode, again.stderr) == (0, "")
    assert sorted(p.name for p in bindir.iterdir()) == sorted(COMMANDS)


def test_replaces_a_link_to_another_checkout(bindir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-checkout" / ".venv" / "bin" / "wgpyd"
    (bindir / "wgpyd").symlink_to(other)  # stale: its checkout is gone
    result = _link(bindir)
    assert result.returncode == 0, result.stderr
    assert os.readlink(bindir / "wgpyd") == str(REPO / ".venv" / "bin" / "wgpyd")
    assert "replacing" in result.stderr and str(other) in result.stderr, result.stderr


def test_never_overwrites_a_file_that_is_not_a_link(bindir: Path) -> None:
    foreign = bindir / "wgpy"
    foreign.write_text("#!/bin/sh\necho someone else's wgpy\n")
    result = _link(bindir)
    assert result.returncode == 1
    assert str(foreign) in result.stderr and "not a link" in result.stderr, result.stderr
    assert foreign.read_text() == "#!/bin/sh\necho someone else's wgpy\n"
    assert not foreign.is_symlink()


def test_setup_links_them_into_usr_local_bin_which_root_shells_search() -> None:
    setup = (REPO / "scripts" / "setup.sh").read_text()
    calls = [
        line.strip()
        for line in setup.splitlines()
        if "link-commands.sh" in line and not line.lstrip().startswith("#")
    ]
    assert calls == ["bash scripts/link-commands.sh /usr/local/bin"], calls
    # after the venv is made (the links' targets), and unconditionally
    assert setup.index("link-commands.sh /usr/local/bin") > setup.index("pip install")
    # a root login shell (and Debian's sudo secure_path) has /usr/local/bin on PATH
    login = subprocess.run(
        ["env", "-i", "bash", "-l", "-c", 'printf "%s" "$PATH"'],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "/usr/local/bin" in login.stdout.split(":"), login.stdout
