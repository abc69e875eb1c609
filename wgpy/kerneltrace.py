"""The kernel WireGuard module's silent drops, read from kprobe events. No I/O.

Four of the module's drops leave no log line and move no counter (docs/kernel-drops.md):
a datagram too short or of an unknown type, a data message for an unknown receiver index, one
that fails authentication, and one for an expired session. On Linux 6.1 the module frees all of
them with ``dev_kfree_skb()``, which is ``consume_skb()``: the ``skb:kfree_skb`` tracepoint
(with its drop reason) never sees them, and ``skb:consume_skb`` records only the buffer's
address (its call site came in 6.3). What still shows them are the functions the module calls
on the way, through kprobe events (dynamic tracepoints on function entry and return):

- ``wg_index_hashtable_lookup()`` returning NULL to ``wg_packet_receive()``: a data message
  whose receiver index names no session (``unknown_index``);
- ``chacha20poly1305_decrypt_sg_inplace()`` returning false to ``decrypt_packet()``: a data
  message that fails authentication (``decryption_failed``);
- ``decrypt_packet()`` returning false with no failed decryption before it in the same worker:
  the session was expired or used up (``expired_keypair``; also a failed memory allocation);
- ``consume_skb()`` called from ``wg_receive()`` or ``wg_packet_receive()`` (the module tail-
  calls it from the latter, so the return address may be in the former) with no unknown index
  just before it on the same CPU: a datagram that failed the size and type check
  (``bad_size``; the module checks both at once, so an unknown type counts here too).

:func:`plan` turns the module's symbols (from ``/proc/kallsyms``) into the probes to create,
:func:`parse_trace_line` reads a line of the trace buffer and :class:`TraceDropCounter` turns
the events into drops. The adapter that creates the probes and reads the buffer is
``wgpy.io.tracefs``. The probes see every WireGuard interface of the kernel, in every network
namespace: the functions they watch do not say which interface they work for.
"""

from __future__ import annotations

import collections
import itertools
import re
from dataclasses import dataclass, field
from typing import Final

from wgpy.events import DropReason

MODULE: Final = "wireguard"
#: The functions of the module whose frees count as failed size/type checks (see above).
RECEIVE_FUNCTIONS: Final = ("wg_receive", "wg_packet_receive")
#: The reasons the probes can count, in the order they are reported.
TRACED_REASONS: Final = (
    DropReason.BAD_SIZE,
    DropReason.UNKNOWN_INDEX,
    DropReason.DECRYPTION_FAILED,
    DropReason.EXPIRED_KEYPAIR,
)


@dataclass(frozen=True)
class Probe:
    """One kprobe event: ``kind`` ``p`` (entry) or ``r`` (return), on ``function``."""

    name: str
    kind: str
    function: str
    fetch: str
    filter: str

    def definition(self, group: str) -> str:
        """The line for ``kprobe_events``."""
        return f"{self.kind}:{group}/{self.name} {self.function} {self.fetch}"


LOOKUP: Final = Probe("wg_lookup", "r", "wg_index_hashtable_lookup", "ret=$retval:x64", "ret == 0")
AEAD: Final = Probe(
    "wg_aead", "r", "chacha20poly1305_decrypt_sg_inplace", "ret=$retval:u8", "ret == 0"
)
DECRYPT: Final = Probe("wg_decrypt", "r", "decrypt_packet", "ret=$retval:u8", "ret == 0")
CONSUME_NAME: Final = "wg_consume"

SOURCES: Final = {
    DropReason.UNKNOWN_INDEX: "kprobe: wg_index_hashtable_lookup() returned NULL to "
    "wg_packet_receive()",
    DropReason.DECRYPTION_FAILED: "kprobe: chacha20poly1305_decrypt_sg_inplace() returned "
    "false to decrypt_packet()",
    DropReason.EXPIRED_KEYPAIR: "kprobe: decrypt_packet() returned false with no failed "
    "decryption (or an allocation failed)",
    DropReason.BAD_SIZE: "kprobe: consume_skb() called from wg_receive()/wg_packet_receive() "
    "after no unknown index (includes unknown_type: one check for both)",
}


