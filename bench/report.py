"""Machine description and the three renderings of a result: console table, JSON, Markdown."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

__all__ = ["machine_info", "summary_rows", "render_table", "render_markdown", "write_results"]

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
    }


def _fmt_rate(value: float) -> str:
    return f"{value / 1e6:,.2f} M" if value >= 1e6 else f"{value:,.0f}"


def _check(ok: bool) -> str:
    return "yes" if ok else "NO"


def summary_rows(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, value, target/meets) rows shared by the console and Markdown tables."""
    s1, scan, rss = r["select1"], r["full_scan"], r["server_rss"]
    rows: list[tuple[str, str, str]] = [
        (
            "SELECT 1 server p50 / p95",
            f"{s1['server']['p50_ms']:.3f} / {s1['server']['p95_ms']:.3f} ms",
            "",
        ),
        (
            "SELECT 1 in-process p50 / p95",
            f"{s1['inprocess']['p50_ms']:.3f} / {s1['inprocess']['p95_ms']:.3f} ms",
            "",
        ),
        ("SELECT 1 ratio server/in-process p50", f"{s1['ratio_p50']:.1f} x", "(informational)"),
    ]
    for key, label in (
        ("server_adbc", "scan server ADBC"),
        ("server_flight", "scan server pyarrow.flight"),
        ("inprocess", "scan in-process DataFusion"),
    ):
        best = scan[key]
        rows.append(
            (
                f"{label} (best of {scan['repeat']})",
                f"{_fmt_rate(best['rows_per_s'])} rows/s, {best['mb_per_s']:,.0f} MB/s, "
                f"{best['seconds']:.3f} s",
                "",
            )
        )
    target = scan["target_ratio"]
    for key, label in (("ratio_adbc", "ADBC"), ("ratio_flight", "pyarrow.flight")):
        rows.append(
            (
                f"scan ratio server/in-process ({label}, rows/s)",
                f"{scan[key]:.3f}",
                f">= {target}: {_check(scan[key] >= target)}",
            )
        )
    for key, label in (("server_adbc", "ADBC"), ("server_flight", "pyarrow.flight")):
        best = scan[key]
        rows.append(
            (
                f"scan time to first batch ({label})",
                f"{best['ttfb_s'] * 1000:.1f} ms = {best['ttfb_share'] * 100:.1f} % of total",
                "",
            )
        )
    rows += [
        ("server RSS baseline / peak", f"{rss['baseline_mb']:.1f} / {rss['peak_mb']:.1f} MB", ""),
        (
            "server RSS growth during scans",
            f"{rss['growth_mb']:.1f} MB (first scan alone: {rss['first_scan_growth_mb']:.1f} MB)",
            f"<= {rss['target_growth_mb']}: {_check(rss['growth_mb'] <= rss['target_growth_mb'])}",
        ),
        ("rows: generated / server / in-process", _rows_line(r), ""),
    ]
    return rows


def _rows_line(r: dict[str, Any]) -> str:
    scan = r["full_scan"]
    return (
        f"{r['data']['rows']:,} / {scan['server_adbc']['rows']:,} (ADBC), "
        f"{scan['server_flight']['rows']:,} (flight) / {scan['inprocess']['rows']:,}"
    )


def render_table(r: dict[str, Any]) -> str:
    """A plain-text table for the terminal."""
    rows = [("measure", "value", "target")] + summary_rows(r)
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(r: dict[str, Any]) -> str:
    """The committed Markdown report."""
    m, cfg, data = r["machine"], r["config"], r["data"]
    mode = " (quick)" if r["quick"] else ""
    out = [
        f"# flightsql-srv benchmark{mode}",
        "",
        f"Run {r['date']} in {r['runtime_s']:.1f} s: `{cfg['command']}`.",
        "",
        f"Data: {data['rows']:,} rows (30-day time series, 20 hosts x 5 metrics), "
        f"{data['bytes_on_disk'] / MB:.1f} MB Parquet in {data['row_groups']} row groups. "
        f"Full scans: best of {cfg['repeat']}; `SELECT 1`: {cfg['select1_n']} round trips. "
        "Server and client share the machine over loopback. MB = 10^6 bytes; "
        "MB/s counts the Arrow bytes (`RecordBatch.nbytes`) each client received, so "
        "in-process (string views, microsecond timestamps) and server (plain strings, "
        "nanosecond timestamps) bytes differ; ratios use rows/s. Server RSS growth is the "
        "highest RSS sampled (every 50 ms) during any server scan minus the RSS before the "
        "first one.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
    ]
    out += [f"| {a} | {b} | {c} |" for a, b, c in summary_rows(r)]
    out += [
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {m['cpu_model']} |",
        f"| cores (logical / usable) | {m['logical_cores']} / {m['usable_cores']} |",
        f"| memory | {m['memory_gb']} GB |",
        f"| OS | {m['os']} |",
        f"| Python | {m['python']} |",
        f"| pyarrow | {m['pyarrow']} |",
        f"| datafusion | {m['datafusion']} |",
        f"| adbc-driver-flightsql | {m['adbc_driver_flightsql']} |",
        f"| adbc-driver-manager | {m['adbc_driver_manager']} |",
        f"| flightsql-srv | {m['flightsql_srv']} |",
        "",
    ]
    return "\n".join(out)


def write_results(r: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``latest.json`` and ``latest.md`` atomically; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / "latest.json", out_dir / "latest.md")
    texts = (json.dumps(r, indent=2, sort_keys=False) + "\n", render_markdown(r))
    for path, text in zip(paths, texts, strict=True):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return paths
