"""Where the OS routes an address: one rtnetlink route lookup (``ip route get``) via pyroute2.

The lookup runs in the network namespace of the calling process and goes through the policy
rules (``ip rule``), so wg-quick's fwmark table is honoured like for an unmarked packet.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "RouteInfo",
    "interface_addresses",
    "interface_exists",
    "link_mtu",
    "route_get",
    "routes_into",
]

# rtm_type values (linux/rtnetlink.h)
_ROUTE_TYPES = {
    1: "unicast",
    2: "local",
    3: "broadcast",
    4: "anycast",
    5: "multicast",
    6: "blackhole",
    7: "unreachable",
    8: "prohibit",
    9: "throw",
    10: "nat",
}


@dataclass
class RouteInfo:
    """The result of a route lookup for one destination."""

    device: str | None
    type: str
    table: int | None = None
    gateway: str | None = None
    error: str | None = None
    #: the path's MTU: the route's own (``ip route ... mtu N`` or a learned PMTU), else the
    #: output device's
    mtu: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def interface_exists(name: str) -> bool:
    """Whether a link of that name exists in this network namespace."""
    from pyroute2 import IPRoute  # type: ignore[import-untyped]

    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=name))


def link_mtu(name: str) -> int | None:
    """The MTU of a link in this network namespace (None if there is no such link)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        indices = ipr.link_lookup(ifname=name)
        if not indices:
            return None
        links = list(ipr.link("get", index=indices[0]))
        mtu = links[0].get_attr("IFLA_MTU") if links else None
        return None if mtu is None else int(mtu)


def route_get(address: str) -> RouteInfo:
    """``ip route get ADDRESS``: the output device (None when there is no route)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

    with IPRoute() as ipr:
        try:
            messages = list(ipr.route("get", dst=address))
        except NetlinkError as error:
            return RouteInfo(None, "none", error=os.strerror(error.code))
        if not messages:
            return RouteInfo(None, "none", error="no answer")
        message = messages[0]
        route_type = _ROUTE_TYPES.get(int(message["type"]), str(message["type"]))
        oif = message.get_attr("RTA_OIF")
        device: str | None = None
        mtu: int | None = None
        metrics = message.get_attr("RTA_METRICS")
        if metrics is not None and metrics.get_attr("RTAX_MTU"):
            mtu = int(metrics.get_attr("RTAX_MTU"))
        if oif is not None:
            links = list(ipr.link("get", index=oif))
            if links:
                device = links[0].get_attr("IFLA_IFNAME")
                if mtu is None and links[0].get_attr("IFLA_MTU"):
                    mtu = int(links[0].get_attr("IFLA_MTU"))
        table = message.get_attr("RTA_TABLE")
        gateway = message.get_attr("RTA_GATEWAY")
        return RouteInfo(
            device,
            route_type,
            None if table is None else int(table),
            gateway and str(gateway),
            mtu=mtu,
        )


def interface_addresses(name: str) -> list[tuple[str, int]]:
    """The addresses of a link in this network namespace as (address, prefix length)
    (``ip addr show dev NAME``); empty when there is no such link."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        indices = ipr.link_lookup(ifname=name)
        if not indices:
            return []
        found = []
        for message in ipr.get_addr(index=indices[0]):
            address = message.get_attr("IFA_ADDRESS")
            if address is not None:
                found.append((str(address), int(message["prefixlen"])))
        return found


def routes_into(name: str) -> list[str]:
    """Every route through a link in this network namespace, in any routing table, as
    prefixes (``ip route show table all dev NAME``, and ``-6``), local and broadcast
    routes left out; empty when there is no such link."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        indices = ipr.link_lookup(ifname=name)
        if not indices:
            return []
        found = []
        for family, width in ((2, 32), (10, 128)):  # AF_INET, AF_INET6
            for message in ipr.get_routes(family=family, oif=indices[0]):
                if int(message["type"]) != 1:  # unicast only
                    continue
                dst = message.get_attr("RTA_DST")
                length = int(message["dst_len"])
                if dst is None:
                    dst = "0.0.0.0" if width == 32 else "::"
                prefix = f"{dst}/{length}"
                if str(dst).lower().startswith("fe80:"):
                    continue  # the link's own link-local route, not traffic for a peer
                if prefix not in found:
                    found.append(prefix)
        return found
