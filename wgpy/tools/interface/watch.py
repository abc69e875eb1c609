"""``wgpy watch IF``: why the kernel's WireGuard dropped packets, per peer and reason.

The kernel module says why it drops a packet only in its dynamic-debug messages (rate-limited
lines in the kernel log that name a peer by an internal number and its endpoint) and in a few
interface counters. The watch reads the log (/dev/kmsg), turns each WireGuard line into the
event the userspace Device would have emitted (``wgpy.kernelmsg`` has the table), names the
peer through the endpoints the kernel reports over netlink, and keeps the counts where ``wgpy
show IF`` finds them: a state file per interface and network namespace, in the same shape
as wgpyd's ``wgpy-stats`` answer, plus the interface counters, which are exact where the
attributed counts are lower bounds (the kernel drops messages beyond its rate limit).

Four drops leave neither a line nor a counter (too short, unknown index, failed decryption,
expired session); with ``--trace-drops`` the watch counts them through kprobe events
(``wgpy.kerneltrace``, ``wgpy.io.tracefs``) for the whole module, and says for each reason
where its count comes from or why it has none.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from wgpy.allowedips import AllowedIPs
from wgpy.events import Direction, DropReason, InnerInfo, PacketDropped
from wgpy.exit_status import Exit
from wgpy.kernelmsg import KernelMessage, classify, parse_kmsg_record
from wgpy.kerneltrace import TRACED_REASONS, TraceDropCounter, parse_trace_line
from wgpy.tally import AddressTally
from wgpy.tools.interface.show import key_from_hex, parse_get

STATE_DIRECTORY: Final = Path("/run/wgpy")
DEBUGFS: Final = Path("/sys/kernel/debug")
DYNAMIC_DEBUG_CONTROL: Final = DEBUGFS / "dynamic_debug" / "control"
MESSAGE_COST: Final = Path("/proc/sys/net/core/message_cost")
MESSAGE_BURST: Final = Path("/proc/sys/net/core/message_burst")
#: How often the watch re-reads peers (endpoints) and counters and rewrites its state file.
REFRESH_SECONDS: Final = 1.0


def _netns_inode() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def state_path(ifname: str) -> Path:
    """Where the watch of ``ifname`` in this network namespace keeps its counts (interface
    names repeat across namespaces, /run does not)."""
    return STATE_DIRECTORY / f"watch-{_netns_inode()}-{ifname}.json"


def read_state(ifname: str) -> dict[str, Any] | None:
    """The counts of a running watch of ``ifname`` (this namespace), or None if none runs."""
    try:
        state: dict[str, Any] = json.loads(state_path(ifname).read_text())
    except (OSError, ValueError):
        return None
    pid = int(state.get("pid", 0))
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, ValueError, OverflowError):
        return None
    return state


# ------------------------------------------------------------------------------ attribution


@dataclass
class PeerDirectory:
    """What netlink says of the interface's peers: who is behind an endpoint, and which
    peer's AllowedIPs hold an address (for disallowed sources)."""

    by_endpoint: dict[str, list[str]] = field(default_factory=dict)
    table: AllowedIPs[str] = field(default_factory=AllowedIPs)
    keys: list[str] = field(default_factory=list)

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, str]]) -> PeerDirectory:
        directory = cls()
        current: str | None = None
        for key, value in pairs:
            if key == "public_key":
                current = key_from_hex(value)
                directory.keys.append(current)
            elif current is None:
                continue
            elif key == "endpoint":
                directory.by_endpoint.setdefault(_endpoint_text(value), []).append(current)
            elif key == "allowed_ip":
                directory.table.insert(value, current)
        return directory

    def owner(self, address: str) -> str | None:
        import ipaddress

        try:
            return self.table.lookup(ipaddress.ip_address(address))
        except ValueError:
            return None


def _endpoint_text(text: str) -> str:
    """An endpoint as ``host:port`` with the host bare (no brackets, no scope)."""
    host, _, port = text.rpartition(":")
    return f"{host.strip('[]').split('%')[0]}:{port}"


