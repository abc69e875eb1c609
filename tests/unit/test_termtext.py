"""wgpy.tools.termtext: the width text is read at ($COLUMNS, the terminal's, else 80 when piped),
and prose, commands and program output laid out within it without losing or breaking a word."""

from __future__ import annotations

import fcntl
import io
import os
import shlex
import struct
import termios

import pytest

from wgpy.tools.termtext import fold_output, terminal_width, wrap_command, wrap_prose

KEY = "jZvgm8dUj2Z17nkr/ibBD+38A2zy4UJsr8etaaAFHQw="
PROSE = (
    "Each runs wgpyd, which creates a tunnel interface (wgdemoac224 on alice, wgdemobc224 on "
    "bob) with an INNER address: 10.88.0.1 for alice, 10.88.0.3 for bob. Programs use inner "
    "addresses: a ping from alice to 10.88.0.3 enters alice's tunnel interface."
)


def test_piped_output_is_80_columns_unless_columns_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert terminal_width(io.StringIO()) == 80
    monkeypatch.setenv("COLUMNS", "61")
    assert terminal_width(io.StringIO()) == 61
    assert terminal_width(io.StringIO(), maximum=50) == 50
    monkeypatch.setenv("COLUMNS", "200")
    assert terminal_width(io.StringIO(), maximum=100) == 100
    monkeypatch.setenv("COLUMNS", "5")  # absurdly narrow: still readable
    assert terminal_width(io.StringIO()) == 40


def test_a_terminal_is_read_at_its_own_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    leader, follower = os.openpty()
    try:
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 57, 0, 0))
        with os.fdopen(follower, "w", closefd=False) as tty:
            assert terminal_width(tty) == 57
            monkeypatch.setenv("COLUMNS", "70")  # as shutil.get_terminal_size: COLUMNS first
            assert terminal_width(tty) == 70
    finally:
        os.close(leader)
        os.close(follower)


@pytest.mark.parametrize("width", [40, 64, 80, 100])
def test_prose_fits_and_keeps_every_word(width: int) -> None:
    text = f"{PROSE}\n  - a list item: {PROSE}\n\nthe key {KEY} stays whole"
    lines = wrap_prose(text, width, "    ")
    for line in lines:
        assert len(line) <= width or KEY in line, (width, line)
    assert " ".join(lines).split() == text.split()
    assert KEY in lines[-1] or KEY in lines[-2]
    # a list item's continuation hangs under its text, not under the dash
    item = next(i for i, line in enumerate(lines) if line.startswith("      - "))
    assert lines[item + 1].startswith("        ") and lines[item + 1][8] != " "
    assert "" in lines  # the empty line stays


@pytest.mark.parametrize("width", [40, 64, 80])
def test_a_long_command_is_continued_so_that_it_still_pastes(width: int) -> None:
    command = f"wg set wgdemoac224 peer {KEY} allowed-ips 10.88.0.3/32"
    lines = wrap_command(command, width, "    ")
    assert lines[0].startswith("    $ wg set")
    for line in lines:
        assert len(line) <= width or KEY in line, (width, line)
    assert all(line.endswith(" \\") for line in lines[:-1])
    pasted = "\n".join(lines).removeprefix("    $ ")
    assert shlex.split(pasted.replace("\\\n", " ")) == command.split()
    assert wrap_command("wgpy show wg0", 80, "  ") == ["  $ wgpy show wg0"]


def test_program_output_is_folded_only_where_too_long() -> None:
    short = "interface: wgdemoac224\n  listening port: 51820"
    assert fold_output(short, 80, "      ") == [
        "      interface: wgdemoac224",
        "        listening port: 51820",
    ]
    long = f"from 10.88.0.3 via peer {KEY} on interface wgdemoac224: DROPPED"
    folded = fold_output(long, 80, "      ")
    assert len(folded) == 2 and all(len(line) <= 80 for line in folded), folded
    assert folded[1].startswith("        ") and folded[1][8] != " ", folded  # hangs by two
    assert " ".join(folded).split() == long.split()
