"""A kernel WireGuard interface, read over generic netlink (pyroute2's WireGuard family).

The result is given in the UAPI ``get`` form (``key=value`` pairs, keys in hex), the form the
tools already read from wgpyd and wireguard-go, so ``show``, ``explain`` and ``lint`` treat a
kernel interface like any other. Interface counters the kernel keeps (rx_errors,
rx_frame_errors, tx_errors, ...) come from rtnetlink link statistics.
"""

from __future__ import annotations

import base64
import errno
import os
from typing import Any

__all__ = ["KernelInterfaceError", "kernel_get", "link_statistics"]

#: The link statistics that WireGuard drop paths move (see docs/kernel-drops.md).
LINK_COUNTERS = (
    "rx_packets",
    "tx_packets",
    "rx_bytes",
    "tx_bytes",
    "rx_errors",
    "tx_errors",
    "rx_dropped",
    "tx_dropped",
    "rx_length_errors",
    "rx_frame_errors",
    "tx_aborted_errors",
)


class KernelInterfaceError(OSError):
    pass


def _hex_key(value: Any) -> str:
    if isinstance(value, str):
        value = value.encode()
    return base64.b64decode(value).hex()


def _attr(message: Any, name: str) -> Any:
    return message.get_attr(name)


def kernel_get(ifname: str) -> list[tuple[str, str]]:
    """The UAPI ``get`` pairs of the kernel WireGuard interface ``ifname`` in this namespace.

    Raises KernelInterfaceError(ENODEV) when there is no such interface (or it is not a
    WireGuard one, or the module is not loaded)."""
    try:
        from pyroute2 import WireGuard  # type: ignore[import-untyped]
        from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]
    except ImportError as error:  # pragma: no cover - pyroute2 is a dependency
        raise KernelInterfaceError(errno.ENOSYS, str(error)) from error
    try:
        with WireGuard() as family:
            messages = list(family.info(ifname))
    except NetlinkError as error:
        code = error.code or errno.ENODEV
        raise KernelInterfaceError(code, os.strerror(code)) from error
    except Exception as error:  # no "wireguard" generic netlink family: no module loaded
        raise KernelInterfaceError(errno.ENODEV, os.strerror(errno.ENODEV)) from error
    if not messages:
        raise KernelInterfaceError(errno.ENODEV, os.strerror(errno.ENODEV))
    return _pairs(messages)


def _pairs(messages: list[Any]) -> list[tuple[str, str]]:
    first = messages[0]
    pairs: list[tuple[str, str]] = []
    private = _attr(first, "WGDEVICE_A_PRIVATE_KEY")
    if private and _hex_key(private) != "00" * 32:
        pairs.append(("private_key", _hex_key(private)))
    port = _attr(first, "WGDEVICE_A_LISTEN_PORT")
    if port:
        pairs.append(("listen_port", str(port)))
    fwmark = _attr(first, "WGDEVICE_A_FWMARK")
    if fwmark:
        pairs.append(("fwmark", str(fwmark)))
    current: str | None = None
    for message in messages:
        for peer in _attr(message, "WGDEVICE_A_PEERS") or ():
            key = _hex_key(peer.get_attr("WGPEER_A_PUBLIC_KEY"))
            if key != current:  # a peer's allowed IPs may go on in the next message
                current = key
                pairs.extend(_peer_pairs(key, peer))
            pairs.extend(_allowed_ip_pairs(peer))
    return pairs


def _peer_pairs(key: str, peer: Any) -> list[tuple[str, str]]:
    pairs = [("public_key", key)]
    psk = peer.get_attr("WGPEER_A_PRESHARED_KEY")
    if psk and _hex_key(psk) != "00" * 32:
        pairs.append(("preshared_key", _hex_key(psk)))
    endpoint = peer.get_attr("WGPEER_A_ENDPOINT")
    if endpoint and endpoint.get("port"):
        host = endpoint["addr"]
        pairs.append(
            (
                "endpoint",
                f"[{host}]:{endpoint['port']}" if ":" in host else f"{host}:{endpoint['port']}",
            )
        )
    stamp = peer.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
    seconds, nanoseconds = (stamp["tv_sec"], stamp["tv_nsec"]) if stamp else (0, 0)
    pairs.append(("last_handshake_time_sec", str(seconds)))
    pairs.append(("last_handshake_time_nsec", str(nanoseconds)))
    pairs.append(("rx_bytes", str(peer.get_attr("WGPEER_A_RX_BYTES") or 0)))
    pairs.append(("tx_bytes", str(peer.get_attr("WGPEER_A_TX_BYTES") or 0)))
    keepalive = peer.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") or 0
    pairs.append(("persistent_keepalive_interval", str(keepalive)))
    pairs.append(("protocol_version", str(peer.get_attr("WGPEER_A_PROTOCOL_VERSION") or 1)))
    return pairs


def _allowed_ip_pairs(peer: Any) -> list[tuple[str, str]]:
    pairs = []
    for allowed in peer.get_attr("WGPEER_A_ALLOWEDIPS") or ():
        address = allowed.get("addr")
        if address:
            pairs.append(("allowed_ip", address))
    return pairs


def link_statistics(ifname: str) -> dict[str, int]:
    """The interface counters (IFLA_STATS64) that WireGuard's drop paths move."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.get_links(ifname=ifname)
        if not links:
            raise KernelInterfaceError(errno.ENODEV, os.strerror(errno.ENODEV))
        stats = links[0].get_attr("IFLA_STATS64") or {}
    return {name: int(stats.get(name, 0)) for name in LINK_COUNTERS}
