"""wgpyd: a drop-in for wireguard-go (``wgpyd [-f|--foreground] INTERFACE-NAME``).

Like wireguard-go, the parent creates the TUN device and the UAPI socket, then starts a
background copy of itself that inherits both (``WG_TUN_FD``, ``WG_UAPI_FD``) and exits 0, so
``wg-quick`` can go on configuring the interface. Unlike Go, a Python child needs a few hundred
milliseconds to start, so the parent waits (up to :data:`READY_TIMEOUT` seconds) until the child
reports through a pipe (``WGPY_READY_FD``) that it serves the socket: whatever runs after
``wgpyd`` returns — ``wg setconf`` in wg-quick — finds the daemon ready, not still importing.
A child that fails before serving (the metrics endpoint cannot listen) sends its error through
the same pipe; the parent prints it and exits 1.

The process is named ``wgpyd`` (``comm`` through prctl, and ``argv[0]`` of the background copy),
so ``pgrep -x wgpyd``, ``pidof wgpyd`` and ``ps`` find it by that name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import select
import socket
import stat
import subprocess
import sys
from typing import Final, TextIO

from wgpy import __version__, batch
from wgpy.device import Device
from wgpy.io import allocator, startup_errors, tun
from wgpy.io.pump import worker_count
from wgpy.uapi import SOCKET_DIRECTORY, socket_path

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

#: The process name (at most 15 bytes, the kernel's TASK_COMM_LEN - 1).
PROCESS_NAME: Final = "wgpyd"
_PR_SET_NAME: Final = 15
#: The first byte the background copy writes on the readiness pipe: ready, or an error follows.
_READY: Final = b"1"
_FAILED: Final = b"E"

log = logging.getLogger("wgpy")


def set_process_name(name: str = PROCESS_NAME) -> None:
    """Set this process's ``comm`` (what pgrep, top and systemd show); best effort."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def _background_argv0() -> str:
    """``argv[0]`` for the background copy: a path named ``wgpyd`` in the interpreter's own
    directory. Python finds its prefix (a venv's pyvenv.cfg, or the stdlib) from the directory
    of a path argv[0]; a bare ``wgpyd`` would make it search PATH and lose its site-packages."""
    executable = sys.executable
    if sys.prefix == sys.base_prefix:
        executable = os.path.realpath(executable)  # an installation: where the real binary is
    return os.path.join(os.path.dirname(executable), PROCESS_NAME)


def usage() -> str:
    return (
        f"Usage: {os.path.basename(sys.argv[0])} [-f/--foreground] INTERFACE-NAME\n"
        "Options (or environment): --log-format text|json (WGPY_LOG_FORMAT), "
        "--log-file PATH (WGPY_LOG_FILE), --metrics HOST:PORT (WGPY_METRICS)\n"
    )


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
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        finally:
            probe.close()
    # Bound and listening under a temporary name, then renamed into place: a client that sees
    # the file (wg, wg-quick, a test waiting for it) never finds it refusing connections.
    staging = f"{path}.{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        listener.bind(staging)
        listener.listen(UAPI_BACKLOG)
        os.rename(staging, path)
    except OSError:
        listener.close()
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise
    finally:
        os.umask(old_umask)
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


class Readiness:
    """In the background copy: tells the waiting parent that we serve, or why we could not.
    Without a parent waiting (``-f``) a failure goes to stderr instead."""

    def __init__(self) -> None:
        self._fd = _inherited_fd(ENV_READY_FD)
        os.environ.pop(ENV_READY_FD, None)

    def _send(self, data: bytes) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(fd, data)
        with contextlib.suppress(OSError):
            os.close(fd)

    def ready(self) -> None:
        self._send(_READY)

    def failed(self, message: str) -> None:
        if self._fd is None:
            sys.stderr.write(f"{message}\n")
        self._send(_FAILED + message.encode(errors="replace")[:4000])


def _wait_ready(read_fd: int) -> bool:
    """Parent side: True once the child reported ready or the wait timed out (the child may
    still come up), False if it failed or exited first (printing its error, if it sent one)."""
    readable, _, _ = select.select([read_fd], [], [], READY_TIMEOUT)
    if not readable:
        sys.stderr.write(f"wgpyd: the daemon is not ready after {READY_TIMEOUT:.0f} s\n")
        return True
    try:
        data = os.read(read_fd, 4096)
    except OSError:
        return False
    if data.startswith(_READY):
        return True
    if data.startswith(_FAILED):
        sys.stderr.write(f"{data[1:].decode(errors='replace')}\n")
    else:
        sys.stderr.write("wgpyd: the daemon exited during startup\n")
    return False


def _release(path: str, inode: int | None, tun_fd: int, uapi: socket.socket) -> None:
    """Remove the UAPI socket (only if it is still the one at `inode`) and close the TUN."""
    with contextlib.suppress(OSError):
        info = os.stat(path)
        if inode is not None and stat.S_ISSOCK(info.st_mode) and info.st_ino == inode:
            os.unlink(path)
    with contextlib.suppress(OSError):
        os.close(tun_fd)
    uapi.close()


def _failed(message: str, readiness: Readiness | None) -> None:
    """A failure before serving: to the waiting parent, or (without one) to stderr."""
    if readiness is not None:
        readiness.failed(message)
    else:
        sys.stderr.write(f"{message}\n")


