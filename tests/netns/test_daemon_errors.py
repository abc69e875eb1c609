"""wgpyd's start-up failures, against wireguard-go's in the same situations.

Each failure is said once, on stderr, in words (no Python "[Errno N]"), with its cause and
what to do, and wgpyd exits with wireguard-go's status (1) leaving no interface and no socket
behind. The situations: the TUN name taken in this namespace (a running daemon), the name
taken by an interface that is not a TUN (a veth here, as a kernel wg0 would be), the UAPI
socket held by a daemon in another namespace (/var/run/wireguard is shared by every network
namespace), and names the kernel refuses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

import pytest

from tests.netns.harness import WG_RUN_DIR, Netns, unique_ifname, wait_for, wg

pytestmark = pytest.mark.netns

WGPYD: Final = Path(sys.executable).parent / "wgpyd"


def _wgpyd(ns: Netns, *argv: str) -> subprocess.CompletedProcess[str]:
    if not WGPYD.exists():
        pytest.fail(f"{WGPYD} does not exist; install wgpy in the venv (scripts/setup.sh)")
    return ns.run(str(WGPYD), *argv, check=False, timeout=30)


def _wireguard_go(ns: Netns, *argv: str) -> subprocess.CompletedProcess[str]:
    return ns.run("wireguard-go", *argv, check=False, timeout=30)


def _link_exists(ns: Netns, ifname: str) -> bool:
    return ns.run("ip", "link", "show", "dev", ifname, check=False).returncode == 0


def _start(ns: Netns, ifname: str) -> int:
    """A background wgpyd serving `ifname` in `ns`; returns its pid."""
    result = _wgpyd(ns, ifname)
    assert result.returncode == 0, result
    path = WG_RUN_DIR / f"{ifname}.sock"
    ns.add_cleanup(lambda: path.unlink(missing_ok=True))
    assert wg(ns, "show", ifname, "listen-port").strip().isdigit()
    pids = [
        pid
        for pid in ns.pids()
        if ifname.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    ]
    assert len(pids) == 1, pids
    return pids[0]


def _said_once(result: subprocess.CompletedProcess[str], cause: str) -> str:
    """The one message of a failed start: on stderr, `cause` in it once, nothing on stdout,
    no Python errno words."""
    assert result.stdout == "", result
    assert "[Errno" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count(cause) == 1, result.stderr
    assert result.stderr.startswith("wgpyd: "), result.stderr
    # one message: the cause is not repeated in other words ("Failed to ...", a log line)
    assert result.stderr.count("wgpyd: ") == 1, result.stderr
    return result.stderr


def test_name_taken_by_a_daemon_in_this_namespace(netns_factory: Callable[[], Netns]) -> None:
    ns = netns_factory()
    ifname = unique_ifname("wge")
    pid = _start(ns, ifname)
    inode = (WG_RUN_DIR / f"{ifname}.sock").stat().st_ino
    for argv in ((ifname,), ("-f", ifname)):
        ours, go = _wgpyd(ns, *argv), _wireguard_go(ns, *argv)
        assert ours.returncode == go.returncode == 1, (ours, go)
        text = _said_once(ours, "already exists in this network namespace")
        assert f"ip link del {ifname}" in text, text
        assert "choose another name" in text, text
        assert f"pid {pid}" in text, text  # who holds it
        # the first daemon is undisturbed
        assert (WG_RUN_DIR / f"{ifname}.sock").stat().st_ino == inode
        assert wg(ns, "show", ifname, "listen-port").strip().isdigit()


def test_name_taken_by_another_kind_of_interface(netns_factory: Callable[[], Netns]) -> None:
    """A veth (as a kernel WireGuard interface would) has the name: TUNSETIFF says EINVAL."""
    ns = netns_factory()
    ifname = unique_ifname("wge")
    ns.run("ip", "link", "add", ifname, "type", "veth", "peer", "name", unique_ifname("wgp"))
    for argv in ((ifname,), ("-f", ifname)):
        ours, go = _wgpyd(ns, *argv), _wireguard_go(ns, *argv)
        assert ours.returncode == go.returncode == 1, (ours, go)
        text = _said_once(ours, "is not a TUN device")
        assert f"ip link del {ifname}" in text, text
        assert not (WG_RUN_DIR / f"{ifname}.sock").exists()
        assert "veth" in ns.run("ip", "-d", "link", "show", "dev", ifname).stdout


def test_name_served_in_another_namespace(netns_factory: Callable[[], Netns]) -> None:
    """Two namespaces, one name: the second start finds the shared socket in use and says who
    serves it (pid and namespace), and that the directory is shared."""
    first, second = netns_factory(), netns_factory()
    ifname = unique_ifname("wge")
    pid = _start(first, ifname)
    path = WG_RUN_DIR / f"{ifname}.sock"
    inode = path.stat().st_ino
    for argv in ((ifname,), ("--foreground", ifname)):
        ours, go = _wgpyd(second, *argv), _wireguard_go(second, *argv)
        assert ours.returncode == go.returncode == 1, (ours, go)
        text = _said_once(ours, f"{path} is in use")
        assert "shared by every network namespace" in text, text
        assert f"pid {pid}" in text and first.name in text, text
        assert "choose a name" in text, text
        assert not _link_exists(second, ifname), f"{argv} left a TUN behind"
        assert path.stat().st_ino == inode
        assert wg(first, "show", ifname, "listen-port").strip().isdigit()


def _sixteen() -> str:
    name = unique_ifname("wgl")
    return name + "x" * (16 - len(name))


@pytest.mark.parametrize(
    ("make", "rule"),
    [
        (_sixteen, "at most 15 bytes"),
        (lambda: unique_ifname("wgs")[:10] + "/x", "'/'"),
        (lambda: unique_ifname("wgs")[:10] + " x", "whitespace"),
        (lambda: unique_ifname("wgs")[:10] + ":x", "':'"),
    ],
    ids=["16-characters", "slash", "space", "colon"],
)
def test_names_the_kernel_refuses(
    netns_factory: Callable[[], Netns], make: Callable[[], str], rule: str
) -> None:
    ns = netns_factory()
    ifname = make()
    for argv in ((ifname,), ("-f", ifname)):
        ours, go = _wgpyd(ns, *argv), _wireguard_go(ns, *argv)
        assert ours.returncode == go.returncode == 1, (ours, go)
        text = _said_once(ours, f"invalid interface name {ifname!r}")
        assert rule in text, text
        assert "1 to 15 bytes" in text, text  # the whole rule, not only what this name broke
        assert ns.run("ip", "-o", "link", "show").stdout.count("\n") == 1  # only lo
        assert not (WG_RUN_DIR / f"{ifname}.sock").exists()


def test_empty_name(netns_factory: Callable[[], Netns]) -> None:
    """wireguard-go takes "" and lets the kernel pick tunN (and serves tunN.sock); wgpyd says
    the rule instead (not run against wireguard-go: it would claim a shared tunN.sock)."""
    ns = netns_factory()
    result = _wgpyd(ns, "")
    assert result.returncode == 1, result
    text = _said_once(result, "invalid interface name ''")
    assert "empty" in text and "1 to 15 bytes" in text, text
    assert ns.run("ip", "-o", "link", "show").stdout.count("\n") == 1


def test_socket_directory_error_is_said_in_words(
    netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    """A stale file that is not a socket where the socket goes: said with the path, no
    interface left behind."""
    ns = netns_factory()
    ifname = unique_ifname("wge")
    path = WG_RUN_DIR / f"{ifname}.sock"
    os.makedirs(path)  # a directory: cannot be replaced by the socket
    ns.add_cleanup(lambda: path.rmdir())
    result = _wgpyd(ns, "-f", ifname)
    assert result.returncode == 1, result
    text = _said_once(result, str(path))
    assert re.search(r"[Ii]s a directory", text), text
    wait_for(lambda: not _link_exists(ns, ifname), 5, what="the TUN to go")


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("foreground", [False, True], ids=["background", "foreground"])
def test_log_file_that_cannot_be_opened(
    netns_factory: Callable[[], Netns], log_format: str, foreground: bool
) -> None:
    """The text log is opened by the parent, the JSON log by the daemon that serves: either
    way a log file in a missing directory is one message naming it, not a traceback or "the
    daemon exited during startup", and nothing is left behind."""
    ns = netns_factory()
    ifname = unique_ifname("wge")
    log_file = ns.workdir / "missing" / "wgpyd.log"
    env = {"WGPY_LOG_FILE": str(log_file), "WGPY_LOG_FORMAT": log_format}
    argv = [str(WGPYD), *(["-f"] if foreground else []), ifname]
    result = ns.run(*argv, check=False, timeout=30, env=env)
    assert result.returncode == 1, result
    text = _said_once(result, f"cannot open the log file {log_file}")
    assert "No such file or directory" in text, text
    assert not (WG_RUN_DIR / f"{ifname}.sock").exists()
    wait_for(lambda: not _link_exists(ns, ifname), 5, what="the TUN to go")


