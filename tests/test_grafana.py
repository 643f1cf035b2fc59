"""The Grafana Flight SQL datasources, emulated call for call with pyarrow.flight only.

The client is built like the Go datasource (shared/reference/grafana-client.md §1-§2): one
connection per datasource; metadata sent as lowercase headers on both GetFlightInfo and DoGet;
exactly one endpoint required; DoGet of ``endpoints[0].ticket`` on the same connection, with
``location``, ``FlightInfo.schema`` and ``total_records`` ignored; every batch read into one
frame. This module covers the influxdata datasource (IFX: Grafana expands the macros itself)
and the §8 acceptance list; ``test_grafana_micromegas.py`` covers the micromegas flavour
(macros unexpanded, time range and limit sent as headers).

The demo catalog holds ``demo.metrics``: 20 hosts x 5 metrics every 10 s for the 7 days before
the server started, so its last stamp ``T`` anchors every range used here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest
from google.protobuf.message import Message

from flightsql_srv.app import Service
from flightsql_srv.protocol import pack, sql_pb2
from tests.conftest import running_server
from tests.helpers import assert_flight_error, statement_descriptor

#: (key, value) metadata pairs, sent lowercase like grpc-go's ``metadata.MD.Set``.
Headers = Sequence[tuple[str, str]]

#: Rows of demo.metrics per 10 s stamp (20 hosts x 5 metrics).
SERIES = 100
STEP_S = 10
#: gRPC-go's default receive limit per message, which the datasource never raises.
GRPC_MAX_MESSAGE = 4 * 1024 * 1024

#: ``jsonData.metadata`` users put in front of InfluxDB 3 / IOx (§2.1), no bearer token.
STATIC_METADATA: Headers = (
    ("database", "demo"),
    ("bucket-name", "x"),
    ("bucket-id", "0123456789abcdef"),
    ("iox-namespace-name", "demo"),
)
#: What the micromegas datasource adds to every QueryData call (§2.5).
USER_HEADERS: Headers = (
    ("x-user-id", "J%C3%BCrgen"),
    ("x-user-email", "j%C3%BCrgen%40example.com"),
    ("x-user-name", "J%C3%BCrgen%20M%C3%BCller"),
    ("x-org-id", "1"),
    ("x-client-type", "grafana"),
)


# -- the emulated Go client ------------------------------------------------------------------


def call_options(headers: Headers = ()) -> flight.FlightCallOptions:
    """Call options carrying ``headers`` as lowercase gRPC metadata."""
    return flight.FlightCallOptions(headers=[(k.lower().encode(), v.encode()) for k, v in headers])


def get_info(
    client: flight.FlightClient, descriptor: flight.FlightDescriptor, headers: Headers = ()
) -> flight.FlightInfo:
    """GetFlightInfo, with the datasource's one-endpoint requirement."""
    info = client.get_flight_info(descriptor, call_options(headers))
    assert len(info.endpoints) == 1, (
        f"unsupported endpoint count in response: {len(info.endpoints)}"
    )
    return info


def do_get(
    client: flight.FlightClient, info: flight.FlightInfo, headers: Headers = ()
) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """DoGet of endpoint 0's ticket on the same connection; every batch, in order."""
    reader = client.do_get(info.endpoints[0].ticket, call_options(headers))
    batches = []
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            return reader.schema, batches
        if chunk.data is not None:
            batches.append(chunk.data)


def query(
    client: flight.FlightClient,
    sql: str,
    headers: Headers = (),
    *,
    info_headers: Headers | None = None,
    get_headers: Headers | None = None,
) -> pa.Table:
    """QueryData for one query: ``headers`` on both calls unless overridden per call."""
    info = get_info(
        client, statement_descriptor(sql), headers if info_headers is None else info_headers
    )
    schema, batches = do_get(client, info, headers if get_headers is None else get_headers)
    return pa.Table.from_batches(batches, schema)


def resource(
    client: flight.FlightClient, command: Message, headers: Headers = STATIC_METADATA
) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """A resource endpoint: GetFlightInfo(command) + DoGet, static metadata only (§1.4)."""
    descriptor = flight.FlightDescriptor.for_command(pack(command))
    return do_get(client, get_info(client, descriptor, headers), headers)


def error_before_schema(
    client: flight.FlightClient, sql: str, headers: Headers = ()
) -> BaseException:
    """The error of a query that must fail at GetFlightInfo or at DoGet before the schema.

    pyarrow's ``do_get`` waits for the schema message, so an error it raises came before any
    data; an error only on a later read would reach the Go client after the schema, where the
    datasource swallows it (§5.2).
    """
    try:
        info = get_info(client, statement_descriptor(sql), headers)
    except (flight.FlightError, pa.ArrowException) as exc:
        return exc
    try:
        reader = client.do_get(info.endpoints[0].ticket, call_options(headers))
    except (flight.FlightError, pa.ArrowException) as exc:
        return exc
    batches = 0
    try:
        for _ in reader:
            batches += 1
    except (flight.FlightError, pa.ArrowException) as exc:
        pytest.fail(f"{sql!r} failed after the schema and {batches} batch(es): {exc}")
    pytest.fail(f"{sql!r} did not fail ({batches} batch(es))")


