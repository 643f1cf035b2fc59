"""The Quickstart, as a user runs it: ADBC against the demo catalog."""

from __future__ import annotations

from typing import Any


def test_select_one(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("select 1 as x")
        assert cur.fetch_arrow_table().to_pydict() == {"x": [1]}


def test_demo_metrics_group_by_host(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("select host, avg(value) as v from demo.metrics group by host order by host")
        table = cur.fetch_arrow_table()
    assert table.num_rows == 20
    assert table.column("host").to_pylist()[0] == "host-00"