@dataclass(frozen=True)
class FunctionRange:
    name: str
    start: int
    end: int


def module_functions(kallsyms: str, module: str = MODULE) -> dict[str, FunctionRange]:
    """The text symbols of ``module`` in ``/proc/kallsyms`` text, each with its end (the next
    symbol's start; the last one has none and is left out). Empty when the addresses are
    hidden (all zero: not root, or ``kernel.kptr_restrict=2``)."""
    tag = f"[{module}]"
    starts: list[tuple[int, str]] = []
    for line in kallsyms.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[3] != tag or parts[1] not in ("t", "T"):
            continue
        try:
            address = int(parts[0], 16)
        except ValueError:
            continue
        if address:
            starts.append((address, parts[2]))
    starts.sort()
    return {
        name: FunctionRange(name, start, following)
        for (start, name), (following, _) in itertools.pairwise(starts)
        if following > start
    }


@dataclass(frozen=True)
class Plan:
    """The probes to create, and for each traced reason its source or why it has none."""

    probes: tuple[Probe, ...]
    sources: dict[DropReason, str]


def plan(functions: dict[str, FunctionRange], traceable: frozenset[str]) -> Plan:
    """The probes for what this kernel has: ``functions`` from :func:`module_functions`,
    ``traceable`` the names in ``available_filter_functions`` (a kprobe needs the symbol; an
    inlined function has none)."""
    probes: list[Probe] = []
    sources: dict[DropReason, str] = {}

    def missing(*names: str) -> str | None:
        absent = [name for name in names if name not in traceable]
        if not absent:
            return None
        return f"not visible: {', '.join(absent)}() cannot be probed on this kernel (inlined?)"

    why = missing(LOOKUP.function, "wg_packet_receive")
    if why is None:
        probes.append(LOOKUP)
        sources[DropReason.UNKNOWN_INDEX] = SOURCES[DropReason.UNKNOWN_INDEX]
    else:
        sources[DropReason.UNKNOWN_INDEX] = why
    why = missing(AEAD.function, DECRYPT.function)
    if why is None:
        probes += [AEAD, DECRYPT]
        sources[DropReason.DECRYPTION_FAILED] = SOURCES[DropReason.DECRYPTION_FAILED]
        sources[DropReason.EXPIRED_KEYPAIR] = SOURCES[DropReason.EXPIRED_KEYPAIR]
    else:
        sources[DropReason.DECRYPTION_FAILED] = sources[DropReason.EXPIRED_KEYPAIR] = why
    ranges = [functions[name] for name in RECEIVE_FUNCTIONS if name in functions]
    if LOOKUP not in probes:
        sources[DropReason.BAD_SIZE] = (
            "not visible: without the index lookup probe a failed size check cannot be told "
            "from an unknown index"
        )
    elif len(ranges) != len(RECEIVE_FUNCTIONS) or "consume_skb" not in traceable:
        sources[DropReason.BAD_SIZE] = (
            "not visible: the addresses of wg_receive()/wg_packet_receive() are hidden "
            "(/proc/kallsyms needs root and kernel.kptr_restrict below 2) or consume_skb() "
            "cannot be probed"
        )
    else:
        probes.append(consume_probe(ranges))
        sources[DropReason.BAD_SIZE] = SOURCES[DropReason.BAD_SIZE]
    return Plan(tuple(probes), sources)


def consume_probe(ranges: list[FunctionRange]) -> Probe:
    """``consume_skb()`` entry, kept only when its return address (the word on top of the
    stack at entry, on x86-64) lies in one of ``ranges``."""
    condition = " || ".join(f"(caller >= {r.start:#x} && caller < {r.end:#x})" for r in ranges)
    return Probe(
        CONSUME_NAME, "p", "consume_skb", "caller=$stack0:x64 site=$stack0:symbol", condition
    )


# ------------------------------------------------------------------------ the trace buffer