# -- result checks (arrow.go, §5) ------------------------------------------------------------


def is_ns_timestamp(t: pa.DataType) -> bool:
    return pa.types.is_timestamp(t) and t.unit == "ns"


def grafana_decodable(t: pa.DataType) -> bool:
    """What arrow.go's ``newField`` maps to a real field: utf8, ints, float32/64, bool,
    timestamps (read as ns) and durations; anything else becomes an empty "other" field."""
    return (
        pa.types.is_string(t)
        or pa.types.is_integer(t)
        or pa.types.is_float32(t)
        or pa.types.is_float64(t)
        or pa.types.is_boolean(t)
        or is_ns_timestamp(t)
        or pa.types.is_duration(t)
    )


def assert_grafana_frame(schema: pa.Schema) -> None:
    """Every column decodes in the datasource (no utf8view, large_utf8, dictionary, date,
    decimal, list, struct, map...) and timestamps are nanoseconds."""
    bad = [f"{f.name}: {f.type}" for f in schema if not grafana_decodable(f.type)]
    assert not bad, f"columns the Grafana datasource cannot decode: {bad}"


def assert_long_series(table: pa.Table, labels: Sequence[str] = ("host",)) -> None:
    """``data.LongToWide`` requirements (§5.3): a field named exactly ``time``, of a
    timestamp type, non-null and ascending; label columns utf8; at least one row."""
    assert "time" in table.schema.names, f"no time column found: {table.schema.names}"
    time_type = table.schema.field("time").type
    assert is_ns_timestamp(time_type), f"time is {time_type}, not timestamp[ns]"
    for label in labels:
        assert pa.types.is_string(table.schema.field(label).type), table.schema.field(label)
    times = table.column("time").cast(pa.int64()).to_pylist()
    assert times and None not in times, "the time index must be non-null"
    assert times == sorted(times), "long series must be sorted ascending by time"
    assert_grafana_frame(table.schema)


# -- time helpers ------------------------------------------------------------------------------


