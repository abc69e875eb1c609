"""The host's end of the guest's control port (a virtio serial port behind a unix socket).

The protocol is described in `guest_init.sh`: one `RUN <id> <seconds> <base64 script>` line
per request; the answer is the script's stdout and stderr in base64 between marker lines that
repeat the id, then its exit status. Ids are never reused, and frames with other ids (answers
to requests given up on, or to repeated readiness probes) are skipped, so a late answer can
never be taken for the answer to a later request.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import math
import secrets
import select
import socket
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Final

OUT: Final = "@@wgpy-out"
ERR: Final = "@@wgpy-err"
END: Final = "@@wgpy-end"

ANSWER_MARGIN: Final = 10.0
"""Seconds the host waits beyond the guest's own time limit for a script's answer."""


class ChannelError(RuntimeError):
    """The guest did not answer (in time), or the connection broke."""


class GuestCommandError(RuntimeError):
    """A script run in the guest exited non-zero (with `check`)."""


@dataclass(frozen=True)
class GuestResult:
    script: str
    status: int
    stdout: str
    stderr: str

    def check(self) -> GuestResult:
        """Raise GuestCommandError with everything the script printed unless it exited 0."""
        if self.status != 0:
            raise GuestCommandError(
                f"guest script exited {self.status}:\n{self.script}\n"
                f"stdout: {self.stdout.strip()}\nstderr: {self.stderr.strip()}"
            )
        return self


def connect_unix(
    path: Path, timeout: float, alive: Callable[[], bool] = lambda: True
) -> socket.socket:
    """Connect to the unix socket `path`, retrying while it does not exist yet or does not
    listen yet (QEMU creates it some time after it starts)."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            if not alive():
                raise ChannelError(f"the process serving {path} is gone") from exc
            if time.monotonic() >= deadline:
                raise ChannelError(f"could not connect to {path} within {timeout:g}s") from exc
            time.sleep(0.05)
        else:
            return sock


class ControlChannel:
    """Requests to the guest's /init over a connected socket; one request at a time."""

    def __init__(self, sock: socket.socket, alive: Callable[[], bool] = lambda: True) -> None:
        self._sock = sock
        self._alive = alive
        self._pending = b""
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(2)

    def close(self) -> None:
        self._sock.close()

    def _new_id(self) -> str:
        return f"{self._prefix}.{next(self._ids)}"

    def _send(self, request_id: str, script: str, limit: float) -> None:
        encoded = base64.b64encode(script.encode()).decode()
        line = f"RUN {request_id} {max(1, math.ceil(limit))} {encoded}\n"
        self._sock.sendall(line.encode())

    def _read_line(self, deadline: float) -> str:
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            readable, _, _ = select.select([self._sock], [], [], min(left, 1.0))
            if not readable:
                if not self._alive():
                    raise ChannelError("the guest is gone (QEMU exited or stopped it)")
                continue
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ChannelError("the guest closed its control port")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode(errors="replace").rstrip("\r")

    def _read_answer(self, ids: Collection[str], deadline: float) -> tuple[str, GuestResult]:
        """The next complete frame whose id is in `ids` (others are skipped)."""
        sections: dict[str, list[str]] | None = None
        current: list[str] = []
        frame_id = ""
        while True:
            line = self._read_line(deadline)
            marker, _, rest = line.partition(" ")
            if marker == OUT:
                frame_id, sections = rest, {"out": [], "err": []}
                current = sections["out"]
            elif sections is None:
                continue
            elif marker == ERR and rest == frame_id:
                current = sections["err"]
            elif marker == END and rest.rpartition(" ")[0] == frame_id:
                status = rest.rpartition(" ")[2]
                if frame_id in ids and status.lstrip("-").isdigit():
                    out, err = ("".join(sections[k]) for k in ("out", "err"))
                    return frame_id, GuestResult("", int(status), _decode(out), _decode(err))
                sections = None
            else:
                current.append(line)

    def run(self, script: str, timeout: float = 30.0) -> GuestResult:
        """Run `script` with the guest's /bin/sh (dash); the guest kills it after `timeout`
        seconds (exit status 137). Raises ChannelError if no answer comes."""
        request_id = self._new_id()
        self._send(request_id, script, timeout)
        deadline = time.monotonic() + timeout + ANSWER_MARGIN
        try:
            _, result = self._read_answer({request_id}, deadline)
        except TimeoutError:
            raise ChannelError(
                f"no answer from the guest within {timeout:g}s to:\n{script}"
            ) from None
        return GuestResult(script, result.status, result.stdout, result.stderr)

    def wait_ready(self, timeout: float, probe_every: float = 1.0) -> None:
        """Send a trivial request again and again until one of them is answered."""
        deadline = time.monotonic() + timeout
        sent: set[str] = set()
        while True:
            request_id = self._new_id()
            self._send(request_id, "true", 5)
            sent.add(request_id)
            try:
                self._read_answer(sent, min(deadline, time.monotonic() + probe_every))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise ChannelError(f"the guest did not answer within {timeout:g}s") from None
            else:
                return


def _decode(text: str) -> str:
    try:
        return base64.b64decode(text, validate=False).decode(errors="replace")
    except binascii.Error as exc:
        return f"<undecodable output: {exc}>"
