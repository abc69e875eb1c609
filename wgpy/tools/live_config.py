"""A live interface as a wg-quick config: what lint and doctor read instead of a file."""

from __future__ import annotations

import base64
import os

from wgpy.config import Config, parse_config


def is_config_path(target: str) -> bool:
    """Whether a command-line target names a config file rather than an interface."""
    return os.path.sep in target or target.endswith(".conf") or os.path.isfile(target)


def config_of_interface(ifname: str) -> Config:
    """A live interface (userspace daemon or kernel) as the config ``wg showconf`` prints."""
    from wgpy.io.uapi_client import interface_get

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
            lines.append(f"PrivateKey = {base64.b64encode(bytes.fromhex(value)).decode()}")
        elif key == "listen_port":
            lines.append(f"ListenPort = {value}")
        elif key == "fwmark" and value != "0":
            lines.append(f"FwMark = {value}")
        elif key == "public_key":
            flush_allowed()
            lines += [
                "",
                "[Peer]",
                f"PublicKey = {base64.b64encode(bytes.fromhex(value)).decode()}",
            ]
        elif key == "preshared_key":
            lines.append(f"PresharedKey = {base64.b64encode(bytes.fromhex(value)).decode()}")
        elif key == "endpoint":
            lines.append(f"Endpoint = {value}")
        elif key == "persistent_keepalive_interval" and value != "0":
            lines.append(f"PersistentKeepalive = {value}")
        elif key == "allowed_ip":
            allowed.append(value)
    flush_allowed()
    return parse_config("\n".join(lines) + "\n", f"{ifname} (live interface)")
