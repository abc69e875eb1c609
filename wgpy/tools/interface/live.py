"""A live interface, read for the tools: a userspace daemon's through its UAPI socket, the
kernel's over netlink. As the view `show` and `doctor` print (with the drop counts of wgpyd, or
of a running `wgpy watch` for a kernel interface), and as the config `lint` and `doctor` read
instead of a file."""

from __future__ import annotations

import contextlib
import os
from ipaddress import ip_interface, ip_network
from typing import Any

from wgpy.config import Config, load, parse_config
from wgpy.io.uapi_client import interface_get, wgpy_stats
from wgpy.tools.interface.show import (
    InterfaceView,
    kernel_info,
    key_from_hex,
    parse_get,
    parse_stats,
)


def is_config_path(target: str) -> bool:
    """Whether a command-line target names a config file rather than an interface."""
    return os.path.sep in target or target.endswith(".conf") or os.path.isfile(target)


def interface_view(ifname: str) -> tuple[InterfaceView, list[tuple[str, str]]]:
    """The view of a live interface with its drop counts, and the get pairs it came from.
    Raises OSError when neither a socket nor the kernel has the interface."""
    pairs, is_kernel = interface_get(ifname)
    view = parse_get(ifname, pairs)
    if is_kernel:
        from wgpy.io.kernel_wg import link_statistics
        from wgpy.tools.interface.watch import read_state

        state = read_state(ifname)
        counters: dict[str, int] = {}
        with contextlib.suppress(OSError):
            counters = link_statistics(ifname)
        view.kernel = kernel_info(state, counters)
        if state is not None:
            parse_stats(view, state)
    else:
        stats = wgpy_stats(ifname)
        if stats is not None:
            parse_stats(view, stats)
    return view, pairs


def config_of_interface(ifname: str) -> Config:
    """A live interface (userspace daemon or kernel) as the config ``wg showconf`` prints."""
    pairs, _ = interface_get(ifname)
    return config_of_pairs(ifname, pairs)


def config_of_pairs(ifname: str, pairs: list[tuple[str, str]]) -> Config:
    """UAPI get pairs (any daemon, or the kernel over netlink) as the config `wg showconf`
    prints, parsed."""
    lines = ["[Interface]"]
    allowed: list[str] = []

    def flush_allowed() -> None:
        if allowed:
            lines.append(f"AllowedIPs = {', '.join(allowed)}")
            allowed.clear()

    for key, value in pairs:
        if key == "private_key":
            lines.append(f"PrivateKey = {key_from_hex(value)}")
        elif key == "listen_port":
            lines.append(f"ListenPort = {value}")
        elif key == "fwmark" and value != "0":
            lines.append(f"FwMark = {value}")
        elif key == "public_key":
            flush_allowed()
            lines += [
                "",
                "[Peer]",
                f"PublicKey = {key_from_hex(value)}",
            ]
        elif key == "preshared_key":
            lines.append(f"PresharedKey = {key_from_hex(value)}")
        elif key == "endpoint":
            lines.append(f"Endpoint = {value}")
        elif key == "persistent_keepalive_interval" and value != "0":
            lines.append(f"PersistentKeepalive = {value}")
        elif key == "allowed_ip":
            allowed.append(value)
    flush_allowed()
    return parse_config("\n".join(lines) + "\n", f"{ifname} (live interface)")


def map_target(target: str) -> tuple[Config, Any]:
    """A config file, or a live interface as its config plus its addresses and routes (when it
    is in this network namespace). Raises ConfigError or OSError."""
    from wgpy.tools.files.aipmap import Live
    from wgpy.tools.interface.routes import interface_addresses, interface_exists, routes_into

    if is_config_path(target):
        return load(target), None
    config = config_of_interface(target)
    if not interface_exists(target):
        return config, Live(
            [], [], "routes and Address unknown: the interface is not in this netns"
        )
    addresses = []
    for address, length in interface_addresses(target):
        parsed = ip_interface(f"{address}/{length}")
        addresses.append((parsed.ip, parsed.network))
    return config, Live(addresses, [ip_network(r) for r in routes_into(target)])