def rfc3339(seconds: int) -> str:
    """Epoch seconds as RFC 3339 UTC, second precision (what Grafana's macros render)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ns_values(table: pa.Table, column: str) -> list[int]:
    """A timestamp column as epoch nanoseconds."""
    return [int(v) for v in table.column(column).cast(pa.int64()).to_pylist()]


@dataclass(frozen=True)
class DemoData:
    """Facts about the session server's demo.metrics."""

    #: Epoch seconds of the last stamp (a multiple of 10).
    end: int
    #: Rows in the whole table.
    rows: int

    @property
    def start(self) -> int:
        return self.end - 7 * 86400 + STEP_S

    def hour(self) -> tuple[int, int]:
        """A one-hour range holding exactly 360 stamps: (T-3599 s, T)."""
        return self.end - 3599, self.end

    def buckets(self, begin: int, end: int, width: int) -> list[int]:
        """Epoch seconds of the ``width``-second buckets the stamps in [begin, end] fill."""
        first = -(-begin // STEP_S) * STEP_S
        return sorted({s // width * width for s in range(first, end + 1, STEP_S)})


def demo_data(uri: str) -> DemoData:
    """Read the facts from the server at ``uri``."""
    with flight.connect(uri) as c:
        table = query(c, "select max(time) as t, count(*) as n from demo.metrics")
    end_ns = ns_values(table, "t")[0]
    assert end_ns % (STEP_S * 10**9) == 0
    return DemoData(end=end_ns // 10**9, rows=table.column("n")[0].as_py())


@pytest.fixture(scope="module")
def demo(uri: str) -> DemoData:
    return demo_data(uri)


def range_headers(begin: str, end: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("query_range_begin", begin), ("query_range_end", end), *extra]


# ==============================================================================================
# A. influxdata datasource (IFX): Grafana expands the macros; no range/limit headers
# ==============================================================================================


@pytest.mark.parametrize("metadata", [(), STATIC_METADATA], ids=["no-metadata", "custom-metadata"])
def test_ifx_health_check_select_1(client: flight.FlightClient, metadata: Headers) -> None:
    """Health check ("Save & test"): literal ``select 1``, one endpoint, a schema and at
    least one row, no error."""
    info = get_info(client, statement_descriptor("select 1"), metadata)
    schema, batches = do_get(client, info, metadata)
    assert len(schema) == 1
    assert sum(b.num_rows for b in batches) >= 1
    assert batches[0].num_rows >= 1, "the first batch must hold the row"
    assert_grafana_frame(schema)


def _sql_info_frame(client: flight.FlightClient) -> pa.Table:
    schema, batches = resource(client, sql_pb2.CommandGetSqlInfo(info=[]))
    assert batches, "GetSqlInfo returned no batch"
    return pa.Table.from_batches(batches, schema)  # all batches become one frame


def test_ifx_sql_info_rows_17_to_21_are_keywords_and_functions(
    client: flight.FlightClient,
) -> None:
    """QueryEditor.tsx reads ``values[1]`` rows 17-21 by position: keywords, then numeric,
    string, system and datetime functions, each a list of strings."""
    frame = _sql_info_frame(client)
    assert frame.num_rows >= 22
    ids = frame.column("info_name").to_pylist()
    assert ids[17:22] == [508, 509, 510, 511, 512]
    values = frame.column(1).to_pylist()
    union = frame.column(1).combine_chunks()
    for row in range(17, 22):
        assert union.type_codes[row].as_py() == 4, f"row {row} is not a string_list"
        value = values[row]
        assert isinstance(value, list) and value, f"row {row}: {value!r}"
        assert all(isinstance(v, str) and v for v in value), f"row {row}: {value!r}"
    keywords, numeric, string, system, datetime_ = values[17:22]
    assert "SELECT" in {k.upper() for k in keywords} or "INTERVAL" in keywords
    assert "abs" in numeric
    assert "date_bin" in datetime_
    assert "now" in datetime_
    assert any(f in string for f in ("lower", "upper", "concat", "substr"))
    # The editor spreads the four function lists into one array.
    assert len([*numeric, *string, *system, *datetime_]) >= 50


def test_ifx_sql_info_value_union_children(client: flight.FlightClient) -> None:
    frame = _sql_info_frame(client)
    assert frame.schema.field(0).name == "info_name"
    assert frame.schema.field(0).type == pa.uint32()
    value = frame.schema.field(1)
    assert value.name == "value"
    assert pa.types.is_union(value.type) and value.type.mode == "dense"
    children = [(value.type.field(i).name, value.type.field(i).type) for i in range(6)]
    assert children == [
        ("string_value", pa.string()),
        ("bool_value", pa.bool_()),
        ("bigint_value", pa.int64()),
        ("int32_bitmask", pa.int32()),
        ("string_list", pa.list_(pa.string())),
        ("int32_to_int32_list_map", pa.map_(pa.int32(), pa.list_(pa.int32()))),
    ]
    assert list(value.type.type_codes) == [0, 1, 2, 3, 4, 5]


def test_ifx_tables_resource(client: flight.FlightClient) -> None:
    """BuilderView.tsx: column 1 is the schema, column 2 the table, by position."""
    command = sql_pb2.CommandGetTables(table_types=["BASE TABLE", "table"], include_schema=False)
    schema, batches = resource(client, command)
    assert schema.names == ["catalog_name", "db_schema_name", "table_name", "table_type"]
    assert all(pa.types.is_string(f.type) for f in schema), schema
    assert batches and batches[0].num_rows > 0, "no batch, or an empty first batch"
    frame = pa.Table.from_batches(batches, schema)
    pairs = set(zip(frame.column(1).to_pylist(), frame.column(2).to_pylist(), strict=True))
    assert {("demo", "logs"), ("demo", "metrics")} <= pairs
    assert set(frame.column(3).to_pylist()) <= {"TABLE", "VIEW"}


def test_ifx_columns_resource_for_metrics(client: flight.FlightClient) -> None:
    """``/flightsql/columns?table=metrics``: row 0 of batch 0, ``table_schema`` read with
    ``array.NewStringData`` (int32 offsets) and decoded as an IPC schema message."""
    command = sql_pb2.CommandGetTables(table_name_filter_pattern="metrics", include_schema=True)
    schema, batches = resource(client, command)
    assert batches and batches[0].num_rows >= 1, "HTTP 404 (no batch) or 500 (empty batch)"
    first = batches[0]
    assert first.column(first.schema.get_field_index("table_name"))[0].as_py() == "metrics"
    field = schema.field("table_schema")
    assert field.type == pa.binary(), f"table_schema is {field.type}, not binary"
    raw = first.column(first.schema.get_field_index("table_schema"))[0].as_py()
    columns = pa.ipc.read_schema(pa.py_buffer(raw))
    assert columns.names == ["time", "host", "region", "metric", "value"]


def test_ifx_columns_resource_unknown_table_sends_no_batch(
    client: flight.FlightClient,
) -> None:
    command = sql_pb2.CommandGetTables(
        table_name_filter_pattern="no_such_table", include_schema=True
    )
    schema, batches = resource(client, command)
    assert "table_schema" in schema.names
    assert batches == [], "the datasource maps zero batches to 404 and an empty one to 500"


def _ifx_time_series_sql(begin: str, end: str) -> str:
    """What Grafana sends for ``$__dateBin(time)``/``$__timeFilter(time)`` after expanding
    them itself (interval 60 s)."""
    return (
        "select date_bin(interval '60 second', time, timestamp '1970-01-01T00:00:00Z') as time, "
        f"host, avg(value) as value from demo.metrics where time >= '{begin}' AND "
        f"time <= '{end}' and metric = 'cpu' group by 1, 2 order by 1"
    )


def test_ifx_time_series_query_expanded_by_grafana(
    client: flight.FlightClient, demo: DemoData
) -> None:
    begin, end = demo.hour()
    table = query(client, _ifx_time_series_sql(rfc3339(begin), rfc3339(end)), STATIC_METADATA)
    minutes = demo.buckets(begin, end, 60)
    assert table.num_rows == len(minutes) * 20  # 20 hosts per minute
    assert sorted(set(ns_values(table, "time"))) == [m * 10**9 for m in minutes]
    assert_long_series(table)
    assert table.schema.field("value").type == pa.float64()
    assert set(table.column("host").to_pylist()) == {f"host-{i:02d}" for i in range(20)}


#: §3.2 outputs with ``x`` -> demo.metrics; ``{a}``/``{b}`` are the range, ``{s}`` the first stamp.
IFX_EXPANDED = [
    (
        "select date_bin(interval '10 second', time, timestamp '1970-01-01T00:00:00Z') as time, "
        "value from demo.metrics where time >= '{a}' AND time <= '{b}' order by 1",
        SERIES * 7,
    ),
    ("select * from demo.metrics where time >= '{a}' AND time <= '{b}'", SERIES * 7),
    ("select * from demo.metrics where time >= '{a}'", SERIES * 7),
    ("select * from demo.metrics where time <= '{s}'", SERIES * 6),
    ("select * from demo.metrics where time >= cast('{a}' as timestamp)", SERIES * 7),
    ("select * from demo.metrics where time < cast('{s}' as timestamp)", SERIES * 5),
]


@pytest.mark.parametrize(("template", "rows"), IFX_EXPANDED, ids=[t for t, _ in IFX_EXPANDED])
def test_ifx_grafana_expanded_vectors_on_demo(
    client: flight.FlightClient, demo: DemoData, template: str, rows: int
) -> None:
    """The §3.2 expanded forms run on demo.metrics, over the last minute (7 stamps) or the
    first 50 s (6 stamps)."""
    sql = template.format(a=rfc3339(demo.end - 60), b=rfc3339(demo.end), s=rfc3339(demo.start + 50))
    table = query(client, sql, STATIC_METADATA)
    assert table.num_rows == rows
    assert_grafana_frame(table.schema)
    assert is_ns_timestamp(table.schema.field("time").type)


# ==============================================================================================
# C. §8 acceptance checks
# ==============================================================================================


def test_acceptance_01_health_check(client: flight.FlightClient) -> None:
    info = client.get_flight_info(statement_descriptor("select 1"))
    assert len(info.endpoints) == 1
    # The client ignores location, FlightInfo.schema and total_records: only the ticket.
    reader = client.do_get(info.endpoints[0].ticket)
    table = reader.read_all()
    assert table.num_rows >= 1


@pytest.mark.parametrize("placement", ["both", "get-flight-info", "do-get"])
def test_acceptance_02_headers_on_either_call(
    client: flight.FlightClient, demo: DemoData, placement: str
) -> None:
    """Range and limit take effect whichever call carries them (Grafana: both)."""
    begin, end = demo.hour()
    headers = range_headers(rfc3339(begin), rfc3339(end), *STATIC_METADATA)
    on_info = headers if placement != "do-get" else list(STATIC_METADATA)
    on_get = headers if placement != "get-flight-info" else list(STATIC_METADATA)
    counted = query(
        client, "select count(*) as n from demo.metrics", info_headers=on_info, get_headers=on_get
    )
    assert counted.column("n").to_pylist() == [SERIES * 360]
    limit = [("limit", "7"), *STATIC_METADATA]
    limited = query(
        client,
        "select * from demo.metrics",
        info_headers=limit if placement != "do-get" else (),
        get_headers=limit if placement != "get-flight-info" else (),
    )
    assert limited.num_rows == 7


@pytest.mark.parametrize(
    "sql",
    [
        "selec 1",
        "select * from demo.no_such_table",
        "select no_such_column from demo.metrics",
        "select cast(host as int) from demo.metrics",
        "select value / 0 from (select cast(value as int) as value from demo.metrics)",
        "select 1/0",
        "select cast('x' as int)",
        "select * from demo.metrics where time >= 'garbage'",
    ],
)
def test_acceptance_03_bad_sql_fails_before_the_schema(
    client: flight.FlightClient, sql: str
) -> None:
    error_before_schema(client, sql, USER_HEADERS)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("selec 1", "selec"),
        ("select cast(host as int) from demo.metrics", "Cannot cast string 'host-00'"),
        ("select 1/0", "Divide by zero"),
        # A cast that DataFusion's optimizer folds (and fails) when execution starts.
        ("select cast('x' as int)", "Cannot cast string 'x'"),
        # A bad time literal, e.g. from a dashboard variable.
        ("select * from demo.metrics where time >= 'garbage'", "garbage"),
    ],
)
def test_acceptance_03_bad_sql_is_invalid_argument_with_the_cause(
    client: flight.FlightClient, sql: str, message: str
) -> None:
    """The datasource shows the status message as the panel error: it must be the client's
    mistake (INVALID_ARGUMENT) and say what is wrong, not an opaque INTERNAL error."""
    exc = error_before_schema(client, sql, USER_HEADERS)
    assert_flight_error(exc, pa.ArrowInvalid, message)


def test_acceptance_05_custom_metadata_without_bearer(
    client: flight.FlightClient, demo: DemoData
) -> None:
    begin, end = demo.hour()
    table = query(client, _ifx_time_series_sql(rfc3339(begin), rfc3339(end)), STATIC_METADATA)
    assert table.num_rows > 0
    _, batches = resource(client, sql_pb2.CommandGetSqlInfo(info=[]), STATIC_METADATA)
    assert batches


def test_acceptance_06_timestamps_are_nanoseconds(
    client: flight.FlightClient, catalog_server: Service
) -> None:
    now = query(client, "SELECT now() AS time, 1.0 AS v")
    assert is_ns_timestamp(now.schema.field("time").type), now.schema
    assert_grafana_frame(now.schema)
    metrics = query(client, "select * from demo.metrics limit 10")
    assert is_ns_timestamp(metrics.schema.field("time").type), metrics.schema
    assert_grafana_frame(metrics.schema)
    # A Parquet table with microsecond timestamps.
    with flight.connect(f"grpc://127.0.0.1:{catalog_server.port}") as c:
        for sql in (
            "select * from xus order by time",
            "select date_bin(interval '30s', time, timestamp '1970-01-01T00:00:00Z') as time, "
            "host, max(value) as value from xus group by 1, 2 order by 1",
        ):
            table = query(c, sql, USER_HEADERS)
            assert table.num_rows > 0
            assert is_ns_timestamp(table.schema.field("time").type), table.schema
            assert_grafana_frame(table.schema)
        micros = query(c, "select time from xus order by time")
        nanos = query(c, "select time from x order by time")
        assert ns_values(micros, "time") == ns_values(nanos, "time"), "unit not converted"


_OTHER_TYPES = (
    "select cast('2024-01-01' as date) as d, cast(1.5 as decimal(5,2)) as x, [1,2] as l, "
    "named_struct('a', 1) as s"
)


def test_acceptance_06_grafana_profile_converts_other_types(
    client: flight.FlightClient,
) -> None:
    table = query(client, _OTHER_TYPES, [("x-client-type", "grafana")])
    assert [f.type for f in table.schema] == [
        pa.timestamp("ns"),
        pa.float64(),
        pa.string(),
        pa.string(),
    ], table.schema
    assert ns_values(table, "d") == [int(datetime(2024, 1, 1, tzinfo=UTC).timestamp()) * 10**9]
    row = table.to_pylist()[0]
    assert row["x"] == 1.5
    assert row["l"] == "[1, 2]"
    assert row["s"] == '{"a": 1}'
    assert_grafana_frame(table.schema)


def test_acceptance_06_without_client_type_types_stay_portable(
    client: flight.FlightClient,
) -> None:
    """ADBC and friends keep dates and decimals (only view/large/dictionary/unit change)."""
    table = query(client, _OTHER_TYPES)
    assert table.schema.field("d").type == pa.date32()
    assert pa.types.is_decimal(table.schema.field("x").type)
    assert pa.types.is_list(table.schema.field("l").type)
    assert pa.types.is_struct(table.schema.field("s").type)


@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        ("select * from demo.metrics limit 1000000", 1_000_000),  # 5 million cells
        ("select time, repeat(message, 100) as message from demo.logs limit 20000", 20_000),
    ],
    ids=["five-million-cells", "long-strings"],
)
def test_acceptance_07_every_message_fits_in_4_mib(
    client: flight.FlightClient, sql: str, rows: int
) -> None:
    info = get_info(client, statement_descriptor(sql), USER_HEADERS)
    reader = client.do_get(info.endpoints[0].ticket, call_options(USER_HEADERS))
    total, largest = 0, 0
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            break
        size = pa.ipc.get_record_batch_size(chunk.data)
        assert size <= GRPC_MAX_MESSAGE, f"message of {size} bytes after {total} rows"
        total += chunk.data.num_rows
        largest = max(largest, size)
    assert total == rows
    assert largest > 0


