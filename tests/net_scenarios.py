"""WireGuard networks people bring to forums, as wg-quick files: the same scenarios feed the
offline `wgpy net check` tests and the netns tests that ping every pair for real.

A :class:`Scenario` is hosts (each one wg-quick file, the interface named after the host),
optional LANs (a namespace behind a gateway, reached through its ``lan`` veth) and, for the
tests, the pairs expected unreachable (by host name; a LAN is ``HOST/lan``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from wgpy import keys

ENDPOINT_PORT = 51820


@dataclass
class Peer:
    host: str
    allowed_ips: list[str]
    keepalive: int = 0
    endpoint: bool = True


@dataclass
class HostSpec:
    name: str
    address: str  # with its prefix length, as Address = ...
    peers: list[Peer] = field(default_factory=list)
    post_up: list[str] = field(default_factory=list)
    #: a LAN behind this host: its subnet with the host's address on it (192.168.1.254/24).
    #: Not the subnet's first address: from config files alone the model cannot know the
    #: gateway's LAN address and stands for the LAN by its first host address, which the
    #: netns tests give to the LAN's host (from a snapshot the model skips the gateway's own)
    lan: str | None = None
    listen_port: int = ENDPOINT_PORT


@dataclass
class Scenario:
    name: str
    hosts: list[HostSpec]
    #: (from, to) pairs expected unreachable, by host name ("gw/lan" for a LAN)
    broken: set[tuple[str, str]] = field(default_factory=set)
    seed: int = 1

    def keys(self) -> dict[str, tuple[str, str]]:
        rng = random.Random(f"{self.name}-{self.seed}")
        out: dict[str, tuple[str, str]] = {}
        for host in self.hosts:
            private = keys.genkey(rng.randbytes)
            out[host.name] = (private, keys.pubkey(private))
        return out

    def configs(self, underlay: dict[str, str] | None = None) -> dict[str, str]:
        """host -> wg-quick text; ``underlay`` gives each host's outer address for Endpoint
        (a documentation address when None, for offline checks)."""
        pairs = self.keys()
        texts: dict[str, str] = {}
        for host in self.hosts:
            lines = [
                "[Interface]",
                f"PrivateKey = {pairs[host.name][0]}",
                f"Address = {host.address}",
                f"ListenPort = {host.listen_port}",
            ]
            lines.extend(f"PostUp = {command}" for command in host.post_up)
            for peer in host.peers:
                other = self.host(peer.host)
                lines += [
                    "",
                    "[Peer]",
                    f"# Name = {peer.host}",
                    f"PublicKey = {pairs[peer.host][1]}",
                ]
                lines.append(f"AllowedIPs = {', '.join(peer.allowed_ips)}")
                if peer.endpoint:
                    outer = (underlay or {}).get(
                        peer.host, f"192.0.2.{self.hosts.index(other) + 1}"
                    )
                    lines.append(f"Endpoint = {outer}:{other.listen_port}")
                if peer.keepalive:
                    lines.append(f"PersistentKeepalive = {peer.keepalive}")

            texts[host.name] = "\n".join(lines) + "\n"
        return texts

    def host(self, name: str) -> HostSpec:
        return next(h for h in self.hosts if h.name == name)

    def write(self, directory: Path, underlay: dict[str, str] | None = None) -> list[Path]:
        paths = []
        for name, text in self.configs(underlay).items():
            path = directory / f"{name}.conf"
            path.write_text(text)
            paths.append(path)
        return paths


FORWARD = "sysctl -w net.ipv4.ip_forward=1"


def hub_and_spoke_mistake() -> Scenario:
    """Issue 23's canonical mistake: spoke a only allows the hub's /32."""
    return Scenario(
        "hub-spoke-mistake",
        [
            HostSpec(
                "hub",
                "10.0.0.1/24",
                [
                    Peer("a", ["10.0.0.2/32"], endpoint=False),
                    Peer("b", ["10.0.0.3/32"], endpoint=False),
                ],
                post_up=[FORWARD],
            ),
            HostSpec("a", "10.0.0.2/24", [Peer("hub", ["10.0.0.1/32"], keepalive=5)]),
            HostSpec("b", "10.0.0.3/24", [Peer("hub", ["10.0.0.0/24"], keepalive=5)]),
        ],
        broken={("a", "b"), ("b", "a")},
    )


def healthy_hub(spokes: int = 3, post_up: list[str] | None = None) -> Scenario:
    names = [f"s{i}" for i in range(1, spokes + 1)]
    hub = HostSpec(
        "hub",
        "10.0.0.1/24",
        [Peer(n, [f"10.0.0.{i + 2}/32"], endpoint=False) for i, n in enumerate(names)],
        post_up=[FORWARD] if post_up is None else post_up,
    )
    spoke_specs = [
        HostSpec(n, f"10.0.0.{i + 2}/24", [Peer("hub", ["10.0.0.0/24"], keepalive=5)])
        for i, n in enumerate(names)
    ]
    return Scenario("healthy-hub", [hub, *spoke_specs])


def forwarding_off_hub() -> Scenario:
    scenario = healthy_hub(2, post_up=[])
    scenario.name = "forwarding-off"
    scenario.broken = {("s1", "s2"), ("s2", "s1")}
    return scenario


def forward_chain_drop() -> Scenario:
    """FORWARD accepts traffic in from wg but not out to it (ngoduykhanh/wireguard-ui#683)."""
    scenario = healthy_hub(
        2,
        post_up=[
            FORWARD,
            "iptables -P FORWARD DROP",
            "iptables -A FORWARD -i %i -o eth9 -j ACCEPT",
        ],
    )
    scenario.name = "forward-drop"
    scenario.broken = {("s1", "s2"), ("s2", "s1")}
    return scenario


def duplicate_prefix() -> Scenario:
    """Two peers with one prefix on the hub: the second takes it (vyatta-ubnt#80)."""
    scenario = healthy_hub(2)
    scenario.name = "duplicate-prefix"
    hub = scenario.host("hub")
    hub.peers[1].allowed_ips = ["10.0.0.3/32", "10.0.0.2/32"]
    scenario.broken = {
        ("hub", "s1"),
        ("s1", "hub"),
        ("s1", "s2"),
        ("s2", "s1"),
    }
    return scenario


def full_mesh(count: int = 3) -> Scenario:
    names = [f"m{i}" for i in range(1, count + 1)]
    specs = []
    for i, name in enumerate(names):
        peers = [
            Peer(other, [f"10.1.0.{j + 1}/32"]) for j, other in enumerate(names) if other != name
        ]
        specs.append(HostSpec(name, f"10.1.0.{i + 1}/24", peers))
    return Scenario("full-mesh", specs)


def site_to_site(masquerade: bool = False, lan_allowed: bool = True) -> Scenario:
    """Two gateways, each with a LAN behind it."""
    post = [FORWARD]
    if masquerade:
        post.append("iptables -t nat -A POSTROUTING -o lan -j MASQUERADE")
    lan_b = ["10.2.0.2/32", "192.168.2.0/24"] if lan_allowed else ["10.2.0.2/32"]
    scenario = Scenario(
        "site-to-site" + ("-masq" if masquerade else "") + ("" if lan_allowed else "-lan-missing"),
        [
            HostSpec(
                "gwa", "10.2.0.1/24", [Peer("gwb", lan_b)], post_up=post, lan="192.168.1.254/24"
            ),
            HostSpec(
                "gwb",
                "10.2.0.2/24",
                [Peer("gwa", ["10.2.0.1/32", "192.168.1.0/24"])],
                post_up=post,
                lan="192.168.2.254/24",
            ),
        ],
    )
    if not lan_allowed:
        # gwa has no route to gwb's LAN, and drops what comes from it: its peer gwb allows
        # only 10.2.0.2/32 (config files alone do not show gwb's LAN: the netns test pings it)
        scenario.broken = {
            ("gwa", "gwb/lan"),
            ("gwa/lan", "gwb/lan"),
            ("gwb/lan", "gwa/lan"),
            ("gwb/lan", "gwa"),
        }
    return scenario


def direct_beats_hub() -> Scenario:
    """A direct peer's /32 beats the hub's /24 on a spoke, but the direct tunnel's other
    end does not allow the spoke (openwrt/luci#5307)."""
    scenario = healthy_hub(2)
    scenario.name = "direct-beats-hub"
    s1 = scenario.host("s1")
    s1.peers.append(Peer("s2", ["10.0.0.3/32"]))
    scenario.broken = {("s1", "s2"), ("s2", "s1")}
    return scenario


def no_endpoints() -> Scenario:
    """Two peers that list each other, neither with an Endpoint for the other: no initiation
    is ever sent, so nothing crosses, whoever pings first."""
    return Scenario(
        "no-endpoints",
        [
            HostSpec("x", "10.3.0.1/24", [Peer("y", ["10.3.0.2/32"], endpoint=False)]),
            HostSpec("y", "10.3.0.2/24", [Peer("x", ["10.3.0.1/32"], endpoint=False)]),
        ],
        broken={("x", "y"), ("y", "x")},
    )


ALL = [
    hub_and_spoke_mistake,
    healthy_hub,
    forwarding_off_hub,
    forward_chain_drop,
    duplicate_prefix,
    full_mesh,
    site_to_site,
    lambda: site_to_site(lan_allowed=False),
    lambda: site_to_site(masquerade=True),
    direct_beats_hub,
    no_endpoints,
]
