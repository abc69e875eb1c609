"""wgpyd, the daemon, end to end: real TUN devices in network namespaces, configured by the real
`wg` and `wg-quick`, against itself and against the real wireguard-go.

Covers: pings and `wg show dump` counters in every pairing and both initiator roles, an iperf3
TCP run, roaming after a listen-port change, a private-key change, `wg-quick up`/`down` with
WG_QUICK_USERSPACE_IMPLEMENTATION=wgpyd, the wireguard-go daemon conventions (backgrounding,
exit on link/socket removal and SIGTERM, socket mode, usage, single instance) and the ICMP
destination unreachable that wgpyd (like the kernel) sends and wireguard-go does not.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Literal

import pytest

from tests.netns.harness import (
    WG_RUN_DIR,
    WIREGUARD_GO,
    Netns,
    TwoPeers,
    WgNode,
    genkey,
    ping,
    pubkey,
    start_wg_daemon,
    start_wireguard_go,
    two_peer_topology,
    unique_ifname,
    veth_pair,
    wait_for,
    wg,
    wg_dump,
    write_secret,
)

pytestmark = pytest.mark.netns

WGPYD: Final[tuple[str, ...]] = (sys.executable, "-m", "wgpy.daemon", "-f")
"""wgpyd in the foreground, for the harness (the interface name is appended)."""

VENV_BIN: Final = Path(sys.executable).parent
"""The directory of the venv's interpreter, which also holds the `wgpyd` console script."""

DAEMONS: Final[dict[str, tuple[str, ...]]] = {"wgpyd": WGPYD, "go": WIREGUARD_GO}

# Sizes of WireGuard messages as counted by `wg show` (UDP payload, §5.4 of the behaviour doc).
INITIATION_SIZE: Final = 148
RESPONSE_SIZE: Final = 92
# Data messages are 32 bytes of overhead plus the plaintext padded to a multiple of 16, so the
# handshake messages alone decide a counter's value modulo 16.
DATA_ALIGN: Final = 16


def _wgpyd_script() -> str:
    path = VENV_BIN / "wgpyd"
    if not path.exists():
        pytest.fail(f"{path} does not exist; install wgpy in the venv (scripts/setup.sh)")
    return str(path)


def _topology(
    netns_factory: Callable[[], Netns],
    pair: tuple[str, str],
    *,
    underlay: Literal[4, 6] = 4,
) -> TwoPeers:
    return two_peer_topology(
        netns_factory(),
        netns_factory(),
        command_a=DAEMONS[pair[0]],
        command_b=DAEMONS[pair[1]],
        underlay=underlay,
    )


def _logs(*nodes: WgNode) -> str:
    return "".join(
        f"\n--- {n.ifname} ({' '.join(n.daemon.command)}) log ---\n{n.daemon.log()}" for n in nodes
    )


def _assert_pings(src: WgNode, dst: WgNode, addr: str, count: int = 3) -> None:
    result = ping(src.ns, addr, count=count)
    assert result.returncode == 0 and " 0% packet loss" in result.stdout, (
        f"ping {addr} from {src.ifname} failed:\n{result.stdout}{result.stderr}{_logs(src, dst)}"
    )


def _endpoint_of(node: WgNode, underlay: int, port: int | None = None) -> str:
    host = node.underlay4 if underlay == 4 else f"[{node.underlay6}]"
    return f"{host}:{node.listen_port if port is None else port}"


def _settled_counters(
    a: WgNode, b: WgNode, a_base: tuple[int, int] = (0, 0), timeout: float = 5.0
) -> tuple[int, int]:
    """Wait until A's rx equals B's tx and vice versa (nothing in flight); return A's (rx, tx).

    `a_base` is subtracted from A's (rx, tx) first, for when B's peer entry is newer than A's.
    """
    seen: list[tuple[int, int, int, int]] = []

    def equal() -> tuple[int, int] | None:
        pa = a.dump().peers[b.public_key]
        pb = b.dump().peers[a.public_key]
        seen.append((pa.rx_bytes, pa.tx_bytes, pb.rx_bytes, pb.tx_bytes))
        rx, tx = pa.rx_bytes - a_base[0], pa.tx_bytes - a_base[1]
        if rx == pb.tx_bytes and tx == pb.rx_bytes:
            return rx, tx
        return None

    try:
        return wait_for(equal, timeout, 0.2, "rx/tx counters of both sides to agree")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; (a.rx, a.tx, b.rx, b.tx) seen: {seen[-3:]}") from exc


def _daemon_pids(ns: Netns, ifname: str) -> list[int]:
    """Processes in `ns` running `wgpy.daemon` for `ifname` (zombies excluded)."""
    found = []
    for pid in ns.pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if ifname.encode() in argv and any(b"wgpy" in part for part in argv) and _alive(pid):
            found.append(pid)
    return found


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie nobody reaped yet counts as exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] not in ("Z", "X")


def _link_exists(ns: Netns, ifname: str) -> bool:
    return ns.run("ip", "link", "show", "dev", ifname, check=False).returncode == 0


