"""Prepared statements: ADBC parameter binding and the stateless handle protocol."""

from __future__ import annotations

import datetime as dt
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightsql_srv.protocol import pack, sql_pb2
from tests.helpers import (
    assert_flight_error,
    bind_parameters,
    create_prepared,
    prepared_descriptor,
    statement_descriptor,
)

# -- through ADBC (what DB-API users do) ---------------------------------------------


def test_positional_parameter(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("select $1 + 1 as x", (41,))
        assert cur.fetchall() == [(42,)]


@pytest.mark.parametrize(
    ("value", "expected_type"),
    [
        pytest.param("héllo", pa.string(), id="string"),
        pytest.param(1.25, pa.float64(), id="float"),
        pytest.param(True, pa.bool_(), id="bool"),
        pytest.param(
            dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC),
            pa.timestamp("ns", tz="UTC"),
            id="timestamp",
        ),
        pytest.param(None, pa.null(), id="none"),
    ],
)
def test_parameter_types(conn: Any, value: Any, expected_type: pa.DataType) -> None:
    with conn.cursor() as cur:
        cur.execute("select $1 as v", (value,))
        table = cur.fetch_arrow_table()
    assert table.schema.field("v").type == expected_type
    assert table.column("v").to_pylist() == [value]


def test_several_parameters_in_any_order(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("select $2 - $1 as d, $1 as a, $3 is null as n", (1, 10, None))
        assert cur.fetchall() == [(9, 1, True)]


def test_parameter_filters_demo_metrics(conn: Any) -> None:
    sql = "select count(*) as n, min(host) as lo, max(host) as hi from demo.metrics where host = $1"
    with conn.cursor() as cur:
        cur.execute(sql, ("host-03",))
        assert cur.fetchall() == [(7 * 8640 * 5, "host-03", "host-03")]
        cur.execute(sql, ("no-such-host",))
        assert cur.fetchall() == [(0, None, None)]


def test_timestamp_parameter_filters_time(conn: Any) -> None:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    sql = "select count(*) as n, min(time) as first from demo.metrics where time >= $1"
    with conn.cursor() as cur:
        cur.execute(sql, (since,))
        (n, first), *_ = cur.fetchall()
    assert 0 < n <= 3600 // 10 * 100 + 100
    assert first >= since


def test_reexecute_same_sql_with_new_parameters(conn: Any) -> None:
    with conn.cursor() as cur:
        for value in (1, 2, 3, 100):
            cur.execute("select $1 * 10 as x", (value,))
            assert cur.fetchall() == [(value * 10,)]


def test_switching_sql_keeps_the_cursor_usable(conn: Any) -> None:
    """ADBC closes the previous handle on a new SQL string; a failed close breaks the cursor."""
    with conn.cursor() as cur:
        cur.execute("select $1 + 1 as x", (1,))
        assert cur.fetchall() == [(2,)]
        cur.execute("select 'other' as y")
        assert cur.fetchall() == [("other",)]
        cur.execute("select $1 + 1 as x", (5,))
        assert cur.fetchall() == [(6,)]
        cur.execute("select count(*) as n from demo.logs where level = $1", ("error",))
        assert cur.fetchall()[0][0] > 0
    with conn.cursor() as cur:  # closing a cursor closes its handle; the next one works
        cur.execute("select 3 as z")
        assert cur.fetchall() == [(3,)]


def test_adbc_prepare_reports_parameter_schema(conn: Any) -> None:
    with conn.cursor() as cur:
        parameters = cur.adbc_prepare("select $1 + 1 as x")
        assert parameters is not None and len(parameters) == 1
        assert cur.adbc_execute_schema("select 1 as x, 'a' as y").names == ["x", "y"]


def test_wrong_parameter_count_via_adbc(conn: Any) -> None:
    with conn.cursor() as cur:
        assert_flight_error(
            lambda: cur.execute("select $1 + 1 as x", (1, 2)),
            adbc.ProgrammingError,
            r"INVALID_ARGUMENT.*1 parameter\(s\) but 2 value\(s\)",
        )


# -- the raw protocol (pyarrow.flight) -----------------------------------------------


def test_create_prepared_statement_result(client: flight.FlightClient) -> None:
    result = create_prepared(client, "select $1 + 1 as x, 'a' as y")
    assert result.prepared_statement_handle
    dataset = pa.ipc.read_schema(pa.py_buffer(result.dataset_schema))
    assert dataset.names == ["x", "y"]
    assert dataset.field("y").type == pa.string()
    parameters = pa.ipc.read_schema(pa.py_buffer(result.parameter_schema))
    assert len(parameters) == 1


def test_create_prepared_statement_without_parameters(client: flight.FlightClient) -> None:
    result = create_prepared(client, "select 1 as x")
    assert pa.ipc.read_schema(pa.py_buffer(result.dataset_schema)).names == ["x"]
    if result.parameter_schema:  # empty bytes and an empty schema both mean "none"
        assert len(pa.ipc.read_schema(pa.py_buffer(result.parameter_schema))) == 0
    info = client.get_flight_info(prepared_descriptor(result.prepared_statement_handle))
    assert client.do_get(info.endpoints[0].ticket).read_all().to_pydict() == {"x": [1]}


def test_doput_returns_a_new_handle_carrying_the_parameters(client: flight.FlightClient) -> None:
    handle = create_prepared(client, "select $1 + 1 as x").prepared_statement_handle
    metadata = bind_parameters(client, handle, pa.record_batch({"0": [41]}))
    assert metadata is not None
    put_result = sql_pb2.DoPutPreparedStatementResult.FromString(metadata.to_pybytes())  # raw
    bound = put_result.prepared_statement_handle
    assert bound and bound != handle
    info = client.get_flight_info(prepared_descriptor(bound))
    assert len(info.endpoints) == 1
    assert client.do_get(info.endpoints[0].ticket).read_all().to_pydict() == {"x": [42]}
    # the bound handle is reusable, and binding the original again gives another result
    info = client.get_flight_info(prepared_descriptor(bound))
    assert client.do_get(info.endpoints[0].ticket).read_all().to_pydict() == {"x": [42]}
    metadata = bind_parameters(client, handle, pa.record_batch({"0": [9]}))
    assert metadata is not None
    again = sql_pb2.DoPutPreparedStatementResult.FromString(metadata.to_pybytes())
    info = client.get_flight_info(prepared_descriptor(again.prepared_statement_handle))
    assert client.do_get(info.endpoints[0].ticket).read_all().to_pydict() == {"x": [10]}


def test_get_schema_of_bound_handle(client: flight.FlightClient) -> None:
    handle = create_prepared(client, "select $1 as v").prepared_statement_handle
    metadata = bind_parameters(client, handle, pa.record_batch({"0": ["text"]}))
    assert metadata is not None
    bound = sql_pb2.DoPutPreparedStatementResult.FromString(metadata.to_pybytes())
    descriptor = prepared_descriptor(bound.prepared_statement_handle)
    schema = client.get_schema(descriptor).schema
    assert schema.field("v").type == pa.string()
    assert schema.equals(client.get_flight_info(descriptor).schema)


def test_unbound_handle_is_refused(client: flight.FlightClient) -> None:
    handle = create_prepared(client, "select $1 + 1 as x").prepared_statement_handle
    assert_flight_error(
        lambda: client.get_flight_info(prepared_descriptor(handle)),
        pa.ArrowInvalid,
        r"\$1.*DoPut",
    )


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        pytest.param(pa.record_batch({"0": [1, 2]}), r"one row.*got 2", id="two-rows"),
        pytest.param(
            pa.record_batch({"0": pa.array([], pa.int64())}), r"one row.*got 0", id="no-rows"
        ),
        pytest.param(
            pa.record_batch({"0": [1], "1": [2]}),
            r"1 parameter\(s\) but 2 value\(s\)",
            id="too-many-parameters",
        ),
    ],
)
def test_bad_bindings_are_invalid_argument(
    client: flight.FlightClient, batch: pa.RecordBatch, message: str
) -> None:
    handle = create_prepared(client, "select $1 + 1 as x").prepared_statement_handle
    assert_flight_error(lambda: bind_parameters(client, handle, batch), pa.ArrowInvalid, message)


