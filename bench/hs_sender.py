"""Handshake-flood sender for `python -m bench` (run inside a network namespace; stdlib only).

    python bench/hs_sender.py FILE HOST PORT IDLE_SECONDS

FILE holds back-to-back 148-byte handshake initiations (built by bench.netbench from wgpy's
noise/cookie code). They are sent as one burst from a single UDP socket, draining replies
between sends; replies are counted by type until nothing arrives for IDLE_SECONDS. Prints one
JSON object: sent, responses (92-byte type 2), cookies (64-byte type 3), other, and the seconds
from the first send to the last reply.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
import time

INITIATION_SIZE = 148
RESPONSE = (2, 92)
COOKIE = (3, 64)


def main() -> None:
    path, host, port, idle = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    with open(path, "rb") as f:
        data = f.read()
    messages = [data[i : i + INITIATION_SIZE] for i in range(0, len(data), INITIATION_SIZE)]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    # SO_SNDBUFFORCE / SO_RCVBUFFORCE (Linux; root may exceed the sysctl maximum)
    for opt in (32, 33):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, 16 << 20)
    sock.connect((host, port))
    sock.setblocking(False)
    counts = {"responses": 0, "cookies": 0, "other": 0}
    last_reply = 0.0

    def drain() -> None:
        nonlocal last_reply
        while True:
            try:
                reply = sock.recv(2048)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                continue
            last_reply = time.perf_counter()
            kind = (reply[0], len(reply)) if reply else (0, 0)
            if kind == RESPONSE:
                counts["responses"] += 1
            elif kind == COOKIE:
                counts["cookies"] += 1
            else:
                counts["other"] += 1

    first_send = time.perf_counter()
    sent = 0
    for message in messages:
        while True:
            try:
                sock.send(message)
                sent += 1
                break
            except BlockingIOError:
                select.select([sock], [sock], [], 0.01)
                drain()
            except ConnectionRefusedError:
                continue
        drain()
    while True:
        readable, _, _ = select.select([sock], [], [], idle)
        if not readable:
            break
        drain()
    span = (last_reply - first_send) if last_reply else 0.0
    print(json.dumps({"sent": sent, **counts, "seconds": span}))


if __name__ == "__main__":
    main()
