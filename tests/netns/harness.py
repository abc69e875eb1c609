"""Helpers for tests that need real network namespaces, veth pairs, TUN devices and the real
`wg` / `wireguard-go` binaries.

Everything here shells out to iproute2 and wireguard-tools; nothing touches the host's own
network configuration. Namespaces are named ``wgpyt-<tag><random>`` so that parallel runs and
left-overs of killed runs never clash (``WGPY_NETNS_TAG`` adds a run tag, which `.ci/run` uses
to clean up after itself). The UAPI socket directory `/var/run/wireguard` is shared by all
namespaces, so WireGuard interface names must be unique per run: use `unique_ifname`.

Typical use (see `conftest.py` for the fixtures)::

    a, b = netns_factory(), netns_factory()
    topo = two_peer_topology(a, b)           # two wireguard-go peers, configured by `wg`
    a.run("ping", "-c", "1", topo.b.tunnel4)
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Literal, TypeVar

import pytest

NETNS_PREFIX: Final = "wgpyt-"
"""Every namespace created by this harness starts with this."""

WG_RUN_DIR: Final = Path("/var/run/wireguard")
"""Where userspace WireGuard daemons put their UAPI sockets (shared by all namespaces)."""

WIREGUARD_GO: Final[tuple[str, ...]] = ("wireguard-go", "-f")
"""Default daemon command; the interface name is appended. wgpyd takes the same arguments."""

REQUIRED_BINARIES: Final = ("ip", "wg", "wireguard-go", "ping")

DEFAULT_TIMEOUT: Final = 30.0

T = TypeVar("T")


class HarnessError(RuntimeError):
    """A harness operation failed (command error, daemon did not start, ...)."""


# ---------------------------------------------------------------------------------------------
# prerequisites


def _probe_netns() -> str | None:
    """Create and delete a throwaway namespace; return an error text or None."""
    name = f"{NETNS_PREFIX}probe-{secrets.token_hex(3)}"
    try:
        add = subprocess.run(
            ["ip", "netns", "add", name], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns add` could not run: {exc}"
    if add.returncode != 0:
        return f"`ip netns add` failed: {add.stderr.strip() or add.returncode}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)
    return None


@functools.cache
def missing_prerequisites() -> tuple[str, ...]:
    """What is missing for netns tests on this machine (empty when everything is there)."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append(f"not root (euid {os.geteuid()}); run the tests as root")
    missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
    if missing:
        problems.append(f"binaries not in PATH: {', '.join(missing)}")
    if not Path("/dev/net/tun").exists():
        problems.append("/dev/net/tun does not exist")
    if not problems:
        err = _probe_netns()
        if err:
            problems.append(err)
    return tuple(problems)


def require_netns() -> None:
    """Fail the calling test loudly if netns tests cannot run here.

    With ``WGPY_SKIP_NETNS=1`` in the environment the test is skipped instead, with the reason
    (visible with ``pytest -ra``). Never skips silently.
    """
    problems = missing_prerequisites()
    if not problems:
        return
    text = "; ".join(problems)
    if os.environ.get("WGPY_SKIP_NETNS") == "1":
        pytest.skip(f"netns test skipped (WGPY_SKIP_NETNS=1): {text}")
    pytest.fail(
        "netns tests cannot run: "
        + text
        + ".\nInstall with `sudo bash scripts/setup.sh` and run as root, "
        "or set WGPY_SKIP_NETNS=1 to skip these tests explicitly.",
        pytrace=False,
    )


# ---------------------------------------------------------------------------------------------
# small utilities


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll `predicate` until it returns a truthy value, and return that value.

    Raises TimeoutError naming `what` after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def unique_ifname(prefix: str = "wgt") -> str:
    """An interface name unique to this run, at most 15 characters (IFNAMSIZ - 1).

    Unique names matter because `/var/run/wireguard/IFNAME.sock` is shared by all namespaces.
    """
    room = 15 - len(prefix)
    if room < 4:
        raise ValueError(f"prefix {prefix!r} leaves fewer than 4 random characters")
    name = prefix + secrets.token_hex(4)[: min(room, 8)]
    assert len(name) <= 15
    return name