@dataclass
class Attribution:
    peer: str | None  # base64 public key, when known for sure
    how: str  # "id", "endpoint", "ambiguous", "unknown", "interface"


class DropTally:
    """The counts of one watch: per (peer, reason), disallowed-source owners, the texts of
    unrecognised lines, and how peers were attributed. No I/O."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.directory = PeerDirectory()
        self.counts: collections.Counter[tuple[str | None, str]] = collections.Counter()
        self.owners: collections.Counter[tuple[str, str | None]] = collections.Counter()
        self.unattributed: collections.Counter[tuple[str, str]] = collections.Counter()
        self.unrecognised: collections.Counter[str] = collections.Counter()
        self.not_drops = 0
        #: the inner addresses the kernel names (a disallowed source, a no_peer destination)
        self.addresses: dict[tuple[str | None, str], AddressTally] = {}
        self._peer_ids: dict[int, str] = {}

    def update_peers(self, directory: PeerDirectory) -> None:
        self.directory = directory
        known = set(directory.keys)
        self._peer_ids = {n: key for n, key in self._peer_ids.items() if key in known}

    def attribute(self, message: KernelMessage) -> Attribution:
        if message.peer_id is None and message.endpoint is None:
            return Attribution(None, "interface")
        if message.peer_id is not None and message.peer_id in self._peer_ids:
            return Attribution(self._peer_ids[message.peer_id], "id")
        if message.endpoint is None:
            return Attribution(None, "unknown")
        host, port = message.endpoint
        candidates = self.directory.by_endpoint.get(f"{host.split('%')[0]}:{port}", [])
        if len(candidates) == 1:
            if message.peer_id is not None:  # kernel ids are stable while the peer lives
                self._peer_ids[message.peer_id] = candidates[0]
            return Attribution(candidates[0], "endpoint")
        return Attribution(None, "ambiguous" if candidates else "unknown")

    def feed(self, message: KernelMessage) -> PacketDropped | None:
        """Count one wireguard line of this interface; the event for a drop, else None."""
        if message.reason is None:
            self.not_drops += 1
            return None
        if not message.recognised:
            self.unrecognised[message.text] += 1
        reason = message.reason
        # every rule of the table knows its direction; a line none knows is taken as incoming
        direction = message.direction or Direction.INCOMING
        attribution = self.attribute(message)
        from_peer = message.peer_id is not None or reason == DropReason.DISALLOWED_SOURCE
        peer = attribution.peer if from_peer else None
        if from_peer and peer is None:
            self.unattributed[(reason.value, attribution.how)] += 1
        self.counts[(peer, reason.value)] += 1
        if message.inner_source or message.inner_destination:
            tally = self.addresses.setdefault((peer, reason.value), AddressTally())
            if message.inner_source:
                tally.sources.add(message.inner_source)
            if message.inner_destination:
                tally.destinations.add(message.inner_destination)
        owner: str | None = None
        if reason == DropReason.DISALLOWED_SOURCE and message.inner_source and peer:
            owner = self.directory.owner(message.inner_source)
            self.owners[(peer, owner)] += 1
        inner = None
        if message.inner_source or message.inner_destination:
            version = 6 if ":" in (message.inner_source or message.inner_destination or "") else 4
            inner = InnerInfo(
                version, message.inner_source or "", message.inner_destination or "", 0, 0
            )
        detail = message.detail
        if from_peer and peer is None:
            detail = f"{detail} (peer {attribution.how})".strip()
        return PacketDropped(
            reason,
            direction,
            _key_bytes(peer),
            endpoint=message.endpoint if direction == Direction.INCOMING else None,
            inner=inner,
            owner=_key_bytes(owner),
            detail=detail,
        )

    def stats(self) -> dict[str, Any]:
        """wgpyd's ``wgpy-stats`` shape, plus what only the kernel watch knows."""
        return {
            "interface": self.interface,
            "drops": [
                {"peer": peer, "reason": reason, "count": count}
                | self._addresses_json((peer, reason))
                for (peer, reason), count in self.counts.items()
            ],
            "disallowed_owners": [
                {"peer": peer, "owner": owner, "count": count}
                for (peer, owner), count in self.owners.items()
            ],
            "unattributed": [
                {"reason": reason, "why": how, "count": count}
                for (reason, how), count in self.unattributed.items()
            ],
            "unrecognised": [
                {"text": text, "count": count} for text, count in self.unrecognised.items()
            ],
        }

    def _addresses_json(self, key: tuple[str | None, str]) -> dict[str, Any]:
        """``sources`` / ``destinations`` as wgpy-stats has them, where the kernel named any."""
        tally = self.addresses.get(key)
        if tally is None:
            return {}
        found: dict[str, Any] = {}
        for name, counter in (("sources", tally.sources), ("destinations", tally.destinations)):
            top = counter.top()
            if top:
                found[name] = [{"address": c.item, "count": c.count, "error": c.error} for c in top]
        return found