def test_the_name_rule_is_the_kernels(netns_factory: Callable[[], Netns]) -> None:
    """wgpyd's check of a name gives the kernel's verdict (TUNSETIFF in a namespace) for names
    at the edges of the rule: 15 bytes counted in UTF-8, '.', the byte 0xA0 inside 'à'
    (whitespace to the kernel), 'é' (not), a template ('%d'), tab, ':' and '/'. A name of 16
    bytes or more cannot reach the kernel whole (ifreq holds 15 bytes and a NUL; TUNSETIFF
    would cut it): refused, as wireguard-go refuses it."""
    from wgpy.io.tun import InvalidName, check_name

    ns = netns_factory()
    stem = unique_ifname("wgn")[:9]  # unique to this run
    names = [
        stem + "abcdef",  # 15 bytes
        stem + "abcdefg",  # 16 bytes
        stem + "é" * 3,  # 15 bytes
        stem + "é" * 3 + "x",  # 16 bytes, 13 characters
        stem + "à",
        stem + "\t",
        stem + "%d",
        stem + ":",
        stem + "/",
        ".",
        "..",
    ]
    probe = (
        "import fcntl, os, struct, sys\n"
        "for name in sys.argv[1:]:\n"
        "    if len(name.encode()) >= 16:\n"
        "        print('long')\n"
        "        continue\n"
        "    fd = os.open('/dev/net/tun', os.O_RDWR)\n"
        "    try:\n"
        "        fcntl.ioctl(fd, 0x400454CA, struct.pack('16sH22x', name.encode(), 0x1001))\n"
        "        print('ok')\n"
        "    except OSError as error:\n"
        "        print(error.errno)\n"
        "    os.close(fd)\n"
    )
    verdicts = ns.run(sys.executable, "-c", probe, *names).stdout.split()
    assert len(verdicts) == len(names)
    for name, verdict in zip(names, verdicts, strict=True):
        try:
            check_name(name)
            ours = "ok"
        except InvalidName:
            ours = "refused"
        # ifreq holds 15 bytes and a NUL: the kernel would silently cut a longer name
        kernel = "ok" if verdict == "ok" else "refused"
        assert ours == kernel, (name, verdict)
