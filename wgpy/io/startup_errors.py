"""wgpyd's start-up failures in words: the cause, who holds what it wanted, and what to do.

Each is one message (printed once, on stderr, by :mod:`wgpy.daemon`), never Python's
"[Errno N] ..." text. wgpyd exits 1 for every one of them, as wireguard-go does.
"""

from __future__ import annotations

import errno

from wgpy.io import holders
from wgpy.io.tun import InvalidName
from wgpy.uapi import SOCKET_DIRECTORY


def _words(error: BaseException) -> str:
    """An exception's text without Python's errno prefix and repeated file name."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def _held_by(found: list[holders.Holder]) -> str:
    return ", ".join(holder.describe() for holder in found)


def tun_error(name: str, error: BaseException) -> str:
    """Why the TUN interface `name` could not be created."""
    if isinstance(error, InvalidName):
        return f"wgpyd: {error}; choose another name."
    code = error.errno if isinstance(error, OSError) else None
    prefix = f"wgpyd: cannot create interface {name}"
    if code == errno.EBUSY:
        found = holders.tun_holders(name)
        holder = _held_by(found) if found else "another wgpyd or wireguard-go"
        return (
            f"{prefix}: an interface of that name already exists in this network namespace "
            f"and is served by {holder}. Remove it with "
            f"`ip link del {name}` (its daemon then exits), or choose another name."
        )
    if code == errno.EINVAL and _exists(name):
        return (
            f"{prefix}: an interface of that name already exists in this network namespace "
            "and is not a TUN device (a kernel WireGuard interface, a veth, a TAP...). Remove "
            f"it with `ip link del {name}`, or choose another name."
        )
    if code in (errno.EPERM, errno.EACCES):
        return (
            f"{prefix}: {_words(error)}. Creating a TUN device needs CAP_NET_ADMIN: run wgpyd "
            "as root."
        )
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return (
            f"{prefix}: /dev/net/tun is not available ({_words(error)}). Load the tun module "
            "(`modprobe tun`), or give the container the device."
        )
    return f"{prefix}: {_words(error)}."


def _exists(name: str) -> bool:
    import socket

    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def uapi_error(name: str, path: str, error: OSError) -> str:
    """Why the UAPI socket `path` of interface `name` could not be created."""
    if error.errno == errno.EADDRINUSE:
        found = holders.socket_holders(path)
        holder = (
            _held_by(found)
            if found
            else "another daemon (its process was not found; possibly in another network namespace)"
        )
        return (
            f"wgpyd: cannot serve {name}: {path} is in use by {holder}. {SOCKET_DIRECTORY} is "
            "shared by every network namespace on this host, so one name can be served only "
            "once per host, whatever the namespace. Stop that daemon, or choose a name no "
            "other namespace uses."
        )
    if error.errno in (errno.EPERM, errno.EACCES):
        return f"wgpyd: cannot create the UAPI socket {path}: {_words(error)}. Run wgpyd as root."
    return f"wgpyd: cannot create the UAPI socket {path}: {_words(error)}."


def log_file_error(path: str, error: OSError) -> str:
    """Why the log file (``--log-file`` / ``WGPY_LOG_FILE``) could not be opened."""
    return (
        f"wgpyd: cannot open the log file {path}: {_words(error)}; give a file wgpyd can "
        "write (--log-file PATH or WGPY_LOG_FILE)."
    )


def metrics_error(address: str, error: BaseException) -> str:
    """Why the metrics endpoint could not listen at `address`."""
    return (
        f"wgpyd: metrics endpoint {address}: {_words(error)} (it listens in the daemon's "
        "network namespace); choose another address or free that one."
    )