def serve(ifname: str, tun_fd: int, uapi: socket.socket, readiness: Readiness | None = None) -> int:
    """Run the device in this process until the interface or its socket goes away."""
    from wgpy.io.runner import DeviceRunner

    path = socket_path(ifname)
    try:
        inode: int | None = os.stat(path).st_ino
    except OSError:
        inode = None
    device = Device()
    with contextlib.suppress(OSError):
        device.mtu = tun.link_state(tun_fd).mtu
    json_log: TextIO | None = None
    if os.environ.get(ENV_LOG_FORMAT) == "json" and _log_level() is not None:
        log_file = os.environ.get(ENV_LOG_FILE)
        try:
            json_log = open(log_file, "a", buffering=1) if log_file else sys.stdout  # noqa: SIM115
        except OSError as error:
            assert log_file is not None
            _failed(startup_errors.log_file_error(log_file, error), readiness)
            _release(path, inode, tun_fd, uapi)
            return 1
    collector = None
    metrics_address = os.environ.get(ENV_METRICS)
    if metrics_address:
        from wgpy.sinks.metrics import make_registry, start_server

        registry, collector = make_registry(ifname)
        try:
            start_server(metrics_address, registry)
        except (OSError, ValueError) as error:
            _failed(startup_errors.metrics_error(metrics_address, error), readiness)
            _release(path, inode, tun_fd, uapi)
            return 1
    allocator.keep_freed_memory()
    runner = DeviceRunner(
        device,
        ifname,
        tun_fd,
        uapi,
        path,
        json_log=json_log,
        metrics=collector,
        on_ready=None if readiness is None else readiness.ready,
    )
    try:
        asyncio.run(runner.run())
    finally:
        _release(path, runner.uapi_inode, tun_fd, uapi)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--version"], ["-v"]):
        sys.stdout.write(
            f"wgpyd v{__version__}\n\nUserspace WireGuard daemon in Python, {batch.ACTIVE}.\n"
        )
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
    try:
        _setup_logging(requested, level)
    except OSError as error:
        log_file = os.environ.get(ENV_LOG_FILE, "")
        sys.stderr.write(f"{startup_errors.log_file_error(log_file, error)}\n")
        return 1
    set_process_name()

    # Fail before creating anything when the metrics endpoint cannot listen (the background
    # copy binds it for real and reports a failure through the readiness pipe).
    metrics_address = os.environ.get(ENV_METRICS)
    if metrics_address and _inherited_fd(ENV_TUN_FD) is None:
        from wgpy.sinks.metrics import check_address

        try:
            check_address(metrics_address)
        except (OSError, ValueError) as error:
            sys.stderr.write(f"{startup_errors.metrics_error(metrics_address, error)}\n")
            return 1

    if foreground:
        _warm_up()
    tun_fd = _inherited_fd(ENV_TUN_FD)
    try:
        if tun_fd is None:
            # WGPY_NO_TUN_OFFLOAD=1: plain reads and writes, one packet each (for comparisons)
            vnet = os.environ.get("WGPY_NO_TUN_OFFLOAD") != "1"
            tun_fd, ifname = tun.open_tun(requested, vnet_header=vnet)
            with contextlib.suppress(OSError):
                tun.set_mtu(ifname, 1420)
            tun.disable_ipv6_link_local(ifname)
        else:
            os.set_blocking(tun_fd, False)
            ifname = tun.tun_name(tun_fd)
    except (OSError, ValueError) as error:
        sys.stderr.write(f"{startup_errors.tun_error(requested, error)}\n")
        return 1

    uapi_fd = _inherited_fd(ENV_UAPI_FD)
    try:
        uapi = create_uapi_socket(ifname) if uapi_fd is None else socket.socket(fileno=uapi_fd)
    except OSError as error:
        os.close(tun_fd)  # before looking for the socket's holder: nothing of ours is left
        sys.stderr.write(f"{startup_errors.uapi_error(ifname, socket_path(ifname), error)}\n")
        return 1

    if foreground:
        workers = worker_count()
        log.info(
            "Starting wgpyd version %s, %s, %d worker thread%s",
            __version__,
            batch.ACTIVE,
            workers,
            "" if workers == 1 else "s",
        )
        return serve(ifname, tun_fd, uapi, Readiness())

    env = dict(os.environ)
    env[ENV_FOREGROUND] = "1"
    env[ENV_TUN_FD] = str(tun_fd)
    env[ENV_UAPI_FD] = str(uapi.fileno())
    os.set_inheritable(tun_fd, True)
    os.set_inheritable(uapi.fileno(), True)
    ready_read, ready_write = os.pipe()
    env[ENV_READY_FD] = str(ready_write)
    # The background copy keeps the caller's stdout and stderr only when it logs there (as
    # wireguard-go's does with LOG_LEVEL set); otherwise `wgpyd IF | tail` would wait for it.
    quiet = level is None or "LOG_LEVEL" not in os.environ or bool(os.environ.get(ENV_LOG_FILE))
    output = subprocess.DEVNULL if quiet else None
    try:
        subprocess.Popen(
            [_background_argv0(), "-m", "wgpy.daemon", ifname],
            executable=sys.executable,
            env=env,
            pass_fds=(tun_fd, uapi.fileno(), ready_write),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
            cwd="/",
        )
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(socket_path(ifname))
        sys.stderr.write(f"wgpyd: cannot start the background daemon: {error.strerror or error}\n")
        return 1
    finally:
        os.close(ready_write)
    if not _wait_ready(ready_read):
        with contextlib.suppress(OSError):
            os.unlink(socket_path(ifname))  # the child never got to remove it
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