def test_acceptance_08_long_to_wide_ordering(client: flight.FlightClient, demo: DemoData) -> None:
    begin, end = demo.hour()
    sql = (
        "SELECT time, host, value FROM demo.metrics WHERE metric = 'cpu' AND "
        f"time >= '{rfc3339(begin)}' AND time <= '{rfc3339(end)}' ORDER BY time"
    )
    table = query(client, sql, STATIC_METADATA)
    assert table.num_rows == 20 * 360
    assert_long_series(table)


# -- a temporary catalog: public.x (ns) and public.xus (µs) Parquet tables -------------------

VECTOR_FROM = datetime(2023, 1, 1, tzinfo=UTC)
VECTOR_TO = VECTOR_FROM + timedelta(minutes=10)
#: Rows every 37 s from From-2m (16 inside [From, To]), then instants around 2024-01-01.
X_TIMES = [VECTOR_FROM - timedelta(minutes=2) + timedelta(seconds=37 * i) for i in range(25)] + [
    datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(2024, 1, 1, tzinfo=UTC),
    datetime(2024, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC),
    datetime(2024, 1, 1, 0, 0, 0, 750_000, tzinfo=UTC),
    datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC),
    datetime(2024, 1, 1, 1, tzinfo=UTC),
    datetime(2024, 1, 1, 3, tzinfo=UTC),
]
X_IN_VECTOR_RANGE = sum(VECTOR_FROM <= t <= VECTOR_TO for t in X_TIMES)


