"""Statement queries end to end: ADBC and raw pyarrow.flight, schemas, tickets, SqlInfo."""

from __future__ import annotations

from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightsql_srv.protocol import pack, sql_pb2
from tests.helpers import statement_descriptor


def _roundtrip(client: flight.FlightClient, sql: str) -> tuple[flight.FlightInfo, pa.Table]:
    """GetFlightInfo + DoGet, asserting the schema agreements every client relies on."""
    descriptor = statement_descriptor(sql)
    info = client.get_flight_info(descriptor)
    assert len(info.endpoints) == 1, "Grafana requires exactly one endpoint"
    assert list(info.endpoints[0].locations) == [], "empty locations: redeem on this service"
    schema = client.get_schema(descriptor).schema
    assert schema.equals(info.schema), f"GetSchema {schema} != FlightInfo {info.schema}"
    reader = client.do_get(info.endpoints[0].ticket)
    assert reader.schema.equals(info.schema), f"stream {reader.schema} != {info.schema}"
    table = reader.read_all()
    assert table.schema.equals(info.schema)
    return info, table


def test_select_one_via_adbc(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute("select 1 as x")
        assert cur.description[0][0] == "x"
        assert cur.fetchall() == [(1,)]


def test_select_one_via_pyarrow(client: flight.FlightClient) -> None:
    info, table = _roundtrip(client, "select 1 as x")
    assert table.to_pydict() == {"x": [1]}
    assert info.schema == pa.schema([pa.field("x", pa.int64(), nullable=False)])


def test_demo_metrics_types(client: flight.FlightClient) -> None:
    info, table = _roundtrip(client, "select * from demo.metrics order by time desc limit 50")
    assert info.schema.names == ["time", "host", "region", "metric", "value"]
    assert info.schema.field("time").type == pa.timestamp("ns", tz="UTC")
    for name in ("host", "region", "metric"):
        assert info.schema.field(name).type == pa.string(), f"{name} must be utf8"
    assert info.schema.field("value").type == pa.float64()
    assert table.num_rows == 50
    assert all(h.startswith("host-") for h in table.column("host").to_pylist())


def test_demo_logs_types(client: flight.FlightClient) -> None:
    info, table = _roundtrip(client, "select * from demo.logs limit 10")
    assert info.schema.field("time").type == pa.timestamp("ns", tz="UTC")
    for name in ("host", "service", "level", "message"):
        assert info.schema.field(name).type == pa.string(), f"{name} must be utf8"
    assert table.num_rows == 10


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        pytest.param(
            "select m.host, count(*) as n from demo.metrics m "
            "join (select distinct host from demo.logs where host < 'host-02') l "
            "on m.host = l.host where m.metric = 'cpu' group by m.host order by m.host",
            {"host": ["host-00", "host-01"], "n": [60480, 60480]},
            id="join",
        ),
        pytest.param(
            "select 1 as a, 'x' as b union all select 2, 'y' order by a",
            {"a": [1, 2], "b": ["x", "y"]},
            id="union",
        ),
        pytest.param(
            "select null as n, cast(null as int) as i, 'a' as s",
            {"n": [None], "i": [None], "s": ["a"]},
            id="nulls",
        ),
        pytest.param(
            "select upper('héllo') as u, concat('a', 'b') as c, '' as e",
            {"u": ["HÉLLO"], "c": ["ab"], "e": [""]},
            id="strings",
        ),
    ],
)
def test_schema_agreement(client: flight.FlightClient, sql: str, expected: dict[str, Any]) -> None:
    _, table = _roundtrip(client, sql)
    assert table.to_pydict() == expected


def test_decimal(client: flight.FlightClient) -> None:
    info, table = _roundtrip(client, "select cast(1.5 as decimal(10,2)) as d")
    assert info.schema.field("d").type == pa.decimal128(10, 2)
    assert str(table.column("d")[0].as_py()) == "1.50"


def test_now_is_a_nanosecond_timestamp(client: flight.FlightClient) -> None:
    info, table = _roundtrip(client, "select now() as n")
    assert pa.types.is_timestamp(info.schema.field("n").type)
    assert info.schema.field("n").type.unit == "ns"
    assert table.num_rows == 1


def test_dictionary_arrives_decoded(client: flight.FlightClient) -> None:
    info, table = _roundtrip(client, "select arrow_cast('abc', 'Dictionary(Int32, Utf8)') as d")
    assert info.schema.field("d").type == pa.string()
    assert table.to_pydict() == {"d": ["abc"]}


def test_nested_types(client: flight.FlightClient, conn: Any) -> None:
    sql = "select [1,2] as l, named_struct('a', 'x') as s"
    info, table = _roundtrip(client, sql)
    assert pa.types.is_list(info.schema.field("l").type)
    assert info.schema.field("l").type.value_type == pa.int64()
    assert info.schema.field("s").type == pa.struct([pa.field("a", pa.string())])
    assert table.to_pylist() == [{"l": [1, 2], "s": {"a": "x"}}]
    with conn.cursor() as cur:  # ADBC checks every stream against FlightInfo.schema
        cur.execute(sql)
        assert cur.fetch_arrow_table().to_pylist() == [{"l": [1, 2], "s": {"a": "x"}}]


