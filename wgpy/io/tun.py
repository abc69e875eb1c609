"""Linux TUN devices: create, read link state and MTU (the only ioctl code in wgpy).

The interface may be moved to another network namespace after it was created (``ip link set
wg0 netns ns1``: the documented way to give a container a WireGuard-only network). The file
descriptor keeps working wherever the device lives, but a lookup by name in the daemon's own
namespace no longer finds it, so the link state is read through the descriptor: its current
name (TUNGETIFF) and its namespace (TUNGETDEVNETNS), where a throwaway socket asks for flags
and MTU. No reference to that namespace is kept between queries: the kernel deletes the
device when its namespace goes away, and the descriptor then answers EBADFD.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

TUNSETIFF: Final = 0x400454CA
TUNGETIFF: Final = 0x800454D2
IFF_TUN: Final = 0x0001
IFF_NO_PI: Final = 0x1000
IFF_VNET_HDR: Final = 0x4000
TUNSETOFFLOAD: Final = 0x400454D0
TUN_F_CSUM: Final = 0x01
TUN_F_TSO4: Final = 0x02
TUN_F_TSO6: Final = 0x04
TUN_F_USO4: Final = 0x20  # Linux 6.2+
TUN_F_USO6: Final = 0x40
#: The offload sets asked for, best first: TCP and UDP segmentation, TCP only, checksums only.
OFFLOAD_CHOICES: Final = (
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
    TUN_F_CSUM,
    0,
)
IFF_UP: Final = 0x1
IFF_RUNNING: Final = 0x40
SIOCGIFFLAGS: Final = 0x8913
SIOCGIFMTU: Final = 0x8921
SIOCGIFINDEX: Final = 0x8933
SIOCSIFMTU: Final = 0x8922
IFNAMSIZ: Final = 16
TUNGETDEVNETNS: Final = 0x54E3  # _IO('T', 227), Linux 5.2+
CLONE_NEWNET: Final = 0x40000000
#: What a TUN descriptor answers once its device is deleted (with it: ENODEV, ENXIO).
GONE_ERRNOS: Final = (errno.EBADFD, errno.ENODEV, errno.ENXIO)


#: What the kernel's ``isspace`` counts as whitespace in a name (Latin-1's no-break space too).
_SPACE_BYTES: Final = frozenset(b" \t\n\v\f\r\xa0")
NAME_RULE: Final = (
    f"Linux interface names are 1 to {IFNAMSIZ - 1} bytes, not '.' or '..', "
    "and contain no '/', ':' or whitespace"
)


class InvalidName(ValueError):
    """A name the kernel would refuse (``dev_valid_name``); the text says why, then the rule."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"invalid interface name {name!r}: {reason}. {NAME_RULE}")
        self.name = name
        self.reason = reason


def check_name(name: str) -> None:
    """Raise :class:`InvalidName` for a name the kernel's ``dev_valid_name`` refuses (its rule,
    checked here so that the error can say which part of it the name broke)."""
    raw = name.encode(errors="surrogateescape")
    if not raw:
        raise InvalidName(name, "it is empty")
    if len(raw) >= IFNAMSIZ:
        raise InvalidName(
            name,
            f"it is {len(raw)} bytes long, and at most {IFNAMSIZ - 1} bytes fit (IFNAMSIZ - 1)",
        )
    if name in (".", ".."):
        raise InvalidName(name, f"{name!r} is reserved")
    for what in ("/", ":"):
        if what in name:
            raise InvalidName(name, f"it contains {what!r}")
    if any(byte in _SPACE_BYTES for byte in raw):
        if any(byte in _SPACE_BYTES for byte in raw.replace(b"\xa0", b"")):
            raise InvalidName(name, "it contains whitespace")
        raise InvalidName(
            name, "its UTF-8 holds the byte 0xA0, which the kernel counts as whitespace"
        )


def open_tun(name: str, *, vnet_header: bool = False) -> tuple[int, str]:
    """Create (or attach to) the TUN interface ``name``; returns (fd, kernel's name).

    With ``vnet_header`` every read and write on the descriptor starts with a virtio-net header
    (wgpy.offload), which offloads (:func:`enable_offloads`) need."""
    check_name(name)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_header else 0)
        request = struct.pack("16sH22x", name.encode(), flags)
        result = fcntl.ioctl(fd, TUNSETIFF, request)
    except OSError:
        os.close(fd)
        raise
    real = result[:IFNAMSIZ].split(b"\0", 1)[0].decode()
    os.set_blocking(fd, False)
    return fd, real