@pytest.fixture(scope="module")
def catalog_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A server over ``public.toml``: tables ``x`` (ns) and ``xus`` (µs), reachable unqualified
    (the default schema is ``public``); ``cpu01``/``cpu_1`` (LIKE look-alikes) and a view
    ``xv``."""
    root: Path = tmp_path_factory.mktemp("grafana_catalog")
    n = len(X_TIMES)
    columns = {
        "host": pa.array([("web-1", "web-2", "db-1")[i % 3] for i in range(n)], pa.string()),
        "value": pa.array([float(i) for i in range(n)], pa.float64()),
    }
    for name, unit in (("x", "ns"), ("xus", "us")):
        time = pa.array(X_TIMES, pa.timestamp(unit, "UTC"))
        pq.write_table(pa.table({"time": time, **columns}), root / f"{name}.parquet")
    sources = {"x": "x", "xus": "xus", "cpu01": "x", "cpu_1": "xus"}
    (root / "public.toml").write_text(
        "".join(
            f'[tables.{name}]\nsource = "{file}.parquet"\nformat = "parquet"\n'
            'time_column = "time"\n\n'
            for name, file in sources.items()
        )
        + '[tables.xv]\nsql = "select time, host from public.x"\n'
    )
    with running_server(catalog=root) as srv:
        yield srv


@pytest.fixture
def x_client(catalog_server: Service) -> Iterator[flight.FlightClient]:
    with flight.connect(f"grpc://127.0.0.1:{catalog_server.port}") as c:
        yield c


VECTOR_HEADERS = range_headers(
    "2023-01-01T00:00:00Z", "2023-01-01T00:10:00Z", ("interval_ms", "10000"), *USER_HEADERS
)
_BIN = "date_bin(interval '10 second', time, timestamp '1970-01-01T00:00:00Z')"
_FILTER = "time >= '2023-01-01T00:00:00Z' AND time <= '2023-01-01T00:10:00Z'"
#: macro_test.go (IFX/MMS/MM): (input, expected expansion).
MACRO_VECTORS = [
    ("select * from x", "select * from x"),
    (
        "select date_bin($__interval, time, timestamp '1970-01-01T00:00:00Z')",
        f"select {_BIN}",
    ),
    ("select $__dateBin(time)", f"select {_BIN}"),
    ("select $__dateBinAlias(time)", f"select {_BIN} as time_binned"),
    ("select * from x where $__timeFilter(time)", f"select * from x where {_FILTER}"),
    (
        "select * from x where $__timeRangeFrom(time)",
        "select * from x where time >= '2023-01-01T00:00:00Z'",
    ),
    (
        "select * from x where $__timeRangeTo(time)",
        "select * from x where time <= '2023-01-01T00:10:00Z'",
    ),
    ("select * from x where $__timeRange(time)", f"select * from x where {_FILTER}"),
    (
        "select * from x where time >= $__timeFrom",
        "select * from x where time >= cast('2023-01-01T00:00:00Z' as timestamp)",
    ),
    (
        "select * from x where time < $__timeTo",
        "select * from x where time < cast('2023-01-01T00:10:00Z' as timestamp)",
    ),
]
DERIVED_FORMS = [
    "select $__timeGroup(time, hour), count(*) as n from x group by $__timeGroup(time, hour)",
    "select $__timeGroupAlias(time, minute), count(*) as n from x group by 1, 2, 3, 4, 5",
    "select date_bin(interval '30s', time, timestamp '1970-01-01T00:00:00Z') as time, "
    "count(*) as n from x group by 1 order by 1",
]


def _with_from(sql: str) -> str:
    """The select-list-only vectors reference ``time``: give them a FROM."""
    return sql if " from " in sql else f"{sql} from x"


@pytest.mark.parametrize(("sql", "expanded"), MACRO_VECTORS, ids=[v[0] for v in MACRO_VECTORS])
def test_acceptance_09_macro_vectors(
    x_client: flight.FlightClient, sql: str, expanded: str
) -> None:
    """Sent unexpanded with From=2023-01-01T00:00:00Z, To=+10 min, interval_ms=10000, each
    vector runs and returns what Grafana's own expansion returns."""
    server = query(x_client, _with_from(sql), VECTOR_HEADERS)
    client_side = query(x_client, _with_from(expanded), VECTOR_HEADERS)
    assert server.num_rows == X_IN_VECTOR_RANGE
    assert server.equals(client_side), f"{server}\n!=\n{client_side}"
    assert_grafana_frame(server.schema)