def _key_bytes(key: str | None) -> bytes | None:
    import base64

    return None if key is None else base64.b64decode(key)


# ------------------------------------------------------------- dynamic debug and rate limits


def _wireguard_callsites(control: Path) -> list[tuple[str, str, bool]]:
    """(file, line, enabled) of every callsite of the wireguard module."""
    sites = []
    for line in control.read_text().splitlines():
        if "[wireguard]" not in line:
            continue
        location, _, rest = line.partition(" ")
        path, _, number = location.rpartition(":")
        flags = rest.split("=", 1)[1].split(" ", 1)[0] if "=" in rest else "_"
        sites.append((path, number, "p" in flags))
    return sites


class DynamicDebug:
    """Turns the wireguard module's debug messages on and back to exactly how they were."""

    def __init__(self) -> None:
        self.mounted_debugfs = False
        self.previously_on: list[tuple[str, str]] | None = None

    def enabled_callsites(self) -> int | None:
        """How many wireguard callsites print (None: cannot tell, no debugfs or no module)."""
        try:
            return sum(on for _, _, on in _wireguard_callsites(DYNAMIC_DEBUG_CONTROL))
        except OSError:
            return None

    def enable(self) -> int:
        if not DYNAMIC_DEBUG_CONTROL.exists():
            import subprocess

            subprocess.run(
                ["mount", "-t", "debugfs", "none", str(DEBUGFS)], check=True, capture_output=True
            )
            self.mounted_debugfs = True
        sites = _wireguard_callsites(DYNAMIC_DEBUG_CONTROL)
        self.previously_on = [(path, number) for path, number, on in sites if on]
        DYNAMIC_DEBUG_CONTROL.write_text("module wireguard +p\n")
        return len(sites)

    def restore(self) -> None:
        if self.previously_on is None:
            return
        with contextlib.suppress(OSError):
            DYNAMIC_DEBUG_CONTROL.write_text("module wireguard -p\n")
            for path, number in self.previously_on:
                DYNAMIC_DEBUG_CONTROL.write_text(f"file {path} line {number} +p\n")
        self.previously_on = None
        if self.mounted_debugfs:
            import subprocess

            subprocess.run(["umount", str(DEBUGFS)], check=False, capture_output=True)
            self.mounted_debugfs = False


class Unthrottle:
    """Lifts the kernel's net_ratelimit (message_cost = 0) and puts the old values back."""

    def __init__(self) -> None:
        self.saved: dict[Path, str] | None = None

    def apply(self) -> None:
        self.saved = {path: path.read_text() for path in (MESSAGE_COST, MESSAGE_BURST)}
        MESSAGE_COST.write_text("0\n")

    def restore(self) -> None:
        if self.saved is None:
            return
        for path, value in self.saved.items():
            with contextlib.suppress(OSError):
                path.write_text(value)
        self.saved = None

    @staticmethod
    def throttled() -> bool:
        try:
            return MESSAGE_COST.read_text().strip() != "0"
        except OSError:
            return True


