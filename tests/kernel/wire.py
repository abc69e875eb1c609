"""What crosses the tap between the host namespace and the guest, seen by tcpdump.

Both directions of the outer (UDP) traffic pass the tap, so one capture shows what each side
sent and when — keepalive intervals, handshake messages — without a capture tool in the guest.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Final

from tests.netns.harness import Netns, kill_process, wait_for

SETTLE: Final = 0.3
"""Seconds tcpdump gets to print the last packets before it is stopped."""

KEEPALIVE_SIZE: Final = 32
"""A data message with no payload: 16-byte header + 16-byte tag."""

LINE: Final = re.compile(
    r"^(?P<time>\d+\.\d+) IP6? (?P<src>[0-9a-f.:]+)\.(?P<sport>\d+) > "
    r"(?P<dst>[0-9a-f.:]+)\.(?P<dport>\d+): UDP, length (?P<length>\d+)"
)


@dataclass(frozen=True)
class Datagram:
    time: float
    src: str
    sport: int
    dst: str
    dport: int
    length: int
    """UDP payload length (148 initiation, 92 response, 32 keepalive, ...)."""


def parse(text: str) -> list[Datagram]:
    """The UDP lines of `tcpdump -n -tt` output."""
    out = []
    for match in map(LINE.match, text.splitlines()):
        if match:
            out.append(
                Datagram(
                    float(match["time"]),
                    match["src"],
                    int(match["sport"]),
                    match["dst"],
                    int(match["dport"]),
                    int(match["length"]),
                )
            )
    return out


class TapCapture:
    """`tcpdump -i IFACE -n -tt udp` in `ns`, from `__enter__` (once it listens) to `stop()`."""

    def __init__(self, ns: Netns, iface: str) -> None:
        self.ns = ns
        self.iface = iface
        self._out = ns.workdir / f"tcpdump-{iface}.txt"
        self._err = ns.workdir / f"tcpdump-{iface}.err"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> TapCapture:
        with self._out.open("wb") as out, self._err.open("wb") as err:
            argv = ("tcpdump", "-i", self.iface, "--immediate-mode", "-n", "-tt", "-l", "udp")
            self._proc = self.ns.popen(*argv, stdout=out, stderr=err)
        wait_for(
            lambda: "listening on" in self._err.read_text(errors="replace"),
            10,
            what=f"tcpdump on {self.iface}",
        )
        return self

    def stop(self) -> list[Datagram]:
        """Stop tcpdump and parse what it printed."""
        if self._proc is not None:
            # tcpdump exits on SIGTERM without printing packets it has not read yet
            time.sleep(SETTLE)
            kill_process(self._proc)
            self._proc = None
        return parse(self._out.read_text(errors="replace"))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
