"""The renderings of a run: targets on the console, ``latest.json`` and ``latest.md``.

Every scenario's rows are shown with absolute values and as ratios to the in-process DataFusion
row and the rows of both roapi modes of the same variant (or that contender's first row when it
has no such variant). A ratio is always *this row's value / the reference's value* in the column's
own unit, so for latencies lower is better and for throughput higher is better.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.contenders import INPROCESS, ROAPI, ROAPI_FILE
from bench.machine import machine_info
from bench.targets import evaluate_targets, find_row, ratio

__all__ = [
    "MB",
    "machine_info",
    "render_targets",
    "render_markdown",
    "write_results",
    "problems",
]

MB = 1e6
#: The contenders every table has a ratio column for.
REFERENCES = (INPROCESS, ROAPI, ROAPI_FILE)


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
    header = ["contender", "variant", *(c[0] for c in cols), *(f"vs {n}" for n in REFERENCES)]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows if rows is not None else r[scenario]["rows"]:
        cells = [row["contender"], row["variant"], *(fmt(row[key]) for _, key, fmt in cols)]
        for ref in REFERENCES:
            value = ratio(r, scenario, row, ratio_key, ref)
            cells.append(_ratio_cell(value, row["contender"] == ref, _missing(r, ref)))
        out.append("| " + " | ".join(cells) + " |")
    return out


_TARGET_HEADER = ("target", "goal", "ours", "reference", "measured", "met")


def _target_cells(t: dict[str, Any]) -> tuple[str, ...]:
    ref = "-" if t["ref"] is None else _num(t["reference"])
    return (t["target"], t["goal"], _num(t["ours"]), ref, _num(t["value"]), _met(t["met"]))


def render_targets(r: dict[str, Any]) -> str:
    """The targets as a plain-text table for the terminal."""
    rows = [_TARGET_HEADER]
    rows += [tuple(c.strip("*") for c in _target_cells(t)) for t in evaluate_targets(r)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_TARGET_HEADER))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _targets_md(r: dict[str, Any]) -> list[str]:
    rows = [_TARGET_HEADER, ("---",) * len(_TARGET_HEADER)]
    rows += [_target_cells(t) for t in evaluate_targets(r)]
    return ["| " + " | ".join(row) + " |" for row in rows]


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


def _split_md(r: dict[str, Any]) -> list[str]:
    out = ["| server | call | n | p50 ms | p95 ms | share of p50 |", "|---|---|---|---|---|---|"]
    rows = r["panel"].get("split", [])
    for row in rows:
        total = next(
            (
                x["p50_ms"]
                for x in rows
                if x["contender"] == row["contender"] and "DoGet" in x["variant"]
            ),
            0.0,
        )
        share = f"{row['p50_ms'] / total * 100:.0f} %" if total else "n/a"
        out.append(
            f"| {row['contender']} | {row['variant']} | {row['n']} | {row['p50_ms']:,.2f} | "
            f"{row['p95_ms']:,.2f} | {share} |"
        )
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


def _server_rss_md(r: dict[str, Any]) -> list[str]:
    out = ["| server | at start MB | peak MB | at end MB | samples |", "|---|---|---|---|---|"]
    for name, rss in r["server_rss"].items():
        out.append(
            f"| {name} | {rss['start_mb']:,.1f} | {rss['peak_mb']:,.1f} | {rss['end_mb']:,.1f} "
            f"| {rss['samples']} |"
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
    """Wall time of each scenario, and the CPU seconds each server process spent in it and
    its RSS after it."""
    cpu, rss = r.get("server_cpu_seconds", {}), r.get("server_rss_after_mb", {})
    names = list(cpu)
    header = ["scenario", "wall s"]
    header += [f"{n} CPU s" for n in names] + [f"{n} RSS after, MB" for n in names]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    start = [f"{rss.get(n, {}).get('start', 0.0):,.0f}" for n in names]
    out.append("| (servers started) | | " + " | ".join([""] * len(names) + start) + " |")
    for scenario, wall in r.get("scenario_seconds", {}).items():
        cells = [f"{cpu[n].get(scenario, 0.0):.1f}" for n in names]
        cells += [f"{rss.get(n, {}).get(scenario, 0.0):,.0f}" for n in names]
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
        f"Run {r['date']} in {r['runtime_s']:.0f} s: `{cfg['command']}`. Contenders: {status}. "
        f"Conditions: load average {_load(cfg.get('load_average_start', []))} at the start and "
        f"{_load(r.get('load_average_end', []))} at the end (1, 5, 15 min) on "
        f"{r['machine']['usable_cores']} cores: other work shared the machine.",
        "",
        f"Data: {data['rows']:,} rows, a 30-day time series (20 hosts x 5 metrics, sorted by "
        f"time), as one Parquet file ({data['file_bytes'] / MB:,.1f} MB, "
        f"{data['file_row_groups']} row groups; table `points`) and as a day-partitioned "
        f"directory ({data['days_files']} files, {data['days_bytes'] / MB:,.1f} MB, row groups "
        f"of {data['days_row_group_rows']:,} rows with a page index; table `points_days`). Our "
        "server declares both with `time_column` and `sort_by`; in-process DataFusion registers "
        "the same paths with `register_parquet`; `roapi` is roapi in its default mode, which "
        "loads both tables into memory at startup, and `roapi-file` the same binary with "
        "`use_memory_table=false`, reading the files on every query. Everything runs on this "
        "machine over loopback, clients through ADBC unless the variant says otherwise. "
        "Contenders are interleaved in every scenario (round-robin calls or alternating "
        "repetitions) so background load hits them alike; absolute numbers are noisy on a "
        "shared 2-core machine, ratios less so.",
        "",
        "Ratios are *this row / the reference row of the same variant*: for latencies lower is "
        "better, for throughput higher is better.",
        "",
        "## Targets (issue #18)",
        "",
        f"Load average {_load(cfg.get('load_average_start', []))} at the start and "
        f"{_load(r.get('load_average_end', []))} at the end (1, 5, 15 min), "
        f"{r['machine']['usable_cores']} cores. *reference* is the other contender's value "
        "(roapi: its memory mode); *measured* is ours / reference, or ours for an absolute "
        "goal. Memory is each server's whole process tree (PSS, see below).",
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
        f"{cfg['warmup']} warm-up rounds)",
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
        "Where a server's panel time goes (file, plain SQL, raw pyarrow.flight; GetFlightInfo "
        "plans the query and for some servers runs it):",
        "",
        *_split_md(r),
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
        f"{r['scaling']['slices']} slices alternating between contenders. The clients share "
        "one client process here; section g has each in its own.",
        "",
        *_table(r, "scaling", _QPS, "qps"),
        "",
        "## f. Time to first batch of the full scan",
        "",
        *_table(r, "scan", _TTFB, "ttfb_s"),
        "",
        f"## g. {r['processes']['clients']} clients in {r['processes']['clients']} processes "
        f"({r['processes']['seconds']:g} s per contender)",
        "",
        f"Each client is its own OS process with its own ADBC connection, looping over the file "
        f"panel (`{r['processes']['sql']}`); in-process DataFusion runs "
        f"{r['processes']['clients']} threads in one process sharing one SessionContext. The "
        f"time is cut into {r['processes']['rounds']} round(s) alternating between contenders; "
        "clients connect and run the query once before the clock starts.",
        "",
        *_table(r, "processes", _QPS, "qps"),
        "",
        "## Server memory over the whole run",
        "",
        f"Each server's process tree (the sum of its processes' PSS; ours: the front and its "
        f"engine workers), sampled every {cfg['run_rss_interval_s'] * 1000:.0f} "
        "ms from when all servers answer until the last scenario ends; the peak includes the "
        "scans' finer samples. `roapi` holds both tables in memory, the file and the day "
        "directory: the rows twice.",
        "",
        *_server_rss_md(r),
        "",
        "## Parallel fetch (`parallel_endpoints` header)",
        "",
        *_parallel_md(r),
        "",
        "## Where the run's time went",
        "",
        "CPU seconds of each server process (psutil) during each scenario, and its RSS after "
        "it: with the same work asked of each, a server that spends more CPU per query has "
        "more overhead to remove. (roapi and in-process answer fewer queries where they are "
        "slower: scenarios with a time budget give a slow contender fewer samples.)",
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
