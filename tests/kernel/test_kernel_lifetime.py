"""Rekey after REKEY_AFTER_TIME and expiry after REJECT_AFTER_TIME between wgpyd and the
kernel, each role on each side, all ten tunnels at once (see `lifetime.py`).

One module fixture runs the whole schedule (about 3.5 minutes: the first handshakes, 150 s of
pings on the rekey tunnels, keepalives from the responder on the last-minute tunnels, 183 s of
idle time on the expiry tunnels, then their pings) and each test reads one tunnel's
observations.

Found (Debian 6.1.0 kernel, see docs/kernel-tests.md): the kernel and wgpyd alike start the
new handshake as the old session's initiator, on its first send 120 s after the session began,
and lose no ping across it; the responder never initiates. An initiator that only receives
(the responder's persistent keepalives) rekeys on the first one after 165 s. After 183 s idle
neither side sends on the old keypair: the next packet waits for a handshake started by its
sender, initiator or responder of the old session, and is answered.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Final

import pytest

from tests.kernel.lab import KernelLab, Side
from tests.kernel.lifetime import (
    CASES,
    EXPIRY_PINGS,
    INITIATION_SIZE,
    LAST_MINUTE_KEEPALIVE,
    REKEY_PINGS,
    RESPONSE_SIZE,
    Case,
    Tunnel,
    lifetime_tunnels,
    run_lifetime,
)
from wgpy.timers import KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_AFTER_TIME, REKEY_TIMEOUT

pytestmark = [pytest.mark.kernel, pytest.mark.netns]

CLOCK_SLACK: Final = 1.0
"""Seconds the guest's clock (or a tap timestamp) may be off from the host's."""
REKEY_LATE: Final = 10.0
"""The rekey is the initiator's first send after 120 s; it sends (a request or a reply) every
0.5 s, so 10 s leaves room only for an emulated guest that stalls."""
MAX_LOST: Final = 2
"""Pings a rekey may cost (the kernel keeps the old keypair until the new one is confirmed)."""
LAST_MINUTE: Final = REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
"""165 s: the age at which a received packet makes the session's initiator rekey."""
LAST_MINUTE_LATE: Final = LAST_MINUTE_KEEPALIVE + 10.0
"""The rekey comes with the first keepalive received after 165 s (one every 3 s)."""
QUIET_AFTER: Final = KEEPALIVE_TIMEOUT + 10.0
"""After the first handshake an idle tunnel carries the passive keepalive (10 s), then
nothing."""

SIDE_NAME: Final[dict[Side, str]] = {"host": "wgpyd", "guest": "the kernel"}


def _other(side: Side) -> Side:
    return "guest" if side == "host" else "host"


@pytest.fixture(scope="module")
def lifetime(kernel_lab: KernelLab) -> Iterator[dict[str, Tunnel]]:
    with lifetime_tunnels(kernel_lab) as tunnels:
        started = time.monotonic()
        try:
            run_lifetime(kernel_lab, tunnels)
        except BaseException:
            for tunnel in tunnels:
                print(f"----- {tunnel.case.name}: wgpyd {tunnel.host_if} log -----")
                print(tunnel.daemon.log()[-4000:])
            print(kernel_lab.guest.run("wg show all; dmesg | tail -n 80", check=False).stdout)
            raise
        print(f"session lifetime schedule: {time.monotonic() - started:.0f}s")
        for tunnel in tunnels:
            print(f"{tunnel.case.name}: {tunnel.handshakes()}")
            if tunnel.ping is not None:
                ping = tunnel.ping
                print(f"{tunnel.case.name}: {ping.transmitted} pings, lost {ping.lost}")
        yield {tunnel.case.name: tunnel for tunnel in tunnels}


def _ids(case: Case) -> str:
    return case.name


def _handshakes_advanced(tunnel: Tunnel, at_least: float) -> None:
    """Both sides' `wg show` latest-handshake moved on by `at_least` seconds (each side's
    own clock, whole seconds)."""
    assert tunnel.host_before and tunnel.host_after and tunnel.guest_before and tunnel.guest_after
    host = tunnel.host_after.latest_handshake - tunnel.host_before.latest_handshake
    guest = tunnel.guest_after.latest_handshake - tunnel.guest_before.latest_handshake
    assert host >= at_least - CLOCK_SLACK - 1, f"wgpyd's latest handshake moved {host}s"
    assert guest >= at_least - CLOCK_SLACK - 1, f"the kernel's latest handshake moved {guest}s"


