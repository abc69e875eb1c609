"""kprobe events through tracefs, in a trace instance of our own, and every change undone.

:class:`KprobeSession` mounts tracefs if it is not mounted, adds the probes of a
:class:`wgpy.kerneltrace.Plan` to ``kprobe_events`` under a group named after this process,
enables them (with their filters) only in a new instance ``instances/wgpy-watch-PID`` — so the
global trace buffer, its events and anyone else's instances are left as they were — and reads
that instance's ``trace_pipe``. :meth:`KprobeSession.close` disables them, removes the
instance, then the probes, and unmounts what it mounted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path
from typing import Final

from wgpy.kerneltrace import Plan, Probe, module_functions, plan

TRACEFS: Final = Path("/sys/kernel/tracing")
KALLSYMS: Final = Path("/proc/kallsyms")


class TraceUnavailable(Exception):
    """The probes cannot be set up; the message says why, in words."""


class KprobeSession:
    def __init__(self, tracefs: Path = TRACEFS) -> None:
        self.tracefs = tracefs
        pid = os.getpid()
        self.group = f"wgpy_{pid}"
        self.instance = tracefs / "instances" / f"wgpy-watch-{pid}"
        self.plan: Plan | None = None
        self._mounted = False
        self._added: list[Probe] = []
        self._enabled: list[Probe] = []
        self._made_instance = False
        self._fd = -1
        self._partial = b""

    def start(self) -> Plan:
        """Create and enable the probes this kernel allows; the plan says what each reason
        is read from. Raises :class:`TraceUnavailable` (after undoing what it did)."""
        try:
            return self._start()
        except OSError as error:
            self.close()
            raise TraceUnavailable(
                f"tracefs: {error.strerror or error} ({error.filename})"
            ) from None
        except TraceUnavailable:
            self.close()
            raise

    def _start(self) -> Plan:
        events = self.tracefs / "kprobe_events"
        if not events.exists():
            done = subprocess.run(
                ["mount", "-t", "tracefs", "nodev", str(self.tracefs)],
                check=False,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0 or not events.exists():
                raise TraceUnavailable(
                    f"no kprobe events: tracefs is not at {self.tracefs} and could not be "
                    f"mounted ({done.stderr.strip() or 'kernel without CONFIG_KPROBE_EVENTS?'})"
                )
            self._mounted = True
        traceable = frozenset(
            line.split()[0]
            for line in (self.tracefs / "available_filter_functions").read_text().splitlines()
            if line
        )
        self.plan = plan(module_functions(KALLSYMS.read_text()), traceable)
        for probe in self.plan.probes:
            try:
                _append(events, probe.definition(self.group))
            except OSError as error:
                raise TraceUnavailable(
                    f"the kernel refused the kprobe {probe.definition(self.group)!r}: "
                    f"{error.strerror} (see {self.tracefs / 'error_log'})"
                ) from None
            self._added.append(probe)
        self.instance.mkdir()
        self._made_instance = True
        for probe in self.plan.probes:
            directory = self.instance / "events" / self.group / probe.name
            (directory / "filter").write_text(probe.filter + "\n")
            (directory / "enable").write_text("1\n")
            self._enabled.append(probe)
        self._fd = os.open(self.instance / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        return self.plan

    def read_lines(self) -> list[str]:
        """The complete lines the probes wrote since the last call (never blocks)."""
        if self._fd < 0:
            return []
        data = self._partial
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            except OSError as error:
                if error.errno == errno.EINTR:
                    continue
                raise
            if not chunk:
                break
            data += chunk
        *lines, self._partial = data.split(b"\n")
        return [line.decode(errors="replace") for line in lines]

    def close(self) -> None:
        """Undo everything, in reverse order; safe to call twice."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for probe in self._enabled:
            with contextlib.suppress(OSError):
                enable = self.instance / "events" / self.group / probe.name / "enable"
                enable.write_text("0\n")
        self._enabled = []
        if self._made_instance:
            with contextlib.suppress(OSError):
                self.instance.rmdir()
            self._made_instance = False
        for probe in reversed(self._added):
            with contextlib.suppress(OSError):
                _append(self.tracefs / "kprobe_events", f"-:{self.group}/{probe.name}")
        self._added = []
        if self._mounted:
            subprocess.run(["umount", str(self.tracefs)], check=False, capture_output=True)
            self._mounted = False


def _append(path: Path, line: str) -> None:
    """One line written with O_APPEND (as the shell's ``>>``): ``kprobe_events`` must not be
    truncated (that removes every probe) and cannot seek to its end (Python's "a" mode does)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