# ----------------------------------------------------------------- kprobes: silent drops

NOT_VISIBLE: Final = "not visible"
TRACED_SCOPE: Final = "every WireGuard interface of this kernel, in every network namespace"


class TracedDrops:
    """The drops the module neither logs nor counts, from kprobe events (``--trace-drops``),
    with the source of each reason's count or why it has none."""

    def __init__(self) -> None:
        self.counter = TraceDropCounter()
        self.session: Any = None
        self.sources: dict[DropReason, str] = {
            reason: f"{NOT_VISIBLE}: the kernel neither logs nor counts it; "
            "`wgpy watch --trace-drops` counts it through kprobe events"
            for reason in TRACED_REASONS
        }

    def start(self, options: WatchOptions) -> None:
        if not options.trace_drops:
            return
        from wgpy.io.tracefs import KprobeSession, TraceUnavailable

        session = KprobeSession()
        try:
            plan = session.start()
        except TraceUnavailable as error:
            for reason in TRACED_REASONS:
                self.sources[reason] = f"{NOT_VISIBLE}: {error}"
            options.say(f"wgpy watch: no kprobe events, silent drops not counted: {error}")
            return
        self.session = session
        self.sources.update(plan.sources)
        options.say(
            f"wgpy watch: {len(plan.probes)} kprobe events in {session.instance} "
            f"(counting {TRACED_SCOPE}):"
        )
        for reason in TRACED_REASONS:
            options.say(f"  {reason.value}: {self.sources[reason]}")

    def read(self) -> list[PacketDropped]:
        if self.session is None:
            return []
        events = []
        for line in self.session.read_lines():
            parsed = parse_trace_line(line)
            reason = self.counter.feed(parsed) if parsed is not None else None
            if reason is not None:
                detail = f"kernel-wide, {self.sources[reason]}"
                events.append(PacketDropped(reason, Direction.INCOMING, None, detail=detail))
        return events

    def state(self) -> dict[str, Any]:
        return {
            "scope": TRACED_SCOPE,
            "drops": [
                {
                    "reason": reason.value,
                    "count": self.counter.counts[reason],
                    "source": self.sources[reason],
                }
                for reason in TRACED_REASONS
            ],
        }

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


# -------------------------------------------------------------------------------- the loop


@dataclass
class WatchOptions:
    interface: str
    enable_debug: bool = False
    unthrottle: bool = False
    json_log: TextIO | None = None
    metrics: str | None = None
    #: Count the module's silent drops through kprobe events (restored on exit).
    trace_drops: bool = False
    #: Stop after this many seconds (tests); None runs until a signal.
    duration: float | None = None
    say: Callable[[str], object] = field(default=lambda text: sys.stderr.write(text + "\n"))


def _open_kmsg() -> int:
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    os.lseek(fd, 0, os.SEEK_END)  # only what happens from now on
    return fd


def _read_records(fd: int) -> list[str]:
    records: list[str] = []
    while True:
        try:
            data = os.read(fd, 8192)
        except BlockingIOError:
            return records
        except OSError as error:
            if error.errno == errno.EPIPE:  # overwritten before we read it: go on
                continue
            raise
        if not data:
            return records
        records.append(data.decode(errors="replace"))


def _write_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(state, separators=(",", ":")))
    os.replace(temporary, path)


