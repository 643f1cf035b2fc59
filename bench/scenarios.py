"""The measured scenarios: ``SELECT 1`` latency and full-scan throughput.

Every server measurement has an in-process DataFusion twin doing the same work without the
network, so results are reported as ratios as well as absolute numbers.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
from datafusion import SessionContext

__all__ = [
    "SCAN_SQL",
    "ScanRun",
    "LatencyStats",
    "latency_stats",
    "connect_adbc",
    "select1_server",
    "select1_inprocess",
    "scan_adbc",
    "scan_flight",
    "scan_inprocess",
    "statement_descriptor",
]

SCAN_SQL = "SELECT * FROM bench.points"
#: Per-RPC timeouts (seconds): a stuck server fails the run instead of hanging it.
RPC_TIMEOUT = 120.0
WARMUP = 5


@dataclass(frozen=True)
class ScanRun:
    """One streamed full scan: rows and Arrow bytes seen, total and first-batch time."""

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


def _timed(call: Callable[[], object], n: int) -> list[float]:
    for _ in range(WARMUP):
        call()
    durations = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - started)
    return durations


def connect_adbc(uri: str) -> Any:
    """An ADBC DB-API connection with autocommit (no warning) and bounded RPCs."""
    opts = adbc_driver_flightsql.DatabaseOptions
    timeout = str(RPC_TIMEOUT)
    return adbc.connect(
        uri,
        db_kwargs={
            opts.TIMEOUT_FETCH.value: timeout,
            opts.TIMEOUT_QUERY.value: timeout,
            opts.TIMEOUT_UPDATE.value: timeout,
        },
        autocommit=True,
    )


def select1_server(conn: Any, n: int) -> LatencyStats:
    """``n`` sequential ``SELECT 1`` round trips on one ADBC connection."""
    with conn.cursor() as cur:

        def call() -> None:
            cur.execute("SELECT 1")
            table = cur.fetch_arrow_table()
            if table.num_rows != 1:
                raise RuntimeError(f"SELECT 1 returned {table.num_rows} rows")

        return latency_stats(_timed(call, n))


def select1_inprocess(n: int) -> LatencyStats:
    """The same ``n`` queries planned and run by an in-process DataFusion context."""
    ctx = SessionContext()

    def call() -> None:
        table = ctx.sql("select 1").to_arrow_table()
        if table.num_rows != 1:
            raise RuntimeError(f"select 1 returned {table.num_rows} rows")

    return latency_stats(_timed(call, n))


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


def scan_adbc(conn: Any, sql: str = SCAN_SQL) -> ScanRun:
    """Full scan via ADBC: ``execute`` then the ``fetch_record_batch`` stream."""
    with conn.cursor() as cur:
        started = time.perf_counter()
        cur.execute(sql)
        reader = cur.fetch_record_batch()
        return _drain(started, reader)


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


def _flight_batches(
    client: flight.FlightClient, sql: str, options: flight.FlightCallOptions
) -> Iterable[pa.RecordBatch]:
    info = client.get_flight_info(statement_descriptor(sql), options)
    for endpoint in info.endpoints:
        reader = client.do_get(endpoint.ticket, options)
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            if chunk.data is not None:
                yield chunk.data


def scan_flight(client: flight.FlightClient, sql: str = SCAN_SQL) -> ScanRun:
    """Full scan via raw pyarrow.flight: GetFlightInfo, then DoGet per endpoint."""
    options = flight.FlightCallOptions(timeout=RPC_TIMEOUT)
    started = time.perf_counter()
    return _drain(started, _flight_batches(client, sql, options))


def scan_inprocess(parquet: Path) -> ScanRun:
    """The same scan on an in-process DataFusion context over the same Parquet file."""
    ctx = SessionContext()
    ctx.register_parquet("points", str(parquet))
    started = time.perf_counter()
    reader = pa.RecordBatchReader.from_stream(ctx.sql("select * from points"))
    return _drain(started, reader)
