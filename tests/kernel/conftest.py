"""Fixtures of the kernel tests: one guest for all of tests/kernel, one tunnel per test.

`kernel_lab` boots Debian's kernel once (about 3–6 s under TCG) in a namespace of its own and
is torn down after the last kernel test, QEMU, tap and namespace included. `tunnel` starts a
daemon on the host side and wg0 in the guest for one test and removes both afterwards. If
anything the suite needs is missing (root, QEMU, the downloaded kernel), every test fails with
the reason; `WGPY_SKIP_KERNEL=1` (or `WGPY_SKIP_NETNS=1`) turns that into an explicit skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.kernel import image
from tests.kernel.guest import BootError, KernelGuest, qemu_missing
from tests.kernel.lab import (
    KernelLab,
    KernelTunnel,
    TunnelFactory,
    TunnelOptions,
    start_tunnel,
    stop_tunnel,
)
from tests.netns.dropkit import WGPYD
from tests.netns.harness import Netns, missing_prerequisites, unique_ifname
from tests.outcome import call_failed


def _missing() -> list[str]:
    problems = list(missing_prerequisites())
    qemu = qemu_missing()
    if qemu:
        problems.append(qemu)
    return problems


def require_kernel_lab() -> image.BootFiles:
    """The boot files, or fail (skip only on request) saying what is missing."""
    problems = _missing()
    files = None
    try:
        files = image.build()
    except image.MissingParts as exc:
        problems.append(str(exc))
    if files is not None and not problems:
        return files
    text = "; ".join(problems)
    for variable in ("WGPY_SKIP_KERNEL", "WGPY_SKIP_NETNS"):
        if os.environ.get(variable) == "1":
            pytest.skip(f"kernel test skipped ({variable}=1): {text}")
    pytest.fail(
        f"kernel tests cannot run: {text}.\nRun `sudo bash scripts/setup.sh` and the tests as "
        "root, or set WGPY_SKIP_KERNEL=1 to skip these tests explicitly.",
        pytrace=False,
    )


@pytest.fixture(scope="package")
def kernel_lab() -> Iterator[KernelLab]:
    files = require_kernel_lab()
    ns = Netns()
    try:
        tap = unique_ifname("kvt")
        ns.run("ip", "tuntap", "add", "dev", tap, "mode", "tap")
        ns.run("ip", "link", "set", tap, "up")
        try:
            guest = KernelGuest.boot(ns, tap, files)
        except BootError as exc:
            pytest.fail(f"the kernel guest did not boot: {exc}", pytrace=False)
        print(
            f"kernel guest: {files.release}, {guest.accel.name} ({guest.accel.why}), "
            f"answered after {guest.boot_seconds:.1f}s"
        )
        yield KernelLab(ns, tap, guest)
        guest.close()
    finally:
        ns.close()


@pytest.fixture
def tunnel_factory(
    kernel_lab: KernelLab, request: pytest.FixtureRequest
) -> Iterator[TunnelFactory]:
    """`tunnel_factory(options=TunnelOptions(...), command=WGPYD)`: a tunnel between `command`
    on the host and the guest kernel. One at a time (the guest has one wg0); each call
    replaces the previous tunnel. On failure the daemon's log and the guest's dmesg are
    printed."""
    made: list[KernelTunnel] = []

    def make(
        options: TunnelOptions | None = None, command: tuple[str, ...] = WGPYD
    ) -> KernelTunnel:
        while made:
            stop_tunnel(made.pop())
        tunnel = start_tunnel(kernel_lab, command, options)
        made.append(tunnel)
        return tunnel

    try:
        yield make
    finally:
        if call_failed(request):
            _print_diagnostics(kernel_lab, made)
        while made:
            stop_tunnel(made.pop())


@pytest.fixture
def tunnel(tunnel_factory: TunnelFactory) -> KernelTunnel:
    """wgpyd on the host, kernel WireGuard in the guest, both knowing each other's endpoint,
    IPv4 outside, no preshared key."""
    return tunnel_factory()


def _print_diagnostics(lab: KernelLab, tunnels: list[KernelTunnel]) -> None:
    for tunnel in tunnels:
        print(f"----- {tunnel.daemon.command} {tunnel.host_if} log -----")
        print(tunnel.daemon.log())
    try:
        print("----- guest: wg show; dmesg -----")
        print(lab.guest.run("wg show all; dmesg | tail -n 60", check=False).stdout)
    except Exception as exc:
        print(f"(the guest did not answer: {exc})")