@pytest.mark.parametrize("sql", DERIVED_FORMS)
def test_acceptance_09_derived_forms(x_client: flight.FlightClient, sql: str) -> None:
    table = query(x_client, sql, VECTOR_HEADERS)
    assert sum(table.column("n").to_pylist()) == X_IN_VECTOR_RANGE
    assert_grafana_frame(table.schema)


@pytest.mark.parametrize("placement", ["both", "do-get"])
def test_acceptance_10_limit_header(client: flight.FlightClient, placement: str) -> None:
    headers = [("limit", "5"), *USER_HEADERS]
    table = query(
        client,
        "select * from demo.metrics order by time desc",
        info_headers=headers if placement == "both" else USER_HEADERS,
        get_headers=headers,
    )
    assert table.num_rows == 5


@pytest.mark.parametrize("placement", ["both", "do-get"])
def test_acceptance_10_bad_limit_is_invalid_argument(
    client: flight.FlightClient, placement: str
) -> None:
    headers = [("limit", "abc"), *USER_HEADERS]
    descriptor = statement_descriptor("select 1")
    if placement == "both":
        with pytest.raises(pa.ArrowInvalid) as info_error:
            client.get_flight_info(descriptor, call_options(headers))
        assert_flight_error(info_error, pa.ArrowInvalid, r"header limit.*'abc'")
        return
    info = get_info(client, descriptor, USER_HEADERS)
    with pytest.raises(pa.ArrowInvalid) as get_error:
        client.do_get(info.endpoints[0].ticket, call_options(headers))
    assert_flight_error(get_error, pa.ArrowInvalid, r"header limit.*'abc'")