# ---------------------------------------------------------------------------------------------
# 1. pings and counters, every pairing, both initiators, both underlays


@pytest.mark.parametrize("underlay", [4, 6], ids=["ipv4-underlay", "ipv6-underlay"])
@pytest.mark.parametrize("initiator", ["a", "b"], ids=["a-initiates", "b-initiates"])
@pytest.mark.parametrize(
    "pair", [("wgpyd", "wgpyd"), ("wgpyd", "go"), ("go", "wgpyd")], ids="-".join
)
def test_ping_and_counters(
    netns_factory: Callable[[], Netns],
    pair: tuple[str, str],
    initiator: str,
    underlay: Literal[4, 6],
) -> None:
    topo = _topology(netns_factory, pair, underlay=underlay)
    first, second = (topo.a, topo.b) if initiator == "a" else (topo.b, topo.a)
    for me, other in ((first, second), (second, first)):
        peer = me.dump().peers[other.public_key]
        assert peer.latest_handshake == 0 and peer.rx_bytes == peer.tx_bytes == 0, peer

    # the side that pings first initiates the handshake; then the other side pings back
    for src, dst in ((first, second), (second, first)):
        for addr in (dst.tunnel4, dst.tunnel6):
            _assert_pings(src, dst, addr)

    first_rx, first_tx = _settled_counters(first, second)
    now = time.time()
    for me, other in ((first, second), (second, first)):
        dump = me.dump()
        assert dump.public_key == me.public_key
        assert dump.listen_port == me.listen_port
        peer = dump.peers[other.public_key]
        assert now - 60 < peer.latest_handshake <= now + 1, (me.ifname, peer, now)
        assert peer.rx_bytes > 0 and peer.tx_bytes > 0, peer
        assert peer.endpoint == _endpoint_of(other, underlay), peer
        assert set(peer.allowed_ips) == {f"{other.tunnel4}/32", f"{other.tunnel6}/128"}
    # Exactly one handshake, initiated by `first`: it sent the 148-byte initiation and received
    # the 92-byte response; everything else is 16-aligned data.
    assert (first_tx % DATA_ALIGN, first_rx % DATA_ALIGN) == (
        INITIATION_SIZE % DATA_ALIGN,
        RESPONSE_SIZE % DATA_ALIGN,
    ), f"{first.ifname} was not the only initiator: rx={first_rx} tx={first_tx}"
    # 4 x 3 echo requests/replies each way: at least 148 + 6 x (32 + 96) + 6 x (32 + 112)
    assert first_tx >= INITIATION_SIZE + 6 * 128 + 6 * 144, first_tx
    assert first_rx >= RESPONSE_SIZE + 6 * 128 + 6 * 144, first_rx


# ---------------------------------------------------------------------------------------------
# 2. iperf3


