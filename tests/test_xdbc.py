"""CommandGetXdbcTypeInfo: the exact 19-column schema, ordering and the data_type filter."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightsql_srv.protocol import pack, sql_pb2
from tests.helpers import statement_descriptor

# The spec's schema, written out (apache/arrow SqlSchema::GetXdbcTypeInfoSchema).
XDBC_TYPE_INFO = pa.schema(
    [
        pa.field("type_name", pa.utf8(), nullable=False),
        pa.field("data_type", pa.int32(), nullable=False),
        pa.field("column_size", pa.int32()),
        pa.field("literal_prefix", pa.utf8()),
        pa.field("literal_suffix", pa.utf8()),
        pa.field("create_params", pa.list_(pa.field("item", pa.utf8(), nullable=False))),
        pa.field("nullable", pa.int32(), nullable=False),
        pa.field("case_sensitive", pa.bool_(), nullable=False),
        pa.field("searchable", pa.int32(), nullable=False),
        pa.field("unsigned_attribute", pa.bool_()),
        pa.field("fixed_prec_scale", pa.bool_(), nullable=False),
        pa.field("auto_increment", pa.bool_()),
        pa.field("local_type_name", pa.utf8()),
        pa.field("minimum_scale", pa.int32()),
        pa.field("maximum_scale", pa.int32()),
        pa.field("sql_data_type", pa.int32(), nullable=False),
        pa.field("datetime_subcode", pa.int32()),
        pa.field("num_prec_radix", pa.int32()),
        pa.field("interval_precision", pa.int32()),
    ]
)


def _type_info(
    client: flight.FlightClient, data_type: int | None = None
) -> tuple[pa.Schema, pa.Table, int]:
    command = sql_pb2.CommandGetXdbcTypeInfo()
    if data_type is not None:
        command.data_type = data_type
    descriptor = flight.FlightDescriptor.for_command(pack(command))
    info = client.get_flight_info(descriptor)
    assert client.get_schema(descriptor).schema.equals(info.schema)
    reader = client.do_get(info.endpoints[0].ticket)
    batches = []
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            break
        batches.append(chunk.data)
    return info.schema, pa.Table.from_batches(batches, schema=reader.schema), len(batches)


def test_schema_is_exact(client: flight.FlightClient) -> None:
    schema, table, _ = _type_info(client)
    assert len(schema) == 19
    assert schema.equals(XDBC_TYPE_INFO), schema
    assert table.schema.equals(XDBC_TYPE_INFO)


def test_rows_ordered_by_data_type(client: flight.FlightClient) -> None:
    _, table, _ = _type_info(client)
    data_types = table.column("data_type").to_pylist()
    assert len(data_types) >= 10
    assert data_types == sorted(data_types)
    assert set(data_types) <= set(sql_pb2.XdbcDataType.values())
    names = table.column("type_name").to_pylist()
    assert len(names) == len(set(names))
    # Negative codes sort first (BIT = -7, TINYINT = -6, BIGINT = -5).
    assert data_types[0] < 0


def test_type_names_are_types_datafusion_accepts(client: flight.FlightClient) -> None:
    _, table, _ = _type_info(client)
    for name in table.column("type_name").to_pylist():
        info = client.get_flight_info(statement_descriptor(f"select cast(null as {name}) as v"))
        assert len(info.schema) == 1, name


def test_datetime_types_use_the_datetime_sql_type(client: flight.FlightClient) -> None:
    _, table, _ = _type_info(client)
    subcodes = {
        sql_pb2.XDBC_DATE: sql_pb2.XDBC_SUBCODE_DATE,
        sql_pb2.XDBC_TIME: sql_pb2.XDBC_SUBCODE_TIME,
        sql_pb2.XDBC_TIMESTAMP: sql_pb2.XDBC_SUBCODE_TIMESTAMP,
    }
    for row in table.to_pylist():
        if row["data_type"] in subcodes:
            assert row["sql_data_type"] == sql_pb2.XDBC_DATETIME, row
            assert row["datetime_subcode"] == subcodes[row["data_type"]], row


@pytest.mark.parametrize(
    ("data_type", "name"),
    [
        (sql_pb2.XDBC_INTEGER, "INTEGER"),
        (sql_pb2.XDBC_BIGINT, "BIGINT"),
        (sql_pb2.XDBC_VARCHAR, "VARCHAR"),
        (sql_pb2.XDBC_TIMESTAMP, "TIMESTAMP"),
    ],
)
def test_filter_by_data_type(client: flight.FlightClient, data_type: int, name: str) -> None:
    schema, table, _ = _type_info(client, data_type)
    assert schema.equals(XDBC_TYPE_INFO)
    assert table.num_rows >= 1
    assert set(table.column("data_type").to_pylist()) == {data_type}
    assert name in table.column("type_name").to_pylist()


@pytest.mark.parametrize("data_type", [sql_pb2.XDBC_WCHAR, sql_pb2.XDBC_LONGVARBINARY])
def test_unsupported_data_type_has_no_rows(client: flight.FlightClient, data_type: int) -> None:
    schema, table, batches = _type_info(client, data_type)
    assert schema.equals(XDBC_TYPE_INFO)
    assert table.num_rows == 0
    assert batches == 0
