"""Deterministic 30-day metrics time series written once to ``bench/.data/`` as Parquet.

Row ``i`` is tick ``i // 100`` of series ``i % 100`` (20 hosts x 5 metrics), so the file is
sorted by time; values are a daily cycle plus seeded noise. Generation streams row groups of
about one million rows, so memory stays low and 10 M rows take a few seconds.

:func:`ensure_days` splits that same file into a day-partitioned directory
(``day=YYYY-MM-DD/part-0.parquet``, sorted by time, smaller row groups with a page index), so
both layouts hold exactly the same rows and every query must give the same answer on either.
(``bench/pruning.py`` writes a different, three-column series of its own.)
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "DATA_DIR",
    "HOSTS",
    "METRICS",
    "SCHEMA",
    "Dataset",
    "ensure_dataset",
    "ensure_days",
    "generate",
    "split_by_day",
]

DATA_DIR = Path(__file__).resolve().parent / ".data"
HOSTS = tuple(f"host-{i:02d}" for i in range(20))
METRICS = ("cpu", "memory", "disk_io", "net_in", "net_out")
SCHEMA = pa.schema(
    [
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("host", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
    ]
)
ROW_GROUP_ROWS = 1_000_000
#: Row groups of the day files: small enough that a 6 h window skips most of a day's file.
DAY_ROW_GROUP_ROWS = 64 * 1024
DAY_US = 86_400_000_000
SPAN_US = 30 * 86_400 * 1_000_000
START_US = 1_735_689_600 * 1_000_000  # 2025-01-01T00:00:00Z
_SERIES = len(HOSTS) * len(METRICS)
_BASE = np.array([40.0, 60.0, 120.0, 500.0, 300.0])  # per metric
_AMPLITUDE = np.array([20.0, 10.0, 80.0, 300.0, 200.0])
_FORMAT_VERSION = 1  # bump when the generated content changes
_DONE = "_COMPLETE"  # written last: a directory without it is an interrupted split


@dataclass(frozen=True)
class Dataset:
    """The Parquet file a run uses."""

    path: Path
    rows: int
    bytes_on_disk: int
    row_groups: int
    generated: bool
    generation_s: float


def _chunk(start: int, stop: int, step_us: int, rng: np.random.Generator) -> pa.Table:
    i = np.arange(start, stop, dtype=np.int64)
    series = i % _SERIES
    host_idx = (series // len(METRICS)).astype(np.int32)
    metric_idx = (series % len(METRICS)).astype(np.int32)
    time_us = START_US + (i // _SERIES) * step_us
    day_phase = (time_us % 86_400_000_000) / 86_400_000_000 * 2 * np.pi
    value = _BASE[metric_idx] + _AMPLITUDE[metric_idx] * np.sin(day_phase + host_idx * 0.3)
    value += rng.normal(0.0, 5.0, size=len(i))
    hosts = pa.DictionaryArray.from_arrays(pa.array(host_idx), pa.array(HOSTS))
    metrics = pa.DictionaryArray.from_arrays(pa.array(metric_idx), pa.array(METRICS))
    return pa.Table.from_arrays(
        [
            pa.array(time_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            hosts.cast(pa.string()),
            metrics.cast(pa.string()),
            pa.array(value, pa.float64()),
        ],
        schema=SCHEMA,
    )


def generate(path: Path, rows: int, seed: int = 42) -> None:
    """Write ``rows`` rows to ``path`` (atomically: a temporary file is renamed into place)."""
    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    ticks = -(-rows // _SERIES)
    step_us = max(SPAN_US // ticks, 1)
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with pq.ParquetWriter(tmp, SCHEMA, compression="snappy") as writer:
            for start in range(0, rows, ROW_GROUP_ROWS):
                stop = min(start + ROW_GROUP_ROWS, rows)
                writer.write_table(_chunk(start, stop, step_us, rng), row_group_size=ROW_GROUP_ROWS)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_dataset(rows: int, data_dir: Path = DATA_DIR, seed: int = 42) -> Dataset:
    """The cached file for ``rows`` rows, generated first when missing or unreadable."""
    path = data_dir / f"points_{rows}_seed{seed}_v{_FORMAT_VERSION}.parquet"
    generated = False
    started = time.perf_counter()
    try:
        meta = pq.read_metadata(path)
        valid = meta.num_rows == rows and meta.schema.to_arrow_schema().equals(SCHEMA)
    except (OSError, pa.ArrowInvalid):
        valid = False
    if not valid:
        generate(path, rows, seed)
        generated = True
        meta = pq.read_metadata(path)
    return Dataset(
        path=path,
        rows=meta.num_rows,
        bytes_on_disk=path.stat().st_size,
        row_groups=meta.num_row_groups,
        generated=generated,
        generation_s=time.perf_counter() - started if generated else 0.0,
    )


def split_by_day(source: Path, root: Path) -> int:
    """Write the rows of ``source`` (sorted by time) to ``root/day=YYYY-MM-DD/part-0.parquet``,
    streaming batch by batch with one writer open at a time; returns the number of files."""
    writer: pq.ParquetWriter | None = None
    current_day = -1
    files = 0
    try:
        for batch in pq.ParquetFile(source).iter_batches(batch_size=DAY_ROW_GROUP_ROWS):
            days = pc.divide(batch.column("time").cast(pa.int64()), DAY_US).to_numpy()
            for day in np.unique(days):
                if day != current_day:
                    if writer is not None:
                        writer.close()
                    stamp = time.strftime("%Y-%m-%d", time.gmtime(int(day) * 86_400))
                    directory = root / f"day={stamp}"
                    directory.mkdir(parents=True, exist_ok=True)
                    writer = pq.ParquetWriter(
                        directory / "part-0.parquet",
                        SCHEMA,
                        compression="snappy",
                        write_page_index=True,
                    )
                    current_day, files = int(day), files + 1
                assert writer is not None
                writer.write_batch(batch.filter(days == day), row_group_size=DAY_ROW_GROUP_ROWS)
    finally:
        if writer is not None:
            writer.close()
    return files


def ensure_days(dataset: Dataset) -> Path:
    """The cached day-partitioned copy of ``dataset``."""
    root = dataset.path.with_name(dataset.path.stem + "_days")
    return ensure_directory(root, lambda tmp: split_by_day(dataset.path, tmp))


def ensure_directory(root: Path, write: Callable[[Path], object]) -> Path:
    """``root``, written by ``write`` when missing: into a temporary directory renamed into
    place once complete, so an interrupted run is never used."""
    if (root / _DONE).exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f"{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        (tmp / _DONE).write_text("")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