_LINE: Final = re.compile(
    r"^\s*(?P<task>.*)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?(?P<time>\d+\.\d+):\s+"
    r"(?P<event>\w+):\s+\((?P<site>[^\s()]+)(?:\s+\[\w+\])?(?:\s+<-\s+(?P<function>\w+))?\)"
    r"(?P<args>.*)$"
)
_ARG: Final = re.compile(r"(\w+)=(\S+)")
_SYMBOL: Final = re.compile(r"^(?P<name>[\w.]+)\+0x[0-9a-f]+/0x[0-9a-f]+$")


@dataclass(frozen=True)
class TraceEvent:
    """One line of a kprobe event in the trace buffer."""

    event: str
    pid: int
    cpu: int
    time: float
    #: the probed function's caller (return probes) or the probed location (entry probes)
    site: str
    #: the probed function (return probes only)
    function: str | None
    args: dict[str, str] = field(default_factory=dict)

    @property
    def site_function(self) -> str:
        """The function name of ``site`` (``wg_packet_receive+0x29c/0x7b0`` → the name)."""
        match = _SYMBOL.match(self.site)
        return match["name"] if match else self.site

    def symbol_arg(self, name: str) -> str | None:
        """The function name of a ``:symbol`` argument (``site=wg_receive+0x25/0x40``)."""
        value = self.args.get(name)
        if value is None:
            return None
        match = _SYMBOL.match(value)
        return match["name"] if match else value

    def int_arg(self, name: str) -> int | None:
        try:
            return int(self.args[name], 0)
        except (KeyError, ValueError):
            return None


def parse_trace_line(line: str) -> TraceEvent | None:
    """A line of ``trace``/``trace_pipe`` (``TASK-PID [CPU] FLAGS TIME: EVENT: (SITE) ARGS``),
    or None for a comment, a blank line or anything else."""
    match = _LINE.match(line.rstrip("\n"))
    if match is None:
        return None
    args = dict(_ARG.findall(match["args"]))
    return TraceEvent(
        match["event"],
        int(match["pid"]),
        int(match["cpu"]),
        float(match["time"]),
        match["site"],
        match["function"],
        args,
    )


class TraceDropCounter:
    """Turns the probes' events into drops, per reason. No I/O.

    Two drops are known by what did *not* happen just before: a free in the receive path is a
    failed size check unless the index lookup on the same CPU (the same softirq) just failed,
    and a false ``decrypt_packet()`` is an expired session unless the AEAD in the same worker
    (the same pid) just failed."""

    def __init__(self) -> None:
        self.counts: collections.Counter[DropReason] = collections.Counter()
        self._unknown_index_on_cpu: collections.Counter[int] = collections.Counter()
        self._failed_aead_in_pid: collections.Counter[int] = collections.Counter()

    def feed(self, event: TraceEvent) -> DropReason | None:
        """Count one event; the drop it stands for, if any."""
        reason = self._reason(event)
        if reason is not None:
            self.counts[reason] += 1
        return reason

    def _reason(self, event: TraceEvent) -> DropReason | None:
        if event.event == LOOKUP.name:
            if event.int_arg("ret") != 0 or event.site_function != "wg_packet_receive":
                return None  # a handshake response's or cookie's lookup: logged elsewhere
            self._unknown_index_on_cpu[event.cpu] += 1
            return DropReason.UNKNOWN_INDEX
        if event.event == CONSUME_NAME:
            if event.symbol_arg("site") not in RECEIVE_FUNCTIONS:
                return None
            if self._unknown_index_on_cpu[event.cpu]:
                self._unknown_index_on_cpu[event.cpu] -= 1
                return None  # the free of the unknown index just counted
            return DropReason.BAD_SIZE
        if event.event == AEAD.name:
            if event.int_arg("ret") != 0 or event.site_function != DECRYPT.function:
                return None
            self._failed_aead_in_pid[event.pid] += 1
            return DropReason.DECRYPTION_FAILED
        if event.event == DECRYPT.name:
            if event.int_arg("ret") != 0:
                return None
            if self._failed_aead_in_pid[event.pid]:
                self._failed_aead_in_pid[event.pid] -= 1
                return None  # the failed decryption just counted
            return DropReason.EXPIRED_KEYPAIR
        return None
