"""Single-client measurements: round-trip latency (interleaved) and streamed scans.

Latencies of several contenders are taken round-robin, one call each in turn, so a burst of
load from elsewhere on the machine hits them all alike and their ratio stays meaningful.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from bench.contenders import RPC_TIMEOUT, Session

__all__ = [
    "WARMUP",
    "ScanRun",
    "LatencyStats",
    "latency_stats",
    "interleaved_latency",
    "scan",
    "scan_flight",
    "flight_info",
    "flight_query",
    "statement_descriptor",
]

WARMUP = 5
#: Fewest samples a budgeted latency gets, however slow the call.
MIN_SAMPLES = 3


@dataclass(frozen=True)
class ScanRun:
    """One streamed result: rows and Arrow bytes seen, total and first-batch time."""

    rows: int
    bytes: int
    batches: int
    seconds: float
    ttfb_s: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "rows_per_s": self.rows_per_s,
            "mb_per_s": self.mb_per_s,
            "ttfb_share": self.ttfb_s / self.seconds if self.seconds > 0 else 0.0,
        }


@dataclass(frozen=True)
class LatencyStats:
    """Round-trip latency summary in milliseconds."""

    n: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float


def latency_stats(seconds: list[float]) -> LatencyStats:
    """Summarize per-call durations (seconds) as milliseconds; p95 by linear interpolation."""
    ms = sorted(s * 1000.0 for s in seconds)
    p95 = statistics.quantiles(ms, n=20, method="inclusive")[18] if len(ms) > 1 else ms[0]
    return LatencyStats(
        n=len(ms),
        p50_ms=statistics.median(ms),
        p95_ms=p95,
        mean_ms=statistics.fmean(ms),
        min_ms=ms[0],
        max_ms=ms[-1],
    )


def _samples(n: int, budget_s: float | None, seconds_per_call: float) -> int:
    """How many of the ``n`` rounds a call joins: all, unless that would exceed its budget."""
    if budget_s is None or seconds_per_call <= 0:
        return n
    return max(min(n, int(budget_s / seconds_per_call)), min(n, MIN_SAMPLES))


def interleaved_latency(
    calls: Mapping[str, Callable[[], object]],
    n: int,
    warmup: int = WARMUP,
    budget_s: float | None = None,
) -> dict[str, LatencyStats]:
    """Time up to ``n`` calls of each entry of ``calls``, round-robin, after ``warmup`` rounds.

    With ``budget_s``, a slow call (judged by its last warm-up) is sampled in fewer rounds,
    spread evenly over the ``n``, so that it still sees the same stretch of machine time as
    the fast ones without making the run unbounded.
    """
    last: dict[str, float] = {}
    for _ in range(warmup):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            last[name] = time.perf_counter() - started
    quota = {name: _samples(n, budget_s, last.get(name, 0.0)) for name in calls}
    durations: dict[str, list[float]] = {name: [] for name in calls}
    for k in range(n):
        for name, call in calls.items():
            # Round k is one of this call's rounds when the evenly spaced count advances.
            if (k + 1) * quota[name] // n == k * quota[name] // n:
                continue
            started = time.perf_counter()
            call()
            durations[name].append(time.perf_counter() - started)
    return {name: latency_stats(values) for name, values in durations.items()}


def _drain(started: float, batches: Iterable[pa.RecordBatch]) -> ScanRun:
    """Count rows and bytes batch by batch without keeping any batch."""
    rows = nbytes = count = 0
    ttfb = 0.0
    for batch in batches:
        if count == 0:
            ttfb = time.perf_counter() - started
        count += 1
        rows += batch.num_rows
        nbytes += batch.nbytes
        del batch
    seconds = time.perf_counter() - started
    return ScanRun(rows, nbytes, count, seconds, ttfb if count else seconds)


def scan(session: Session, sql: str) -> ScanRun:
    """Stream ``sql``'s result through ``session``, timing from the request."""
    started = time.perf_counter()
    return _drain(started, session.batches(sql))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def statement_descriptor(sql: str) -> flight.FlightDescriptor:
    """A ``CommandStatementQuery`` packed in ``google.protobuf.Any``, hand-encoded so the
    benchmark is a plain Flight client with no dependency on the server's modules."""
    query = sql.encode()
    inner = b"\x0a" + _varint(len(query)) + query  # field 1 (query), length-delimited
    url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    wrapped = b"\x0a" + _varint(len(url)) + url + b"\x12" + _varint(len(inner)) + inner
    return flight.FlightDescriptor.for_command(wrapped)


def _options(headers: Mapping[str, str] | None) -> flight.FlightCallOptions:
    pairs = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    return flight.FlightCallOptions(timeout=RPC_TIMEOUT, headers=pairs)


def flight_info(
    client: flight.FlightClient, sql: str, headers: Mapping[str, str] | None = None
) -> flight.FlightInfo:
    """GetFlightInfo for ``sql`` (with ``headers``)."""
    return client.get_flight_info(statement_descriptor(sql), _options(headers))


def _flight_batches(
    client: flight.FlightClient, sql: str, headers: Mapping[str, str] | None
) -> Iterable[pa.RecordBatch]:
    info = flight_info(client, sql, headers)
    for endpoint in info.endpoints:
        reader = client.do_get(endpoint.ticket, _options(headers))
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            if chunk.data is not None:
                yield chunk.data


def flight_query(client: flight.FlightClient, sql: str) -> int:
    """Raw pyarrow.flight: GetFlightInfo, then DoGet of every endpoint; returns the row count."""
    return sum(batch.num_rows for batch in _flight_batches(client, sql, None))


def scan_flight(client: flight.FlightClient, sql: str) -> ScanRun:
    """Stream ``sql`` via raw pyarrow.flight (endpoints one after the other)."""
    started = time.perf_counter()
    return _drain(started, _flight_batches(client, sql, None))
