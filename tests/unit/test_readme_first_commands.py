"""The README's first two commands work in a root shell that has no sudo (a fresh Debian
container), and scripts/setup.sh installs what a fresh Debian lacks for them."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.unit.test_docs import blocks, shell_lines, split_commands

REPO = Path(__file__).resolve().parents[2]


def _first_commands() -> list[str]:
    first = blocks(REPO / "README.md")[0]
    assert first.line == 1, "the README opens with its commands"
    return shell_lines(first)


def test_readme_first_commands_need_no_sudo() -> None:
    lines = _first_commands()
    assert len(lines) == 2, lines
    for line in lines:
        # a root shell without sudo runs each command as written
        assert not re.search(r"(^|[;&|(]\s*)sudo\b", line), line
        for argv in split_commands(line):
            program = argv[0]
            assert program == "bash" or (REPO / program).exists(), line
            if program == "bash":
                assert (REPO / argv[1]).is_file(), line
                check = subprocess.run(["bash", "-n", str(REPO / argv[1])], check=False)
                assert check.returncode == 0, argv[1]
    # and the text right after says how to run them from a non-root shell
    text = (REPO / "README.md").read_text()
    after = text.split("```", 2)[2][:300]
    assert "root" in after and "sudo" in after, after


def _setup_packages() -> list[str]:
    script = (
        f'eval "$(sed -n "/^DEB_PACKAGES=(/,/^)/p" {REPO / "scripts/setup.sh"})"; '
        'printf "%s\\n" "${DEB_PACKAGES[@]}"'
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_setup_installs_what_a_fresh_debian_lacks() -> None:
    packages = _setup_packages()
    assert "wireguard-go" in packages, packages  # the list was read
    # `python3 -m venv` needs ensurepip (python3-venv); pytricia, an extra that setup.sh
    # installs, has no wheel and is compiled against Python's headers
    for needed in ("python3-venv", "python3-dev", "build-essential"):
        assert needed in packages, needed
    text = (REPO / "scripts/setup.sh").read_text()
    # the extras that need the compiler are installed here, web (aiohttp, for `wgpy web`) and
    # offload (numpy, for TUN segmentation offload)
    assert "[dev,fuzz,bench,web,offload]" in text
    # an interpreter without ensurepip is named before `python -m venv` fails half-way
    assert "import ensurepip" in text


def test_setup_packages_exist_in_debian() -> None:
    if not Path("/usr/bin/apt-cache").exists():
        return
    out = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", *_setup_packages()],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "LC_ALL": "C"},
    )
    assert out.returncode == 0, out.stderr
