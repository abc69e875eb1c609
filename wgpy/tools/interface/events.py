"""``wgpy events``: a running wgpyd's recent events, or its live stream of them.

The daemon keeps the last few hundred events (drops with reason, peer and inner addresses,
handshakes, roaming...) and sends them over its UAPI socket (``wgpy-events=1``, which ``wg``
never sends): as text lines like its verbose log, or as the JSON log's records.
"""

from __future__ import annotations

import socket
from typing import TextIO

from wgpy.io.uapi_client import open_events


class EventsError(OSError):
    """No event stream for the interface; the text says why and names it."""


def connect(ifname: str, *, follow: bool, as_json: bool) -> socket.socket:
    try:
        return open_events(ifname, follow=follow, as_json=as_json)
    except (FileNotFoundError, ConnectionRefusedError):
        raise EventsError(
            f"Unable to access interface {ifname}: no running wgpyd has it "
            "(events come from wgpyd's socket; for the kernel module see `wgpy watch`)"
        ) from None
    except OSError as error:
        raise EventsError(
            f"Unable to access interface {ifname}: {error.strerror or error}"
        ) from None


def copy(ifname: str, sock: socket.socket, out: TextIO, *, follow: bool) -> int:
    """Write the event lines from ``sock`` to ``out`` until the daemon ends the list (or,
    with ``follow``, until it closes the stream or Ctrl-C); return the number of lines.

    Raises EventsError when the daemon has no event stream (wireguard-go closes the
    connection, an older wgpyd answers an error)."""
    buffer = b""
    lines = 0
    listed = False  # the daemon said errno=0 after the recent events
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                if not line:
                    continue
                if line.startswith(b"errno="):
                    if line != b"errno=0":
                        raise EventsError(
                            f"{ifname}: the daemon has no event stream ({line.decode()}); "
                            "it is not a wgpyd"
                        )
                    listed = True
                    if not follow:
                        return lines
                    continue
                out.write(line.decode(errors="replace") + "\n")
                lines += 1
            if follow:
                out.flush()
    except KeyboardInterrupt:
        return lines
    finally:
        sock.close()
    if not listed:
        raise EventsError(f"{ifname}: the daemon has no event stream; it is not a wgpyd")
    return lines