def run_watch(options: WatchOptions) -> int:
    """Watch until SIGTERM/SIGINT (or ``duration``); restore debug and rate limits on exit."""
    from wgpy.io.kernel_wg import KernelInterfaceError, kernel_get, link_statistics
    from wgpy.sinks.eventlog import JsonEventLog

    ifname = options.interface
    try:
        pairs = kernel_get(ifname)
    except KernelInterfaceError as error:
        options.say(f"wgpy watch: {ifname} is not a kernel WireGuard interface here: {error}")
        return Exit.UNREADABLE
    debug, unthrottle = DynamicDebug(), Unthrottle()
    stop = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    tally = DropTally(ifname)
    tally.update_peers(PeerDirectory.from_pairs(pairs))
    log = JsonEventLog(ifname) if options.json_log is not None else None
    collector = _start_metrics(options, ifname)
    path = state_path(ifname)
    started = time.time()
    kmsg = -1
    traced = TracedDrops()
    try:
        kmsg = _open_kmsg()
        traced.start(options)
        if options.enable_debug:
            sites = debug.enable()
            options.say(f"wgpy watch: dynamic debug on for {sites} wireguard callsites")
        elif not debug.enabled_callsites():
            options.say(
                "wgpy watch: the wireguard module's debug messages are off, so no drop can be "
                "attributed; run with --enable-debug (or: mount -t debugfs none "
                "/sys/kernel/debug; echo 'module wireguard +p' > "
                "/sys/kernel/debug/dynamic_debug/control)"
            )
        if options.unthrottle:
            unthrottle.apply()
        deadline = None if options.duration is None else time.monotonic() + options.duration
        next_refresh = 0.0
        while not stop and (deadline is None or time.monotonic() < deadline):
            now = time.monotonic()
            if now >= next_refresh:
                next_refresh = now + REFRESH_SECONDS
                with contextlib.suppress(KernelInterfaceError):
                    pairs = kernel_get(ifname)
                    tally.update_peers(PeerDirectory.from_pairs(pairs))
                counters: dict[str, int] = {}
                with contextlib.suppress(OSError):
                    counters = link_statistics(ifname)
                state = tally.stats() | {
                    "pid": os.getpid(),
                    "started": started,
                    "updated": time.time(),
                    "source": "kernel",
                    "lower_bound": Unthrottle.throttled(),
                    "debug_callsites_on": debug.enabled_callsites(),
                    "link_counters": counters,
                    "not_drops": tally.not_drops,
                    "traced": traced.state(),
                }
                _write_state(path, state)
                if collector is not None:
                    collector.snapshot = _snapshot(ifname, tally, pairs, traced)
            with contextlib.suppress(InterruptedError):
                select.select([kmsg], [], [], 0.2)
            for record in _read_records(kmsg):
                parsed = parse_kmsg_record(record)
                message = classify(parsed.text) if parsed is not None else None
                if message is None or message.interface != ifname:
                    continue
                event = tally.feed(message)
                if event is not None and log is not None and options.json_log is not None:
                    line = log.render(event, time.monotonic(), time.time())
                    if line is not None:
                        options.json_log.write(line + "\n")
                        options.json_log.flush()
            for event in traced.read():
                if log is not None and options.json_log is not None:
                    line = log.render(event, time.monotonic(), time.time())
                    if line is not None:
                        options.json_log.write(line + "\n")
                        options.json_log.flush()
    finally:
        traced.close()
        debug.restore()
        unthrottle.restore()
        if kmsg >= 0:
            os.close(kmsg)
        with contextlib.suppress(OSError):
            path.unlink()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return Exit.OK


def _start_metrics(options: WatchOptions, ifname: str) -> Any:
    if not options.metrics:
        return None
    from wgpy.sinks.metrics import make_registry, start_server

    registry, collector = make_registry(ifname)
    start_server(options.metrics, registry)
    return collector


def _snapshot(
    ifname: str, tally: DropTally, pairs: list[tuple[str, str]], traced: TracedDrops
) -> Any:
    from wgpy.sinks.metrics import PeerSample, Snapshot

    view = parse_get(ifname, pairs)
    peers = tuple(
        PeerSample(
            p.public_key, ",".join(p.allowed_ips), p.rx_bytes, p.tx_bytes, p.latest_handshake
        )
        for p in view.peers
    )
    drops = tuple((peer or "", reason, count) for (peer, reason), count in tally.counts.items())
    module_drops = tuple(
        (reason.value, traced.sources[reason], traced.counter.counts[reason])
        for reason in TRACED_REASONS
        if not traced.sources[reason].startswith(NOT_VISIBLE)
    )
    return Snapshot(ifname, peers, drops, module_drops)
