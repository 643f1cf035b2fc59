"""``python -m bench.pruning``: what a one-day time range saves on a 30-day Parquet table.

A 30-day, 10 M-row time series (``time timestamp[us, UTC]``, ``host``, ``value``; sorted by
time) is written once under ``bench/.data/`` as ``day=YYYY-MM-DD/part-0.parquet``, and
declared in a temporary catalog with ``time_column``, ``partition_columns`` and ``sort_by``.
The server's own :class:`~flightsql_srv.engine.Engine` (in-process, no network) plans
``select count(*), avg(value) from t`` with a one-day range (as the ``query_range_begin`` /
``query_range_end`` headers give it) and without; ``EXPLAIN ANALYZE`` of each, in the
context the engine plans in, gives the Parquet scan's metrics: files opened, files and row
groups pruned, bytes scanned. Results go to ``bench/results/pruning.md``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.data import ensure_directory
from flightsql_srv.catalog import load_catalog
from flightsql_srv.config import Settings
from flightsql_srv.contexts import Variant
from flightsql_srv.engine import Engine
from flightsql_srv.sessions import SessionOptions

__all__ = ["ScanMetrics", "scan_metrics", "ensure_days", "main"]

DATA_DIR = Path(__file__).resolve().parent / ".data"
RESULTS = Path(__file__).resolve().parent / "results" / "pruning.md"
SCHEMA = pa.schema(
    [
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("host", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
    ]
)
START = datetime(2025, 1, 1, tzinfo=UTC)
HOSTS = tuple(f"host-{i:02d}" for i in range(20))
ROW_GROUP_ROWS = 64 * 1024
QUERY = "select count(*), avg(value) from bench.t"
_FORMAT_VERSION = 1  # bump when the generated content changes


@dataclass(frozen=True)
class ScanMetrics:
    """The Parquet scan metrics of one ``EXPLAIN ANALYZE``, summed over the scans."""

    file_ranges: int  # files (or parts of files) the scan was planned with
    file_ranges_pruned: int  # skipped whole by their statistics
    row_groups: int  # row groups in the ranges not pruned
    row_groups_pruned: int  # skipped by their statistics
    page_rows_pruned: int  # by the page index
    rows_scanned: int  # rows the scan produced
    bytes_scanned: int
    elapsed_s: float


def ensure_days(days: int, rows: int, data_dir: Path = DATA_DIR, seed: int = 7) -> Path:
    """The cached ``day=YYYY-MM-DD/part-0.parquet`` directory; generated (into a temporary
    directory renamed into place) when missing."""
    root = data_dir / f"pruning_{days}d_{rows}_seed{seed}_v{_FORMAT_VERSION}"
    return ensure_directory(root, lambda tmp: write_days(tmp, days, rows, seed))


def write_days(root: Path, days: int, rows: int, seed: int = 7, files_per_day: int = 1) -> None:
    """``rows`` rows spread evenly over ``days`` days from :data:`START`, one directory per
    day holding ``files_per_day`` files, each sorted by time."""
    rng = np.random.default_rng(seed)
    per_file = -(-rows // (days * files_per_day))
    file_us = 86_400_000_000 // files_per_day
    step_us = max(file_us // per_file, 1)
    start_us = int(START.timestamp()) * 1_000_000
    for day in range(days):
        directory = root / f"day={(START + timedelta(days=day)):%Y-%m-%d}"
        directory.mkdir(parents=True, exist_ok=True)
        for part in range(files_per_day):
            first = start_us + day * 86_400_000_000 + part * file_us
            time_us = first + np.arange(per_file, dtype=np.int64) * step_us
            host = pa.DictionaryArray.from_arrays(
                pa.array(np.arange(per_file, dtype=np.int32) % len(HOSTS)), pa.array(HOSTS)
            )
            table = pa.Table.from_arrays(
                [
                    pa.array(time_us).cast(pa.timestamp("us", tz="UTC")),
                    host.cast(pa.string()),
                    pa.array(50.0 + rng.normal(0.0, 10.0, size=per_file)),
                ],
                schema=SCHEMA,
            )
            pq.write_table(
                table,
                directory / f"part-{part}.parquet",
                row_group_size=ROW_GROUP_ROWS,
                write_page_index=True,
            )


def write_catalog(directory: Path, source: Path) -> None:
    """``bench.toml`` declaring ``bench.t`` over ``source``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.toml").write_text(
        "[tables.t]\n"
        f"source = {str(source.resolve()) + '/'!r}\n"
        'format = "parquet"\n'
        'time_column = "time"\n'
        'partition_columns = { day = "string" }\n'
        'sort_by = ["time"]\n',
        encoding="utf-8",
    )