def test_too_few_parameters_is_invalid_argument(client: flight.FlightClient) -> None:
    handle = create_prepared(client, "select $1 + $2 as x").prepared_statement_handle
    assert_flight_error(
        lambda: bind_parameters(client, handle, pa.record_batch({"0": [1]})),
        pa.ArrowInvalid,
        r"2 parameter\(s\) but 1 value\(s\)",
    )


@pytest.mark.parametrize("handle", [b"garbage", b"", b"F1" + b"\x00" * 40])
def test_close_unknown_handle_does_not_fail(client: flight.FlightClient, handle: bytes) -> None:
    body = pack(sql_pb2.ActionClosePreparedStatementRequest(prepared_statement_handle=handle))
    assert list(client.do_action(flight.Action("ClosePreparedStatement", body))) == []
    assert client.do_get(
        client.get_flight_info(statement_descriptor("select 1 as x")).endpoints[0].ticket
    ).read_all().to_pydict() == {"x": [1]}


def test_preparing_ddl_has_no_side_effect(client: flight.FlightClient, conn: Any) -> None:
    assert_flight_error(
        lambda: create_prepared(client, "CREATE TABLE t2 AS SELECT 1"),
        pa.ArrowInvalid,
        r"read-only",
    )
    with conn.cursor() as cur:
        assert_flight_error(
            lambda: cur.execute("CREATE TABLE t2 AS SELECT 1"),
            adbc.ProgrammingError,
            r"read-only",
        )
    for query in ("select * from t2", "select * from public.t2"):
        assert_flight_error(
            lambda q=query: client.get_flight_info(statement_descriptor(q)),
            pa.ArrowInvalid,
            r"t2' not found",
        )


def test_preparing_ddl_with_a_placeholder_has_no_side_effect(client: flight.FlightClient) -> None:
    """With a placeholder, prepare may defer planning to execution; DDL must still never run."""
    sql = "CREATE TABLE t3 AS SELECT $1 as v"
    try:
        handle = create_prepared(client, sql).prepared_statement_handle
    except pa.ArrowInvalid as exc:  # refusing at prepare is fine too
        assert_flight_error(exc, pa.ArrowInvalid, r"read-only")
    else:
        metadata = bind_parameters(client, handle, pa.record_batch({"0": [1]}))
        assert metadata is not None
        bound = sql_pb2.DoPutPreparedStatementResult.FromString(metadata.to_pybytes())
        assert_flight_error(
            lambda: client.get_flight_info(prepared_descriptor(bound.prepared_statement_handle)),
            pa.ArrowInvalid,
            r"read-only",
        )
    assert_flight_error(
        lambda: client.get_flight_info(statement_descriptor("select * from t3")),
        pa.ArrowInvalid,
        r"t3' not found",
    )