@pytest.mark.parametrize("pair", [("wgpyd", "wgpyd"), ("wgpyd", "go")], ids="-".join)
def test_iperf3_tcp(
    netns_factory: Callable[[], Netns],
    pair: tuple[str, str],
    record_property: Callable[[str, object], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    if shutil.which("iperf3") is None:
        pytest.fail("iperf3 is not installed; run scripts/setup.sh")
    topo = _topology(netns_factory, pair)
    a, b = topo.a, topo.b
    _assert_pings(a, b, b.tunnel4, count=1)  # handshake first

    server = b.ns.popen("iperf3", "-s", "-1", "-B", b.tunnel4, stdout=subprocess.DEVNULL)
    wait_for(
        lambda: ":5201 " in b.ns.run("ss", "-Hltn", "sport", "= :5201").stdout,
        10,
        what="iperf3 server listening",
    )
    client = a.ns.run("iperf3", "-c", b.tunnel4, "-t", "3", "-J", check=False, timeout=40)
    try:
        report = json.loads(client.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"iperf3 printed no JSON:\n{client.stdout}{client.stderr}{_logs(a, b)}")
    assert client.returncode == 0 and "error" not in report, (
        f"iperf3 failed: {report.get('error')}{_logs(a, b)}"
    )
    assert server.wait(10) == 0
    sent = report["end"]["sum_sent"]
    received = report["end"]["sum_received"]
    assert sent["bytes"] > 0 and received["bytes"] > 0, report["end"]
    mbps = received["bits_per_second"] / 1e6
    record_property("throughput_mbit_s", round(mbps, 2))
    with capsys.disabled():
        print(
            f"\n[iperf3 {pair[0]} -> {pair[1]}] {received['bytes']} bytes in "
            f"{received['seconds']:.2f} s: {mbps:.2f} Mbit/s, "
            f"{sent.get('retransmits', '?')} retransmits"
        )


def test_start_line_names_the_batch_path_and_workers(
    netns_factory: Callable[[], Netns],
) -> None:
    """The daemon says which batch path and how many worker threads it runs: what this run's
    environment asks for (CI runs the data-path tests once more with WGPY_PURE=1, and this
    proves that those daemons ran the pure-Python path)."""
    ns = netns_factory()
    daemon = start_wg_daemon(ns, unique_ifname("wgs"), WGPYD)
    pure = os.environ.get("WGPY_PURE") == "1"
    workers = 0 if pure else int(os.environ.get("WGPY_WORKERS", "0"))
    path = "pure-Python batch path: WGPY_PURE=1" if pure else "C batch path: wgpy._batch"
    wanted = f", {path}, "
    suffix = "thread" if workers == 1 else "threads"
    wait_for(lambda: "Device started" in daemon.log(), 10, what="the start lines")
    (line,) = [line for line in daemon.log().splitlines() if "Starting wgpyd version" in line]
    assert wanted in line and line.endswith(f", {workers} worker {suffix}"), line


# ---------------------------------------------------------------------------------------------
# 3. roaming


@pytest.mark.parametrize("pair", [("wgpyd", "go"), ("go", "wgpyd")], ids="-".join)
def test_roaming_after_listen_port_change(
    netns_factory: Callable[[], Netns], pair: tuple[str, str]
) -> None:
    """A (the initiator) changes its listen port; B learns the new one from A's next packets."""
    topo = _topology(netns_factory, pair)
    a, b = topo.a, topo.b
    _assert_pings(a, b, b.tunnel4, count=1)
    assert b.dump().peers[a.public_key].endpoint == _endpoint_of(a, 4)

    new_port = 40123
    wg(a.ns, "set", a.ifname, "listen-port", str(new_port))
    assert wg(a.ns, "show", a.ifname, "listen-port").strip() == str(new_port)
    # the old port is closed, the new one is bound (IPv4 and IPv6)
    sockets = a.ns.run("ss", "-Huan").stdout
    assert f":{new_port} " in sockets and f":{a.listen_port} " not in sockets, sockets

    _assert_pings(a, b, b.tunnel4)
    endpoints = wg(b.ns, "show", b.ifname, "endpoints")
    assert endpoints == f"{a.public_key}\t{_endpoint_of(a, 4, new_port)}\n"
    # and B reaches A on the new port, in both families
    _assert_pings(b, a, a.tunnel4)
    _assert_pings(b, a, a.tunnel6)
    assert b.dump().peers[a.public_key].endpoint == _endpoint_of(a, 4, new_port)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("hub", ["wgpyd", "go"])
def test_replies_leave_from_the_address_the_peer_sent_to(
    netns_factory: Callable[[], Netns], hub: str, family: int
) -> None:
    """Sticky source address: the hub has two addresses on its link and the spoke (real
    wireguard-go) is configured with the second one; the hub's replies must come from that
    address, so the spoke keeps it as the hub's endpoint (routing alone would answer from
    the first address, and the spoke would roam to it)."""
    hub_ns, spoke_ns = netns_factory(), netns_factory()
    hub_link, _ = veth_pair(
        hub_ns, spoke_ns, "10.99.0.1", "10.99.0.2", 24,
        addr6_a="fd99::1", addr6_b="fd99::2",
    )  # fmt: skip
    first, second = ("10.99.0.1", "10.99.0.11") if family == 4 else ("fd99::1", "fd99::11")
    hub_ns.run("ip", "addr", "add", f"{second}/{24 if family == 4 else 64}", "dev", hub_link,
               *(["nodad"] if family == 6 else []))  # fmt: skip
    # the spoke is told the address the hub's routing would NOT answer from
    spoke_address = "10.99.0.2" if family == 4 else "fd99::2"
    route = hub_ns.run("ip", "-o", f"-{family}", "route", "get", spoke_address).stdout.split()
    routed_source = route[route.index("src") + 1]
    target = first if routed_source == second else second
    hub_if, spoke_if = unique_ifname("wgh"), unique_ifname("wgs")
    start_wg_daemon(hub_ns, hub_if, DAEMONS[hub], env={"LOG_LEVEL": "error"})
    start_wg_daemon(spoke_ns, spoke_if, WIREGUARD_GO, env={"LOG_LEVEL": "error"})
    hub_key, spoke_key = genkey(), genkey()
    endpoint = f"{target}:51820" if family == 4 else f"[{target}]:51820"
    hub_secret = str(write_secret(hub_ns, "hub.key", hub_key))
    wg(hub_ns, "set", hub_if, "private-key", hub_secret, "listen-port", "51820",
       "peer", pubkey(spoke_key), "allowed-ips", "10.100.0.2/32")  # fmt: skip
    wg(spoke_ns, "set", spoke_if, "private-key",
       str(write_secret(spoke_ns, "spoke.key", spoke_key)),
       "peer", pubkey(hub_key), "allowed-ips", "10.100.0.1/32", "endpoint", endpoint)  # fmt: skip
    for ns, ifname, address in ((hub_ns, hub_if, "10.100.0.1"), (spoke_ns, spoke_if, "10.100.0.2")):
        ns.run("ip", "addr", "add", f"{address}/24", "dev", ifname)
        ns.run("ip", "link", "set", ifname, "up")
    result = spoke_ns.run("ping", "-c", "3", "-i", "0.2", "-W", "3", "10.100.0.1", check=False)
    assert result.returncode == 0, result.stdout
    seen = wg(spoke_ns, "show", spoke_if, "endpoints").split()[-1]
    assert seen == endpoint, f"{hub} answered from {seen}, the spoke sent to {endpoint}"


# ---------------------------------------------------------------------------------------------
# 4. private-key change


@pytest.mark.parametrize("pair", [("wgpyd", "go"), ("go", "wgpyd")], ids="-".join)
def test_private_key_change(netns_factory: Callable[[], Netns], pair: tuple[str, str]) -> None:
    """A changes its private key; B replaces the peer; A's next packet needs a new handshake."""
    topo = _topology(netns_factory, pair)
    a, b = topo.a, topo.b
    _assert_pings(a, b, b.tunnel4, count=1)
    old_public = a.public_key
    a_base = _settled_counters(a, b)  # A's counters for B go on; B's new peer starts at 0

    new_private = genkey()
    new_public = pubkey(new_private)
    wg(a.ns, "set", a.ifname, "private-key", str(write_secret(a.ns, "new.key", new_private)))
    dump = a.dump()
    assert (dump.private_key, dump.public_key) == (new_private, new_public)
    assert list(dump.peers) == [b.public_key]  # the peer stays

    wg(
        b.ns,
        *("set", b.ifname, "peer", old_public, "remove", "peer", new_public),
        *("allowed-ips", f"{a.tunnel4}/32,{a.tunnel6}/128", "endpoint", _endpoint_of(a, 4)),
    )
    assert list(b.dump().peers) == [new_public]
    a.public_key = new_public

    # A must not keep using the session of its old identity: B dropped that with the old peer.
    _assert_pings(a, b, b.tunnel4)
    _assert_pings(a, b, b.tunnel6)
    _assert_pings(b, a, a.tunnel4)
    _settled_counters(a, b, a_base)
    peer = b.dump().peers[new_public]
    assert peer.latest_handshake > time.time() - 60, peer
    # B's counters for the new peer start at the new handshake, which A initiated.
    assert peer.rx_bytes % DATA_ALIGN == INITIATION_SIZE % DATA_ALIGN, peer
    assert peer.tx_bytes % DATA_ALIGN == RESPONSE_SIZE % DATA_ALIGN, peer


# ---------------------------------------------------------------------------------------------
# 5. wg-quick


def test_wg_quick_up_down_with_wgpyd(netns_factory: Callable[[], Netns]) -> None:
    if Path("/sys/module/wireguard").exists():
        pytest.skip("the wireguard kernel module is loaded, so wg-quick never runs wgpyd")
    if shutil.which("wg-quick") is None:
        pytest.fail("wg-quick is not installed; run scripts/setup.sh")
    _wgpyd_script()  # fails early if the console script is missing
    ns_a, ns_b = netns_factory(), netns_factory()
    veth_pair(ns_a, ns_b, "10.99.0.1", "10.99.0.2", 24)

    # B: wireguard-go configured by wg
    go_if = unique_ifname("wgg")
    start_wireguard_go(ns_b, go_if)
    go_private, a_private = genkey(), genkey()
    wg(
        ns_b,
        *("set", go_if, "private-key", str(write_secret(ns_b, "go.key", go_private))),
        *("listen-port", "51821", "peer", pubkey(a_private)),
        *("allowed-ips", "10.100.0.1/32,fd00:100::1/128", "endpoint", "10.99.0.1:51820"),
    )
    ns_b.run("ip", "addr", "add", "10.100.0.2/24", "dev", go_if)
    ns_b.run("ip", "-6", "addr", "add", "fd00:100::2/64", "dev", go_if, "nodad")
    ns_b.run("ip", "link", "set", go_if, "up")

    # A: wg-quick with wgpyd. Host addresses only, so every route to B is one wg-quick added.
    ifname = unique_ifname("wgq")
    confdir = Path(tempfile.mkdtemp(prefix=f"{ns_a.name}-conf-"))
    ns_a.add_cleanup(lambda: shutil.rmtree(confdir, ignore_errors=True))
    conf = confdir / f"{ifname}.conf"
    conf.touch(mode=0o600)
    conf.write_text(
        "[Interface]\n"
        f"PrivateKey = {a_private}\n"
        "ListenPort = 51820\n"
        "Address = 10.100.0.1/32, fd00:100::1/128\n"
        "\n[Peer]\n"
        f"PublicKey = {pubkey(go_private)}\n"
        "AllowedIPs = 10.100.0.2/32, fd00:100::2/128, 10.200.0.0/16, fd00:200::/64\n"
        "Endpoint = 10.99.0.2:51821\n"
    )
    env = {
        "WG_QUICK_USERSPACE_IMPLEMENTATION": "wgpyd",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    socket_path = WG_RUN_DIR / f"{ifname}.sock"
    ns_a.add_cleanup(lambda: socket_path.unlink(missing_ok=True))
    quick = ("env", "-C", str(confdir), "wg-quick")

    up = ns_a.run(*quick, "up", f"./{conf.name}", env=env, check=False, timeout=60)
    assert up.returncode == 0, f"wg-quick up failed:\n{up.stdout}{up.stderr}"
    assert "Falling back to slow userspace implementation" in up.stderr, up.stderr
    assert f"[#] wgpyd {ifname}" in up.stderr, up.stderr
    pids = _daemon_pids(ns_a, ifname)
    assert len(pids) == 1, f"expected one background wgpyd, found {pids}"
    [daemon_pid] = pids

    addrs = ns_a.run("ip", "-o", "addr", "show", "dev", ifname).stdout
    assert "inet 10.100.0.1/32" in addrs and "inet6 fd00:100::1/128" in addrs, addrs
    link = ns_a.run("ip", "-o", "link", "show", "dev", ifname).stdout
    assert "mtu 1420" in link and ",UP" in link, link
    routes4 = ns_a.run("ip", "-4", "route", "show", "dev", ifname).stdout
    routes6 = ns_a.run("ip", "-6", "route", "show", "dev", ifname).stdout
    for prefix, table in (
        ("10.100.0.2", routes4),
        ("10.200.0.0/16", routes4),
        ("fd00:100::2", routes6),
        ("fd00:200::/64", routes6),
    ):
        assert any(line.split()[0] == prefix for line in table.splitlines()), (prefix, table)

    for addr in ("10.100.0.2", "fd00:100::2"):
        result = ping(ns_a, addr)
        assert result.returncode == 0, f"{result.stdout}{result.stderr}"
    show = wg(ns_a, "show", ifname)
    assert f"interface: {ifname}" in show and "latest handshake:" in show, show
    assert "listening port: 51820" in show, show
    assert wg(ns_a, "show", "interfaces").split().count(ifname) == 1

    down = ns_a.run(*quick, "down", f"./{conf.name}", env=env, check=False, timeout=60)
    assert down.returncode == 0, f"wg-quick down failed:\n{down.stdout}{down.stderr}"
    assert not _link_exists(ns_a, ifname)
    wait_for(lambda: not socket_path.exists(), 5, what=f"wgpyd to remove {socket_path}")
    wait_for(lambda: not _alive(daemon_pid), 5, what=f"wgpyd (pid {daemon_pid}) to exit")


# ---------------------------------------------------------------------------------------------
# 6. daemon conventions


def _start_background(ns: Netns, ifname: str) -> int:
    """`wgpyd IFNAME` as wg-quick runs it: must exit 0 at once, leaving a serving daemon."""
    started = time.monotonic()
    result = ns.run(_wgpyd_script(), ifname, check=False, timeout=20)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, f"wgpyd {ifname}: exit {result.returncode}\n{result.stderr}"
    assert elapsed < 5, f"wgpyd {ifname} took {elapsed:.1f} s to return"
    # wg-quick runs `wg addconf` right away: the socket must already be there and answer
    socket_path = WG_RUN_DIR / f"{ifname}.sock"
    assert socket_path.exists()
    ns.add_cleanup(lambda: socket_path.unlink(missing_ok=True))
    assert wg(ns, "show", ifname, "listen-port").strip().isdigit()
    pids = _daemon_pids(ns, ifname)
    assert len(pids) == 1, f"expected one background wgpyd for {ifname}, found {pids}"
    return pids[0]


def _assert_gone(ns: Netns, ifname: str, pid: int, why: str) -> None:
    socket_path = WG_RUN_DIR / f"{ifname}.sock"
    wait_for(lambda: not _alive(pid), 5, what=f"wgpyd to exit after {why}")
    assert not socket_path.exists(), f"{socket_path} left behind after {why}"
    assert not _link_exists(ns, ifname), f"{ifname} still exists after {why}"


def test_daemon_background_and_exit_conditions(netns_factory: Callable[[], Netns]) -> None:
    ns = netns_factory()

    ifname = unique_ifname("wgd")
    pid = _start_background(ns, ifname)
    mode = (WG_RUN_DIR / f"{ifname}.sock").stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.filemode(mode) == "srwx------", stat.filemode(mode)
    assert _link_exists(ns, ifname)
    ns.run("ip", "link", "del", "dev", ifname)
    _assert_gone(ns, ifname, pid, "`ip link del`")

    ifname = unique_ifname("wgd")
    pid = _start_background(ns, ifname)
    (WG_RUN_DIR / f"{ifname}.sock").unlink()
    _assert_gone(ns, ifname, pid, "deleting the socket file")

    ifname = unique_ifname("wgd")
    pid = _start_background(ns, ifname)
    os.kill(pid, signal.SIGTERM)
    _assert_gone(ns, ifname, pid, "SIGTERM")


def test_daemon_parent_returns_once_the_child_serves(netns_factory: Callable[[], Netns]) -> None:
    """The parent waits for the background copy's readiness report: when `wgpyd IFNAME`
    returns, the child has already logged "Device started" (it reports right after), and a
    child that dies during startup makes the parent exit 1 instead of 0."""
    ns = netns_factory()
    out_path = ns.workdir / "parent.out"

    def start(ifname: str, env: str) -> int:
        # with LOG_LEVEL set the child keeps the parent's stdout (as wireguard-go's does), so
        # the output goes to a file rather than a pipe that would stay open
        script = f"{env} {_wgpyd_script()} {ifname} >{out_path} 2>&1"
        return ns.run("sh", "-c", script, check=False, timeout=40).returncode

    ifname = unique_ifname("wgd")
    log_path = ns.workdir / "ready.log"
    assert start(ifname, f"LOG_LEVEL=verbose WGPY_LOG_FILE={log_path}") == 0, out_path.read_text()
    ns.add_cleanup(lambda: (WG_RUN_DIR / f"{ifname}.sock").unlink(missing_ok=True))
    assert "Device started" in log_path.read_text(), log_path.read_text()
    (pid,) = _daemon_pids(ns, ifname)
    os.kill(pid, signal.SIGTERM)
    _assert_gone(ns, ifname, pid, "SIGTERM")

    # the JSON event log is opened by the child only: a directory makes it fail at startup,
    # and the child tells the parent why (a child that dies without a word: the parent says
    # "exited during startup", tests/unit/test_daemon_readiness.py)
    ifname = unique_ifname("wgd")
    env = f"LOG_LEVEL=verbose WGPY_LOG_FORMAT=json WGPY_LOG_FILE={ns.workdir}"
    assert start(ifname, env) == 1, out_path.read_text()
    said = out_path.read_text()
    assert said.count(f"cannot open the log file {ns.workdir}: Is a directory") == 1, said
    wait_for(lambda: not _daemon_pids(ns, ifname), 5, what="the failed child to be gone")
    assert not (WG_RUN_DIR / f"{ifname}.sock").exists()
    wait_for(lambda: not _link_exists(ns, ifname), 5, what="the TUN of the failed child to go")


def test_daemon_second_instance_fails(netns_factory: Callable[[], Netns]) -> None:
    ns, other_ns = netns_factory(), netns_factory()
    ifname = unique_ifname("wgd")
    pid = _start_background(ns, ifname)
    socket_path = WG_RUN_DIR / f"{ifname}.sock"
    inode = socket_path.stat().st_ino

    # same namespace: the TUN is taken; another namespace: the socket is (the directory is shared)
    for where, argv in (
        (ns, (_wgpyd_script(), ifname)),
        (ns, (_wgpyd_script(), "-f", ifname)),
        (other_ns, (_wgpyd_script(), ifname)),
        (other_ns, (_wgpyd_script(), "--foreground", ifname)),
    ):
        result = where.run(*argv, check=False, timeout=20)
        assert result.returncode == 1, (argv, result)
        assert not _link_exists(other_ns, ifname), f"{argv} left a TUN behind in {other_ns.name}"
        # the first one is undisturbed
        assert _alive(pid) and socket_path.stat().st_ino == inode
        assert wg(ns, "show", ifname, "listen-port").strip().isdigit()
    assert _daemon_pids(ns, ifname) == [pid]


@pytest.mark.parametrize(
    "args",
    [(), ("-f",), ("--foreground",), ("A", "B"), ("-f", "A", "B"), ("--bogus",)],
    ids=["none", "only-f", "only-foreground", "two-names", "f-two-names", "bogus-option"],
)
def test_daemon_bad_usage(netns_factory: Callable[[], Netns], args: Sequence[str]) -> None:
    ns = netns_factory()
    # names unique to this run: the socket directory is the machine's
    names = {"A": unique_ifname("wgu"), "B": unique_ifname("wgu")}
    args = [names.get(arg, arg) for arg in args]
    result = ns.run(_wgpyd_script(), *args, check=False, timeout=20)
    assert result.returncode == 1, result
    usage = result.stderr.splitlines()
    assert usage and usage[0] == "Usage: wgpyd [-f/--foreground] INTERFACE-NAME", result
    assert ns.run("ip", "-o", "link", "show").stdout.count("\n") == 1  # only lo
    assert not any((WG_RUN_DIR / f"{name}.sock").exists() for name in names.values())


def _listener(ns: Netns, port: int) -> None:
    """A TCP listener on 127.0.0.1:`port` inside `ns` (until the namespace closes)."""
    code = (
        "import socket, sys, time\n"
        "s = socket.socket()\n"
        f"s.bind(('127.0.0.1', {port}))\n"
        "s.listen()\n"
        "print('listening', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = ns.popen(sys.executable, "-c", code, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"listening"


@pytest.mark.parametrize("foreground", [False, True], ids=["background", "foreground"])
def test_daemon_metrics_port_taken_fails(
    netns_factory: Callable[[], Netns], foreground: bool
) -> None:
    """A metrics endpoint that cannot listen is an error (exit 1, said on stderr), not a
    daemon silently running without metrics; nothing is left behind. The port is taken in the
    daemon's own network namespace, where the endpoint lives."""
    ns = netns_factory()
    port = 9586  # this namespace's own port space
    _listener(ns, port)
    ifname = unique_ifname("wgd")
    argv = [_wgpyd_script(), *(["-f"] if foreground else []), ifname]
    result = ns.run(*argv, check=False, timeout=20, env={"WGPY_METRICS": f"127.0.0.1:{port}"})
    assert result.returncode == 1, result
    assert f"metrics endpoint 127.0.0.1:{port}" in result.stderr, result
    assert "Address already in use" in result.stderr, result
    assert not (WG_RUN_DIR / f"{ifname}.sock").exists()
    assert not _link_exists(ns, ifname)
    assert not _daemon_pids(ns, ifname)

    # a free port: the daemon starts and serves /metrics there, in its namespace
    ifname = unique_ifname("wgd")
    result = ns.run(_wgpyd_script(), ifname, check=False, timeout=20,
                    env={"WGPY_METRICS": f"127.0.0.1:{port + 1}"})  # fmt: skip
    assert result.returncode == 0, result
    ns.add_cleanup(lambda: (WG_RUN_DIR / f"{ifname}.sock").unlink(missing_ok=True))
    url = f"http://127.0.0.1:{port + 1}/metrics"
    fetch = f"import urllib.request; print(urllib.request.urlopen({url!r}).read().decode())"
    scraped = ns.run(sys.executable, "-c", fetch, timeout=20).stdout
    assert "wireguard_sent_bytes_total" in scraped, scraped


def test_daemon_is_found_by_its_name(netns_factory: Callable[[], Netns]) -> None:
    """`pgrep -x wgpyd` (comm) and `pidof wgpyd` (argv[0]) find the background daemon."""
    ns = netns_factory()
    ifname = unique_ifname("wgd")
    pid = _start_background(ns, ifname)
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "wgpyd"
    pgrep = subprocess.run(["pgrep", "-x", "wgpyd"], capture_output=True, text=True, check=False)
    assert str(pid) in pgrep.stdout.split(), pgrep
    pidof = subprocess.run(["pidof", "wgpyd"], capture_output=True, text=True, check=False)
    assert str(pid) in pidof.stdout.split(), pidof
    # and it still runs from the same installation as the caller (its venv's site-packages)
    assert Path(f"/proc/{pid}/exe").resolve() == Path(sys.executable).resolve()
    os.kill(pid, signal.SIGTERM)
    _assert_gone(ns, ifname, pid, "SIGTERM")


@pytest.mark.parametrize(
    "env",
    [
        "",
        "LOG_LEVEL=verbose WGPY_LOG_FILE={log}",
        "LOG_LEVEL=verbose WGPY_LOG_FORMAT=json WGPY_LOG_FILE={log}",
    ],
    ids=["no-log", "log-file", "json-log-file"],
)
def test_daemon_does_not_hold_the_callers_output(
    netns_factory: Callable[[], Netns], env: str
) -> None:
    """`wgpyd IF | cat` returns as soon as the parent does when the background copy does not
    log to stdout (it logs to a file, or does not log): it must not keep the pipe open."""
    ns = netns_factory()
    ifname = unique_ifname("wgd")
    log_path = ns.workdir / f"{ifname}.log"
    script = f"{env.format(log=log_path)} {_wgpyd_script()} {ifname} 2>&1 | cat"
    started = time.monotonic()
    result = ns.run("sh", "-c", script, check=False, timeout=20)
    elapsed = time.monotonic() - started
    ns.add_cleanup(lambda: (WG_RUN_DIR / f"{ifname}.sock").unlink(missing_ok=True))
    assert result.returncode == 0, result
    assert elapsed < 5, f"`wgpyd {ifname} | cat` took {elapsed:.1f} s"
    (pid,) = _daemon_pids(ns, ifname)
    if "json" in env:  # the event log, opened at startup (no events yet)
        assert log_path.exists()
    elif "LOG_LEVEL" in env:  # the text log went to the file instead
        assert "Device started" in log_path.read_text()
    os.kill(pid, signal.SIGTERM)
    _assert_gone(ns, ifname, pid, "SIGTERM")


# ---------------------------------------------------------------------------------------------
# 7. ICMP destination unreachable


def test_icmp_unreachable_when_no_peer_has_destination(
    netns_factory: Callable[[], Netns],
) -> None:
    """10.100.0.3 / fd00:100::3 are routed into the interfaces but held by no peer: wgpyd (A)
    answers ICMP destination unreachable like the kernel does; wireguard-go (B) stays silent."""
    topo = _topology(netns_factory, ("wgpyd", "go"))
    a, b = topo.a, topo.b
    _assert_pings(a, b, b.tunnel4, count=1)
    before = a.dump().peers[b.public_key].tx_bytes

    v4 = ping(a.ns, "10.100.0.3", count=1, wait=2)
    assert v4.returncode != 0, v4
    assert "Destination Host Unreachable" in v4.stdout, v4.stdout
    assert "1 packets transmitted, 0 received, +1 errors" in v4.stdout, v4.stdout
    v6 = ping(a.ns, "fd00:100::3", count=1, wait=2)
    assert v6.returncode != 0, v6
    assert "Destination unreachable: Address unreachable" in v6.stdout, v6.stdout
    assert "1 packets transmitted, 0 received, +1 errors" in v6.stdout, v6.stdout
    # nothing went to the one peer there is
    assert a.dump().peers[b.public_key].tx_bytes == before

    for addr in ("10.100.0.3", "fd00:100::3"):
        silent = ping(b.ns, addr, count=1, wait=1)
        assert silent.returncode != 0, silent
        assert "nreachable" not in silent.stdout and "errors" not in silent.stdout, silent.stdout
        assert "1 packets transmitted, 0 received" in silent.stdout, silent.stdout


def test_wg_quick_full_tunnel_uses_fwmark_and_survives_link_down_up(
    netns_factory: Callable[[], Netns],
) -> None:
    """AllowedIPs = 0.0.0.0/0: wg-quick sets a fwmark and policy rules; wgpyd must put that
    mark on its UDP sockets, or its own datagrams would be routed back into the tunnel. Then
    `ip link set down/up` clears the sessions and a new handshake follows (as wireguard-go)."""
    if Path("/sys/module/wireguard").exists():
        pytest.skip("the wireguard kernel module is loaded, so wg-quick never runs wgpyd")
    _wgpyd_script()
    ns_a, ns_b = netns_factory(), netns_factory()
    veth_a, _ = veth_pair(ns_a, ns_b, "10.99.0.1", "10.99.0.2", 24)
    # A reaches B's endpoint only through its default route, the one wg-quick overrides: without
    # the fwmark on wgpyd's sockets, its datagrams would be routed into the tunnel itself.
    ns_a.run("ip", "route", "del", "10.99.0.0/24", "dev", veth_a)
    ns_a.run("ip", "route", "add", "default", "dev", veth_a)
    go_if = unique_ifname("wgg")
    start_wireguard_go(ns_b, go_if)
    go_private, a_private = genkey(), genkey()
    wg(
        ns_b,
        *("set", go_if, "private-key", str(write_secret(ns_b, "go.key", go_private))),
        *("listen-port", "51821", "peer", pubkey(a_private), "allowed-ips", "10.100.0.1/32"),
    )
    ns_b.run("ip", "addr", "add", "10.100.0.2/24", "dev", go_if)
    ns_b.run("ip", "link", "set", go_if, "up")
    ifname = unique_ifname("wgf")
    confdir = Path(tempfile.mkdtemp(prefix=f"{ns_a.name}-conf-"))
    ns_a.add_cleanup(lambda: shutil.rmtree(confdir, ignore_errors=True))
    conf = confdir / f"{ifname}.conf"
    conf.write_text(
        f"[Interface]\nPrivateKey = {a_private}\nAddress = 10.100.0.1/24\n\n[Peer]\n"
        f"PublicKey = {pubkey(go_private)}\nAllowedIPs = 0.0.0.0/0\nEndpoint = 10.99.0.2:51821\n"
    )
    env = {
        "WG_QUICK_USERSPACE_IMPLEMENTATION": "wgpyd",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    socket_path = WG_RUN_DIR / f"{ifname}.sock"
    ns_a.add_cleanup(lambda: socket_path.unlink(missing_ok=True))
    up = ns_a.run("wg-quick", "up", str(conf), env=env, check=False, timeout=60)
    assert up.returncode == 0, f"wg-quick up failed:\n{up.stdout}{up.stderr}"
    fwmark = wg(ns_a, "show", ifname, "fwmark").strip()
    assert fwmark not in ("", "off"), fwmark
    result = ping(ns_a, "10.100.0.2")
    assert result.returncode == 0, result.stdout
    first = wg_dump(ns_a, ifname).peers[pubkey(go_private)].latest_handshake
    assert first > 0
    ns_a.run("ip", "link", "set", ifname, "down")
    time.sleep(1.2)
    ns_a.run("ip", "link", "set", ifname, "up")
    ns_a.run(
        "ip", "-4", "route", "replace", "0.0.0.0/0", "dev", ifname, "table", str(int(fwmark, 0))
    )
    time.sleep(1.2)  # a new handshake needs the later second of TAI64N
    result = ping(ns_a, "10.100.0.2")
    assert result.returncode == 0, result.stdout
    down = ns_a.run("wg-quick", "down", str(conf), env=env, check=False, timeout=60)
    assert down.returncode == 0, f"wg-quick down failed:\n{down.stdout}{down.stderr}"
    wait_for(lambda: not socket_path.exists(), 5, what=f"wgpyd to remove {socket_path}")
