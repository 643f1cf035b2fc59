"""The targets of issue #8 and how a run's rows are compared with each other.

A ratio is always *this row's value / the reference's value* in the measure's own unit: for
latencies lower is better, for throughput higher is better. The reference row is the other
contender's row of the same variant, or its first row when it has no such variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.contenders import INPROCESS, OURS, ROAPI

__all__ = ["Target", "TARGETS", "find_row", "ratio", "evaluate_targets"]


def find_row(r: dict[str, Any], scenario: str, contender: str, variant: str | None = None) -> Any:
    """The row of ``contender`` (and ``variant``; else its first row) in ``scenario``, or None."""
    rows = [row for row in r.get(scenario, {}).get("rows", []) if row["contender"] == contender]
    for row in rows:
        if variant is None or row["variant"] == variant:
            return row
    return rows[0] if rows else None


def ratio(r: dict[str, Any], scenario: str, row: dict[str, Any], key: str, ref: str) -> Any:
    """``row[key]`` divided by the same measure of contender ``ref`` (its row of the variant
    named by ``row["ref_variant"]``, default ``row["variant"]``); None if ``ref`` is absent."""
    other = find_row(r, scenario, ref, row.get("ref_variant", row["variant"]))
    if other is None or not other.get(key):
        return None
    return row[key] / other[key]


@dataclass(frozen=True)
class Target:
    """One target of the issue: a measure of our row, as a ratio to ``ref`` or absolute."""

    label: str
    scenario: str
    variant: str
    key: str
    ref: str | None  # None: the value itself is compared
    goal: float
    at_most: bool  # True: value <= goal; False: value >= goal

    def measure(self, r: dict[str, Any]) -> float | None:
        if self.scenario == "rss":
            rss = r.get("scan", {}).get("rss", {}).get(OURS)
            return None if rss is None else float(rss[self.key])
        row = find_row(r, self.scenario, OURS, self.variant)
        if row is None:
            return None
        if self.ref is None:
            return float(row[self.key])
        value = ratio(r, self.scenario, row, self.key, self.ref)
        return None if value is None else float(value)

    def goal_text(self) -> str:
        sign = "<=" if self.at_most else ">="
        unit = f"x {self.ref}" if self.ref else ""
        return f"{sign} {self.goal:g}{' ' + unit if unit else ''}"


TARGETS: tuple[Target, ...] = (
    Target("full scan rows/s (ADBC)", "scan", "ADBC", "rows_per_s", INPROCESS, 0.6, False),
    Target("full scan rows/s (ADBC)", "scan", "ADBC", "rows_per_s", ROAPI, 1.5, False),
    Target("server RSS growth during scans, MB", "rss", "", "growth_mb", None, 150, True),
    Target("panel p50 (file, SQL)", "panel", "file, SQL", "p50_ms", INPROCESS, 1.15, True),
    Target("panel p50 (file, SQL)", "panel", "file, SQL", "p50_ms", ROAPI, 0.7, True),
    Target(
        "panel p50 (file, Grafana macros)",
        "panel",
        "file, Grafana macros",
        "p50_ms",
        INPROCESS,
        1.15,
        True,
    ),
    Target(
        "panel p50 (file, Grafana macros)",
        "panel",
        "file, Grafana macros",
        "p50_ms",
        ROAPI,
        0.7,
        True,
    ),
    Target("SELECT 1 p50 (ADBC)", "select1", "ADBC", "p50_ms", ROAPI, 0.7, True),
    Target("8-client queries/s", "scaling", "8 clients", "qps", INPROCESS, 0.9, False),
    Target("8-client queries/s", "scaling", "8 clients", "qps", ROAPI, 1.5, False),
    Target("full scan time to first batch, share", "scan", "ADBC", "ttfb_share", None, 0.05, True),
)


def evaluate_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value and ``met`` (None when it could not be measured)."""
    out = []
    for t in TARGETS:
        value = t.measure(r)
        met = None if value is None else (value <= t.goal if t.at_most else value >= t.goal)
        out.append({"target": t.label, "goal": t.goal_text(), "value": value, "met": met})
    return out
