"""The targets of issue #18 and how a run's rows are compared with each other.

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


def _peak_rss(r: dict[str, Any], contender: str) -> float | None:
    rss = r.get("server_rss", {}).get(contender)
    return None if rss is None else float(rss["peak_mb"])


@dataclass(frozen=True)
class Target:
    """One target of the issue: a measure of our row, as a ratio to ``ref`` or absolute.

    ``scenario`` ``"server_rss"`` is the peak of each server's memory over the whole run.
    """

    label: str
    scenario: str
    variant: str
    key: str
    ref: str | None  # None: the value itself is compared
    goal: float
    at_most: bool  # True: value <= goal; False: value >= goal

    def values(self, r: dict[str, Any]) -> tuple[float | None, float | None]:
        """Our value and the reference's (None when absent or without ``ref``)."""
        if self.scenario == "server_rss":
            return _peak_rss(r, OURS), None if self.ref is None else _peak_rss(r, self.ref)
        row = find_row(r, self.scenario, OURS, self.variant)
        if row is None:
            return None, None
        if self.ref is None:
            return float(row[self.key]), None
        other = find_row(r, self.scenario, self.ref, row.get("ref_variant", row["variant"]))
        return float(row[self.key]), None if other is None else float(other[self.key])

    def measure(self, r: dict[str, Any]) -> float | None:
        """The compared value: our value, or its ratio to the reference's."""
        ours, reference = self.values(r)
        if ours is None or self.ref is None:
            return ours
        return None if not reference else ours / reference

    def goal_text(self) -> str:
        sign = "<=" if self.at_most else ">="
        unit = f"x {self.ref}" if self.ref else ""
        return f"{sign} {self.goal:g}{' ' + unit if unit else ''}"


_PANEL = "panel p50 (file, SQL), ms"
_PROCESSES = "8 clients: queries/s (processes; in-process: threads)"
_SCAN = "full scan rows/s (ADBC)"
_RSS = "peak server memory over the whole run, MB"

#: Issue #18's targets; ``roapi`` is roapi in its default (memory) mode.
TARGETS: tuple[Target, ...] = (
    Target("SELECT 1 p50 (ADBC), ms", "select1", "ADBC", "p50_ms", ROAPI, 1.0, True),
    Target(
        "SELECT 1 p50 (pyarrow GetFlightInfo+DoGet), ms",
        "select1",
        "pyarrow GetFlightInfo+DoGet",
        "p50_ms",
        ROAPI,
        1.0,
        True,
    ),
    Target(_PANEL, "panel", "file, SQL", "p50_ms", INPROCESS, 1.10, True),
    Target(_PANEL, "panel", "file, SQL", "p50_ms", ROAPI, 0.9, True),
    Target(_PROCESSES, "processes", "8 processes, ADBC", "qps", ROAPI, 1.2, False),
    Target(_PROCESSES, "processes", "8 processes, ADBC", "qps", INPROCESS, 0.9, False),
    Target(_SCAN, "scan", "ADBC", "rows_per_s", INPROCESS, 0.6, False),
    Target(_SCAN, "scan", "ADBC", "rows_per_s", ROAPI, 1.5, False),
    Target(_RSS, "server_rss", "", "peak_mb", ROAPI, 1.5, True),
    Target(_RSS, "server_rss", "", "peak_mb", None, 800, True),
    Target("full scan time to first batch, share", "scan", "ADBC", "ttfb_share", None, 0.05, True),
)


def evaluate_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with our value, the reference's, the compared ``value`` and ``met`` (None
    when it could not be measured)."""
    out = []
    for t in TARGETS:
        ours, reference = t.values(r)
        value = t.measure(r)
        met = None if value is None else (value <= t.goal if t.at_most else value >= t.goal)
        out.append(
            {
                "target": t.label,
                "goal": t.goal_text(),
                "ref": t.ref,
                "ours": ours,
                "reference": reference,
                "value": value,
                "met": met,
            }
        )
    return out
