"""The embedded demo dataset: server metrics and logs for the last seven days.

Generated at start-up, deterministically and relative to *now*, so a Grafana panel over the
last six hours always has data and two replicas started together serve the same rows. The
value at a given timestamp depends only on that timestamp and the series, never on the start
time: restarting the server does not change history, it only moves the window forward.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["GENERATORS", "metrics", "logs", "HOSTS", "METRICS"]

DAYS = 7
STEP_S = 10
HOSTS = [f"host-{i:02d}" for i in range(20)]
REGIONS = ["eu-west", "eu-north", "us-east", "us-west"]
METRICS = ["cpu", "memory", "disk_io", "net_in", "net_out"]
SERVICES = ["api", "auth", "billing", "search", "worker"]
LEVELS = ["debug", "info", "warn", "error"]
_LEVEL_WEIGHTS = np.array([0.15, 0.7, 0.1, 0.05])
_MESSAGES = [
    "request served",
    "cache miss",
    "connection reset by peer",
    "slow query",
    "retrying upstream call",
    "user logged in",
    "job finished",
    "disk usage above threshold",
]
_BATCH_ROWS = 65536


def _now_s() -> int:
    return int(time.time())


def _mix(x: np.ndarray) -> np.ndarray:
    """A stateless 64-bit hash (splitmix64) so values depend only on their inputs."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    mixed: np.ndarray = x ^ (x >> np.uint64(31))
    return mixed


def _unit(x: np.ndarray) -> np.ndarray:
    """Hash to a float in [0, 1)."""
    return (_mix(x) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _dictionary(indices: np.ndarray, values: list[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(indices, pa.int8()), pa.array(values))


def _partitions(table: pa.Table, parts: int = 2) -> list[list[pa.RecordBatch]]:
    """Split into ``parts`` contiguous time ranges so DataFusion scans them in parallel."""
    size = -(-table.num_rows // parts)
    return [table.slice(i * size, size).to_batches(max_chunksize=_BATCH_ROWS) for i in range(parts)]


def metrics(now_s: int | None = None) -> list[list[pa.RecordBatch]]:
    """``demo.metrics``: 20 hosts x 5 metrics every 10 s over the last 7 days (~6 M rows)."""
    end = (now_s if now_s is not None else _now_s()) // STEP_S * STEP_S
    stamps = np.arange(end - DAYS * 86400 + STEP_S, end + 1, STEP_S, dtype=np.int64)
    series = len(HOSTS) * len(METRICS)
    t = np.repeat(stamps, series)
    sid = np.tile(np.arange(series, dtype=np.int64), len(stamps))
    host_idx = sid // len(METRICS)
    metric_idx = sid % len(METRICS)
    seed = sid.astype(np.uint64) * np.uint64(1_000_003)
    base = 20 + 50 * _unit(seed)
    phase = 2 * np.pi * _unit(seed + np.uint64(7))
    daily = 15 * np.sin(2 * np.pi * (t % 86400) / 86400 + phase)
    noise = 5 * (_unit(seed ^ t.astype(np.uint64)) - 0.5)
    value = np.round(np.clip(base + daily + noise, 0, None), 3)
    table = pa.table(
        {
            "time": pa.array(t * 1_000_000_000, pa.timestamp("ns", "UTC")),
            "host": _dictionary(host_idx, HOSTS),
            "region": _dictionary(host_idx % len(REGIONS), REGIONS),
            "metric": _dictionary(metric_idx, METRICS),
            "value": pa.array(value, pa.float64()),
        }
    )
    return _partitions(table)


def logs(now_s: int | None = None) -> list[list[pa.RecordBatch]]:
    """``demo.logs``: about one line per host per minute over the last 7 days (~200 k rows)."""
    end = (now_s if now_s is not None else _now_s()) // 60 * 60
    minutes = np.arange(end - DAYS * 86400 + 60, end + 1, 60, dtype=np.int64)
    t_min = np.repeat(minutes, len(HOSTS))
    host_idx = np.tile(np.arange(len(HOSTS), dtype=np.int64), len(minutes))
    key = t_min.astype(np.uint64) * np.uint64(131) + host_idx.astype(np.uint64)
    t_ns = (t_min * 1000 + (_unit(key) * 60_000).astype(np.int64)) * 1_000_000
    level_idx = np.searchsorted(np.cumsum(_LEVEL_WEIGHTS), _unit(key + np.uint64(1)))
    service_idx = (_unit(key + np.uint64(2)) * len(SERVICES)).astype(np.int64)
    message_idx = (_unit(key + np.uint64(3)) * len(_MESSAGES)).astype(np.int64)
    latency = (_unit(key + np.uint64(4)) * 900 + 5).astype(np.int64)
    message = pc.binary_join_element_wise(
        pa.array(np.array(_MESSAGES, dtype=object)[message_idx], pa.string()),
        pc.cast(pa.array(latency), pa.string()),
        " in ",
    )
    message = pc.binary_join_element_wise(message, "ms", "")
    table = pa.table(
        {
            "time": pa.array(t_ns, pa.timestamp("ns", "UTC")),
            "host": _dictionary(host_idx, HOSTS),
            "service": _dictionary(service_idx, SERVICES),
            "level": _dictionary(level_idx, LEVELS),
            "message": message,
        }
    )
    return _partitions(table)


#: Generators a catalog table may name with ``generator = "<name>"``.
GENERATORS: dict[str, Callable[[int | None], list[list[pa.RecordBatch]]]] = {
    "demo.metrics": metrics,
    "demo.logs": logs,
}
