"""The kernel tests' topology: a host namespace with a tap, the guest behind it, and a tunnel
between a userspace daemon in the namespace (wgpyd or wireguard-go) and the guest kernel's wg0.

    host namespace (Netns)                          guest (Debian's kernel in QEMU)
    TUN  <daemon ifname>  10.100.0.1 fd00:100::1    wg0   10.100.0.2 fd00:100::2
    tap  <lab.tap>        10.99.0.1  fd99::1   ==   eth0  10.99.0.2  fd99::2
         daemon listens on 51820                        wg0 listens on 51821

Each side allows exactly the other's tunnel /32 and /128, so other addresses of the tunnel
subnets are routed into the interface but held by no peer. `KernelLab.reset()` puts both
sides back to this state (no wg0, only these underlay addresses, no forwarding) before every
tunnel, so a failed test leaves nothing behind for the next one.
"""

from __future__ import annotations

import collections
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from tests.kernel.guest import KernelGuest
from tests.netns.harness import (
    InterfaceDump,
    Netns,
    PeerDump,
    WgDaemon,
    genkey,
    genpsk,
    parse_wg_dump,
    pubkey,
    start_wg_daemon,
    unique_ifname,
    wait_for,
    wg,
    wg_dump,
    write_secret,
)
from wgpy.io.uapi_client import wgpy_stats

Family = Literal[4, 6]
Side = Literal["host", "guest"]

HOST_UNDERLAY: Final[dict[Family, str]] = {4: "10.99.0.1", 6: "fd99::1"}
GUEST_UNDERLAY: Final[dict[Family, str]] = {4: "10.99.0.2", 6: "fd99::2"}
UNDERLAY_PREFIX: Final[dict[Family, int]] = {4: 24, 6: 64}
HOST_TUNNEL: Final[dict[Family, str]] = {4: "10.100.0.1", 6: "fd00:100::1"}
GUEST_TUNNEL: Final[dict[Family, str]] = {4: "10.100.0.2", 6: "fd00:100::2"}
TUNNEL_PREFIX: Final[dict[Family, int]] = {4: 24, 6: 64}
HOST_PORT: Final = 51820
GUEST_PORT: Final = 51821
GUEST_IF: Final = "wg0"
FORWARDING: Final[dict[Family, str]] = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}


def host_port(host: str, port: int) -> str:
    """`host:port` as wg writes endpoints (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def q(*words: str) -> str:
    """Shell-quote words for a guest script."""
    return shlex.join(words)


@dataclass
class KernelLab:
    """The host namespace, its tap and the guest, shared by all kernel tests."""

    ns: Netns
    tap: str
    guest: KernelGuest

    def reset(self) -> None:
        """Both sides back to the underlay only (see the module docstring)."""
        self.ns.run("ip", "addr", "flush", "dev", self.tap)
        for family in (4, 6):
            self._forwarding_host(family, False)
        self.ns.run("ip", "link", "set", self.tap, "mtu", "1500", "up")
        address4 = f"{HOST_UNDERLAY[4]}/{UNDERLAY_PREFIX[4]}"
        address6 = f"{HOST_UNDERLAY[6]}/{UNDERLAY_PREFIX[6]}"
        self.ns.run("ip", "addr", "add", address4, "dev", self.tap)
        self.ns.run("ip", "addr", "add", address6, "dev", self.tap, "nodad")
        self.guest.run(
            f"ip link del {GUEST_IF} 2>/dev/null\n"
            "ip addr flush dev eth0\n"
            "sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0\n"
            "ip link set eth0 mtu 1500 up\n"
            f"ip addr add {GUEST_UNDERLAY[4]}/{UNDERLAY_PREFIX[4]} dev eth0\n"
            f"ip addr add {GUEST_UNDERLAY[6]}/{UNDERLAY_PREFIX[6]} dev eth0 nodad\n"
            "dmesg -c >/dev/null\n"
            # the virtio NIC's carrier comes up some time after the link is set up
            "for i in $(seq 100); do [ $(cat /sys/class/net/eth0/carrier) = 1 ] && exit 0;"
            " sleep 0.1; done; echo no carrier on eth0 >&2; exit 1"
        )

    def _forwarding_host(self, family: Family, on: bool) -> None:
        self.ns.run("sysctl", "-qw", f"{FORWARDING[family]}={int(on)}")

    def forwarding(self, family: Family, on: bool = True) -> None:
        """IP forwarding of one family on the host namespace and in the guest.

        (Turning on IPv6 forwarding makes every interface join ff02::2, so the hosts send MLD
        reports into their WireGuard interfaces, where no peer holds ff02::16.)
        """
        self._forwarding_host(family, on)
        self.guest.run(f"sysctl -qw {FORWARDING[family]}={int(on)}")


@dataclass(frozen=True)
class PingResult:
    """iputils ping's exit status (0: answers came) and everything it printed."""

    status: int
    output: str

    def __str__(self) -> str:
        return f"exit {self.status}\n{self.output}"


