"""contrib/grafana: the dashboard asks only for metric names and labels that wgpy exports, and
shows each of them (drops, handshakes, throughput).

What wgpy exports is read from the exposition text of the real collector (the one wgpyd
--metrics and wgpy watch --metrics serve), not from a list kept here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from wgpy.sinks.metrics import PeerSample, Snapshot, make_registry

DASHBOARD = Path(__file__).parents[2] / "contrib" / "grafana" / "wgpy-dashboard.json"
KEY = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="

# PromQL words that are not metric names
PROMQL = {
    "sum", "rate", "count", "time", "vector", "and", "or", "unless", "by", "without",
    "label_values", "interface", "max", "min", "avg",
}  # fmt: skip


def exported() -> tuple[set[str], set[str]]:
    """(sample names, label names) that the collector exposes with one peer and one drop."""
    registry, collector = make_registry("wg0")
    collector.snapshot = Snapshot(
        "wg0", (PeerSample(KEY, "10.0.0.2/32", 1, 2, 3.0),), ((KEY, "disallowed_source", 4),)
    )
    names: set[str] = set()
    labels: set[str] = set()
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ", line)
        assert match, line
        names.add(match.group(1))
        labels.update(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', match.group(2) or ""))
    return names, labels


def queries(node: Any) -> list[str]:
    """Every PromQL text in the dashboard: panel targets and variable queries."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            promql = key in ("expr", "definition") or (key == "query" and value != "prometheus")
            if promql and isinstance(value, str):
                found.append(value)
            else:
                found.extend(queries(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(queries(item))
    return found


def strip_strings(expr: str) -> str:
    """The query without label values, Grafana variables and legend templates."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)
    return re.sub(r"\[[^\]]*\]", "[]", expr)


def test_dashboard_uses_only_exported_metrics_and_labels() -> None:
    names, labels = exported()
    assert {
        "wireguard_sent_bytes_total",
        "wireguard_received_bytes_total",
        "wireguard_latest_handshake_seconds",
        "wgpy_dropped_packets_total",
    } <= names  # the collector itself, as the dashboard's description promises
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = queries(dashboard)
    assert len(exprs) >= 8, exprs
    used: set[str] = set()
    for expr in exprs:
        bare = strip_strings(expr)
        grouped = {
            label.strip()
            for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", bare)
            for label in group.split(",")
            if label.strip()
        }
        grouped |= set(re.findall(r"\b([a-zA-Z_]\w*)\s*=~?", bare))  # selectors
        grouped |= set(re.findall(r"label_values\(\s*\w+\s*,\s*(\w+)\s*\)", bare))
        assert grouped <= labels, (expr, grouped - labels)
        for word in re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", bare):
            if word in PROMQL or word in grouped:
                continue
            assert word in names, f"{word!r} in {expr!r} is not a metric wgpy exports"
            used.add(word)
    assert used == names, f"not shown: {names - used}"
