"""Built-in macros expand byte-for-byte like the Grafana Flight SQL datasource, and the expanded
SQL runs on DataFusion.

The ten vectors are ``pkg/flightsql/macro_test.go`` of the Grafana plugins (grafana-client.md
§3.2): From = 2023-01-01T00:00:00Z, To = From + 10 min, Interval = 10 s.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import datafusion
import pyarrow as pa
import pytest

from flightsql_srv.macros import MacroContext, MacroError, TimeRange, expand

FROM = datetime(2023, 1, 1, tzinfo=UTC)
CONTEXT = MacroContext(TimeRange(FROM, FROM + timedelta(minutes=10)), timedelta(seconds=10))

BIN = "date_bin(interval '10 second', time, timestamp '1970-01-01T00:00:00Z')"
FILTER = "time >= '2023-01-01T00:00:00Z' AND time <= '2023-01-01T00:10:00Z'"

GRAFANA_VECTORS = [
    ("select * from x", "select * from x"),
    (
        "select date_bin($__interval, time, timestamp '1970-01-01T00:00:00Z')",
        f"select {BIN}",
    ),
    ("select $__dateBin(time)", f"select {BIN}"),
    ("select $__dateBinAlias(time)", f"select {BIN} as time_binned"),
    ("select * from x where $__timeFilter(time)", f"select * from x where {FILTER}"),
    (
        "select * from x where $__timeRangeFrom(time)",
        "select * from x where time >= '2023-01-01T00:00:00Z'",
    ),
    (
        "select * from x where $__timeRangeTo(time)",
        "select * from x where time <= '2023-01-01T00:10:00Z'",
    ),
    ("select * from x where $__timeRange(time)", f"select * from x where {FILTER}"),
    (
        "select * from x where time >= $__timeFrom",
        "select * from x where time >= cast('2023-01-01T00:00:00Z' as timestamp)",
    ),
    (
        "select * from x where time < $__timeTo",
        "select * from x where time < cast('2023-01-01T00:10:00Z' as timestamp)",
    ),
]

DATEPARTS = {
    unit: f"datepart('{unit}', time)" for unit in ("minute", "hour", "day", "month", "year")
}

DERIVED_VECTORS = [
    # grafana-client.md §3.2 (derived): the chain goes from the unit up to the year.
    (
        "select $__timeGroup(time, hour)",
        "select " + ",".join(DATEPARTS[u] for u in ("hour", "day", "month", "year")),
    ),
    ("select $__timeGroup(time, 'year')", "select datepart('year', time)"),
    ("select $__timeGroup(time, minute)", "select " + ",".join(DATEPARTS.values())),
    (
        "select $__timeGroupAlias(time, day)",
        "select datepart('day', time) as time_day,datepart('month', time) as time_month,"
        "datepart('year', time) as time_year",
    ),
    ("select $__interval_ms", "select 10000"),
    ("select $__interval", "select interval '10 second'"),
    (
        "select $__timeGroup(time, '5m')",
        "select date_bin(interval '300 second', time, timestamp '1970-01-01T00:00:00Z')",
    ),
    (
        "select $__timeGroup(time, 1h)",
        "select date_bin(interval '3600 second', time, timestamp '1970-01-01T00:00:00Z')",
    ),
    (
        'select $__timeGroupAlias(time, "30s")',
        "select date_bin(interval '30 second', time, timestamp '1970-01-01T00:00:00Z') as time",
    ),
    (
        "select $__timeGroupAlias(x.time, '500ms')",
        "select date_bin(interval '500 millisecond', x.time, timestamp '1970-01-01T00:00:00Z')"
        " as time",
    ),
    ("select $__timeGroup(time, $__interval)", f"select {BIN}"),
    ("select $__dateBin(time, '1m')", f"select {BIN.replace('10 second', '60 second')}"),
    (
        "select $__dateBinAlias(time, 2h)",
        f"select {BIN.replace('10 second', '7200 second')} as time_binned",
    ),
    ("select $__timeFrom()", "select cast('2023-01-01T00:00:00Z' as timestamp)"),
    ("select $__timeTo(time)", "select cast('2023-01-01T00:10:00Z' as timestamp)"),
    (
        "select * from e where $__unixEpochFilter(ts_s)",
        "select * from e where ts_s >= 1672531200 AND ts_s <= 1672531800",
    ),
    (
        "select * from e where $__unixEpochNanoFilter(ts_ns)",
        "select * from e where ts_ns >= 1672531200000000000 AND ts_ns <= 1672531800000000000",
    ),
    (
        "select $__unixEpochFrom(), $__unixEpochTo(), $__unixEpochNanoFrom(), $__unixEpochNanoTo",
        "select 1672531200, 1672531800, 1672531200000000000, 1672531800000000000",
    ),
]


@pytest.mark.parametrize(("sql", "expected"), GRAFANA_VECTORS, ids=[v[0] for v in GRAFANA_VECTORS])
def test_grafana_vector(sql: str, expected: str) -> None:
    assert expand(sql, CONTEXT) == expected


@pytest.mark.parametrize(("sql", "expected"), DERIVED_VECTORS, ids=[v[0] for v in DERIVED_VECTORS])
def test_derived_vector(sql: str, expected: str) -> None:
    assert expand(sql, CONTEXT) == expected


def test_time_strings_truncate_to_seconds() -> None:
    start = datetime(2024, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC)
    context = MacroContext(TimeRange(start, start + timedelta(seconds=1.5)))
    assert expand("$__timeFilter(t)", context) == (
        "t >= '2024-01-01T00:00:00Z' AND t <= '2024-01-01T00:00:02Z'"
    )


def test_interval_is_truncated_to_whole_seconds() -> None:
    context = MacroContext(interval=timedelta(seconds=10.9))
    assert expand("$__interval, $__interval_ms", context) == "interval '10 second', 10900"


def test_sub_second_interval_refused_for_date_bin() -> None:
    context = MacroContext(interval=timedelta(milliseconds=500))
    with pytest.raises(MacroError, match=r"interval under 1 s.*stride of at least one second"):
        expand("select $__dateBin(time)", context)
    assert expand("select $__interval_ms", context) == "select 500"


# -- the expansions run on DataFusion --------------------------------------------------------


@pytest.fixture(scope="module")
def ctx() -> datafusion.SessionContext:
    """``x(time timestamp[ns, UTC], host utf8, value float64)``: a row every 37 s over 15 min,
    and ``e(ts_s int64, ts_ns int64)`` with the same instants as epoch integers."""
    times = [FROM - timedelta(minutes=2) + timedelta(seconds=37 * i) for i in range(25)]
    x = pa.table(
        {
            "time": pa.array(times, pa.timestamp("ns", "UTC")),
            "host": pa.array(["web-1", "web-2", "db-1"] * 8 + ["web-1"], pa.utf8()),
            "value": pa.array([float(i) for i in range(25)], pa.float64()),
        }
    )
    seconds = [int(t.timestamp()) for t in times]
    e = pa.table(
        {
            "ts_s": pa.array(seconds, pa.int64()),
            "ts_ns": pa.array([s * 1_000_000_000 for s in seconds], pa.int64()),
        }
    )
    session = datafusion.SessionContext()
    session.register_record_batches("x", [x.to_batches()])
    session.register_record_batches("e", [e.to_batches()])
    return session


def _runnable(sql: str) -> str:
    """The select-list-only vectors reference ``time``: give them a FROM."""
    return sql if " from " in sql.lower() else f"{sql} from x"


@pytest.mark.parametrize(
    ("sql", "expected"),
    GRAFANA_VECTORS + DERIVED_VECTORS,
    ids=[v[0] for v in GRAFANA_VECTORS + DERIVED_VECTORS],
)
def test_expansion_runs_on_datafusion(
    ctx: datafusion.SessionContext, sql: str, expected: str
) -> None:
    table = ctx.sql(_runnable(expand(sql, CONTEXT))).to_arrow_table()
    assert table.num_columns >= 1


def test_time_filter_selects_the_range(ctx: datafusion.SessionContext) -> None:
    sql = expand("select count(*) as n from x where $__timeFilter(time)", CONTEXT)
    # rows at FROM-2m + 37 s * i inside [FROM, FROM+10m]: i = 4 (FROM+28s) .. 19 (FROM+583s)
    assert ctx.sql(sql).to_pydict() == {"n": [16]}
    sql = expand("select count(*) as n from e where $__unixEpochFilter(ts_s)", CONTEXT)
    assert ctx.sql(sql).to_pydict() == {"n": [16]}


@pytest.mark.parametrize(
    "sql",
    [
        "select $__timeGroupAlias(time, hour), count(*) as n from x "
        "where $__timeFilter(time) group by $__timeGroup(time, hour)",
        "select $__timeGroupAlias(time, minute), count(*) as n from x group by 1, 2, 3, 4, 5",
        "select $__timeGroupAlias(time, '5m'), host, avg(value) as value from x "
        "where $__timeFilter(time) group by 1, 2 order by 1",
        "select $__dateBinAlias(time), max(value) as value from x group by 1 order by 1",
        "select $__dateBin(time) as time, host, avg(value) as value from x "
        "where $__timeRange(time) group by $__dateBin(time), host order by 1",
        "select date_bin($__interval, time, timestamp '1970-01-01T00:00:00Z') as time, count(*) "
        "from x where time >= $__timeFrom and time < $__timeTo group by 1",
    ],
)
def test_grouping_queries_run(ctx: datafusion.SessionContext, sql: str) -> None:
    table = ctx.sql(expand(sql, CONTEXT)).to_arrow_table()
    assert table.num_rows > 0


def test_time_group_buckets(ctx: datafusion.SessionContext) -> None:
    sql = expand(
        "select $__timeGroupAlias(time, '5m'), count(*) as n from x "
        "where $__timeFilter(time) group by 1 order by 1",
        CONTEXT,
    )
    result = ctx.sql(sql).to_pydict()
    assert [t.minute for t in result["time"]] == [0, 5]
    assert sum(result["n"]) == 16