def _run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else {**os.environ, **env},
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"timed out after {timeout:g}s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        raise HarnessError(
            f"command failed with exit {proc.returncode}: {' '.join(argv)}\n"
            f"stdout: {proc.stdout.strip()}\nstderr: {proc.stderr.strip()}"
        )
    return proc


def genkey() -> str:
    """A new private key from the real `wg genkey` (base64)."""
    return _run(["wg", "genkey"]).stdout.strip()


def pubkey(private_key: str) -> str:
    """The public key of `private_key`, from the real `wg pubkey`."""
    return _run(["wg", "pubkey"], input=private_key + "\n").stdout.strip()


def genpsk() -> str:
    """A new preshared key from the real `wg genpsk`."""
    return _run(["wg", "genpsk"]).stdout.strip()


# ---------------------------------------------------------------------------------------------
# namespaces


class Netns:
    """A uniquely named network namespace with `lo` up; a context manager.

    `close()` runs registered cleanups (last first), kills every process started with `popen`
    and any other process still inside the namespace, then deletes the namespace (which also
    deletes its veth ends and TUN devices).
    """

    def __init__(self, tag: str | None = None) -> None:
        if tag is None:
            tag = os.environ.get("WGPY_NETNS_TAG", "")
        self.name: str = f"{NETNS_PREFIX}{tag}{secrets.token_hex(3)}"
        self._procs: list[subprocess.Popen[bytes]] = []
        self._cleanups: list[Callable[[], object]] = []
        self._workdir: Path | None = None
        self.closed = False
        _run(["ip", "netns", "add", self.name])
        try:
            self.run("ip", "link", "set", "lo", "up")
        except BaseException:
            _run(["ip", "netns", "del", self.name], check=False)
            raise
        _open_namespaces.append(self)

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def __enter__(self) -> Netns:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def workdir(self) -> Path:
        """A private temporary directory for this namespace (logs, key files); removed on close
        unless WGPY_KEEP_LOGS=1."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        return self._workdir

    def remove_workdir(self) -> None:
        """Delete the workdir, unless WGPY_KEEP_LOGS=1."""
        if self._workdir is not None and os.environ.get("WGPY_KEEP_LOGS") != "1":
            shutil.rmtree(self._workdir, ignore_errors=True)

    def log_files(self) -> list[Path]:
        """Log files of daemons started in this namespace (empty if none)."""
        if self._workdir is None:
            return []
        return sorted(self._workdir.glob("*.log"))

    def argv(self, *argv: str) -> list[str]:
        """The command line that runs `argv` inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace and capture its output (text).

        Raises HarnessError if `check` and it exits non-zero, or if it times out.
        """
        return _run(self.argv(*argv), check=check, timeout=timeout, input=input, env=env)

    def popen(
        self,
        *argv: str,
        stdout: int | IO[bytes] | None = subprocess.DEVNULL,
        stderr: int | IO[bytes] | None = subprocess.STDOUT,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a background process inside the namespace, in its own process group.

        It is killed by `close()` (or earlier with `kill_process`).
        """
        proc = subprocess.Popen(
            self.argv(*argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=None if env is None else {**os.environ, **env},
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    def add_cleanup(self, fn: Callable[[], object]) -> None:
        """Run `fn` at `close()`, before processes are killed (last added runs first)."""
        self._cleanups.append(fn)

    def pids(self) -> list[int]:
        """PIDs of all processes inside the namespace."""
        out = _run(["ip", "netns", "pids", self.name], check=False).stdout
        return [int(p) for p in out.split()]

    def close(self, *, remove_workdir: bool = True) -> None:
        """Stop everything in the namespace and delete it.

        The workdir (daemon logs) is removed too, unless `remove_workdir` is false or
        WGPY_KEEP_LOGS=1; the caller then removes it with `remove_workdir()`.
        """
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ValueError):
            _open_namespaces.remove(self)
        errors: list[BaseException] = []
        while self._cleanups:
            try:
                self._cleanups.pop()()
            except Exception as exc:
                errors.append(exc)
        for proc in reversed(self._procs):
            kill_process(proc)
        self._procs.clear()
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _run(["ip", "netns", "del", self.name], check=False)
        if remove_workdir:
            self.remove_workdir()
        if errors:
            raise HarnessError(f"cleanup of {self.name} failed: {errors!r}") from errors[0]


_open_namespaces: list[Netns] = []


@atexit.register
def _close_forgotten_namespaces() -> None:
    """Safety net: close namespaces a test forgot to close, when the interpreter exits."""
    for ns in reversed(_open_namespaces[:]):
        with contextlib.suppress(Exception):
            ns.close()


def kill_process(proc: subprocess.Popen[bytes], grace: float = 3.0) -> int:
    """SIGTERM the process group of `proc`, SIGKILL after `grace` seconds; return its status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace)
    else:
        # the leader is gone; make sure nothing else of its group survives
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


def veth_pair(
    ns_a: Netns,
    ns_b: Netns,
    addr_a: str,
    addr_b: str,
    prefix_len: int = 24,
    *,
    addr6_a: str | None = None,
    addr6_b: str | None = None,
    prefix6_len: int = 64,
) -> tuple[str, str]:
    """Join two namespaces with a veth pair, address both ends and bring them up.

    IPv6 addresses (optional) are added with `nodad` so they are usable at once.
    Returns the interface names (in `ns_a`, in `ns_b`).
    """
    tag = secrets.token_hex(3)
    if_a, if_b = f"vw{tag}a", f"vw{tag}b"
    link_add = ["ip", "-n", ns_a.name, "link", "add", if_a, "type", "veth"]
    _run([*link_add, "peer", "name", if_b, "netns", ns_b.name])
    for ns, ifname, addr, addr6 in ((ns_a, if_a, addr_a, addr6_a), (ns_b, if_b, addr_b, addr6_b)):
        ns.run("ip", "addr", "add", f"{addr}/{prefix_len}", "dev", ifname)
        if addr6 is not None:
            ns.run("ip", "-6", "addr", "add", f"{addr6}/{prefix6_len}", "dev", ifname, "nodad")
        ns.run("ip", "link", "set", ifname, "up")
    return if_a, if_b


# ---------------------------------------------------------------------------------------------
# WireGuard daemons and the real `wg`


def wg(ns: Netns, *args: str, input: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Run the real `wg` inside `ns` and return its stdout (raises HarnessError on failure)."""
    return ns.run("wg", *args, input=input, timeout=timeout).stdout


@dataclass
class WgDaemon:
    """A userspace WireGuard daemon (wireguard-go or wgpyd) running in the foreground inside a
    namespace."""

    ns: Netns
    ifname: str
    command: tuple[str, ...]
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def socket_path(self) -> Path:
        return WG_RUN_DIR / f"{self.ifname}.sock"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        """Everything the daemon printed so far (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, grace: float = 5.0) -> int | None:
        """Stop the daemon (SIGTERM, then SIGKILL) and remove a socket it left behind.

        Returns its exit status (negative: killed by that signal).
        """
        status = kill_process(self.proc, grace)
        # a daemon that was killed cannot unlink its socket; the name is ours alone
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        return status


def start_wg_daemon(
    ns: Netns,
    ifname: str,
    command: Sequence[str] = WIREGUARD_GO,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> WgDaemon:
    """Start `command + [ifname]` in the background inside `ns` with LOG_LEVEL=verbose and its
    output captured to a file; wait until its UAPI socket exists.

    `command` must keep the daemon in the foreground (``wireguard-go -f``, ``wgpyd -f``).
    The daemon is stopped when `ns` is closed.
    """
    if len(ifname) > 15:
        raise ValueError(f"interface name {ifname!r} is longer than 15 characters")
    log_path = ns.workdir / f"{ifname}.log"
    socket_path = WG_RUN_DIR / f"{ifname}.sock"
    if socket_path.exists():
        raise HarnessError(f"{socket_path} already exists; use unique_ifname()")
    with log_path.open("wb") as log_file:
        proc = ns.popen(
            *command,
            ifname,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={"LOG_LEVEL": "verbose", **(env or {})},
        )
    daemon = WgDaemon(ns=ns, ifname=ifname, command=tuple(command), proc=proc, log_path=log_path)
    ns.add_cleanup(daemon.stop)

    def ready() -> bool:
        if not daemon.alive:
            raise HarnessError(
                f"{' '.join(command)} {ifname} exited with {proc.returncode} before creating "
                f"{socket_path}; its output:\n{daemon.log()}"
            )
        return socket_path.exists()

    try:
        wait_for(ready, timeout, what=f"{socket_path} from {' '.join(command)}")
    except TimeoutError as exc:
        daemon.stop()
        raise HarnessError(f"{exc}; daemon output:\n{daemon.log()}") from exc
    return daemon


def start_wireguard_go(
    ns: Netns, ifname: str, *, env: Mapping[str, str] | None = None, timeout: float = 10.0
) -> WgDaemon:
    """Start the real ``wireguard-go -f IFNAME`` inside `ns` (see `start_wg_daemon`)."""
    return start_wg_daemon(ns, ifname, WIREGUARD_GO, env=env, timeout=timeout)


@dataclass(frozen=True)
class PeerDump:
    """One peer line of `wg show IF dump`."""

    public_key: str
    preshared_key: str | None
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: int
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int | None


@dataclass(frozen=True)
class InterfaceDump:
    """`wg show IF dump`, parsed."""

    private_key: str | None
    public_key: str | None
    listen_port: int
    fwmark: int | None
    peers: dict[str, PeerDump]


def _none_if(value: str, *nones: str) -> str | None:
    return None if value in nones else value


def wg_dump(ns: Netns, ifname: str) -> InterfaceDump:
    """Run `wg show IFNAME dump` inside `ns` and parse it."""
    return parse_wg_dump(wg(ns, "show", ifname, "dump"), ifname)


def parse_wg_dump(text: str, ifname: str) -> InterfaceDump:
    """Parse the output of `wg show IFNAME dump` (run wherever)."""
    lines = text.splitlines()
    if not lines:
        raise HarnessError(f"`wg show {ifname} dump` printed nothing")
    priv, pub, port, fwmark = lines[0].split("\t")
    peers: dict[str, PeerDump] = {}
    for line in lines[1:]:
        key, psk, endpoint, allowed, handshake, rx, tx, keepalive = line.split("\t")
        peers[key] = PeerDump(
            public_key=key,
            preshared_key=_none_if(psk, "(none)"),
            endpoint=_none_if(endpoint, "(none)"),
            allowed_ips=tuple(a for a in allowed.split(",") if a and a != "(none)"),
            latest_handshake=int(handshake),
            rx_bytes=int(rx),
            tx_bytes=int(tx),
            persistent_keepalive=None if keepalive == "off" else int(keepalive),
        )
    return InterfaceDump(
        private_key=_none_if(priv, "(none)"),
        public_key=_none_if(pub, "(none)"),
        listen_port=int(port),
        fwmark=None if fwmark == "off" else int(fwmark, 0),
        peers=peers,
    )


# ---------------------------------------------------------------------------------------------
# a ready-made topology: two peers over a veth pair


@dataclass
class WgNode:
    """One side of `two_peer_topology`."""

    ns: Netns
    ifname: str
    daemon: WgDaemon
    private_key: str
    public_key: str
    listen_port: int
    underlay4: str
    underlay6: str
    tunnel4: str
    tunnel6: str
    veth: str

    def dump(self) -> InterfaceDump:
        return wg_dump(self.ns, self.ifname)


@dataclass
class TwoPeers:
    a: WgNode
    b: WgNode
    psk: str | None = None


def write_secret(ns: Netns, name: str, value: str) -> Path:
    """Write a key to a mode-0600 file in the namespace's workdir (for `wg set ... FILE`)."""
    path = ns.workdir / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return path


def two_peer_topology(
    ns_a: Netns,
    ns_b: Netns,
    *,
    command_a: Sequence[str] = WIREGUARD_GO,
    command_b: Sequence[str] = WIREGUARD_GO,
    underlay: Literal[4, 6] = 4,
    use_psk: bool = False,
    ports: tuple[int, int] = (51820, 51821),
) -> TwoPeers:
    """Two WireGuard peers A and B, each a daemon in its own namespace, configured with `wg`.

    Underlay (veth): A 10.99.0.1/24 + fd99::1/64, B 10.99.0.2/24 + fd99::2/64; endpoints use
    the IPv4 or IPv6 underlay (`underlay`). Tunnel: A 10.100.0.1/24 + fd00:100::1/64, B .2 / ::2,
    each peer allowed exactly the other's /32 and /128, so other addresses of the tunnel
    subnets are routed into the interface but held by no peer.
    `command_a` / `command_b` choose the daemon (default wireguard-go) on each side.
    """
    veth_a, veth_b = veth_pair(
        ns_a, ns_b, "10.99.0.1", "10.99.0.2", 24, addr6_a="fd99::1", addr6_b="fd99::2"
    )
    psk = genpsk() if use_psk else None
    specs = (
        (ns_a, command_a, ports[0], "10.99.0.1", "fd99::1", "10.100.0.1", "fd00:100::1", veth_a),
        (ns_b, command_b, ports[1], "10.99.0.2", "fd99::2", "10.100.0.2", "fd00:100::2", veth_b),
    )
    nodes: list[WgNode] = []
    for ns, command, port, u4, u6, t4, t6, veth in specs:
        ifname = unique_ifname()
        daemon = start_wg_daemon(ns, ifname, command)
        priv = genkey()
        nodes.append(
            WgNode(
                ns=ns,
                ifname=ifname,
                daemon=daemon,
                private_key=priv,
                public_key=pubkey(priv),
                listen_port=port,
                underlay4=u4,
                underlay6=u6,
                tunnel4=t4,
                tunnel6=t6,
                veth=veth,
            )
        )
    for me, other in ((nodes[0], nodes[1]), (nodes[1], nodes[0])):
        key_file = write_secret(me.ns, f"{me.ifname}.key", me.private_key)
        host = other.underlay4 if underlay == 4 else f"[{other.underlay6}]"
        argv = ["set", me.ifname, "private-key", str(key_file)]
        argv += ["listen-port", str(me.listen_port), "peer", other.public_key]
        argv += ["allowed-ips", f"{other.tunnel4}/32,{other.tunnel6}/128"]
        argv += ["endpoint", f"{host}:{other.listen_port}"]
        if psk is not None:
            argv += ["preshared-key", str(write_secret(me.ns, f"{me.ifname}.psk", psk))]
        wg(me.ns, *argv)
        me.ns.run("ip", "addr", "add", f"{me.tunnel4}/24", "dev", me.ifname)
        me.ns.run("ip", "-6", "addr", "add", f"{me.tunnel6}/64", "dev", me.ifname, "nodad")
        me.ns.run("ip", "link", "set", me.ifname, "up")
    return TwoPeers(a=nodes[0], b=nodes[1], psk=psk)


def ping(
    ns: Netns,
    dest: str,
    count: int = 3,
    wait: float = 2.0,
    *,
    interval: float = 0.2,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`ping -c COUNT -W WAIT -i INTERVAL DEST` inside `ns` (IPv6 chosen by the address).

    Returns the completed process (exit 0 only if replies came); `check` raises otherwise.
    """
    argv = ("ping", "-c", str(count), "-W", f"{wait:g}", "-i", f"{interval:g}", dest)
    return ns.run(*argv, check=check, timeout=count * (wait + interval) + 10)
