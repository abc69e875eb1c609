"""A scenario of tests/net_scenarios.py built for real: one namespace per host, brought up by
the real ``wg-quick up FILE``, and the pings that say which pairs of addresses reach each
other.

Layout of one built scenario::

    host namespaces ──up0── bridge br0 in a switch namespace (the underlay, 172.30.0.0/24)
    gateway ──lan── eth0 of a LAN namespace (the LAN's host, default route via the gateway)

Each host's outer address on the underlay is its peers' ``Endpoint``. Interface names are
``<prefix><host>`` with a prefix unique to the run (the UAPI socket directory is shared by all
namespaces), so the config files are ``<prefix><host>.conf`` and the model names each host
after that stem: :meth:`Layout.short` maps it back. The hosts' daemons are chosen per host
(``WG_QUICK_USERSPACE_IMPLEMENTATION``: wireguard-go or wgpyd).

Every namespace starts with ``net.ipv4.ip_forward=0`` set explicitly: a new namespace may
inherit the initial namespace's IPv4 settings (``net.core.devconf_inherit_init_net``), and the
scenarios are fresh Linux hosts, where forwarding is off unless a PostUp line turns it on.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from ipaddress import ip_interface
from pathlib import Path
from typing import Final, TypeVar

from tests.net_scenarios import Scenario
from tests.netns.harness import WG_RUN_DIR, HarnessError, Netns, wait_for, wg_dump
from wgpy.net.fixes import ENDPOINT_PLACEHOLDER

VENV_BIN: Final = Path(sys.executable).parent
"""The venv's scripts: ``wgpy`` and ``wgpyd`` (wg-quick finds wgpyd on PATH)."""

UNDERLAY: Final = "172.30.0"
"""The underlay's /24 (one per run's switch namespace, so runs never clash)."""

PING_TRIES: Final = 3
"""A pair is unreachable when this many ``ping -c 2 -W 2`` in a row get no reply."""

T = TypeVar("T")
R = TypeVar("R")


def parallel(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``fn`` over ``items`` in threads (each mostly waits for a subprocess)."""
    todo = list(items)
    if not todo:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(todo))) as pool:
        return list(pool.map(fn, todo))


@dataclass
class Layout:
    """A scenario's config files, written for the underlay, before any namespace exists."""

    scenario: Scenario
    prefix: str
    paths: dict[str, Path]
    underlay: dict[str, str]

    def model_name(self, host: str) -> str:
        return self.prefix + host

    def short(self, model_name: str) -> str:
        """The scenario's name of a host the model named after its config file."""
        if not model_name.startswith(self.prefix):
            raise AssertionError(f"the model names a host {model_name!r} of no config file")
        return model_name[len(self.prefix) :]


def lay_out(scenario: Scenario, directory: Path) -> Layout:
    """Write ``<prefix><host>.conf`` (mode 0600, as wg-quick wants) for every host."""
    prefix = "n" + secrets.token_hex(3)
    longest = max(len(h.name) for h in scenario.hosts)
    assert len(prefix) + longest <= 15, "interface names are at most 15 characters"
    underlay = {h.name: f"{UNDERLAY}.{i + 1}" for i, h in enumerate(scenario.hosts)}
    paths: dict[str, Path] = {}
    for name, text in scenario.configs(underlay).items():
        path = directory / f"{prefix}{name}.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text)
        paths[name] = path
    return Layout(scenario, prefix, paths, underlay)


@dataclass(frozen=True)
class Place:
    """Where an endpoint's pings start: its namespace and its address."""

    ns: Netns
    address: str


@dataclass
class Built:
    layout: Layout
    hosts: dict[str, Netns]
    #: "hub", "gwa/lan" -> where its pings start
    endpoints: dict[str, Place] = field(default_factory=dict)
    #: host -> the daemon wg-quick ran for it
    daemons: dict[str, str] = field(default_factory=dict)
    #: every namespace of the build (switch, hosts, LANs)
    namespaces: list[Netns] = field(default_factory=list)

    def close(self) -> None:
        """Take the build down (for a fresh one of the same layout: same interface names)."""
        for ns in reversed(self.namespaces):
            ns.close(remove_workdir=False)  # the factory removes it (and prints its logs)

    def pairs(self) -> list[tuple[str, str]]:
        """Every ordered pair of endpoints on different hosts."""
        names = list(self.endpoints)
        return [(a, b) for a in names for b in names if a.split("/")[0] != b.split("/")[0]]

    def ping(self, pair: tuple[str, str]) -> bool:
        source, target = self.endpoints[pair[0]], self.endpoints[pair[1]]
        for _ in range(PING_TRIES):
            result = source.ns.run(
                *("ping", "-n", "-q", "-c", "2", "-W", "2", "-i", "0.2"),
                *("-I", source.address, target.address),
                check=False,
                timeout=20,
            )
            if result.returncode == 0:
                return True
        return False

    def ping_all(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], bool]:
        todo = list(pairs)
        return dict(zip(todo, parallel(self.ping, todo), strict=True))

    def run_command(self, command: str) -> None:
        """A fix's ``HOST# command`` line, run in that host's namespace."""
        host, sep, line = command.partition("# ")
        assert sep, f"not a HOST# command: {command!r}"
        argv = shlex.split(line)
        if ENDPOINT_PLACEHOLDER in argv:
            # the fix asks for the peer's outer address, which only the user knows: here, the
            # underlay address of the host whose key follows `peer`
            keys = {public: name for name, (_, public) in self.layout.scenario.keys().items()}
            peer = keys[argv[argv.index("peer") + 1]]
            port = self.layout.scenario.host(peer).listen_port
            argv[argv.index(ENDPOINT_PLACEHOLDER)] = f"{self.layout.underlay[peer]}:{port}"
        self.hosts[self.layout.short(host)].run(*argv)

    def collect(self, host: str, directory: Path) -> Path:
        """``wgpy collect`` in the host's namespace, under the model's name of the host."""
        out = directory / f"{self.layout.model_name(host)}.json"
        self.hosts[host].run(
            str(VENV_BIN / "wgpy"),
            *("collect", "--host", self.layout.model_name(host), "-o", str(out)),
            timeout=60,
        )
        return out