def test_pandas_and_polars_on_adbc(conn: Any) -> None:
    sql = "select host, count(*) as n from demo.metrics group by host order by host"
    with conn.cursor() as cur:
        cur.execute(sql)
        df = cur.fetch_df()
        cur.execute(sql)
        pl_df = pl.from_arrow(cur.fetch_arrow_table())
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["host", "n"]
    assert len(df) == 20 and df["n"].nunique() == 1
    assert isinstance(pl_df, pl.DataFrame)
    assert pl_df.columns == ["host", "n"]
    assert pl_df["host"].to_list() == df["host"].to_list()
    assert pl_df["host"].dtype == pl.String


def test_rowcount_matches_total_records(conn: Any, client: flight.FlightClient) -> None:
    sql = "select * from (values (1), (2), (3)) as t(x)"
    info = client.get_flight_info(statement_descriptor(sql))
    assert info.total_records in (-1, 3)
    with conn.cursor() as cur:
        cur.execute(sql)
        assert cur.rowcount == info.total_records
        assert len(cur.fetchall()) == 3


def test_ticket_can_be_read_twice(client: flight.FlightClient) -> None:
    info = client.get_flight_info(statement_descriptor("select 7 as x union all select 8"))
    ticket = info.endpoints[0].ticket
    first = client.do_get(ticket).read_all()
    second = client.do_get(ticket).read_all()
    assert first.equals(second)
    assert sorted(first.column("x").to_pylist()) == [7, 8]


def test_execute_partitions_and_read_partition(conn: Any) -> None:
    with conn.cursor() as cur:
        partitions, schema = cur.adbc_execute_partitions(
            "select value from range(5) order by value"
        )
        assert len(partitions) >= 1
        assert schema.names == ["value"]
        rows = []
        for partition in partitions:
            cur.adbc_read_partition(partition)
            rows += cur.fetch_arrow_table().column("value").to_pylist()
        assert rows == [0, 1, 2, 3, 4]
        cur.adbc_read_partition(partitions[0])  # re-reading a partition works
        assert cur.fetch_arrow_table().num_rows >= 1


# -- SqlInfo ---------------------------------------------------------------------------

_UNION_CHILDREN = [
    ("string_value", pa.string()),
    ("bool_value", pa.bool_()),
    ("bigint_value", pa.int64()),
    ("int32_bitmask", pa.int32()),
    ("string_list", pa.list_(pa.string())),
    ("int32_to_int32_list_map", pa.map_(pa.int32(), pa.list_(pa.int32()))),
]


def _sql_info(client: flight.FlightClient, ids: list[int]) -> pa.Table:
    descriptor = flight.FlightDescriptor.for_command(pack(sql_pb2.CommandGetSqlInfo(info=ids)))
    info = client.get_flight_info(descriptor)
    assert len(info.endpoints) == 1
    assert client.get_schema(descriptor).schema.equals(info.schema)
    table = client.do_get(info.endpoints[0].ticket).read_all()
    assert table.schema.equals(info.schema)
    return table


def _check_sql_info_schema(schema: pa.Schema) -> None:
    assert schema.names == ["info_name", "value"]
    assert schema.field("info_name").type == pa.uint32()
    assert not schema.field("info_name").nullable
    union = schema.field("value").type
    assert isinstance(union, pa.UnionType) and union.mode == "dense"
    children = [(union.field(i).name, union.field(i).type) for i in range(union.num_fields)]
    assert children == _UNION_CHILDREN
    assert list(union.type_codes) == [0, 1, 2, 3, 4, 5]


def _values(table: pa.Table) -> dict[int, tuple[int, Any]]:
    """info id -> (union type code, python value)."""
    names = table.column("info_name").to_pylist()
    values = table.column("value").combine_chunks()
    return {n: (values[i].type_code, values[i].value.as_py()) for i, n in enumerate(names)}


def test_sql_info_all(client: flight.FlightClient) -> None:
    table = _sql_info(client, [])
    _check_sql_info_schema(table.schema)
    ids = table.column("info_name").to_pylist()
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    values = _values(table)
    assert values[0] == (0, "flightsql-srv")
    assert values[3] == (1, True)  # read-only
    assert values[8] == (3, 0)  # transactions: none, in int32_bitmask
    for info_id in range(508, 513):
        code, value = values[info_id]
        assert code == 4, f"SqlInfo {info_id} must be a string_list"
        assert all(isinstance(v, str) for v in value)
        if info_id >= 509:
            assert value, f"SqlInfo {info_id} (function list) is empty"


def test_sql_info_transaction_id_only(client: flight.FlightClient) -> None:
    table = _sql_info(client, [8])
    _check_sql_info_schema(table.schema)
    assert _values(table) == {8: (3, 0)}


def test_adbc_get_info_vendor_name(conn: Any) -> None:
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "flightsql-srv"
    assert info["vendor_arrow_version"] == pa.__version__
