"""``wgpy capture``: record wgpyd's annotated pcapng stream, or print one back."""

from __future__ import annotations

import socket
import struct
import sys
import time
from typing import BinaryIO, TextIO

from wgpy.io.uapi_client import open_capture
from wgpy.packet import inner_info
from wgpy.sinks import pcapng
from wgpy.uapi import socket_path


class CaptureError(OSError):
    """The interface's capture stream cannot be opened; the text names the interface."""


def connect(ifname: str) -> socket.socket:
    """The live stream of wgpyd's interface ``ifname``; CaptureError names the interface."""
    try:
        return open_capture(ifname)
    except (FileNotFoundError, ConnectionRefusedError):
        raise CaptureError(
            f"Unable to access interface {ifname}: no wgpyd socket {socket_path(ifname)} "
            "(capture needs a running wgpyd for the interface; `wgpy show` lists them)"
        ) from None
    except OSError as error:
        raise CaptureError(
            f"Unable to access interface {ifname}: {error.strerror or error}"
        ) from None


def record(
    ifname: str,
    out: BinaryIO,
    *,
    count: int | None = None,
    duration: float | None = None,
    sock: socket.socket | None = None,
) -> int:
    """Copy the live stream to ``out`` until ``count`` packets, ``duration`` seconds or Ctrl-C.

    ``sock`` is a stream from :func:`connect` (default: connect now). Returns the number of
    packets written. Only whole blocks are written.
    """
    if sock is None:
        sock = connect(ifname)
    deadline = None if duration is None else time.monotonic() + duration
    buffer = b""
    packets = 0
    try:
        while count is None or packets < count:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            buffer += chunk
            while len(buffer) >= 8:
                kind, total = struct.unpack_from("<II", buffer)
                if total < 12 or len(buffer) < total:
                    break
                out.write(buffer[:total])
                buffer = buffer[total:]
                if kind == pcapng.BLOCK_EPB:
                    packets += 1
                    if count is not None and packets >= count:
                        break
            out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return packets


def describe(captured: pcapng.CapturedPacket) -> str:
    info = inner_info(captured.packet)
    stamp = time.strftime("%H:%M:%S", time.localtime(captured.timestamp))
    stamp += f".{int(captured.timestamp * 1e6) % 1_000_000:06d}"
    if info is None:
        what = f"{len(captured.packet)} bytes (not IP)"
    else:
        what = f"IPv{info.version} {info.src} > {info.dst} proto {info.proto} len {info.length}"
    return f"{stamp} {what}  [{captured.comment}]"


def print_file(stream: BinaryIO, out: TextIO = sys.stdout) -> int:
    shown = 0
    for captured in pcapng.read(stream):
        out.write(describe(captured) + "\n")
        shown += 1
    return shown
