"""Large results stream: bounded server memory, bounded message sizes, early first batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest

from bench.processes import ServiceProcesses
from tests.helpers import drain, serve_subprocess, statement_descriptor

ROWS = 10_000_000
MAX_RSS_GROWTH = 150 * 2**20
MAX_MESSAGE = 4 * 2**20


@contextmanager
def _peak_rss(pid: int, interval: float = 0.05) -> Iterator[list[int]]:
    """Sample the process's RSS in a background thread; yields [peak] (updated live)."""
    process = ServiceProcesses(pid)
    peak = [process.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join(timeout=5)
        peak[0] = max(peak[0], process.memory_info().rss)


def test_ten_million_rows_stream_with_bounded_memory(
    tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    sql = f"select value, value * 2 as doubled from range({ROWS})"
    with (
        serve_subprocess("--catalog", str(tmp_path)) as (proc, port, _),
        flight.connect(f"grpc://127.0.0.1:{port}") as client,
    ):
        warm = client.get_flight_info(statement_descriptor("select value from range(100000)"))
        assert drain(client.do_get(warm.endpoints[0].ticket))[0] == 100_000
        baseline = ServiceProcesses(proc.pid).memory()
        with _peak_rss(proc.pid) as peak:
            started = time.monotonic()
            info = client.get_flight_info(statement_descriptor(sql))
            reader = client.do_get(info.endpoints[0].ticket)
            rows = total = doubled = 0
            first_batch_s = None
            while True:
                try:
                    chunk = reader.read_chunk()
                except StopIteration:
                    break
                if first_batch_s is None:
                    first_batch_s = time.monotonic() - started
                batch = chunk.data
                rows += batch.num_rows
                total += pc.sum(batch.column(0)).as_py() or 0
                doubled += pc.sum(batch.column(1)).as_py() or 0
            elapsed = time.monotonic() - started
        growth = peak[0] - baseline
    assert first_batch_s is not None, "no batch arrived"
    record_property("first_batch_s", first_batch_s)
    record_property("total_s", elapsed)
    record_property("rss_growth_mib", growth / 2**20)
    print(
        f"\n10M rows: first batch {first_batch_s:.3f}s, total {elapsed:.2f}s, "
        f"server RSS growth {growth / 2**20:.1f} MiB"
    )
    assert rows == ROWS
    assert total == ROWS * (ROWS - 1) // 2
    assert doubled == 2 * total
    assert growth <= MAX_RSS_GROWTH, f"server RSS grew by {growth / 2**20:.0f} MiB"


WIDE = [
    pytest.param("select value, repeat('x', 1000) as payload from range(50000)", id="long-strings"),
    pytest.param(
        "select " + ", ".join(f"value * {i}.5 as c{i}" for i in range(80)) + " from range(50000)",
        id="80-double-columns",
    ),
    pytest.param("select *, message || message as m2 from demo.logs", id="demo-logs"),
]


@pytest.mark.parametrize("sql", WIDE)
def test_messages_stay_under_4_mib(client: flight.FlightClient, sql: str) -> None:
    """gRPC clients default to a 4 MiB receive limit (DESIGN: FlightData stays under it)."""
    info = client.get_flight_info(statement_descriptor(sql))
    rows, sizes = drain(client.do_get(info.endpoints[0].ticket))
    assert rows > 0
    assert max(sizes) <= MAX_MESSAGE, (
        f"largest batch is {max(sizes) / 2**20:.1f} MiB over {len(sizes)} batches"
    )


def test_wide_rows_arrive_complete(client: flight.FlightClient) -> None:
    sql = "select value, repeat('y', 2000) as payload from range(20000)"
    info = client.get_flight_info(statement_descriptor(sql))
    table = client.do_get(info.endpoints[0].ticket).read_all()
    assert table.schema.equals(info.schema)
    assert table.schema.field("payload").type == pa.string()
    assert table.num_rows == 20000
    assert pc.sum(table.column("value")).as_py() == 20000 * 19999 // 2
    assert pc.all(pc.equal(pc.utf8_length(table.column("payload")), 2000)).as_py()


def test_adbc_reads_rows_with_long_strings(conn: Any) -> None:
    """ADBC's receive limit is 16 MiB: batches must be sized by bytes, not by guessed widths."""
    with conn.cursor() as cur:
        cur.execute("select value, repeat('x', 1000) as payload from range(50000)")
        table = cur.fetch_arrow_table()
    assert table.num_rows == 50000
    assert pc.all(pc.equal(pc.utf8_length(table.column("payload")), 1000)).as_py()