@dataclass(frozen=True)
class TunnelOptions:
    """How the two sides are configured. A side without the other's endpoint cannot initiate."""

    outer: Family = 4
    host_knows_endpoint: bool = True
    guest_knows_endpoint: bool = True
    host_psk: str | None = None
    guest_psk: str | None = None

    @classmethod
    def with_psk(cls, outer: Family = 4) -> TunnelOptions:
        psk = genpsk()
        return cls(outer=outer, host_psk=psk, guest_psk=psk)


@dataclass
class KernelTunnel:
    lab: KernelLab
    daemon: WgDaemon
    host_public: str
    guest_public: str
    options: TunnelOptions

    @property
    def ns(self) -> Netns:
        return self.lab.ns

    @property
    def guest(self) -> KernelGuest:
        return self.lab.guest

    @property
    def host_if(self) -> str:
        return self.daemon.ifname

    # -- state of each side

    def host_dump(self) -> InterfaceDump:
        return wg_dump(self.ns, self.host_if)

    def guest_dump(self) -> InterfaceDump:
        return parse_wg_dump(self.guest.run(f"wg show {GUEST_IF} dump").stdout, GUEST_IF)

    def host_peer(self) -> PeerDump:
        """The guest as the host daemon sees it."""
        return self.host_dump().peers[self.guest_public]

    def guest_peer(self) -> PeerDump:
        """The host as the guest kernel sees it."""
        return self.guest_dump().peers[self.host_public]

    def drops(self) -> collections.Counter[tuple[str | None, str]]:
        """wgpyd's drop counters, {(peer public key or None, reason): count} (wgpy-stats=1)."""
        stats = wgpy_stats(self.host_if)
        assert stats is not None, f"{self.host_if}: wgpy-stats=1 got no answer (not wgpyd?)"
        entries = cast(list[dict[str, Any]], stats["drops"])
        return collections.Counter({(e["peer"], e["reason"]): int(e["count"]) for e in entries})

    def guest_link_stats(self) -> dict[str, int]:
        """/sys/class/net/wg0/statistics in the guest."""
        out = self.guest.run(
            f"cd /sys/class/net/{GUEST_IF}/statistics && for f in *; do echo $f $(cat $f); done"
        ).stdout
        return {name: int(value) for name, value in (line.split() for line in out.splitlines())}

    def guest_dmesg(self) -> str:
        return self.guest.run("dmesg").stdout

    # -- traffic

    def ping(
        self, side: Side, dest: str, *args: str, count: int = 3, wait: float = 2.0
    ) -> PingResult:
        """iputils ping from one side (`args` go before the destination: "-I", ADDR, ...)."""
        argv = ["ping", "-n", "-c", str(count), "-W", f"{wait:g}", "-i", "0.2", *args, dest]
        timeout = count * (wait + 0.2) + 10
        if side == "host":
            proc = self.ns.run(*argv, check=False, timeout=timeout)
            return PingResult(proc.returncode, proc.stdout + proc.stderr)
        result = self.guest.run(q(*argv) + " 2>&1", timeout=timeout, check=False)
        return PingResult(result.status, result.stdout)

    def handshake(self, from_host: bool = True, family: Family = 4) -> None:
        """Ping from one side until it gets an answer (which needs a handshake)."""

        side: Side = "host" if from_host else "guest"
        dest = GUEST_TUNNEL[family] if from_host else HOST_TUNNEL[family]
        wait_for(
            lambda: self.ping(side, dest, count=1, wait=1.0).status == 0,
            20,
            interval=0.2,
            what=f"a ping from the {side} to be answered",
        )


