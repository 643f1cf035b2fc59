"""Machine description, the targets of issue #8, and the renderings of a run: console, JSON,
Markdown.

Every scenario's rows are shown with absolute values and as ratios to the in-process
DataFusion row and the roapi row of the same variant (or that contender's first row when it
has no such variant). A ratio is always *this row's value / the reference's value* in the
column's own unit, so for latencies lower is better and for throughput higher is better.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench.contenders import INPROCESS, OURS, ROAPI

__all__ = [
    "MB",
    "TARGETS",
    "Target",
    "machine_info",
    "find_row",
    "ratio",
    "evaluate_targets",
    "render_targets",
    "render_markdown",
    "write_results",
    "problems",
]

MB = 1e6


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS and the versions of everything on the measured path."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pyarrow": _version("pyarrow"),
        "datafusion": _version("datafusion"),
        "adbc_driver_flightsql": _version("adbc-driver-flightsql"),
        "adbc_driver_manager": _version("adbc-driver-manager"),
        "numpy": _version("numpy"),
        "flightsql_srv": _version("flightsql-srv"),
        "roapi": _version("roapi"),
        "matplotlib": _version("matplotlib"),
    }


# --- looking things up in a run ---------------------------------------------------------------


def find_row(r: dict[str, Any], scenario: str, contender: str, variant: str | None = None) -> Any:
    """The row of ``contender`` (and ``variant``; else its first row) in ``scenario``, or None."""
    rows = [row for row in r.get(scenario, {}).get("rows", []) if row["contender"] == contender]
    for row in rows:
        if variant is None or row["variant"] == variant:
            return row
    return rows[0] if rows else None


def ratio(r: dict[str, Any], scenario: str, row: dict[str, Any], key: str, ref: str) -> Any:
    """``row[key]`` divided by the same measure of contender ``ref``; None if ``ref`` is absent."""
    other = find_row(r, scenario, ref, row["variant"])
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


# --- formatting -------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1e6:
        return f"{value / 1e6:,.2f} M"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:,.{max(digits - 1, 1)}f}"


def _ratio_cell(value: float | None, own: bool, missing: str) -> str:
    if own:
        return "1"
    return missing if value is None else f"{value:.2f}x"


def _met(met: bool | None) -> str:
    return {True: "yes", False: "**NO**", None: "n/a"}[met]


def _missing(r: dict[str, Any], ref: str) -> str:
    status = r.get("contenders", {}).get(ref, {}).get("status", "n/a")
    return "n/a" if status == "ok" else f"n/a ({status})"


Column = tuple[str, str, Callable[[Any], str]]  # header, key, format


def _ms(v: Any) -> str:
    return f"{v:,.2f}"


def _table(
    r: dict[str, Any], scenario: str, columns: Iterable[Column], ratio_key: str, rows: Any = None
) -> list[str]:
    """A Markdown table of ``scenario``'s rows with ratio columns on ``ratio_key``."""
    cols = list(columns)
    header = ["contender", "variant", *(c[0] for c in cols), "vs in-process", "vs roapi"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows if rows is not None else r[scenario]["rows"]:
        cells = [row["contender"], row["variant"], *(fmt(row[key]) for _, key, fmt in cols)]
        for ref in (INPROCESS, ROAPI):
            value = ratio(r, scenario, row, ratio_key, ref)
            cells.append(_ratio_cell(value, row["contender"] == ref, _missing(r, ref)))
        out.append("| " + " | ".join(cells) + " |")
    return out


def render_targets(r: dict[str, Any]) -> str:
    """The targets as a plain-text table for the terminal."""
    rows = [("target", "goal", "measured", "met")]
    for t in evaluate_targets(r):
        rows.append((t["target"], t["goal"], _num(t["value"]), _met(t["met"]).strip("*")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _targets_md(r: dict[str, Any]) -> list[str]:
    out = ["| target | goal | measured | met |", "|---|---|---|---|"]
    for t in evaluate_targets(r):
        out.append(f"| {t['target']} | {t['goal']} | {_num(t['value'])} | {_met(t['met'])} |")
    return out


def _checks_md(r: dict[str, Any]) -> list[str]:
    names = list(r["checks"]["queries"][0]["fingerprints"]) if r["checks"]["queries"] else []
    out = [
        "| query | agree | " + " | ".join(f"rows ({n})" for n in names) + " |",
        "|" + "---|" * (2 + len(names)),
    ]
    for q in r["checks"]["queries"]:
        rows = [str(q["fingerprints"].get(n, {}).get("rows", "-")) for n in names]
        agree = "yes" if q["agree"] else "**NO**"
        out.append(f"| {q['query']} | {agree} | " + " | ".join(rows) + " |")
    return out


def _rss_md(r: dict[str, Any]) -> list[str]:
    out = [
        "| server | baseline MB | peak MB | growth MB | first scan growth MB |",
        "|---|---|---|---|---|",
    ]
    for name, rss in r["scan"]["rss"].items():
        out.append(
            f"| {name} | {rss['baseline_mb']:,.1f} | {rss['peak_mb']:,.1f} | "
            f"{rss['growth_mb']:,.1f} | {rss['first_scan_growth_mb']:,.1f} |"
        )
    return out


def _parallel_md(r: dict[str, Any]) -> list[str]:
    par = r["parallel"]
    if not par["supported"]:
        return [
            f"Not supported by this server build: GetFlightInfo with `parallel_endpoints: 4` "
            f"returned {par['endpoints_for_probe']} endpoint(s)."
        ]
    base = par["rows"][0]["rows_per_s"]
    local = find_row(r, "scan", INPROCESS)
    out = [
        f"ADBC fetches the endpoints concurrently; probe: {par['endpoints_for_probe']} endpoints "
        f"for `parallel_endpoints: 4`. Repetitions interleaved, best of {r['scan']['repeat']}.",
        "",
        "| variant | rows/s | MB/s | best s | vs 1 endpoint | vs in-process |",
        "|---|---|---|---|---|---|",
    ]
    for row in par["rows"]:
        vs_local = f"{row['rows_per_s'] / local['rows_per_s']:.2f}x" if local else "n/a"
        out.append(
            f"| {row['variant']} | {_num(row['rows_per_s'])} | {row['mb_per_s']:,.0f} | "
            f"{row['seconds']:.3f} | {row['rows_per_s'] / base:.2f}x | {vs_local} |"
        )
    return out


def _cost_md(r: dict[str, Any]) -> list[str]:
    """Wall time of each scenario and the CPU seconds each server process spent in it."""
    cpu = r.get("server_cpu_seconds", {})
    names = list(cpu)
    out = [
        "| scenario | wall s | " + " | ".join(f"{n} CPU s" for n in names) + " |",
        "|" + "---|" * (2 + len(names)),
    ]
    for scenario, wall in r.get("scenario_seconds", {}).items():
        cells = [f"{cpu[n].get(scenario, 0.0):.1f}" for n in names]
        out.append(f"| {scenario} | {wall:.1f} | " + " | ".join(cells) + " |")
    return out


_LATENCY: tuple[Column, ...] = (
    ("n", "n", str),
    ("p50 ms", "p50_ms", _ms),
    ("p95 ms", "p95_ms", _ms),
)
_SCAN: tuple[Column, ...] = (
    ("rows/s", "rows_per_s", _num),
    ("MB/s", "mb_per_s", lambda v: f"{v:,.0f}"),
    ("best s", "seconds", lambda v: f"{v:.3f}"),
    ("median s", "median_seconds", lambda v: f"{v:.3f}"),
)
_TTFB: tuple[Column, ...] = (
    ("first batch ms", "ttfb_s", lambda v: f"{v * 1000:,.1f}"),
    ("share of total", "ttfb_share", lambda v: f"{v * 100:.1f} %"),
    ("batches", "batches", str),
)
_QPS: tuple[Column, ...] = (
    ("queries", "queries", str),
    ("queries/s", "qps", lambda v: f"{v:,.1f}"),
)


def _machine_md(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    load = r["config"].get("load_average_start", [0, 0, 0])
    end = r.get("load_average_end", [0, 0, 0])
    rows = [
        ("CPU", m["cpu_model"]),
        ("cores (logical / usable)", f"{m['logical_cores']} / {m['usable_cores']}"),
        ("memory", f"{m['memory_gb']} GB"),
        ("OS", m["os"]),
        ("load average at start / end (1, 5, 15 min)", f"{_load(load)} / {_load(end)}"),
        *(
            (name, m[key])
            for name, key in (
                ("Python", "python"),
                ("pyarrow", "pyarrow"),
                ("datafusion", "datafusion"),
                ("adbc-driver-flightsql", "adbc_driver_flightsql"),
                ("adbc-driver-manager", "adbc_driver_manager"),
                ("flightsql-srv", "flightsql_srv"),
                ("roapi", "roapi"),
            )
        ),
    ]
    return ["| | |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]


def _load(values: Iterable[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def render_markdown(r: dict[str, Any]) -> str:
    """The committed Markdown report."""
    cfg, data = r["config"], r["data"]
    mode = " (quick)" if r["quick"] else ""
    status = ", ".join(f"{n}: {c['status']}" for n, c in r["contenders"].items())
    out = [
        f"# flightsql-srv benchmark{mode}",
        "",
        f"Run {r['date']} in {r['runtime_s']:.0f} s: `{cfg['command']}`. Contenders: {status}.",
        "",
        f"Data: {data['rows']:,} rows, a 30-day time series (20 hosts x 5 metrics, sorted by "
        f"time), as one Parquet file ({data['file_bytes'] / MB:,.1f} MB, "
        f"{data['file_row_groups']} row groups; table `points`) and as a day-partitioned "
        f"directory ({data['days_files']} files, {data['days_bytes'] / MB:,.1f} MB, row groups "
        f"of {data['days_row_group_rows']:,} rows with a page index; table `points_days`). Our "
        "server declares both with `time_column` and `sort_by`; in-process DataFusion registers "
        "the same paths with `register_parquet`; roapi serves them with "
        "`use_memory_table=false`. Everything runs on this machine over loopback, clients "
        "through ADBC unless the variant says otherwise. Contenders are interleaved in every "
        "scenario (round-robin calls or alternating repetitions) so background load hits them "
        "alike; absolute numbers are noisy on a shared 2-core machine, ratios less so.",
        "",
        "Ratios are *this row / the reference row of the same variant*: for latencies lower is "
        "better, for throughput higher is better.",
        "",
        "## Targets (issue #8)",
        "",
        *_targets_md(r),
        "",
        "## Do the contenders agree?",
        "",
        "Every query below is run on every contender first; a fingerprint (row count, per-column "
        "sums / first-last / distinct counts, floats within 1e-9) must match ours.",
        "",
        *_checks_md(r),
        "",
        f"## a. SELECT 1 round trip ({r['select1']['n']} calls each, after "
        f"{cfg['warmup_rounds']} warm-up rounds)",
        "",
        *_table(r, "select1", _LATENCY, "p50_ms"),
        "",
        f"## b. Grafana panel query ({r['panel']['n']} calls per variant)",
        "",
        f"6 h window ({data['window'][0]} .. {data['window'][1]}), one host, one metric, "
        "`date_bin` 1 min, `avg`. *SQL*: `" + r["panel"]["sql"] + "`. *Grafana macros* (our "
        "server only): `" + r["panel"]["grafana_sql"] + "` with `query_range_begin`/`_end` "
        "and `x-client-type: grafana` headers, as the datasource sends it.",
        "",
        *_table(r, "panel", _LATENCY, "p50_ms"),
        "",
        f"## c. Dashboard: 8 panels at once ({r['dashboard']['repetitions']} repetitions)",
        "",
        "Wall time until all 8 results are in; each panel on its own connection. Panels: "
        + "; ".join(r["dashboard"]["panels"])
        + ".",
        "",
        *_table(r, "dashboard", _LATENCY, "p50_ms"),
        "",
        f"## d. Full scan: `SELECT *` of {data['rows']:,} rows (best of {r['scan']['repeat']})",
        "",
        "MB/s counts the Arrow bytes (`RecordBatch.nbytes`) the client received: types differ "
        "(in-process and roapi send string views and microsecond timestamps, our server plain "
        "strings and nanoseconds), so ratios use rows/s.",
        "",
        *_table(r, "scan", _SCAN, "rows_per_s"),
        "",
        f"Server RSS (sampled every {cfg['rss_interval_s'] * 1000:.0f} ms during each of its "
        "scans; growth = highest sample minus RSS before the first scan):",
        "",
        *_rss_md(r),
        "",
        f"## e. Concurrency scaling ({r['scaling']['seconds_per_level']:g} s per level and "
        "contender)",
        "",
        "N clients, each a thread with its own connection (in-process: N threads sharing one "
        "SessionContext), loop over the 8 dashboard panels. Each level's time is cut into "
        f"{r['scaling']['slices']} slices alternating between contenders.",
        "",
        *_table(r, "scaling", _QPS, "qps"),
        "",
        "## f. Time to first batch of the full scan",
        "",
        *_table(r, "scan", _TTFB, "ttfb_s"),
        "",
        "## Parallel fetch (`parallel_endpoints` header)",
        "",
        *_parallel_md(r),
        "",
        "## Where the run's time went",
        "",
        "CPU seconds of each server process (psutil) during each scenario: with the same work "
        "asked of each, a server that spends more CPU per query has more overhead to remove.",
        "",
        *_cost_md(r),
        "",
    ]
    if r.get("plots"):
        out += ["## Plots", "", *(f"![{Path(p).stem}]({Path(p).name})" for p in r["plots"]), ""]
    out += ["## Machine", "", *_machine_md(r), ""]
    return "\n".join(out)


def problems(r: dict[str, Any]) -> list[str]:
    """What makes the run invalid (disagreeing results, missing rows); empty when fine."""
    found = []
    for q in r["checks"]["queries"]:
        if not q["agree"]:
            found.append(f"contenders disagree on {q['query']}: {q['fingerprints']}")
    if not r["scan"]["rows_match"]:
        found.append("a full scan returned the wrong number of rows")
    if r["parallel"].get("rows_match") is False:
        found.append("a parallel-fetch scan returned the wrong number of rows")
    return found


def write_results(r: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``latest.json`` and ``latest.md`` atomically; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    r = {**r, "targets": evaluate_targets(r)}
    paths = (out_dir / "latest.json", out_dir / "latest.md")
    texts = (json.dumps(r, indent=2, sort_keys=False) + "\n", render_markdown(r))
    for path, text in zip(paths, texts, strict=True):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return paths