@pytest.mark.parametrize("case", [c for c in CASES if c.kind == "rekey"], ids=_ids)
def test_initiator_rekeys_after_rekey_after_time(lifetime: dict[str, Tunnel], case: Case) -> None:
    tunnel = lifetime[case.name]
    initiator, responder = case.initiator, _other(case.initiator)
    wire = f"{case.name}, seconds after the first handshake:\n{tunnel.wire()}"

    assert tunnel.initiations(responder) == [], f"{SIDE_NAME[responder]} initiated\n{wire}"
    responses = tunnel.responses(responder)
    assert len(responses) == 2, f"expected the first handshake and one rekey\n{wire}"
    rekey = [t for t in tunnel.initiations(initiator) if t > responses[0]]
    assert rekey, f"{SIDE_NAME[initiator]} never rekeyed\n{wire}"
    age = rekey[0] - responses[0]
    assert REKEY_AFTER_TIME - CLOCK_SLACK <= age <= REKEY_AFTER_TIME + REKEY_LATE, (
        f"rekey initiation {age:.2f}s after the session began\n{wire}"
    )
    assert rekey[0] < responses[1], wire
    _handshakes_advanced(tunnel, REKEY_AFTER_TIME)

    roles = [event["initiator"] for event in tunnel.events]
    assert roles == [initiator == "host"] * 2, f"wgpyd's handshake_completed events: {roles}"

    ping = tunnel.ping
    assert ping is not None
    assert ping.transmitted == REKEY_PINGS, ping.output[-2000:]
    assert len(ping.lost) <= MAX_LOST, f"pings lost across the rekey: {ping.lost}"


@pytest.mark.parametrize("case", [c for c in CASES if c.kind == "last-minute"], ids=_ids)
def test_initiator_that_only_receives_rekeys_before_reject_after_time(
    lifetime: dict[str, Tunnel], case: Case
) -> None:
    tunnel = lifetime[case.name]
    initiator, responder = case.initiator, case.sender
    wire = f"{case.name}, seconds after the first handshake:\n{tunnel.wire()}"

    assert tunnel.initiations(responder) == [], f"{SIDE_NAME[responder]} initiated\n{wire}"
    responses = tunnel.responses(responder)
    assert len(responses) == 2, f"expected the first handshake and one rekey\n{wire}"
    rekey = [t for t in tunnel.initiations(initiator) if t > responses[0]]
    assert rekey, f"{SIDE_NAME[initiator]} never rekeyed\n{wire}"
    age = rekey[0] - responses[0]
    assert LAST_MINUTE - CLOCK_SLACK <= age <= LAST_MINUTE + LAST_MINUTE_LATE, (
        f"rekey initiation {age:.2f}s after the session began\n{wire}"
    )
    # after its passive keepalive the initiator sent nothing until then: no rekey at 120 s
    sent = tunnel.sent_by(initiator)
    sent = [d for d in sent if responses[0] + QUIET_AFTER < d.time < rekey[0]]
    assert sent == [], f"{SIDE_NAME[initiator]} sent before its rekey\n{wire}"
    _handshakes_advanced(tunnel, LAST_MINUTE)

    roles = [event["initiator"] for event in tunnel.events]
    assert roles == [initiator == "host"] * 2, f"wgpyd's handshake_completed events: {roles}"


@pytest.mark.parametrize("case", [c for c in CASES if c.kind == "expiry"], ids=_ids)
def test_idle_session_expires_and_next_packet_handshakes(
    lifetime: dict[str, Tunnel], case: Case
) -> None:
    tunnel = lifetime[case.name]
    sender, receiver = case.sender, _other(case.sender)
    wire = f"{case.name}, seconds after the first handshake:\n{tunnel.wire()}"
    born = tunnel.responses(_other(case.initiator))[0]

    idle = [d for d in tunnel.datagrams if born + QUIET_AFTER < d.time < tunnel.ping_started_at]
    assert idle == [], f"the tunnel was not idle\n{wire}"
    later = [d for d in tunnel.datagrams if d.time >= tunnel.ping_started_at]
    assert later, f"nothing was sent after the idle time\n{wire}"
    first = later[0]
    sender_port = tunnel.host_port if sender == "host" else tunnel.guest_port
    # nothing on the old keypair: the sender's first datagram is a new initiation
    assert (first.sport, first.length) == (sender_port, INITIATION_SIZE), wire
    assert first.time - born >= REJECT_AFTER_TIME, wire
    handshake = [d.length for d in later if d.length in (INITIATION_SIZE, RESPONSE_SIZE)]
    assert handshake == [INITIATION_SIZE, RESPONSE_SIZE], f"one new handshake\n{wire}"
    assert tunnel.responses(receiver)[-1] > first.time, wire
    _handshakes_advanced(tunnel, REJECT_AFTER_TIME)

    roles = [event["initiator"] for event in tunnel.events]
    expected = [case.initiator == "host", sender == "host"]
    assert roles == expected, f"wgpyd's handshake_completed events: {roles}"

    ping = tunnel.ping
    assert ping is not None
    assert ping.transmitted == EXPIRY_PINGS, ping.output
    assert ping.lost == [], f"pings after the idle time lost: {ping.lost}\n{ping.output}"