def _lan_address(lan: str, representative: str | None) -> str:
    """The LAN host's address: the model's representative, else the LAN's first free one."""
    gateway = ip_interface(lan)
    if representative is not None:
        return representative
    return str(next(a for a in gateway.network.hosts() if a != gateway.ip))


def bring_up(
    layout: Layout,
    factory: Callable[[], Netns],
    lan_hosts: Mapping[str, str],
    daemons: Mapping[str, str],
) -> Built:
    """Namespaces for the layout's hosts and LANs, each host's interface up by ``wg-quick``
    with ``daemons[host]``; ``lan_hosts`` gives a gateway's LAN host its address (the model's
    representative). Returns once every peer with PersistentKeepalive has a handshake."""
    scenario = layout.scenario
    switch = factory()
    switch.run("ip", "link", "add", "br0", "type", "bridge")
    switch.run("ip", "link", "set", "br0", "up")
    hosts = {h.name: factory() for h in scenario.hosts}
    lans = {h.name: factory() for h in scenario.hosts if h.lan}
    built = Built(layout, hosts, daemons=dict(daemons))
    built.namespaces = [switch, *hosts.values(), *lans.values()]
    for spec in scenario.hosts:
        built.endpoints[spec.name] = Place(hosts[spec.name], spec.address.split("/")[0])
        if spec.lan:
            address = _lan_address(spec.lan, lan_hosts.get(spec.name))
            built.endpoints[f"{spec.name}/lan"] = Place(lans[spec.name], address)

    def host_up(number: int) -> None:
        spec = scenario.hosts[number]
        ns = hosts[spec.name]
        ns.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
        port = f"p{number}"
        switch.run(
            "ip", "link", "add", port, "type", "veth", "peer", "name", "up0", "netns", ns.name
        )
        switch.run("ip", "link", "set", port, "master", "br0", "up")
        ns.run("ip", "addr", "add", f"{layout.underlay[spec.name]}/24", "dev", "up0")
        ns.run("ip", "link", "set", "up0", "up")
        if spec.lan:
            lan = lans[spec.name]
            gateway = ip_interface(spec.lan)
            ns.run(
                "ip",
                "link",
                "add",
                "lan",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                lan.name,
            )
            ns.run("ip", "addr", "add", spec.lan, "dev", "lan")
            ns.run("ip", "link", "set", "lan", "up")
            address = built.endpoints[f"{spec.name}/lan"].address
            lan.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
            lan.run("ip", "addr", "add", f"{address}/{gateway.network.prefixlen}", "dev", "eth0")
            lan.run("ip", "link", "set", "eth0", "up")
            lan.run("ip", "route", "add", "default", "via", str(gateway.ip))
        ifname = layout.model_name(spec.name)
        socket = WG_RUN_DIR / f"{ifname}.sock"
        ns.add_cleanup(lambda: socket.unlink(missing_ok=True))
        env = {
            "WG_QUICK_USERSPACE_IMPLEMENTATION": daemons[spec.name],
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        }
        up = ns.run(
            "wg-quick", "up", str(layout.paths[spec.name]), env=env, check=False, timeout=60
        )
        if up.returncode != 0:
            raise HarnessError(f"wg-quick up {ifname} failed:\n{up.stdout}{up.stderr}")
        if "userspace implementation" not in up.stderr:
            raise HarnessError(f"wg-quick used no userspace daemon for {ifname}:\n{up.stderr}")

    parallel(host_up, range(len(scenario.hosts)))
    _wait_for_keepalive_handshakes(built)
    return built


def _wait_for_keepalive_handshakes(built: Built) -> None:
    """Spokes behind a hub without Endpoints are reachable only once their keepalive has
    reached the hub: wait for each such peer's first handshake."""
    scenario = built.layout.scenario
    keys = scenario.keys()
    waits = [
        (spec.name, keys[peer.host][1])
        for spec in scenario.hosts
        for peer in spec.peers
        if peer.keepalive
    ]

    def handshake(item: tuple[str, str]) -> None:
        host, key = item
        ns, ifname = built.hosts[host], built.layout.model_name(host)

        def done() -> bool:
            peer = wg_dump(ns, ifname).peers.get(key)
            return peer is not None and peer.latest_handshake > 0

        wait_for(done, 20, 0.2, what=f"{host}'s keepalive handshake with {key[:8]}")

    parallel(handshake, waits)
