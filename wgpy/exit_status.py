"""The one exit-status convention of every ``wgpy`` command (the table in README.md):

* 0 (:attr:`Exit.OK`): fine — nothing found, done, sent or delivered;
* 1 (:attr:`Exit.FOUND`, alias :attr:`Exit.FAILED`): found something (lint's or doctor's
  findings, explain's "not sent" or "dropped", calc's empty result) or failed after reading
  its input (an output that cannot be written, a port that cannot be listened on, an
  interface that went away while watched);
* 2 (:attr:`Exit.UNREADABLE`): could not read its input — a missing interface or file, a
  malformed file, address or prefix, bad usage (argparse's own 2).

Commands report through :func:`unreadable` and :func:`failed`, or raise :class:`Unreadable`
/ :class:`Failed` / :class:`~wgpy.config.ConfigError`, which :func:`run` maps to the status.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import IntEnum
from typing import TypeVar

from wgpy.config import ConfigError

T = TypeVar("T")


class Exit(IntEnum):
    OK = 0
    FOUND = 1
    FAILED = 1
    UNREADABLE = 2


class Unreadable(Exception):
    """The command could not read its input; :func:`run` prints the text and returns 2."""


class Failed(Exception):
    """The command read its input but failed; :func:`run` prints the text and returns 1."""


def say(text: str) -> None:
    sys.stderr.write(f"wgpy: {text}\n")


def unreadable(text: str) -> int:
    """Say why the input could not be read; returns 2."""
    say(text)
    return Exit.UNREADABLE


def failed(text: str) -> int:
    """Say what failed; returns 1."""
    say(text)
    return Exit.FAILED


def interface_message(name: str, error: OSError) -> str:
    """A live interface that could not be read, as every command says it."""
    return f"Unable to access interface {name}: {error.strerror or error}"


def unreadable_interface(name: str, error: OSError) -> int:
    return unreadable(interface_message(name, error))


def run(command: Callable[[T], int], args: T) -> int:
    """Run a command; map the input errors it raises to 2 and its failures to 1."""
    try:
        return command(args)
    except (Unreadable, ConfigError) as error:
        return unreadable(str(error))
    except Failed as error:
        return failed(str(error))
