"""wgpyd: a drop-in for wireguard-go (``wgpyd [-f|--foreground] INTERFACE-NAME``).

Like wireguard-go, the parent creates the TUN device and the UAPI socket, then starts a
background copy of itself that inherits both (``WG_TUN_FD``, ``WG_UAPI_FD``) and exits 0, so
``wg-quick`` can go on configuring the interface. Unlike Go, a Python child needs a few hundred
milliseconds to start, so the parent waits (up to :data:`READY_TIMEOUT` seconds) until the child
reports through a pipe (``WGPY_READY_FD``) that it serves the socket: whatever runs after
``wgpyd`` returns — ``wg setconf`` in wg-quick — finds the daemon ready, not still importing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from typing import Final, TextIO

from wgpy import __version__
from wgpy.device import Device
from wgpy.io import tun

SOCKET_DIRECTORY: Final = "/var/run/wireguard"
#: Like Go's listeners (net.core.somaxconn): a burst of `wg` clients must not be refused.
UAPI_BACKLOG: Final = socket.SOMAXCONN
ENV_FOREGROUND: Final = "WG_PROCESS_FOREGROUND"
ENV_TUN_FD: Final = "WG_TUN_FD"
ENV_UAPI_FD: Final = "WG_UAPI_FD"
ENV_READY_FD: Final = "WGPY_READY_FD"
#: Longest wait of the parent for the background copy to report ready (then it exits 0 anyway).
READY_TIMEOUT: Final = 30.0
ENV_LOG_FORMAT: Final = "WGPY_LOG_FORMAT"
ENV_LOG_FILE: Final = "WGPY_LOG_FILE"
ENV_METRICS: Final = "WGPY_METRICS"
_VALUE_OPTIONS: Final = {
    "--log-format": ENV_LOG_FORMAT,
    "--log-file": ENV_LOG_FILE,
    "--metrics": ENV_METRICS,
}

log = logging.getLogger("wgpy")


def usage() -> str:
    return (
        f"Usage: {os.path.basename(sys.argv[0])} [-f/--foreground] INTERFACE-NAME\n"
        "Options (or environment): --log-format text|json (WGPY_LOG_FORMAT), "
        "--log-file PATH (WGPY_LOG_FILE), --metrics HOST:PORT (WGPY_METRICS)\n"
    )


def socket_path(ifname: str) -> str:
    return os.path.join(SOCKET_DIRECTORY, f"{ifname}.sock")


def create_uapi_socket(ifname: str) -> socket.socket:
    """Listen on /var/run/wireguard/IFNAME.sock with mode 0600, replacing a stale file."""
    os.makedirs(SOCKET_DIRECTORY, mode=0o755, exist_ok=True)
    path = socket_path(ifname)
    if os.path.exists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
        else:
            probe.close()
            raise OSError(errno.EADDRINUSE, "unix socket in use")
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(UAPI_BACKLOG)
    return listener


def _log_level() -> int | None:
    """LOG_LEVEL as wireguard-go reads it: verbose/debug, error (default), silent."""
    value = os.environ.get("LOG_LEVEL", "").lower()
    if value in ("verbose", "debug"):
        return logging.DEBUG
    if value == "silent":
        return None
    return logging.ERROR


def _setup_logging(ifname: str, level: int | None) -> None:
    log_file = os.environ.get(ENV_LOG_FILE)
    handler: logging.Handler
    if log_file and os.environ.get(ENV_LOG_FORMAT, "text") == "text":
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        logging.Formatter(
            f"%(levelname)s: ({ifname}) %(asctime)s %(message)s", datefmt="%Y/%m/%d %H:%M:%S"
        )
    )
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.CRITICAL + 1 if level is None else level)


def _inherited_fd(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return int(value)


def _warm_up() -> None:
    """Load what serving needs (the asyncio adapter, OpenSSL's X25519) before the UAPI socket
    exists, so that a client finding the socket does not wait for imports."""
    from wgpy import crypto
    from wgpy.io import runner  # noqa: F401

    crypto.public_key(bytes(range(1, 33)))


def _ready_notifier() -> Callable[[], None] | None:
    """In the background copy: a callback that tells the waiting parent we serve."""
    ready_fd = _inherited_fd(ENV_READY_FD)
    os.environ.pop(ENV_READY_FD, None)
    if ready_fd is None:
        return None

    def notify() -> None:
        with contextlib.suppress(OSError):
            os.write(ready_fd, b"1")
        with contextlib.suppress(OSError):
            os.close(ready_fd)

    return notify


def _wait_ready(read_fd: int) -> bool:
    """Parent side: True once the child reported ready or the wait timed out (the child may
    still come up), False if it exited first (the pipe closed without a byte)."""
    readable, _, _ = select.select([read_fd], [], [], READY_TIMEOUT)
    if not readable:
        sys.stderr.write(f"wgpyd: the daemon is not ready after {READY_TIMEOUT:.0f} s\n")
        return True
    try:
        return os.read(read_fd, 1) == b"1"
    except OSError:
        return False


def serve(
    ifname: str, tun_fd: int, uapi: socket.socket, on_ready: Callable[[], None] | None = None
) -> int:
    """Run the device in this process until the interface or its socket goes away."""
    from wgpy.io.runner import DeviceRunner

    path = socket_path(ifname)
    device = Device()
    with contextlib.suppress(OSError):
        device.mtu = tun.link_state(tun_fd).mtu
    json_log: TextIO | None = None
    if os.environ.get(ENV_LOG_FORMAT) == "json" and _log_level() is not None:
        log_file = os.environ.get(ENV_LOG_FILE)
        json_log = open(log_file, "a", buffering=1) if log_file else sys.stdout  # noqa: SIM115
    collector = None
    metrics_address = os.environ.get(ENV_METRICS)
    if metrics_address:
        from wgpy.tools.metrics import make_registry, start_server

        registry, collector = make_registry(ifname)
        try:
            start_server(metrics_address, registry)
        except (OSError, ValueError) as error:
            log.error("Metrics endpoint %s: %s", metrics_address, error)
            collector = None
    runner = DeviceRunner(
        device, ifname, tun_fd, uapi, path, json_log=json_log, metrics=collector, on_ready=on_ready
    )
    try:
        asyncio.run(runner.run())
    finally:
        with contextlib.suppress(OSError):
            info = os.stat(path)
            # Only remove the socket if it is still the one we created.
            if stat.S_ISSOCK(info.st_mode) and info.st_ino == runner.uapi_inode:
                os.unlink(path)
        with contextlib.suppress(OSError):
            os.close(tun_fd)
        uapi.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--version"], ["-v"]):
        sys.stdout.write(f"wgpyd v{__version__}\n\nUserspace WireGuard daemon in Python.\n")
        return 0
    foreground = os.environ.get(ENV_FOREGROUND) == "1"
    positional: list[str] = []
    while args:
        arg = args.pop(0)
        if arg in ("-f", "--foreground"):
            foreground = True
        elif arg in _VALUE_OPTIONS and args:
            os.environ[_VALUE_OPTIONS[arg]] = args.pop(0)  # the background copy inherits it
        elif arg.startswith("-"):
            positional = []
            break
        else:
            positional.append(arg)
    log_format = os.environ.get(ENV_LOG_FORMAT, "text")
    if len(positional) != 1 or log_format not in ("text", "json"):
        sys.stderr.write(usage())
        return 1
    requested = positional[0]
    level = _log_level()
    _setup_logging(requested, level)

    if foreground:
        _warm_up()
    tun_fd = _inherited_fd(ENV_TUN_FD)
    try:
        if tun_fd is None:
            tun_fd, ifname = tun.open_tun(requested)
            with contextlib.suppress(OSError):
                tun.set_mtu(ifname, 1420)
            tun.disable_ipv6_link_local(ifname)
        else:
            os.set_blocking(tun_fd, False)
            ifname = tun.tun_name(tun_fd)
    except (OSError, ValueError) as error:
        log.error("Failed to create TUN device: %s", error)
        sys.stderr.write(f"Failed to create TUN device: {error}\n")
        return 1

    uapi_fd = _inherited_fd(ENV_UAPI_FD)
    try:
        uapi = create_uapi_socket(ifname) if uapi_fd is None else socket.socket(fileno=uapi_fd)
    except OSError as error:
        log.error("UAPI listen error: %s", error)
        sys.stderr.write(f"UAPI listen error: {error}\n")
        os.close(tun_fd)
        return 1

    if foreground:
        log.info("Starting wgpyd version %s", __version__)
        return serve(ifname, tun_fd, uapi, _ready_notifier())

    env = dict(os.environ)
    env[ENV_FOREGROUND] = "1"
    env[ENV_TUN_FD] = str(tun_fd)
    env[ENV_UAPI_FD] = str(uapi.fileno())
    os.set_inheritable(tun_fd, True)
    os.set_inheritable(uapi.fileno(), True)
    ready_read, ready_write = os.pipe()
    env[ENV_READY_FD] = str(ready_write)
    quiet = level is None or "LOG_LEVEL" not in os.environ
    output = subprocess.DEVNULL if quiet else None
    try:
        subprocess.Popen(
            [sys.executable, "-m", "wgpy.daemon", ifname],
            env=env,
            pass_fds=(tun_fd, uapi.fileno(), ready_write),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
            cwd="/",
        )
    except OSError as error:
        sys.stderr.write(f"Failed to daemonize: {error}\n")
        return 1
    finally:
        os.close(ready_write)
    if not _wait_ready(ready_read):
        sys.stderr.write("wgpyd: the daemon exited during startup\n")
        with contextlib.suppress(OSError):
            os.unlink(socket_path(ifname))  # the child never got to remove it
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
