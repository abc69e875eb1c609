"""A writer of the cpio "newc" format, the one the Linux kernel unpacks as an initramfs.

Only what an initramfs needs: directories, regular files, symbolic links and character
devices, all owned by root, with mtime 0 so that the same input gives the same bytes.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO, Final

MAGIC: Final = b"070701"
TRAILER: Final = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One archive member. `path` is relative to the archive root ("bin/sh", no leading "/")."""

    path: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    @classmethod
    def directory(cls, path: str) -> Entry:
        return cls(path, stat.S_IFDIR | 0o755)

    @classmethod
    def file(cls, path: str, data: bytes, perm: int = 0o644) -> Entry:
        return cls(path, stat.S_IFREG | perm, data)

    @classmethod
    def symlink(cls, path: str, target: str) -> Entry:
        return cls(path, stat.S_IFLNK | 0o777, target.encode())

    @classmethod
    def char_device(cls, path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
        return cls(path, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(inode: int, entry: Entry, name: bytes) -> bytes:
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (
        inode,
        entry.mode,
        0,  # uid
        0,  # gid
        nlink,
        0,  # mtime
        len(entry.data),
        0,  # dev major
        0,  # dev minor
        entry.rdev[0],
        entry.rdev[1],
        len(name),
        0,  # check (unused by newc)
    )
    return MAGIC + b"".join(b"%08X" % value for value in fields)


def write(out: BinaryIO, entries: Iterable[Entry]) -> None:
    """Write `entries` in order (parents before their contents), then the trailer."""
    trailer = Entry(TRAILER, 0)
    for inode, entry in enumerate([*entries, trailer], start=1):
        name = entry.path.encode() + b"\0"
        header = _header(0 if entry is trailer else inode, entry, name)
        out.write(header + name + _pad4(len(header) + len(name)))
        out.write(entry.data + _pad4(len(entry.data)))