@pytest.mark.parametrize(
    ("begin", "end", "expected"),
    [
        (
            "2024-01-01T00:00:00Z",
            "2024-01-01T02:00:00+02:00",
            [datetime(2024, 1, 1, tzinfo=UTC)],
        ),
        (
            "2024-01-01T00:00:00.5Z",
            "2024-01-01T01:00:00Z",
            [
                datetime(2024, 1, 1, 0, 0, 0, 750_000, tzinfo=UTC),
                datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC),
                datetime(2024, 1, 1, 1, tzinfo=UTC),
            ],
        ),
        (
            "2023-12-31T23:00:00-01:00",
            "2024-01-01T00:00:00.5Z",
            [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC)],
        ),
    ],
)
def test_acceptance_11_time_range_formats(
    x_client: flight.FlightClient, begin: str, end: str, expected: list[datetime]
) -> None:
    """The three RFC 3339 forms the datasource sends parse, and rows outside are excluded."""
    headers = range_headers(begin, end, *USER_HEADERS)
    table = query(x_client, "select time from x order by time", headers)
    want = [int(t.timestamp() * 1_000_000) * 1000 for t in expected]
    assert ns_values(table, "time") == want


def test_acceptance_11_time_range_macros_render_utc_seconds(x_client: flight.FlightClient) -> None:
    headers = range_headers("2024-01-01T00:00:00.5Z", "2024-01-01T03:00:00+02:00", *USER_HEADERS)
    table = query(x_client, "select $__timeFrom as f, $__timeTo as t", headers)
    midnight = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp()) * 10**9
    assert ns_values(table, "f") == [midnight]  # fraction truncated, like Grafana
    assert ns_values(table, "t") == [midnight + 3600 * 10**9]  # +02:00 converted to UTC
    assert_grafana_frame(table.schema)


def test_acceptance_12_sql_info(client: flight.FlightClient) -> None:
    frame = _sql_info_frame(client)
    ids = frame.column("info_name").to_pylist()
    values = dict(zip(ids, frame.column("value").to_pylist(), strict=True))
    for info in range(508, 513):
        assert isinstance(values.get(info), list), f"SqlInfo {info}: {values.get(info)!r}"
    assert values[0] and isinstance(values[0], str)  # server name