def tun_name(fd: int) -> str:
    result = fcntl.ioctl(fd, TUNGETIFF, bytes(40))
    return result[:IFNAMSIZ].split(b"\0", 1)[0].decode()


def has_vnet_header(fd: int) -> bool:
    """Whether reads and writes on the TUN descriptor carry a virtio-net header."""
    result = fcntl.ioctl(fd, TUNGETIFF, bytes(40))
    (flags,) = struct.unpack_from("H", result, IFNAMSIZ)
    return bool(flags & IFF_VNET_HDR)


def enable_offloads(fd: int, choices: Sequence[int] | None = None) -> int:
    """Ask for the best of ``choices`` (default :data:`OFFLOAD_CHOICES`) the kernel accepts;
    returns the accepted ``TUN_F_*`` set (0: none, every read is one packet, and TSO stays in
    the kernel)."""
    for choice in OFFLOAD_CHOICES if choices is None else choices:
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, choice)
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            continue
        return choice
    return 0


@dataclass(frozen=True, slots=True)
class LinkState:
    """What the daemon follows of its interface, read wherever the interface lives."""

    name: str
    flags: int
    mtu: int
    #: The interface index in the namespace it lives in.
    ifindex: int
    #: True when the interface lives in another network namespace than the daemon.
    moved: bool

    @property
    def running(self) -> bool:
        return bool(self.flags & IFF_UP and self.flags & IFF_RUNNING)


_libc = ctypes.CDLL(None, use_errno=True)
_own_netns_fd: int | None = None


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _socket_in_netns(netns_fd: int, family: int, kind: int, proto: int) -> socket.socket:
    """A socket of the namespace ``netns_fd``, made by entering it for the call.

    Only the calling thread switches, and it switches back before returning."""
    global _own_netns_fd
    if _own_netns_fd is None:
        _own_netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    _setns(netns_fd)
    try:
        return socket.socket(family, kind, proto)
    finally:
        _setns(_own_netns_fd)


def device_socket(
    fd: int,
    family: int = socket.AF_INET,
    kind: int = socket.SOCK_DGRAM,
    proto: int = 0,
) -> tuple[socket.socket, bool]:
    """A new socket in the namespace the TUN behind ``fd`` lives in, and whether that is
    another namespace than the daemon's. The caller closes it soon: it keeps that namespace
    alive."""
    netns_fd = fcntl.ioctl(fd, TUNGETDEVNETNS)
    try:
        moved = os.fstat(netns_fd).st_ino != os.stat("/proc/thread-self/ns/net").st_ino
        if moved:
            return _socket_in_netns(netns_fd, family, kind, proto), True
        return socket.socket(family, kind, proto), False
    finally:
        os.close(netns_fd)


def link_state(fd: int) -> LinkState:
    """Name, flags and MTU of the TUN behind ``fd``, in whichever namespace it is now.

    Raises OSError with an errno in :data:`GONE_ERRNOS` once the interface is deleted."""
    name = tun_name(fd)
    sock, moved = device_socket(fd)
    with sock:
        flags = _ioctl_on(sock, name, SIOCGIFFLAGS) & 0xFFFF
        mtu = _ioctl_on(sock, name, SIOCGIFMTU)
        ifindex = _ioctl_on(sock, name, SIOCGIFINDEX)
    return LinkState(name, flags, mtu, ifindex, moved)


def _ioctl_on(sock: socket.socket, name: str, request: int, value: int = 0) -> int:
    """An interface ioctl with an int in its ifreq (flags, MTU, index), by name."""
    result = fcntl.ioctl(sock.fileno(), request, _ifreq(name, value))
    (out,) = struct.unpack_from("i", result, 16)
    return int(out)


def _ifreq(name: str, value: int = 0) -> bytes:
    return struct.pack("16si20x", name.encode(), value)


def set_mtu(name: str, mtu: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _ioctl_on(sock, name, SIOCSIFMTU, mtu)


def disable_ipv6_link_local(name: str) -> None:
    """Like the kernel's WireGuard device: no automatic IPv6 link-local address."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/addr_gen_mode", "w") as f:
            f.write("1")
    except OSError:
        pass
