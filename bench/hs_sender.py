"""Handshake-flood sender for `python -m bench` (run inside a network namespace).

    python bench/hs_sender.py FILE HOST PORT IDLE_SECONDS [--mac2 RESPONDER_PUBLIC_HEX SRC_BASE]

FILE holds back-to-back 148-byte handshake initiations (built by bench.netbench from wgpy's
noise/cookie code, one per distinct initiator). They are sent as one burst from a single UDP
socket, draining replies between sends; replies are counted by type until nothing arrives for
IDLE_SECONDS. Prints one JSON object: sent, responses (92-byte type 2), cookies (64-byte type
3), other, and the seconds from the first send to the last reply.

With --mac2, initiation i is sent from source address SRC_BASE + i (the namespace must hold
those addresses, e.g. ``ip route add local 10.98.0.0/16 dev lo``) so per-IP rate limits do not
bind, at most WINDOW initiations wait for a response at any time (so the responder's queue does
not overflow), and every cookie reply is answered at once by re-sending that initiation with mac2
made from the decrypted cookie, the way a real initiator under load does; if nothing arrives for
STALL seconds the waiting initiations are re-sent (at most ROUNDS stalls in a row). Then
"seconds" runs from the first send to the last handshake response, and "answered" counts
distinct initiators that got one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import resource
import select
import socket
import struct
import sys
import time

INITIATION_SIZE = 148
MAC1_END = 132
RESPONSE = (2, 92)
COOKIE = (3, 64)
IP_PKTINFO = 8
ROUNDS = 5
WINDOW = 256
STALL = 0.25


def main() -> None:
    path, host, port, idle = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    mac2_mode = len(sys.argv) > 5 and sys.argv[5] == "--mac2"
    with open(path, "rb") as f:
        data = f.read()
    messages = [data[i : i + INITIATION_SIZE] for i in range(0, len(data), INITIATION_SIZE)]
    by_index = {struct.unpack_from("<I", m, 4)[0]: i for i, m in enumerate(messages)}
    sources: list[bytes] = []
    cookie_key = b""
    if mac2_mode:
        from wgpy import crypto  # the cookie round trip needs BLAKE2s and XChaCha20-Poly1305

        responder_public = bytes.fromhex(sys.argv[6])
        cookie_key = crypto.hash_(crypto.LABEL_COOKIE, responder_public)
        base = int(ipaddress.IPv4Address(sys.argv[7]))
        sources = [ipaddress.IPv4Address(base + i).packed for i in range(len(messages))]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    # SO_SNDBUFFORCE / SO_RCVBUFFORCE (Linux; root may exceed the sysctl maximum)
    for opt in (32, 33):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, 16 << 20)
    sock.setblocking(False)
    target = (host, port)
    counts = {"responses": 0, "cookies": 0, "other": 0, "resent": 0}
    answered: set[int] = set()
    outstanding: set[int] = set()
    next_new = 0
    last_reply = 0.0
    last_response = 0.0
    sent = 0

    def send(i: int, message: bytes) -> None:
        nonlocal sent
        while True:
            try:
                if sources:
                    pktinfo = struct.pack("@I4s4s", 0, sources[i], bytes(4))
                    sock.sendmsg([message], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)], 0, target)
                else:
                    sock.sendto(message, target)
                sent += 1
                return
            except BlockingIOError:
                select.select([], [sock], [], 0.01)
            except ConnectionRefusedError:
                continue

    def drain() -> None:
        nonlocal last_reply, last_response
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
                last_response = last_reply
                i = by_index.get(struct.unpack_from("<I", reply, 8)[0])
                if i is not None:
                    answered.add(i)
                    outstanding.discard(i)
            elif kind == COOKIE:
                counts["cookies"] += 1
                i = by_index.get(struct.unpack_from("<I", reply, 4)[0])
                if mac2_mode and i is not None:
                    body = messages[i][:MAC1_END]
                    mac1 = body[MAC1_END - 16 :]
                    cookie = crypto.xaead_decrypt(cookie_key, reply[8:32], reply[32:64], mac1)
                    if cookie is not None:
                        messages[i] = body + crypto.mac(cookie, body)
                        counts["resent"] += 1
                        send(i, messages[i])
            else:
                counts["other"] += 1

    def wait_idle() -> None:
        while True:
            readable, _, _ = select.select([sock], [], [], idle)
            if not readable:
                return
            drain()

    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_start = usage0.ru_utime + usage0.ru_stime
    first_send = time.perf_counter()
    if not mac2_mode:
        for i, message in enumerate(messages):
            send(i, message)
            drain()
        wait_idle()
    else:
        # keep at most WINDOW initiations waiting for a response, so the responder's queue
        # (wireguard-go drops beyond 1024) never overflows; re-send what is lost
        stalls = 0
        while len(answered) < len(messages):
            while next_new < len(messages) and len(outstanding) < WINDOW:
                outstanding.add(next_new)
                send(next_new, messages[next_new])
                next_new += 1
            readable, _, _ = select.select([sock], [], [], STALL)
            if readable:
                drain()
                stalls = 0
                continue
            stalls += 1
            if stalls > ROUNDS:
                break
            for i in list(outstanding):
                counts["resent"] += 1
                send(i, messages[i])
    end = last_response if mac2_mode else last_reply
    span = (end - first_send) if end else 0.0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_start
    print(
        json.dumps(
            {
                "sent": sent,
                **counts,
                "answered": len(answered),
                "seconds": span,
                "sender_cpu_s": cpu,
            }
        )
    )


if __name__ == "__main__":
    main()