def test_acceptance_13_tables(client: flight.FlightClient) -> None:
    command = sql_pb2.CommandGetTables(table_types=["BASE TABLE", "table"])
    schema, batches = resource(client, command, ())
    assert schema.names == ["catalog_name", "db_schema_name", "table_name", "table_type"]
    assert [f.type for f in schema] == [pa.string()] * 4
    frame = pa.Table.from_batches(batches, schema)
    names = zip(frame["db_schema_name"].to_pylist(), frame["table_name"].to_pylist(), strict=True)
    listed = set(names)
    assert {("demo", "metrics"), ("demo", "logs")} <= listed
    for schema_name, table in sorted(listed):
        assert query(client, f'select * from "{schema_name}"."{table}" limit 1').num_columns


def test_acceptance_14_columns(client: flight.FlightClient) -> None:
    command = sql_pb2.CommandGetTables(table_name_filter_pattern="logs", include_schema=True)
    schema, batches = resource(client, command, ())
    assert schema.field("table_schema").type == pa.binary()
    row = batches[0].to_pylist()[0]
    assert (row["db_schema_name"], row["table_name"]) == ("demo", "logs")
    columns = pa.ipc.read_schema(pa.py_buffer(row["table_schema"]))
    assert columns.names == ["time", "host", "service", "level", "message"]
    unknown = sql_pb2.CommandGetTables(table_name_filter_pattern="nope", include_schema=True)
    assert resource(client, unknown, ())[1] == []


def test_acceptance_15_eight_concurrent_queries_on_one_connection(
    client: flight.FlightClient, demo: DemoData
) -> None:
    begin, end = demo.hour()
    start = threading.Barrier(8)

    def panel(i: int) -> tuple[list[dict[str, object]], int]:
        headers = range_headers(
            rfc3339(begin), rfc3339(end), ("interval_ms", "60000"), ("limit", str(100 + i))
        )
        headers += list(USER_HEADERS)
        start.wait(timeout=10)
        counted = query(
            client,
            f"select host, count(*) as n from demo.metrics where host = 'host-{i:02d}' "
            "and $__timeFilter(time) group by host",
            headers,
        )
        limited = query(client, "select * from demo.metrics", headers)
        return counted.to_pylist(), limited.num_rows

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(panel, range(8)))
    for i, (counted, limited) in enumerate(results):
        assert counted == [{"host": f"host-{i:02d}", "n": 5 * 360}]
        assert limited == 100 + i


def test_acceptance_17_user_attribution_headers(
    client: flight.FlightClient, demo: DemoData
) -> None:
    begin, end = demo.hour()
    headers = range_headers(rfc3339(begin), rfc3339(end), ("interval_ms", "60000"))
    headers += [*USER_HEADERS, ("limit", "2000")]
    table = query(
        client,
        "select $__dateBin(time) as time, host, avg(value) as value from demo.metrics "
        "where $__timeFilter(time) and metric = 'cpu' group by 1, 2 order by 1",
        headers,
    )
    assert table.num_rows == len(demo.buckets(begin, end, 60)) * 20
    assert_long_series(table)
    assert query(client, "select 1", USER_HEADERS).num_rows == 1


def test_acceptance_13_tables_lists_views_too(x_client: flight.FlightClient) -> None:
    """Grafana's builder lists what ``table_types: ["BASE TABLE", "table"]`` returns: a
    catalog view is queryable, so it must be among them (§8.13: every queryable table)."""
    assert query(x_client, "select * from xv").num_rows == len(X_TIMES)
    command = sql_pb2.CommandGetTables(table_types=["BASE TABLE", "table"])
    schema, batches = resource(x_client, command)
    frame = pa.Table.from_batches(batches, schema)
    listed = set(frame.column("table_name").to_pylist())
    assert {"x", "xus", "cpu01", "cpu_1"} <= listed
    assert "xv" in listed, f"the view xv is not offered to Grafana: {sorted(listed)}"


def test_acceptance_14_columns_exact_name_first(x_client: flight.FlightClient) -> None:
    """``columns?table=cpu_1`` sends the name as a LIKE pattern (``_`` matches any character)
    and reads row 0 only: the exact table must come first, not ``cpu01``."""
    command = sql_pb2.CommandGetTables(table_name_filter_pattern="cpu_1", include_schema=True)
    schema, batches = resource(x_client, command)
    frame = pa.Table.from_batches(batches, schema)
    assert set(frame.column("table_name").to_pylist()) == {"cpu_1", "cpu01"}
    assert batches[0].to_pylist()[0]["table_name"] == "cpu_1", frame.to_pylist()
    columns = pa.ipc.read_schema(pa.py_buffer(batches[0].to_pylist()[0]["table_schema"]))
    assert columns.names == ["time", "host", "value"]
