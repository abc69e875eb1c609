"""Linux TUN devices: create, read link state and MTU (the only ioctl code in wgpy)."""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from typing import Final

TUNSETIFF: Final = 0x400454CA
TUNGETIFF: Final = 0x800454D2
IFF_TUN: Final = 0x0001
IFF_NO_PI: Final = 0x1000
IFF_UP: Final = 0x1
IFF_RUNNING: Final = 0x40
SIOCGIFFLAGS: Final = 0x8913
SIOCGIFMTU: Final = 0x8921
SIOCSIFMTU: Final = 0x8922
IFNAMSIZ: Final = 16


def open_tun(name: str) -> tuple[int, str]:
    """Create (or attach to) the TUN interface ``name``; returns (fd, kernel's name)."""
    if not name or len(name) >= IFNAMSIZ or "/" in name:
        raise ValueError(f"invalid interface name {name!r}")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        request = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
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


def _ifreq(name: str, value: int = 0) -> bytes:
    return struct.pack("16si20x", name.encode(), value)


def _ioctl_int(name: str, request: int, value: int = 0) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        result = fcntl.ioctl(sock.fileno(), request, _ifreq(name, value))
    (out,) = struct.unpack_from("i", result, 16)
    return int(out)


def link_flags(name: str) -> int:
    return _ioctl_int(name, SIOCGIFFLAGS) & 0xFFFF


def get_mtu(name: str) -> int:
    return _ioctl_int(name, SIOCGIFMTU)


def set_mtu(name: str, mtu: int) -> None:
    _ioctl_int(name, SIOCSIFMTU, mtu)


def disable_ipv6_link_local(name: str) -> None:
    """Like the kernel's WireGuard device: no automatic IPv6 link-local address."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/addr_gen_mode", "w") as f:
            f.write("1")
    except OSError:
        pass
