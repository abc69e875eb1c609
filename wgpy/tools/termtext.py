"""Text for a terminal of any width: how wide it is, and prose, shell commands and another
program's output laid out to fit it.

The width is ``$COLUMNS`` when set (as ``shutil.get_terminal_size`` reads it), else the
terminal's own width when the output is one, else 80: output piped to a file, a pager or a log
is read at 80 columns.
"""

from __future__ import annotations

import os
import textwrap
from typing import Final, TextIO

DEFAULT_WIDTH: Final = 80
"""The width when the output is not a terminal and ``$COLUMNS`` does not say."""

MIN_WIDTH: Final = 40
"""Narrower than this, wrapping makes text harder to read, not easier."""


def terminal_width(out: TextIO, maximum: int | None = None) -> int:
    """The columns `out` is read at: ``$COLUMNS``, the terminal's width, or 80 (not a terminal).

    `maximum` caps it (long lines of prose are hard to read however wide the terminal is).
    """
    width = 0
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit():
        width = int(columns)
    if width <= 0:
        try:
            width = os.get_terminal_size(out.fileno()).columns if out.isatty() else 0
        except (OSError, ValueError, AttributeError):
            width = 0
    if width <= 0:
        width = DEFAULT_WIDTH
    if maximum is not None:
        width = min(width, maximum)
    return max(width, MIN_WIDTH)


def _hang(line: str) -> str:
    """The indent of a line's continuation: its own indent, past a list item's ``- ``."""
    body = line.lstrip(" ")
    indent = len(line) - len(body)
    if body.startswith("- "):
        indent += 2
    return " " * indent


def wrap_prose(text: str, width: int, indent: str = "") -> list[str]:
    """Each line of `text` is a paragraph (or list item): filled to `width` after `indent`.

    A line's own leading spaces are kept, and its continuation lines hang under its text (under
    the text of a ``- `` item). Words are never broken: a word longer than the room (a key, a
    path) gets a line of its own. An empty line stays empty.
    """
    lines: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            lines.append("")
            continue
        lines += textwrap.wrap(
            line.strip(" "),
            width,
            initial_indent=indent + " " * (len(line) - len(line.lstrip(" "))),
            subsequent_indent=indent + _hang(line),
            break_long_words=False,
            break_on_hyphens=False,
        )
    return lines


def wrap_command(command: str, width: int, indent: str = "", prompt: str = "$ ") -> list[str]:
    """A shell command after `prompt`, cut at spaces with `` \\`` so that it can still be pasted.

    Continuation lines are indented four more than the command.
    """
    words = command.split(" ")
    rest = indent + " " * (len(prompt) + 4)
    lines: list[str] = []
    current = indent + prompt + words[0]
    for i, word in enumerate(words[1:], start=2):
        room = width - (0 if i == len(words) else 2)  # all but the last keep room for " \\"
        if len(current) + 1 + len(word) > room:
            lines.append(current + " \\")
            current = rest + word
        else:
            current += " " + word
    lines.append(current)
    return lines


def fold_output(text: str, width: int, indent: str = "") -> list[str]:
    """Another program's output under `indent`: a line too long is folded at spaces, its
    continuation indented two more than the line; short lines are left exactly as they are."""
    lines: list[str] = []
    for line in text.splitlines():
        if len(indent) + len(line) <= width:
            lines.append((indent + line).rstrip())
            continue
        lines += textwrap.wrap(
            line.strip(" "),
            width,
            initial_indent=indent + " " * (len(line) - len(line.lstrip(" "))),
            subsequent_indent=indent + _hang(line) + "  ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    return lines
