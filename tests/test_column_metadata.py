"""Flight SQL column metadata (``ARROW:FLIGHT:SQL:*``) in result schemas and GetTables'
``table_schema``; and Handshake with authentication off."""

from __future__ import annotations

import base64
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import grpc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightsql_srv.protocol import pack, sql_pb2
from flightsql_srv.results import with_column_metadata
from tests.helpers import create_prepared, prepared_descriptor, statement_descriptor

P = "ARROW:FLIGHT:SQL:"
QUERY = (
    "select 1 as i, 'a' as s, 1.5 as f, cast(1.25 as decimal(10, 2)) as d, "
    "now() as t, true as b, date '2024-01-01' as dt"
)
TYPES = {
    "i": ("BIGINT", "19", "0"),
    "s": ("VARCHAR", None, None),
    "f": ("DOUBLE", "53", None),
    "d": ("DECIMAL", "10", "2"),
    "t": ("TIMESTAMP", "29", "9"),
    "b": ("BOOLEAN", "1", None),
    "dt": ("DATE", "10", None),
}


def _meta(field: pa.Field) -> dict[str, str]:
    return {
        k.decode().removeprefix(P): v.decode()
        for k, v in (field.metadata or {}).items()
        if k.startswith(P.encode())
    }


def _assert_result_metadata(schema: pa.Schema) -> None:
    for name, (type_name, precision, scale) in TYPES.items():
        meta = _meta(schema.field(name))
        assert meta["TYPE_NAME"] == type_name, (name, meta)
        assert meta.get("PRECISION") == precision, (name, meta)
        assert meta.get("SCALE") == scale, (name, meta)
        assert meta["IS_CASE_SENSITIVE"] == ("1" if type_name == "VARCHAR" else "0")
        assert (meta["IS_AUTO_INCREMENT"], meta["IS_READ_ONLY"], meta["IS_SEARCHABLE"]) == (
            "0",
            "1",
            "1",
        )
        # A computed column's table is unknown: not claimed.
        assert "TABLE_NAME" not in meta and "SCHEMA_NAME" not in meta


def test_with_column_metadata_keeps_existing_metadata() -> None:
    schema = pa.schema([pa.field("x", pa.uint32(), metadata={"k": "v"})], metadata={"s": "1"})
    out = with_column_metadata(schema, "cat", "sch", "tbl")
    assert out.metadata == {b"s": b"1"}
    assert out.field("x").metadata[b"k"] == b"v"
    assert _meta(out.field("x"))["TYPE_NAME"] == "INT UNSIGNED"
    assert {k: _meta(out.field("x"))[k] for k in ("CATALOG_NAME", "SCHEMA_NAME", "TABLE_NAME")} == {
        "CATALOG_NAME": "cat",
        "SCHEMA_NAME": "sch",
        "TABLE_NAME": "tbl",
    }
    assert out.equals(schema)  # types and names unchanged


def test_flight_info_and_get_schema_carry_column_metadata(client: flight.FlightClient) -> None:
    descriptor = statement_descriptor(QUERY)
    info = client.get_flight_info(descriptor)
    _assert_result_metadata(info.schema)
    _assert_result_metadata(client.get_schema(descriptor).schema)
    stream = client.do_get(info.endpoints[0].ticket).read_all()
    assert stream.schema.equals(info.schema)  # same names and types


def test_prepared_dataset_schema_carries_column_metadata(client: flight.FlightClient) -> None:
    result = create_prepared(client, QUERY)
    _assert_result_metadata(pa.ipc.read_schema(pa.py_buffer(result.dataset_schema)))
    info = client.get_flight_info(prepared_descriptor(result.prepared_statement_handle))
    _assert_result_metadata(info.schema)


def test_get_tables_table_schema_names_the_table(client: flight.FlightClient) -> None:
    command = sql_pb2.CommandGetTables(
        include_schema=True, db_schema_filter_pattern="demo", table_name_filter_pattern="metrics"
    )
    info = client.get_flight_info(flight.FlightDescriptor.for_command(pack(command)))
    table = client.do_get(info.endpoints[0].ticket).read_all()
    row = table.to_pylist()[0]
    schema = pa.ipc.read_schema(pa.py_buffer(row["table_schema"]))
    for field in schema:
        meta = _meta(field)
        assert meta["CATALOG_NAME"] == row["catalog_name"]
        assert meta["SCHEMA_NAME"] == "demo" and meta["TABLE_NAME"] == "metrics"
        assert meta["TYPE_NAME"]
    assert _meta(schema.field("time"))["TYPE_NAME"] == "TIMESTAMP"
    assert _meta(schema.field("host"))["TYPE_NAME"] == "VARCHAR"


def test_adbc_reports_xdbc_type_names(conn: Any) -> None:
    objects = conn.adbc_get_objects(
        depth="all", db_schema_filter="demo", table_name_filter="metrics"
    ).read_all()
    tables = objects.to_pylist()[0]["catalog_db_schemas"][0]["db_schema_tables"]
    columns = {c["column_name"]: c["xdbc_type_name"] for c in tables[0]["table_columns"]}
    assert columns == {
        "time": "TIMESTAMP",
        "host": "VARCHAR",
        "region": "VARCHAR",
        "metric": "VARCHAR",
        "value": "DOUBLE",
    }
    with conn.cursor() as cur:
        schema = cur.adbc_execute_schema("select 1 as x")
    assert _meta(schema.field("x"))["TYPE_NAME"] == "BIGINT"


# -- Handshake with authentication off -------------------------------------------------


def test_handshake_without_auth_succeeds(uri: str) -> None:
    with flight.connect(uri) as c:
        header = c.authenticate_basic_token("anyone", "anything")
        assert header == (b"authorization", b"Bearer anonymous")
        options = flight.FlightCallOptions(headers=[header])
        info = c.get_flight_info(statement_descriptor("select 1 as x"), options)
        assert c.do_get(info.endpoints[0].ticket, options).read_all().to_pydict() == {"x": [1]}


def test_adbc_with_credentials_connects_without_auth(uri: str) -> None:
    with (
        adbc.connect(uri, db_kwargs={"username": "u", "password": "p"}, autocommit=True) as c,
        c.cursor() as cur,
    ):
        cur.execute("select 41 + 1 as x")
        assert cur.fetchall() == [(42,)]


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic " + base64.b64encode(b"u:p").decode(), "Bearer whatever"],
    ids=["none", "basic", "bearer"],
)
def test_raw_handshake_with_a_request_message(server: Any, authorization: str | None) -> None:
    """As Rust's arrow-flight client (lancedb's npm client) makes it: one HandshakeRequest."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        method = channel.stream_stream(
            "/arrow.flight.protocol.FlightService/Handshake",
            request_serializer=lambda m: m,
            response_deserializer=lambda m: m,
        )
        metadata = [("authorization", authorization)] if authorization else None
        call = method(iter([b""]), metadata=metadata, timeout=10)
        responses = list(call)
        assert call.code() == grpc.StatusCode.OK
        assert len(responses) <= 1
        assert dict(call.initial_metadata())["authorization"] == "Bearer anonymous"