def make_engine(catalog: Path) -> Engine:
    settings = Settings(catalog=catalog, port=0, health_port=0, metrics_port=-1)
    return Engine(settings, load_catalog(catalog))


def day_bounds(day: int) -> tuple[datetime, datetime]:
    """Day ``day`` (0-based from :data:`START`), both ends included as the server's range
    filter includes them."""
    begin = START + timedelta(days=day)
    return begin, begin + timedelta(days=1) - timedelta(microseconds=1)


def _number(text: str) -> float:
    """``340.4 K`` -> 340400 (DataFusion prints counts and bytes with 10^3 steps)."""
    match = re.match(r"\s*([0-9.]+)\s*([KMGT]?)", text)
    if match is None:
        return 0.0
    scale = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[match.group(2)]
    return float(match.group(1)) * scale


def _pruned(text: str) -> tuple[int, int]:
    """(total, pruned) of ``N total → M matched[ -> K fully matched]``."""
    match = re.match(r"\s*([0-9]+) total \S+ ([0-9]+) matched", text)
    if match is None:
        return 0, 0
    total, matched = int(match.group(1)), int(match.group(2))
    return total, total - matched


def parse_scan_metrics(explain: str, elapsed_s: float = 0.0) -> ScanMetrics:
    """Sum the metrics of every Parquet ``DataSourceExec`` line of an ``EXPLAIN ANALYZE``."""
    totals = dict.fromkeys(
        ("ranges", "ranges_pruned", "groups", "groups_pruned", "pages", "rows", "bytes"), 0
    )
    for line in explain.splitlines():
        if "DataSourceExec" not in line or "metrics=[" not in line:
            continue
        text = line.split("metrics=[", 1)[1].rsplit("]", 1)[0]
        metrics = dict(m.split("=", 1) for m in text.split(", ") if "=" in m)
        ranges, ranges_pruned = _pruned(metrics.get("files_ranges_pruned_statistics", ""))
        groups, groups_pruned = _pruned(metrics.get("row_groups_pruned_statistics", ""))
        totals["ranges"] += ranges
        totals["ranges_pruned"] += ranges_pruned
        totals["groups"] += groups
        totals["groups_pruned"] += groups_pruned
        totals["pages"] += _pruned(metrics.get("page_index_rows_pruned", ""))[1]
        totals["rows"] += int(_number(metrics.get("output_rows", "0")))
        totals["bytes"] += int(_number(metrics.get("bytes_scanned", "0")))
    return ScanMetrics(
        file_ranges=totals["ranges"],
        file_ranges_pruned=totals["ranges_pruned"],
        row_groups=totals["groups"],
        row_groups_pruned=totals["groups_pruned"],
        page_rows_pruned=totals["pages"],
        rows_scanned=totals["rows"],
        bytes_scanned=totals["bytes"],
        elapsed_s=elapsed_s,
    )


