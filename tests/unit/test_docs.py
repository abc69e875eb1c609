"""The documentation cannot rot: its Python examples run, and its shell commands are checked.

Scope (README.md and every page under docs/):

* every ```python block runs on its own, as printed: in a fresh namespace and a fresh temporary
  directory, so a reader can paste any one example alone (none may lean on an earlier block's
  names or files); ```text blocks are not code;
* every command of a shell block (no language, or sh/bash/shell/console):
  - its program must exist: on PATH (after the repository's .venv/bin), or as a file of the
    repository when it is a path (``.venv/bin/wgpy``, ``bash scripts/setup.sh``);
  - a ``wgpy`` command line must parse with wgpy's real argument parser;
  - a Python script of the repository must answer ``--help`` with exit 0;
  - a line made only of commands safe to run here (``wgpy genkey|pubkey|genpsk|--help|
    --version``, ``tee``, ``cat``, ``echo``) is run with bash in a temporary directory and must
    exit 0. The rest (anything that needs root, a network namespace, a running daemon, or
    that would install or re-run the test suite) is exercised by the netns tests instead.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from wgpy.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGS = {"", "sh", "bash", "shell", "console"}
SAFE_WGPY = {"genkey", "pubkey", "genpsk", "--help", "-h", "--version"}
SAFE_PROGRAMS = {"tee", "cat", "echo"}
PREFIXES = {"sudo", "exec", "time", "env"}
OPERATORS = {"|", "||", "&&", ";", "&", "(", ")"}
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    text: str

    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


_FENCE = re.compile(r"^([ \t]*)```[ \t]*([\w+-]*)[^\n]*\n(.*?)^\1```[ \t]*$", re.M | re.S)


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    return [
        Block(page, text.count("\n", 0, m.start()) + 1, m.group(2).lower(), m.group(3))
        for m in _FENCE.finditer(text)
    ]


def shell_lines(block: Block) -> list[str]:
    joined = re.sub(r"\\\n", " ", block.text)
    return [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def split_commands(line: str) -> list[list[str]]:
    """Commands of one shell line, without env assignments, sudo and redirections."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    skip_next = False
    for token in lexer:
        if skip_next:
            skip_next = False
            continue
        if token in OPERATORS:
            commands.append([])
        elif token in {"<", ">", ">>", "2>", "2>&1"}:
            skip_next = token != "2>&1"
        elif not commands[-1] and (re.match(r"^[A-Za-z_]\w*=", token) or token in PREFIXES):
            continue
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def python_blocks() -> list[Block]:
    return [b for page in PAGES for b in blocks(page) if b.lang in {"python", "py"}]


def shell_commands() -> list[tuple[Block, str]]:
    return [
        (block, line)
        for page in PAGES
        for block in blocks(page)
        if block.lang in SHELL_LANGS
        for line in shell_lines(block)
    ]


def test_the_docs_have_examples() -> None:
    assert any(b.page == REPO / "docs" / "library.md" for b in python_blocks())
    assert len(shell_commands()) >= 5


@pytest.mark.parametrize("block", python_blocks(), ids=lambda b: b.where())
def test_python_example_runs_alone(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One block, nothing else: its own namespace, its own empty working directory."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    code = compile(block.text, block.where(), "exec")
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            exec(code, namespace)
        except Exception as error:
            pytest.fail(f"example at {block.where()}, run on its own, failed: {error!r}")


def _program_ok(argv: list[str]) -> str | None:
    """An error text if the command's program or script is missing, else None."""
    program = argv[0]
    if "/" in program:
        if not (REPO / program).exists():
            return f"{program} does not exist in the repository"
    elif shutil.which(program, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}") is None:
        return f"{program} is not installed (scripts/setup.sh should install it)"
    if Path(program).name in {"bash", "sh", "python", "python3"} and len(argv) > 1:
        script = argv[1]
        if not script.startswith("-") and "/" in script and not (REPO / script).exists():
            return f"{script} does not exist in the repository"
    return None


def _is_safe(argv: list[str]) -> bool:
    name = Path(argv[0]).name
    if name == "wgpy":
        return len(argv) >= 2 and argv[1] in SAFE_WGPY
    return name in SAFE_PROGRAMS


@pytest.mark.parametrize(
    ("block", "line"),
    shell_commands(),
    ids=[f"{b.where()}:{cmd[:40]}" for b, cmd in shell_commands()],
)
def test_shell_commands(block: Block, line: str, tmp_path: Path) -> None:
    commands = split_commands(line)
    assert commands, f"{block.where()}: no command in {line!r}"
    for argv in commands:
        error = _program_ok(argv)
        assert error is None, (
            f"{block.where()}: {line!r}: {error} "
            "(a block that is not commands should be marked ```text)"
        )
        if Path(argv[0]).name == "wgpy":
            try:
                build_parser().parse_args(argv[1:])
            except SystemExit as exit_:
                assert exit_.code == 0, f"{block.where()}: `wgpy` rejects {line!r}"
        if Path(argv[0]).name.startswith("python") and len(argv) > 1 and argv[1].endswith(".py"):
            helped = subprocess.run(
                [sys.executable, str(REPO / argv[1]), "--help"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert helped.returncode == 0, f"{argv[1]} --help: {helped.stderr}"
    if all(_is_safe(argv) for argv in commands):
        env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", line],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, f"{block.where()}: {line!r} failed: {result.stderr}"
