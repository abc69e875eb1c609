"""Debian's kernel running in QEMU inside a host network namespace, driven over its control
port.

The guest has one NIC, a virtio-net on a tap device in the namespace; a virtio serial port
named `wgpy.ctl` carrying requests to its /init (see `channel.py`); its serial console in a
log file; and, optionally, the host's root file system read-only over virtio-9p (mounted at
/host on first use, see `KernelGuest.run_in_host_root`).

KVM is used only where it can run a stock kernel: on these machines /dev/kvm is PVM
(`kvm_pvm`), which cannot, so `choose_accel` picks TCG (`-accel tcg -cpu max`) there; a KVM
boot that fails is retried once with TCG.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from tests.kernel.channel import ChannelError, ControlChannel, GuestResult, connect_unix
from tests.kernel.image import BootFiles
from tests.netns.harness import Netns, kill_process

QEMU: Final = "qemu-system-x86_64"
BOOT_TIMEOUT: Final = 120.0
"""Seconds for the guest to answer its first request (about 3 s when the host is idle)."""

KERNEL_CMDLINE: Final = "console=ttyS0 panic=-1 quiet rdinit=/init"
HOST_ROOT_TAG: Final = "hostroot"
CONTROL_PORT_NAME: Final = "wgpy.ctl"
GUEST_MAC: Final = "52:54:00:77:67:01"


@dataclass(frozen=True)
class Accel:
    """A QEMU accelerator and why it was chosen."""

    name: Literal["kvm", "tcg"]
    why: str

    def qemu_args(self) -> list[str]:
        if self.name == "kvm":
            return ["-accel", "kvm", "-cpu", "host"]
        return ["-accel", "tcg", "-cpu", "max"]


def choose_accel() -> Accel:
    """KVM if /dev/kvm can run an unmodified kernel, else TCG.

    `WGPY_KERNEL_ACCEL=kvm|tcg` forces the choice.
    """
    forced = os.environ.get("WGPY_KERNEL_ACCEL")
    if forced == "kvm":
        return Accel("kvm", "WGPY_KERNEL_ACCEL=kvm")
    if forced == "tcg":
        return Accel("tcg", "WGPY_KERNEL_ACCEL=tcg")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Accel("tcg", "no usable /dev/kvm")
    if Path("/sys/module/kvm_pvm").exists():
        return Accel("tcg", "/dev/kvm is PVM (kvm_pvm), which cannot run a stock kernel")
    if not any(Path(f"/sys/module/{m}").exists() for m in ("kvm_intel", "kvm_amd")):
        return Accel("tcg", "neither kvm_intel nor kvm_amd is loaded")
    return Accel("kvm", "/dev/kvm with kvm_intel or kvm_amd")


def qemu_missing() -> str | None:
    """Why QEMU cannot be run here, or None."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (Debian package qemu-system-x86; run scripts/setup.sh)"
    return None


