"""Concurrent clients get correct, independent results."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import pyarrow.flight as flight
import pytest

from tests.helpers import statement_descriptor

WORKERS = 8
ROUNDS = 3
QUERIES = [
    "select host, count(*) as n, avg(value) as v from demo.metrics group by host order by host",
    "select metric, min(value) as lo, max(value) as hi from demo.metrics "
    "group by metric order by metric",
    "select region, sum(value) as s from demo.metrics where metric = 'cpu' "
    "group by region order by region",
    "select count(*) as n from demo.metrics where value > 50",
    "select level, count(*) as n from demo.logs group by level order by level",
    "select host, max(time) as latest from demo.metrics where metric = 'memory' "
    "group by host order by host",
]


def _same(actual: list[tuple[Any, ...]], expected: list[tuple[Any, ...]]) -> bool:
    """Row-wise equality; floats within 1e-9 (parallel sums add in any order)."""
    if len(actual) != len(expected):
        return False
    return all(
        len(a) == len(e)
        and all(
            x == pytest.approx(y, rel=1e-9) if isinstance(y, float) else x == y
            for x, y in zip(a, e, strict=True)
        )
        for a, e in zip(actual, expected, strict=True)
    )


@pytest.fixture(scope="module")
def reference(uri: str) -> list[list[tuple[Any, ...]]]:
    """Each query's rows, computed one at a time."""
    with adbc.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        results = []
        for sql in QUERIES:
            cur.execute(sql)
            results.append(cur.fetchall())
    assert all(results)
    return results


def test_concurrent_adbc_connections(uri: str, reference: list[list[tuple[Any, ...]]]) -> None:
    def worker(index: int) -> list[tuple[int, list[tuple[Any, ...]]]]:
        out = []
        with adbc.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
            for round_ in range(ROUNDS):
                q = (index + round_) % len(QUERIES)
                cur.execute(QUERIES[q])
                out.append((q, cur.fetchall()))
        return out

    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(worker, range(WORKERS)))
    assert len(results) == WORKERS
    for per_worker in results:
        assert len(per_worker) == ROUNDS
        for q, rows in per_worker:
            assert _same(rows, reference[q]), f"query {q} differs under concurrency"


def test_concurrent_flight_calls_on_one_client(
    client: flight.FlightClient, reference: list[list[tuple[Any, ...]]]
) -> None:
    def worker(index: int) -> tuple[int, list[tuple[Any, ...]]]:
        q = index % len(QUERIES)
        info = client.get_flight_info(statement_descriptor(QUERIES[q]))
        table = client.do_get(info.endpoints[0].ticket).read_all()
        assert table.schema.equals(info.schema)
        rows = list(zip(*(c.to_pylist() for c in table.columns), strict=True))
        return q, rows

    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(worker, range(WORKERS * 2)))
    assert len(results) == WORKERS * 2
    for q, rows in results:
        assert _same(rows, reference[q]), f"query {q} differs under concurrency"
