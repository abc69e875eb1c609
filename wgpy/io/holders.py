"""Who holds a name wgpyd wants: the process attached to a TUN interface, or listening on a
UAPI socket path. Read from /proc, for start-up error messages only (best effort: a process
this user may not inspect is simply not found).

A TUN descriptor's ``/proc/PID/fdinfo/FD`` names its interface (``iff:``). A listening UNIX
socket is found by its path in ``/proc/PID/net/unix`` — which lists the sockets of PID's
network namespace, so every namespace is read once through one of its processes — and then by
its inode among every process's descriptors (``socket:[INODE]``).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

#: ``__SO_ACCEPTCON`` in /proc/net/unix's Flags column: a listening socket.
_ACCEPTING: Final = 0x10000
#: Where `ip netns` keeps its named namespaces (bind mounts whose inode is the namespace's).
NETNS_RUN_DIR: Final = "/var/run/netns"


@dataclass(frozen=True, slots=True)
class Holder:
    pid: int
    command: str
    #: True when the process is in this process's network namespace.
    same_netns: bool
    #: Its namespace's `ip netns` name, if it has one.
    netns_name: str | None

    def describe(self) -> str:
        if self.same_netns:
            where = "in this network namespace"
        elif self.netns_name:
            where = f"in network namespace {self.netns_name}"
        else:
            where = "in another network namespace"
        return f"{self.command} (pid {self.pid}) {where}"


def _pids() -> Iterator[int]:
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                yield int(entry)


def _netns_inode(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def _netns_names() -> dict[int, str]:
    names: dict[int, str] = {}
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(NETNS_RUN_DIR)):
            with contextlib.suppress(OSError):
                names.setdefault(os.stat(os.path.join(NETNS_RUN_DIR, name)).st_ino, name)
    return names


def _holder(pid: int, own: int | None, names: dict[int, str]) -> Holder:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            command = f.read().strip()
    except OSError:
        command = "a process"
    netns = _netns_inode(pid)
    return Holder(pid, command, netns == own, None if netns is None else names.get(netns))


def _descriptors(pid: int) -> Iterator[tuple[str, str]]:
    """(fd, link target) of each open descriptor of `pid`."""
    directory = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(directory)
    except OSError:
        return
    for fd in fds:
        with contextlib.suppress(OSError):
            yield fd, os.readlink(f"{directory}/{fd}")


def _holders(pids: list[int]) -> list[Holder]:
    own = _netns_inode("self")
    names = _netns_names()
    found = [_holder(pid, own, names) for pid in sorted(set(pids)) if pid != os.getpid()]
    # a process in this namespace first: for a TUN, the likeliest to be attached to it here
    return sorted(found, key=lambda holder: not holder.same_netns)


def tun_holders(ifname: str) -> list[Holder]:
    """Processes with a TUN descriptor attached to an interface named `ifname` (any netns)."""
    wanted = f"iff:\t{ifname}"
    pids = []
    for pid in _pids():
        for fd, target in _descriptors(pid):
            if target != "/dev/net/tun":
                continue
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}", encoding="utf-8", errors="replace") as f:
                    if wanted in f.read().splitlines():
                        pids.append(pid)
            except OSError:
                continue
    return _holders(pids)


def _listening_inodes(path: str) -> set[str]:
    """Inodes of listening UNIX sockets bound to `path` in any network namespace. A socket
    bound as ``PATH.PID`` and then renamed into place (wgpyd's) counts too."""
    pattern = re.compile(re.escape(path) + r"(\.\d+)?")
    inodes: set[str] = set()
    seen: set[int] = set()
    for pid in _pids():
        netns = _netns_inode(pid)
        if netns is None or netns in seen:
            continue
        seen.add(netns)
        try:
            with open(f"/proc/{pid}/net/unix", encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split(None, 7)
            if len(fields) == 8 and pattern.fullmatch(fields[7]):
                with contextlib.suppress(ValueError):
                    if int(fields[3], 16) & _ACCEPTING:
                        inodes.add(fields[6])
    return inodes


def socket_holders(path: str) -> list[Holder]:
    """Processes holding a listening UNIX socket bound to `path`."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(path)}
    if not inodes:
        return []
    pids = [pid for pid in _pids() for _, target in _descriptors(pid) if target in inodes]
    return _holders(pids)