def explain_analyze(
    engine: Engine, sql: str, bounds: tuple[datetime, datetime] | None
) -> tuple[str, float]:
    """The ``EXPLAIN ANALYZE`` text of ``sql`` in the context the engine plans it in (with
    ``bounds``, the one whose time-series tables are range-filtered), and its run time."""
    engine.plan(sql, bounds=bounds)  # the same checks and context as a real query
    variant = Variant(SessionOptions(schema="bench"), bounded=bounds is not None)
    ctx = engine.contexts.get(variant)
    values = engine.contexts.range_values(bounds) if bounds is not None else {}
    started = time.perf_counter()
    rows = ctx.sql(f"explain analyze {sql}", param_values=values or None).to_pylist()
    elapsed = time.perf_counter() - started
    return "\n".join(str(r["plan"]) for r in rows), elapsed


def scan_metrics(engine: Engine, sql: str, bounds: tuple[datetime, datetime] | None) -> ScanMetrics:
    text, elapsed = explain_analyze(engine, sql, bounds)
    return parse_scan_metrics(text, elapsed)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB"


def report(
    source: Path, rows: int, days: int, bounded: ScanMetrics, full: ScanMetrics, answer: str
) -> str:
    parquet = list(source.rglob("*.parquet"))
    files, on_disk = len(parquet), sum(p.stat().st_size for p in parquet)
    lines = [
        "# Time-range pruning",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%dT%H:%M:%S+00:00}: `python -m bench.pruning`.",
        "",
        f"Data: {rows:,} rows over {days} days (`time`, `host`, `value`), one Parquet file per "
        f"`day=YYYY-MM-DD` directory, row groups of {ROW_GROUP_ROWS:,} rows, "
        f'{on_disk / 1e6:,.1f} MB on disk; declared with `time_column = "time"`, '
        '`partition_columns = { day = "string" }`, `sort_by = ["time"]`.',
        f"Query: `{QUERY}` planned by the server's Engine in-process, with a one-day range "
        "(what the `query_range_begin`/`query_range_end` headers give) and without. Metrics "
        "from `EXPLAIN ANALYZE` of the Parquet scan (DataSourceExec; a large file may be read as "
        "several ranges). MB = 10^6 bytes.",
        "",
        f"One-day answer: {answer}.",
        "",
        "| measure | one-day range | no range |",
        "|---|---|---|",
        f"| Parquet files | {files} | {files} |",
        f"| file ranges in the scan | {bounded.file_ranges} | {full.file_ranges} |",
        f"| file ranges pruned by statistics | {bounded.file_ranges_pruned} | "
        f"{full.file_ranges_pruned} |",
        f"| file ranges read | {bounded.file_ranges - bounded.file_ranges_pruned} | "
        f"{full.file_ranges - full.file_ranges_pruned} |",
        f"| row groups in ranges read | {bounded.row_groups} | {full.row_groups} |",
        f"| row groups pruned by statistics | {bounded.row_groups_pruned} | "
        f"{full.row_groups_pruned} |",
        f"| rows pruned by page index | {bounded.page_rows_pruned:,} | {full.page_rows_pruned:,} |",
        f"| rows out of the scan (as DataFusion rounds them) | {bounded.rows_scanned:,} | "
        f"{full.rows_scanned:,} |",
        f"| bytes scanned | {_mb(bounded.bytes_scanned)} | {_mb(full.bytes_scanned)} |",
        f"| EXPLAIN ANALYZE time | {bounded.elapsed_s * 1e3:,.1f} ms | "
        f"{full.elapsed_s * 1e3:,.1f} ms |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pruning", description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    source = ensure_days(args.days, args.rows)
    with tempfile.TemporaryDirectory(prefix="bench-pruning-") as tmp:
        write_catalog(Path(tmp), source)
        engine = make_engine(Path(tmp))
        bounds = day_bounds(args.days // 2)
        answer = engine.plan(QUERY, bounds=bounds).frame.to_pylist()
        bounded = scan_metrics(engine, QUERY, bounds)
        full = scan_metrics(engine, QUERY, None)
    text = report(source, args.rows, args.days, bounded, full, str(answer[0]))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(text)
    print(f"(written to {args.output} in {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
