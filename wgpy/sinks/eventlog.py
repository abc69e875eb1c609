"""Structured (JSON lines) rendering of core events, rate-limited per reason.

A flood of garbage must not fill a disk: each reason (or event kind) gets a token bucket, and
the first line let through after a suppression says how many lines of that kind were dropped.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime
from typing import Any, Final

from wgpy.events import Event, PacketDropped, key_b64

LINES_PER_SECOND: Final = 10.0
BURST: Final = 50.0
_CAMEL: Final = re.compile(r"(?<!^)(?=[A-Z])")


def event_name(event: Event) -> str:
    return _CAMEL.sub("_", type(event).__name__).lower()


def _iso_time(wall_time: float) -> str:
    return datetime.fromtimestamp(wall_time, UTC).isoformat(timespec="milliseconds")


def event_record(event: Event, interface: str, wall_time: float) -> dict[str, Any]:
    """A flat JSON-ready dict: time, interface, event, and the event's public fields."""
    record: dict[str, Any] = {
        "time": _iso_time(wall_time),
        "interface": interface,
        "event": event_name(event),
    }
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if field.name in ("peer", "owner"):
            value = key_b64(value)
        elif field.name == "endpoint" and value is not None:
            host, port = value
            value = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        elif field.name == "inner" and value is not None:
            record["inner_src"] = value.src
            record["inner_dst"] = value.dst
            record["inner_proto"] = value.proto
            continue
        elif hasattr(value, "value"):
            value = value.value  # enums
        if value is None or value == "":
            continue
        record[field.name] = value
    return record


def lost_record(interface: str, wall_time: float, count: int) -> dict[str, Any]:
    """The record that stands for ``count`` events a reader of a stream missed (too slow)."""
    return {
        "time": _iso_time(wall_time),
        "interface": interface,
        "event": "events_lost",
        "count": count,
    }


class LineRateLimiter:
    """Per-key token buckets; ``allow`` returns (allowed, number suppressed since last allowed)."""

    def __init__(self, per_second: float = LINES_PER_SECOND, burst: float = BURST) -> None:
        self.per_second = per_second
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str, now: float) -> tuple[bool, int]:
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.per_second)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
        self._buckets[key] = (tokens - 1.0, now)
        return True, self._suppressed.pop(key, 0)


class JsonEventLog:
    """Turns events into JSON lines, at most ``per_second`` a second per reason or event kind."""

    def __init__(self, interface: str, limiter: LineRateLimiter | None = None) -> None:
        self.interface = interface
        self.limiter = limiter or LineRateLimiter()

    def render(self, event: Event, now: float, wall_time: float) -> str | None:
        key = event.reason.value if isinstance(event, PacketDropped) else event_name(event)
        allowed, suppressed = self.limiter.allow(key, now)
        if not allowed:
            return None
        record = event_record(event, self.interface, wall_time)
        if suppressed:
            record["suppressed_before"] = suppressed
        return json.dumps(record, separators=(",", ":"))
