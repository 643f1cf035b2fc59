"""The micromegas flavour of the Grafana datasource (MMS/MM, grafana-client.md §2.5, §4).

Unlike the influxdata datasource, these send the SQL with its macros *unexpanded* plus the
dashboard range as ``query_range_begin``/``query_range_end``, the interval as ``interval_ms``,
``maxDataPoints`` as ``limit``, ``x-client-type: grafana`` and percent-encoded user headers,
on both GetFlightInfo and DoGet. The emulated client lives in :mod:`tests.test_grafana`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from tests.helpers import assert_flight_error, statement_descriptor
from tests.test_grafana import (
    SERIES,
    STATIC_METADATA,
    USER_HEADERS,
    DemoData,
    Headers,
    assert_grafana_frame,
    assert_long_series,
    call_options,
    demo_data,
    get_info,
    is_ns_timestamp,
    ns_values,
    query,
    range_headers,
    rfc3339,
)

#: Stamps per hour of demo.metrics.
HOUR_STAMPS = 360


@pytest.fixture(scope="module")
def demo(uri: str) -> DemoData:
    return demo_data(uri)


def two_hours(demo: DemoData) -> tuple[int, int]:
    """Two whole clock hours well inside the data: [H, H + 2h - 1 s], 720 stamps."""
    start = (demo.end // 3600 - 3) * 3600
    return start, start + 7199


def mm_headers(
    begin: str, end: str, *, interval_ms: int = 60000, limit: int | None = None
) -> list[tuple[str, str]]:
    """QueryData metadata of the micromegas datasource (timeFilter on, autoLimit optional)."""
    headers = range_headers(begin, end, ("interval_ms", str(interval_ms)), *USER_HEADERS)
    if limit is not None:
        headers.append(("limit", str(limit)))
    return headers


def _count(client: flight.FlightClient, sql: str, headers: Headers, **calls: Headers) -> int:
    table = query(client, sql, headers, **calls)
    value: int = table.column(0)[0].as_py()
    return value


# -- server-side expansion matches Grafana's own ---------------------------------------------


def test_server_expansion_matches_grafana_expansion(
    client: flight.FlightClient, demo: DemoData
) -> None:
    """MMS sends ``$__dateBin``/``$__timeFilter`` unexpanded; IFX sends what Grafana made of
    them. Both must give the same frame."""
    begin, end = two_hours(demo)
    tail = "host, avg(value) as value from demo.metrics where {filter} and metric = 'cpu' "
    tail += "group by 1, 2 order by 1, 2"
    mms = query(
        client,
        "select $__dateBin(time) as time, " + tail.format(filter="$__timeFilter(time)"),
        mm_headers(rfc3339(begin), rfc3339(end), limit=100000),
    )
    ifx = query(
        client,
        "select date_bin(interval '60 second', time, timestamp '1970-01-01T00:00:00Z') as time, "
        + tail.format(filter=f"time >= '{rfc3339(begin)}' AND time <= '{rfc3339(end)}'"),
        STATIC_METADATA,
    )
    assert mms.num_rows == ifx.num_rows == 120 * 20
    assert mms.schema.equals(ifx.schema), f"{mms.schema} != {ifx.schema}"
    assert mms.column("time").equals(ifx.column("time"))
    assert mms.column("host").equals(ifx.column("host"))
    assert mms.column("value").to_pylist() == pytest.approx(ifx.column("value").to_pylist())
    assert_long_series(mms)


# -- each macro, expanded by the server --------------------------------------------------------


def test_time_group_hour(client: flight.FlightClient, demo: DemoData) -> None:
    begin, end = two_hours(demo)
    table = query(
        client,
        "select $__timeGroupAlias(time, hour), count(*) as n from demo.metrics "
        "where $__timeFilter(time) group by $__timeGroup(time, hour)",
        mm_headers(rfc3339(begin), rfc3339(end)),
    )
    assert table.schema.names == ["time_hour", "time_day", "time_month", "time_year", "n"]
    rows = sorted(table.to_pylist(), key=lambda r: (r["time_day"], r["time_hour"]))
    hours = [datetime.fromtimestamp(begin + h * 3600, UTC) for h in (0, 1)]
    assert rows == [
        {
            "time_hour": h.hour,
            "time_day": h.day,
            "time_month": h.month,
            "time_year": h.year,
            "n": SERIES * HOUR_STAMPS,
        }
        for h in hours
    ]
    assert_grafana_frame(table.schema)


def test_time_group_alias_duration(client: flight.FlightClient, demo: DemoData) -> None:
    begin, end = two_hours(demo)
    table = query(
        client,
        "select $__timeGroupAlias(time, '5m'), count(*) as n from demo.metrics "
        "where $__timeFilter(time) group by 1 order by 1",
        mm_headers(rfc3339(begin), rfc3339(end)),
    )
    assert is_ns_timestamp(table.schema.field("time").type)
    assert ns_values(table, "time") == [(begin + 300 * i) * 10**9 for i in range(24)]
    assert table.column("n").to_pylist() == [SERIES * 30] * 24


@pytest.mark.parametrize(
    ("expression", "interval_ms", "buckets"),
    [
        ("date_bin($__interval, time, timestamp '1970-01-01T00:00:00Z')", 60000, 120),
        ("$__dateBin(time)", 300000, 24),
        ("$__timeGroup(time, $__interval)", 600000, 12),
    ],
)
def test_interval_macros(
    client: flight.FlightClient,
    demo: DemoData,
    expression: str,
    interval_ms: int,
    buckets: int,
) -> None:
    begin, end = two_hours(demo)
    table = query(
        client,
        f"select {expression} as time, count(*) as n from demo.metrics "
        "where $__timeFilter(time) group by 1 order by 1",
        mm_headers(rfc3339(begin), rfc3339(end), interval_ms=interval_ms, limit=1000),
    )
    step = interval_ms // 1000
    assert ns_values(table, "time") == [(begin + step * i) * 10**9 for i in range(buckets)]
    assert table.column("n").to_pylist() == [SERIES * step // 10] * buckets
    assert_long_series(table, labels=())


def test_interval_ms_and_range_bounds(client: flight.FlightClient, demo: DemoData) -> None:
    begin, end = two_hours(demo)
    table = query(
        client,
        "select $__interval_ms as ms, $__timeFrom as f, $__timeTo as t",
        mm_headers(rfc3339(begin), rfc3339(end), interval_ms=15000),
    )
    assert table.column("ms").to_pylist() == [15000]
    assert ns_values(table, "f") == [begin * 10**9]
    assert ns_values(table, "t") == [end * 10**9]
    assert_grafana_frame(table.schema)


@pytest.mark.parametrize("bound_scans", ["true", "false"])
@pytest.mark.parametrize(
    "condition",
    [
        "$__timeFilter(time)",
        "$__timeRange(time)",
        "$__timeRangeFrom(time) and $__timeRangeTo(time)",
        "time >= $__timeFrom and time <= $__timeTo",
        "$__unixEpochFilter(to_unixtime(time))",
        "$__unixEpochNanoFilter(cast(time as bigint))",
    ],
)
def test_range_filters(
    client: flight.FlightClient, demo: DemoData, condition: str, bound_scans: str
) -> None:
    """With ``bound_scans: false`` only the expanded SQL restricts the rows."""
    begin, end = two_hours(demo)
    headers = mm_headers(rfc3339(begin), rfc3339(end)) + [("bound_scans", bound_scans)]
    n = _count(client, f"select count(*) as n from demo.metrics where {condition}", headers)
    assert n == SERIES * 2 * HOUR_STAMPS


def test_logs_query(client: flight.FlightClient, demo: DemoData) -> None:
    """A ``format: logs`` panel: time, level and message, newest first, capped by limit."""
    begin, end = demo.hour()
    table = query(
        client,
        "select time, level, host, message from demo.logs where $__timeFilter(time) "
        "order by time desc",
        mm_headers(rfc3339(begin), rfc3339(end), limit=500),
    )
    assert table.num_rows == 500
    assert_grafana_frame(table.schema)
    times = ns_values(table, "time")
    assert times == sorted(times, reverse=True)
    assert all(begin * 10**9 <= t <= end * 10**9 for t in times)


def test_variable_query_without_limit(client: flight.FlightClient, demo: DemoData) -> None:
    """MM variable queries: time filter on, autoLimit forced off (no ``limit`` header)."""
    begin, end = demo.hour()
    table = query(
        client,
        "select distinct host from demo.metrics where $__timeFilter(time) order by host",
        mm_headers(rfc3339(begin), rfc3339(end)),
    )
    assert table.schema.field("host").type == pa.string()
    assert table.column("host").to_pylist() == [f"host-{i:02d}" for i in range(20)]


# -- time range headers ------------------------------------------------------------------------


def test_fractional_range_start_excludes_the_whole_second(
    client: flight.FlightClient, demo: DemoData
) -> None:
    """``RFC3339Nano`` keeps milliseconds: a begin of ``…:00.5Z`` excludes the ``…:00`` stamp
    that the second-precision macros would include."""
    start = demo.end - 3600  # a stamp
    whole = rfc3339(start)
    half = whole.replace("Z", ".5Z")
    sql = "select count(*) as n from demo.metrics"
    assert _count(client, sql, mm_headers(whole, rfc3339(demo.end))) == SERIES * 361
    assert _count(client, sql, mm_headers(half, rfc3339(demo.end))) == SERIES * 360


def test_offset_range_is_converted_to_utc(client: flight.FlightClient, demo: DemoData) -> None:
    """A process not in UTC sends ``+02:00`` times; they denote the same instants."""
    begin, end = demo.hour()

    def plus_two(seconds: int) -> str:
        local = datetime.fromtimestamp(seconds + 7200, UTC)
        return local.strftime("%Y-%m-%dT%H:%M:%S+02:00")

    sql = "select count(*) as n, min(time) as lo, max(time) as hi from demo.metrics"
    table = query(client, sql, mm_headers(plus_two(begin), plus_two(end)))
    assert table.column("n").to_pylist() == [SERIES * HOUR_STAMPS]
    assert ns_values(table, "lo") == [(begin + 9) * 10**9]
    assert ns_values(table, "hi") == [end * 10**9]


def test_relative_range(client: flight.FlightClient, demo: DemoData) -> None:
    before = datetime.now(UTC).timestamp()
    table = query(
        client,
        "select count(*) as n, $__timeFrom as f, $__timeTo as t from demo.metrics",
        mm_headers("now-6h", "now"),
    )
    after = datetime.now(UTC).timestamp()
    n = table.column("n")[0].as_py()
    assert 0 < n <= SERIES * (6 * HOUR_STAMPS + 1)
    assert n % SERIES == 0
    (f,), (t,) = ns_values(table, "f"), ns_values(table, "t")
    assert before - 6 * 3600 - 1 <= f / 1e9 <= after - 6 * 3600
    assert before - 1 <= t / 1e9 <= after


@pytest.mark.parametrize("placement", ["both", "do-get"])
def test_plain_sql_scans_only_the_range(
    client: flight.FlightClient, demo: DemoData, placement: str
) -> None:
    """No macro in the SQL: the range headers alone bound the scan, even when only DoGet
    carries them."""
    begin, end = demo.hour()
    headers = mm_headers(rfc3339(begin), rfc3339(end))
    n = _count(
        client,
        "select count(*) from demo.metrics",
        headers,
        info_headers=headers if placement == "both" else (),
    )
    assert n == 20 * 5 * 360


def test_doget_only_headers_also_limit_and_shape(client: flight.FlightClient) -> None:
    headers = [("limit", "3"), *USER_HEADERS]
    table = query(
        client,
        "select cast(time as date) as d, cast(value as decimal(10, 3)) as v from demo.metrics",
        info_headers=(),
        get_headers=headers,
    )
    assert table.num_rows == 3
    assert [f.type for f in table.schema] == [pa.timestamp("ns"), pa.float64()]


def test_bound_scans_false_reads_the_whole_table(
    client: flight.FlightClient, demo: DemoData
) -> None:
    begin, end = demo.hour()
    headers = mm_headers(rfc3339(begin), rfc3339(end)) + [("bound_scans", "false")]
    assert _count(client, "select count(*) from demo.metrics", headers) == demo.rows
    # The macros still see the range.
    n = _count(client, "select count(*) from demo.metrics where $__timeFilter(time)", headers)
    assert n == SERIES * HOUR_STAMPS


def test_macro_needs_range_on_get_flight_info(client: flight.FlightClient, demo: DemoData) -> None:
    """Macros are expanded at GetFlightInfo: a range sent only on DoGet is too late."""
    begin, end = demo.hour()
    sql = "select count(*) from demo.metrics where $__timeFilter(time)"
    with pytest.raises(pa.ArrowInvalid) as error:
        query(
            client,
            sql,
            info_headers=USER_HEADERS,
            get_headers=mm_headers(rfc3339(begin), rfc3339(end)),
        )
    assert_flight_error(error, pa.ArrowInvalid, r"\$__timeFilter.*query_range_begin")


@pytest.mark.parametrize(
    "pair",
    [
        [("query_range_begin", "now-1h")],
        [("query_range_end", "now")],
        [("query_range_begin", "now-1h"), ("query_range_end", "")],
        [("query_range_begin", ""), ("query_range_end", "now")],
    ],
    ids=["begin-only", "end-only", "empty-end", "empty-begin"],
)
def test_incomplete_range_means_no_range(
    client: flight.FlightClient, demo: DemoData, pair: list[tuple[str, str]]
) -> None:
    headers = [*pair, ("interval_ms", "60000"), *USER_HEADERS]
    assert _count(client, "select count(*) from demo.metrics", headers) == demo.rows
    sql = "select count(*) from demo.metrics where $__timeFilter(time)"
    with pytest.raises(pa.ArrowInvalid) as error:
        client.get_flight_info(statement_descriptor(sql), call_options(headers))
    assert_flight_error(error, pa.ArrowInvalid, "query_range_begin")


@pytest.mark.parametrize(
    ("begin", "end", "named"),
    [
        ("yesterday", "now", "query_range_begin"),
        ("2024-01-01T00:00:00", "now", "query_range_begin"),  # no zone
        ("now-1h", "2024-13-01T00:00:00Z", "query_range_end"),
        ("now-1h", "1/1/2024", "query_range_end"),
    ],
)
@pytest.mark.parametrize("placement", ["both", "do-get"])
def test_invalid_range_is_invalid_argument(
    client: flight.FlightClient, begin: str, end: str, named: str, placement: str
) -> None:
    headers = range_headers(begin, end, *USER_HEADERS)
    descriptor = statement_descriptor("select count(*) from demo.metrics")
    if placement == "both":
        with pytest.raises(pa.ArrowInvalid) as error:
            client.get_flight_info(descriptor, call_options(headers))
    else:
        info = get_info(client, descriptor, USER_HEADERS)
        with pytest.raises(pa.ArrowInvalid) as error:
            client.do_get(info.endpoints[0].ticket, call_options(headers))
    assert_flight_error(error, pa.ArrowInvalid, f"header {named}")


# -- limit (autoLimit: maxDataPoints) --------------------------------------------------------


def test_limit_caps_a_time_series(client: flight.FlightClient, demo: DemoData) -> None:
    begin, end = demo.hour()
    table = query(
        client,
        "select $__dateBin(time) as time, host, avg(value) as value from demo.metrics "
        "where $__timeFilter(time) group by 1, 2 order by 1",
        mm_headers(rfc3339(begin), rfc3339(end), limit=5),
    )
    assert table.num_rows == 5
    assert_long_series(table)
    first_minute = demo.buckets(begin, end, 60)[0]
    assert ns_values(table, "time") == [first_minute * 10**9] * 5


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "5 rows"])
def test_malformed_limit_is_invalid_argument(client: flight.FlightClient, value: str) -> None:
    headers = [("limit", value), *USER_HEADERS]
    with pytest.raises(pa.ArrowInvalid) as error:
        client.get_flight_info(statement_descriptor("select 1"), call_options(headers))
    assert_flight_error(error, pa.ArrowInvalid, "header limit")