def qemu_argv(
    files: BootFiles, accel: Accel, tap: str, control_socket: Path, *, share_host_root: bool
) -> list[str]:
    """The QEMU command line: 1 vCPU, 256 MB, no display, no reboot, PVH boot of vmlinux."""
    argv = [QEMU, *accel.qemu_args(), "-smp", "1", "-m", "256"]
    argv += ["-nographic", "-nodefaults", "-no-reboot", "-serial", "stdio", "-monitor", "none"]
    argv += ["-kernel", str(files.vmlinux), "-initrd", str(files.initramfs)]
    argv += ["-append", KERNEL_CMDLINE]
    argv += ["-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"]
    argv += ["-device", f"virtio-net-pci,netdev=n0,mac={GUEST_MAC},romfile="]
    argv += ["-chardev", f"socket,id=ctl,path={control_socket},server=on,wait=off"]
    argv += ["-device", "virtio-serial-pci"]
    argv += ["-device", f"virtserialport,chardev=ctl,name={CONTROL_PORT_NAME}"]
    if share_host_root:
        argv += [
            "-fsdev",
            "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        ]
        argv += ["-device", f"virtio-9p-pci,fsdev=hostroot,mount_tag={HOST_ROOT_TAG}"]
    return argv


QEMU_STOPPED: Final = ("KVM internal error", "emulation failure")
"""Console lines of a guest QEMU has stopped (but not exited): KVM that cannot run it."""


def _stopped_by_qemu(console_path: Path) -> bool:
    try:
        console = console_path.read_text(errors="replace")
    except FileNotFoundError:
        return False
    return any(marker in console for marker in QEMU_STOPPED)


class BootError(RuntimeError):
    """QEMU exited or stopped, or the guest did not answer within the boot timeout."""

    def __init__(self, reason: str, details: str) -> None:
        super().__init__(f"{reason}\n{details}")
        self.reason = reason


class KernelGuest:
    """A running guest; `close()` (or closing its namespace) stops QEMU."""

    def __init__(
        self,
        ns: Netns,
        tap: str,
        accel: Accel,
        proc: subprocess.Popen[bytes],
        console_path: Path,
        channel: ControlChannel,
        boot_seconds: float,
    ) -> None:
        self.ns = ns
        self.tap = tap
        self.accel = accel
        self.proc = proc
        self.console_path = console_path
        self.channel = channel
        self.boot_seconds = boot_seconds
        self._host_root_mounted = False

    @classmethod
    def boot(
        cls,
        ns: Netns,
        tap: str,
        files: BootFiles,
        *,
        accel: Accel | None = None,
        timeout: float = BOOT_TIMEOUT,
        share_host_root: bool = True,
    ) -> KernelGuest:
        """Start QEMU in `ns` on the existing tap `tap` and wait until /init answers.

        A failed KVM boot is retried once with TCG.
        """
        accel = accel or choose_accel()
        try:
            return cls._boot_once(ns, tap, files, accel, timeout, share_host_root)
        except BootError as exc:
            if accel.name != "kvm":
                raise
            fallback = Accel("tcg", f"the KVM boot failed: {exc.reason}")
            return cls._boot_once(ns, tap, files, fallback, timeout, share_host_root)

    @classmethod
    def _boot_once(
        cls,
        ns: Netns,
        tap: str,
        files: BootFiles,
        accel: Accel,
        timeout: float,
        share_host_root: bool,
    ) -> KernelGuest:
        started = time.monotonic()
        control_socket = ns.workdir / f"control-{accel.name}.sock"
        console_path = ns.workdir / f"console-{accel.name}.log"
        argv = qemu_argv(files, accel, tap, control_socket, share_host_root=share_host_root)
        with console_path.open("wb") as console:
            proc = ns.popen(*argv, stdout=console, stderr=subprocess.STDOUT)

        def alive() -> bool:
            return proc.poll() is None and not _stopped_by_qemu(console_path)

        try:
            sock = connect_unix(control_socket, timeout, alive)
            channel = ControlChannel(sock, alive)
            try:
                channel.wait_ready(timeout - (time.monotonic() - started))
            except BaseException:
                channel.close()
                raise
        except ChannelError as exc:
            kill_process(proc)
            console_text = console_path.read_text(errors="replace")[-4000:]
            raise BootError(
                f"{exc} (accelerator {accel.name}: {accel.why})",
                f"{' '.join(map(shlex.quote, argv))}\nthe console said:\n{console_text}",
            ) from exc
        return cls(ns, tap, accel, proc, console_path, channel, time.monotonic() - started)

    def run(self, script: str, timeout: float = 30.0, *, check: bool = True) -> GuestResult:
        """Run a dash script in the guest; raise GuestCommandError if `check` and it fails."""
        result = self.channel.run(script, timeout)
        return result.check() if check else result

    def console(self) -> str:
        """Everything the guest printed on its serial console (the kernel log, /init)."""
        try:
            return self.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def mount_host_root(self) -> None:
        """Mount the host's / (read-only, 9p) at /host in the guest, once."""
        if self._host_root_mounted:
            return
        self.run(
            "grep -q ' /host ' /proc/mounts || mount -t 9p -o "
            f"trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose {HOST_ROOT_TAG} /host"
        )
        self._host_root_mounted = True

    def run_in_host_root(
        self, script: str, timeout: float = 60.0, *, check: bool = True
    ) -> GuestResult:
        """Run a shell script chrooted in the host's root file system, in the guest: the host's
        programs (python, wgpy from the checkout's .venv) on the guest's kernel."""
        self.mount_host_root()
        return self.run(f"chroot /host /bin/sh -c {shlex.quote(script)}", timeout, check=check)

    def close(self) -> None:
        """Stop QEMU."""
        with contextlib.suppress(OSError):
            self.channel.close()
        kill_process(self.proc)