TunnelFactory = Callable[..., KernelTunnel]
"""The `tunnel_factory` fixture: `(options=None, command=WGPYD) -> KernelTunnel`."""


def _peer_args(
    public_key: str, allowed: str, endpoint: str | None, psk_file: str | None
) -> list[str]:
    argv = ["peer", public_key, "allowed-ips", allowed]
    if endpoint is not None:
        argv += ["endpoint", endpoint]
    if psk_file is not None:
        argv += ["preshared-key", psk_file]
    return argv


def configure_host(
    ns: Netns, daemon: WgDaemon, private_key: str, guest_public: str, options: TunnelOptions
) -> None:
    ifname = daemon.ifname
    key_file = write_secret(ns, f"{ifname}.key", private_key)
    psk_file = None
    if options.host_psk is not None:
        psk_file = str(write_secret(ns, f"{ifname}.psk", options.host_psk))
    endpoint = host_port(GUEST_UNDERLAY[options.outer], GUEST_PORT)
    argv = ["set", ifname, "private-key", str(key_file), "listen-port", str(HOST_PORT)]
    argv += _peer_args(
        guest_public,
        f"{GUEST_TUNNEL[4]}/32,{GUEST_TUNNEL[6]}/128",
        endpoint if options.host_knows_endpoint else None,
        psk_file,
    )
    wg(ns, *argv)
    ns.run("ip", "addr", "add", f"{HOST_TUNNEL[4]}/{TUNNEL_PREFIX[4]}", "dev", ifname)
    ns.run("ip", "addr", "add", f"{HOST_TUNNEL[6]}/{TUNNEL_PREFIX[6]}", "dev", ifname, "nodad")
    ns.run("ip", "link", "set", ifname, "up")


def configure_guest(
    guest: KernelGuest, private_key: str, host_public: str, options: TunnelOptions
) -> None:
    endpoint = host_port(HOST_UNDERLAY[options.outer], HOST_PORT)
    psk_file = "/tmp/wg0.psk" if options.guest_psk is not None else None
    argv = ["wg", "set", GUEST_IF, "private-key", "/tmp/wg0.key", "listen-port", str(GUEST_PORT)]
    argv += _peer_args(
        host_public,
        f"{HOST_TUNNEL[4]}/32,{HOST_TUNNEL[6]}/128",
        endpoint if options.guest_knows_endpoint else None,
        psk_file,
    )
    lines = [
        "set -e",
        "umask 077",
        f"ip link add {GUEST_IF} type wireguard",
        f"echo {q(private_key)} >/tmp/wg0.key",
    ]
    if options.guest_psk is not None:
        lines.append(f"echo {q(options.guest_psk)} >/tmp/wg0.psk")
    lines += [
        q(*argv),
        f"ip addr add {GUEST_TUNNEL[4]}/{TUNNEL_PREFIX[4]} dev {GUEST_IF}",
        f"ip addr add {GUEST_TUNNEL[6]}/{TUNNEL_PREFIX[6]} dev {GUEST_IF} nodad",
        f"ip link set {GUEST_IF} up",
    ]
    guest.run("\n".join(lines))


def start_tunnel(
    lab: KernelLab, command: tuple[str, ...], options: TunnelOptions | None = None
) -> KernelTunnel:
    """Reset the lab, start the daemon `command` in the host namespace and configure both
    sides. The caller stops it with `stop_tunnel`."""
    options = options or TunnelOptions()
    lab.reset()
    daemon = start_wg_daemon(lab.ns, unique_ifname("wgk"), command)
    host_key, guest_key = genkey(), genkey()
    tunnel = KernelTunnel(lab, daemon, pubkey(host_key), pubkey(guest_key), options)
    try:
        configure_guest(lab.guest, guest_key, tunnel.host_public, options)
        configure_host(lab.ns, daemon, host_key, tunnel.guest_public, options)
    except BaseException:
        stop_tunnel(tunnel)
        raise
    return tunnel


def stop_tunnel(tunnel: KernelTunnel) -> None:
    tunnel.daemon.stop()
    tunnel.guest.run(f"ip link del {GUEST_IF} 2>/dev/null || true")
