"""The SQL every scenario sends, written once and rendered for each contender's table names.

Queries name tables as ``{points}`` (the single Parquet file) or ``{days}`` (the
day-partitioned directory); each contender formats them with its own names (``bench.points``
on our server, ``points`` in-process and on roapi). Every column is aliased so results compare
by position and name across engines.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "WINDOW",
    "SELECT1",
    "SCAN",
    "PANEL",
    "PANEL_GRAFANA",
    "DASHBOARD",
    "CHECK",
    "render",
    "grafana_headers",
]

#: The 6 h window of every panel query, mid-series (the data spans 2025-01-01 .. 2025-01-31).
WINDOW = ("2025-01-15T06:00:00Z", "2025-01-15T12:00:00Z")
_FILTER = f"time >= '{WINDOW[0]}' AND time <= '{WINDOW[1]}'"
_BIN_1M = "date_bin(interval '60 second', time, timestamp '1970-01-01T00:00:00Z')"

SELECT1 = "SELECT 1"
SCAN = "SELECT * FROM {points}"

#: Scenario b, the plain SQL: one host, 1-minute buckets, average.
PANEL = (
    f"SELECT {_BIN_1M} AS time, avg(value) AS value FROM {{table}} "
    f"WHERE {_FILTER} AND host = 'host-03' AND metric = 'cpu' GROUP BY 1 ORDER BY 1"
)
#: The same panel as Grafana sends it: macros, with the range in request headers. The server
#: expands ``$__timeFilter`` exactly as :data:`_FILTER` and ``$__timeGroup`` as ``_BIN_1M``.
PANEL_GRAFANA = (
    "SELECT $__timeGroup(time, '1m') AS time, avg(value) AS value FROM {table} "
    "WHERE $__timeFilter(time) AND host = 'host-03' AND metric = 'cpu' GROUP BY 1 ORDER BY 1"
)

#: Scenario c: the eight panels of one dashboard, all on the same 6 h window.
DASHBOARD: tuple[tuple[str, str], ...] = (
    ("cpu host-03 avg 1m", PANEL.replace("{table}", "{points}")),
    (
        "memory host-07 max 1m",
        f"SELECT {_BIN_1M} AS time, max(value) AS value FROM {{points}} WHERE {_FILTER} "
        "AND host = 'host-07' AND metric = 'memory' GROUP BY 1 ORDER BY 1",
    ),
    (
        "cpu by host avg 5m",
        "SELECT date_bin(interval '300 second', time, timestamp '1970-01-01T00:00:00Z') AS time, "
        f"host, avg(value) AS value FROM {{points}} WHERE {_FILTER} AND metric = 'cpu' "
        "GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "points by metric",
        f"SELECT metric, count(*) AS n FROM {{points}} WHERE {_FILTER} GROUP BY 1 ORDER BY 1",
    ),
    (
        "disk_io min/max 10m",
        "SELECT date_bin(interval '600 second', time, timestamp '1970-01-01T00:00:00Z') AS time, "
        f"min(value) AS lo, max(value) AS hi FROM {{points}} WHERE {_FILTER} "
        "AND metric = 'disk_io' GROUP BY 1 ORDER BY 1",
    ),
    (
        "net_in two hosts 1m",
        f"SELECT {_BIN_1M} AS time, host, avg(value) AS value FROM {{points}} WHERE {_FILTER} "
        "AND metric = 'net_in' AND host IN ('host-01', 'host-02') GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "top 5 hosts by cpu",
        f"SELECT host, avg(value) AS value FROM {{points}} WHERE {_FILTER} AND metric = 'cpu' "
        "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5",
    ),
    (
        "net_out sum 15m",
        "SELECT date_bin(interval '900 second', time, timestamp '1970-01-01T00:00:00Z') AS time, "
        f"sum(value) AS value FROM {{points}} WHERE {_FILTER} AND metric = 'net_out' "
        "GROUP BY 1 ORDER BY 1",
    ),
)

#: Whole-table aggregates: each contender must agree on both layouts before anything is timed.
CHECK = (
    "SELECT count(*) AS n, sum(value) AS total, min(time) AS first, max(time) AS last FROM {table}"
)


def render(sql: str, names: Mapping[str, str]) -> str:
    """``sql`` with ``{points}``, ``{days}`` and ``{table}`` replaced by ``names``."""
    for key, value in names.items():
        sql = sql.replace("{" + key + "}", value)
    return sql


def grafana_headers() -> dict[str, str]:
    """The metadata the Grafana datasource sends with the panel's range."""
    return {
        "x-client-type": "grafana",
        "query_range_begin": WINDOW[0],
        "query_range_end": WINDOW[1],
    }
