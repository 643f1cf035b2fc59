"""Catalog discovery: the metadata commands through ADBC and through raw pyarrow.flight.

Result schemas are written out literally from the Flight SQL specification
(``apache/arrow:cpp/src/arrow/flight/sql/server.cc`` ``SqlSchema::*``) and compared with
``Schema.equals``, so names, types and nullability all count.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from google.protobuf.message import Message

from flightsql_srv.protocol import pack, sql_pb2
from tests.conftest import running_server
from tests.helpers import assert_flight_error, statement_descriptor

CATALOG = "flightsql"

# -- the spec's result schemas, written out (NN = nullable=False) ---------------------------

CATALOGS = pa.schema([pa.field("catalog_name", pa.utf8(), nullable=False)])
DB_SCHEMAS = pa.schema(
    [
        pa.field("catalog_name", pa.utf8()),
        pa.field("db_schema_name", pa.utf8(), nullable=False),
    ]
)
TABLES = pa.schema(
    [
        pa.field("catalog_name", pa.utf8()),
        pa.field("db_schema_name", pa.utf8()),
        pa.field("table_name", pa.utf8(), nullable=False),
        pa.field("table_type", pa.utf8(), nullable=False),
    ]
)
TABLES_WITH_SCHEMA = pa.schema(
    [
        pa.field("catalog_name", pa.utf8()),
        pa.field("db_schema_name", pa.utf8()),
        pa.field("table_name", pa.utf8(), nullable=False),
        pa.field("table_type", pa.utf8(), nullable=False),
        pa.field("table_schema", pa.binary(), nullable=False),
    ]
)
TABLE_TYPES = pa.schema([pa.field("table_type", pa.utf8(), nullable=False)])
PRIMARY_KEYS = pa.schema(
    [
        pa.field("catalog_name", pa.utf8()),
        pa.field("db_schema_name", pa.utf8()),
        pa.field("table_name", pa.utf8(), nullable=False),
        pa.field("column_name", pa.utf8(), nullable=False),
        pa.field("key_sequence", pa.int32(), nullable=False),
        pa.field("key_name", pa.utf8()),
    ]
)
FOREIGN_KEYS = pa.schema(
    [
        pa.field("pk_catalog_name", pa.utf8()),
        pa.field("pk_db_schema_name", pa.utf8()),
        pa.field("pk_table_name", pa.utf8(), nullable=False),
        pa.field("pk_column_name", pa.utf8(), nullable=False),
        pa.field("fk_catalog_name", pa.utf8()),
        pa.field("fk_db_schema_name", pa.utf8()),
        pa.field("fk_table_name", pa.utf8(), nullable=False),
        pa.field("fk_column_name", pa.utf8(), nullable=False),
        pa.field("key_sequence", pa.int32(), nullable=False),
        pa.field("fk_key_name", pa.utf8()),
        pa.field("pk_key_name", pa.utf8()),
        pa.field("update_rule", pa.uint8(), nullable=False),
        pa.field("delete_rule", pa.uint8(), nullable=False),
    ]
)

# -- a small catalog with a view, a LIKE-trap table name and an empty schema ---------------

_CSV = "id,name,score,ok\n1,a,1.5,true\n2,b,2.5,false\n3,c,3.5,true\n"
_SHOP = """\
[tables.orders]
source = "data.csv"
format = "csv"

[tables.order_x]
source = "data.csv"
format = "csv"

[tables.orderyx]
source = "data.csv"
format = "csv"

[tables.order_view]
sql = "select id, name from shop.orders where id > 1"
"""
_ALPHA = """\
[tables.zzz]
source = "data.csv"
format = "csv"
"""
#: (schema, table, type) of every table in the test catalog, in the spec's order.
ALL_TABLES = [
    ("alpha", "zzz", "TABLE"),
    ("shop", "order_view", "VIEW"),
    ("shop", "order_x", "TABLE"),
    ("shop", "orders", "TABLE"),
    ("shop", "orderyx", "TABLE"),
]
#: Every schema GetDbSchemas lists: DataFusion's default "public", the empty file, and the
#: two with tables; never information_schema.
ALL_SCHEMAS = ["alpha", "empty", "public", "shop"]


@pytest.fixture(scope="module")
def catalog_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory: Path = tmp_path_factory.mktemp("catalog")
    (directory / "data.csv").write_text(_CSV)
    (directory / "shop.toml").write_text(_SHOP)
    (directory / "alpha.toml").write_text(_ALPHA)
    (directory / "empty.toml").write_text('description = "a schema without tables"\n')
    with running_server(catalog=directory) as service:
        yield f"grpc://127.0.0.1:{service.port}"


@pytest.fixture
def cat_client(catalog_uri: str) -> Iterator[flight.FlightClient]:
    with flight.connect(catalog_uri) as c:
        yield c


@pytest.fixture
def cat_conn(catalog_uri: str) -> Iterator[Any]:
    with adbc.connect(catalog_uri, autocommit=True) as c:
        yield c


# -- helpers ---------------------------------------------------------------------------------


def _descriptor(command: Message) -> flight.FlightDescriptor:
    return flight.FlightDescriptor.for_command(pack(command))


def _fetch(client: flight.FlightClient, command: Message) -> tuple[pa.Schema, pa.Table, int]:
    """GetFlightInfo + DoGet; returns (FlightInfo schema, result, number of batches).

    Also checks GetSchema and the stream's schema agree with FlightInfo's.
    """
    descriptor = _descriptor(command)
    info = client.get_flight_info(descriptor)
    assert len(info.endpoints) == 1
    assert client.get_schema(descriptor).schema.equals(info.schema)
    reader = client.do_get(info.endpoints[0].ticket)
    assert reader.schema.equals(info.schema)
    batches = []
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            break
        if chunk.data is not None:
            batches.append(chunk.data)
    return info.schema, pa.Table.from_batches(batches, schema=info.schema), len(batches)


def _query_schema(client: flight.FlightClient, sql: str) -> pa.Schema:
    schema: pa.Schema = client.get_flight_info(statement_descriptor(sql)).schema
    return schema


def _rows(table: pa.Table, *names: str) -> list[tuple[Any, ...]]:
    return list(zip(*(table.column(n).to_pylist() for n in names), strict=True))


def _tables(client: flight.FlightClient, **kwargs: Any) -> list[tuple[str, str, str]]:
    schema, table, _ = _fetch(client, sql_pb2.CommandGetTables(**kwargs))
    assert schema.equals(TABLES)
    assert set(table.column("catalog_name").to_pylist()) <= {CATALOG}
    return _rows(table, "db_schema_name", "table_name", "table_type")  # type: ignore[return-value]


def _objects(conn: Any, **kwargs: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = conn.adbc_get_objects(**kwargs).read_all().to_pylist()
    return result


def _object_tables(conn: Any, **kwargs: Any) -> list[tuple[str, str, str]]:
    """(schema, table, type) of every table adbc_get_objects returns."""
    return [
        (s["db_schema_name"], t["table_name"], t["table_type"])
        for c in _objects(conn, **kwargs)
        for s in c["catalog_db_schemas"] or []
        for t in s["db_schema_tables"] or []
    ]


# -- ADBC: adbc_get_objects / adbc_get_table_schema / adbc_get_table_types ----------------


def test_adbc_get_objects_catalogs_depth(cat_conn: Any) -> None:
    assert _objects(cat_conn, depth="catalogs") == [
        {"catalog_name": CATALOG, "catalog_db_schemas": None}
    ]
    assert _objects(cat_conn, depth="catalogs", catalog_filter=CATALOG) == [
        {"catalog_name": CATALOG, "catalog_db_schemas": None}
    ]
    assert _objects(cat_conn, depth="catalogs", catalog_filter="other") == []


def test_adbc_get_objects_db_schemas_depth(cat_conn: Any) -> None:
    objects = _objects(cat_conn, depth="db_schemas")
    assert [c["catalog_name"] for c in objects] == [CATALOG]
    schemas = objects[0]["catalog_db_schemas"]
    assert [s["db_schema_name"] for s in schemas] == ALL_SCHEMAS
    assert all(s["db_schema_tables"] is None for s in schemas)

    def names(pattern: str) -> list[str]:
        objs = _objects(cat_conn, depth="db_schemas", db_schema_filter=pattern)
        return [s["db_schema_name"] for c in objs for s in c["catalog_db_schemas"] or []]

    assert names("s_op") == ["shop"]
    assert names("%h%") == ["alpha", "shop"]
    assert names("e%") == ["empty"]
    assert names("sho") == []
    assert names("information_schema") == []


def test_adbc_get_objects_tables_depth(cat_conn: Any) -> None:
    objects = _objects(cat_conn, depth="tables")
    by_schema = {
        s["db_schema_name"]: s["db_schema_tables"] for s in objects[0]["catalog_db_schemas"]
    }
    assert set(by_schema) == set(ALL_SCHEMAS)
    assert by_schema["empty"] == [] and by_schema["public"] == []
    assert all(t["table_columns"] is None for t in by_schema["shop"])
    assert _object_tables(cat_conn, depth="tables") == ALL_TABLES

    assert _object_tables(cat_conn, depth="tables", table_name_filter="order%") == [
        t for t in ALL_TABLES if t[1].startswith("order")
    ]
    assert _object_tables(cat_conn, depth="tables", table_name_filter="order_x") == [
        ("shop", "order_x", "TABLE"),
        ("shop", "orderyx", "TABLE"),
    ]
    assert _object_tables(
        cat_conn, depth="tables", db_schema_filter="al%", table_name_filter="%z%"
    ) == [("alpha", "zzz", "TABLE")]
    assert _object_tables(cat_conn, depth="tables", table_types_filter=["VIEW"]) == [
        ("shop", "order_view", "VIEW")
    ]
    assert _object_tables(cat_conn, depth="tables", table_types_filter=["BASE TABLE"]) == [
        t for t in ALL_TABLES if t[2] == "TABLE"
    ]
    assert _object_tables(cat_conn, depth="tables", catalog_filter="other") == []


#: How the ADBC driver labels the Arrow types of the test CSV (xdbc_data_type).
_XDBC_OF = {
    pa.int64(): sql_pb2.XDBC_BIGINT,
    pa.utf8(): sql_pb2.XDBC_VARCHAR,
    pa.float64(): sql_pb2.XDBC_FLOAT,
    pa.bool_(): sql_pb2.XDBC_BIT,
}


@pytest.mark.parametrize("depth", ["columns", "all"])
def test_adbc_get_objects_columns_match_the_tables(
    cat_conn: Any, cat_client: flight.FlightClient, depth: str
) -> None:
    objects = _objects(cat_conn, depth=depth)
    seen = []
    for s in objects[0]["catalog_db_schemas"]:
        for t in s["db_schema_tables"]:
            seen.append((s["db_schema_name"], t["table_name"], t["table_type"]))
            expected = _query_schema(
                cat_client, f"select * from {s['db_schema_name']}.{t['table_name']}"
            )
            columns = t["table_columns"]
            assert [c["column_name"] for c in columns] == expected.names
            assert [c["ordinal_position"] for c in columns] == list(range(1, len(expected) + 1))
            assert [c["xdbc_data_type"] for c in columns] == [_XDBC_OF[f.type] for f in expected]
    assert seen == ALL_TABLES

    view = _objects(cat_conn, depth=depth, db_schema_filter="shop", table_types_filter=["VIEW"])[0][
        "catalog_db_schemas"
    ]
    assert [s["db_schema_name"] for s in view] == ["shop"]
    (order_view,) = view[0]["db_schema_tables"]
    assert [c["column_name"] for c in order_view["table_columns"]] == ["id", "name"]

    filtered = _objects(cat_conn, depth=depth, column_name_filter="sc%")
    columns = [
        c["column_name"]
        for s in filtered[0]["catalog_db_schemas"]
        for t in s["db_schema_tables"]
        for c in t["table_columns"] or []
    ]
    assert columns and set(columns) == {"score"}


def test_adbc_get_table_schema_equals_the_query_schema(
    conn: Any, client: flight.FlightClient
) -> None:
    schema = conn.adbc_get_table_schema("metrics", db_schema_filter="demo")
    assert schema.equals(_query_schema(client, "select * from demo.metrics"))
    logs = conn.adbc_get_table_schema("logs", db_schema_filter="demo")
    assert logs.equals(_query_schema(client, "select * from demo.logs"))


def test_adbc_get_table_schema_of_a_view(cat_conn: Any, cat_client: flight.FlightClient) -> None:
    schema = cat_conn.adbc_get_table_schema("order_view", db_schema_filter="shop")
    assert schema.equals(_query_schema(cat_client, "select * from shop.order_view"))
    assert schema.names == ["id", "name"]


def test_adbc_get_table_schema_of_a_missing_table_is_not_found(conn: Any) -> None:
    with pytest.raises(adbc.ProgrammingError) as raised:
        conn.adbc_get_table_schema("no_such_table", db_schema_filter="demo")
    assert_flight_error(raised, adbc.ProgrammingError, "NOT_FOUND")
    with pytest.raises(adbc.ProgrammingError) as raised:
        conn.adbc_get_table_schema("metrics", db_schema_filter="nope")
    assert_flight_error(raised, adbc.ProgrammingError, "NOT_FOUND")


def test_adbc_get_table_types(conn: Any) -> None:
    assert conn.adbc_get_table_types() == ["TABLE", "VIEW"]


# -- pyarrow: CommandGetCatalogs / GetDbSchemas --------------------------------------------


def test_get_catalogs(client: flight.FlightClient) -> None:
    schema, table, batches = _fetch(client, sql_pb2.CommandGetCatalogs())
    assert schema.equals(CATALOGS)
    assert table.column("catalog_name").to_pylist() == [CATALOG]
    assert batches == 1


def test_get_db_schemas_lists_empty_schemas_but_not_information_schema(
    cat_client: flight.FlightClient,
) -> None:
    schema, table, _ = _fetch(cat_client, sql_pb2.CommandGetDbSchemas())
    assert schema.equals(DB_SCHEMAS)
    assert _rows(table, "catalog_name", "db_schema_name") == [(CATALOG, s) for s in ALL_SCHEMAS]


def test_get_db_schemas_on_the_demo_catalog(client: flight.FlightClient) -> None:
    _, table, _ = _fetch(client, sql_pb2.CommandGetDbSchemas())
    names = table.column("db_schema_name").to_pylist()
    assert "demo" in names and "public" in names
    assert "information_schema" not in names
    assert names == sorted(names)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"catalog": CATALOG}, ALL_SCHEMAS),
        ({"catalog": "other"}, []),
        ({"catalog": ""}, []),  # "" = objects without a catalog; there are none
        ({"db_schema_filter_pattern": "%"}, ALL_SCHEMAS),
        ({"db_schema_filter_pattern": "s_op"}, ["shop"]),
        ({"db_schema_filter_pattern": "%p%"}, ["alpha", "empty", "public", "shop"]),
        ({"db_schema_filter_pattern": "_____"}, ["alpha", "empty"]),
        ({"db_schema_filter_pattern": "SHOP"}, []),
        ({"db_schema_filter_pattern": "information%"}, []),
        ({"catalog": CATALOG, "db_schema_filter_pattern": "pub%"}, ["public"]),
        ({"catalog": "other", "db_schema_filter_pattern": "pub%"}, []),
    ],
)
def test_get_db_schemas_filters(
    cat_client: flight.FlightClient, kwargs: dict[str, str], expected: list[str]
) -> None:
    schema, table, _ = _fetch(cat_client, sql_pb2.CommandGetDbSchemas(**kwargs))
    assert schema.equals(DB_SCHEMAS)
    assert table.column("db_schema_name").to_pylist() == expected
    assert table.column("catalog_name").to_pylist() == [CATALOG] * len(expected)


# -- pyarrow: CommandGetTables ---------------------------------------------------------------


def test_get_tables_lists_everything_in_spec_order(cat_client: flight.FlightClient) -> None:
    rows = _tables(cat_client)
    assert rows == ALL_TABLES
    # catalog -> schema -> table: "alpha.zzz" comes first although "zzz" sorts last.
    assert rows == sorted(rows, key=lambda r: (r[0], r[1]))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"catalog": CATALOG}, ALL_TABLES),
        ({"catalog": "other"}, []),
        ({"db_schema_filter_pattern": "shop"}, ALL_TABLES[1:]),
        ({"db_schema_filter_pattern": "_lpha"}, ALL_TABLES[:1]),
        ({"db_schema_filter_pattern": "%"}, ALL_TABLES),
        ({"db_schema_filter_pattern": "information_schema"}, []),
        ({"table_name_filter_pattern": "orders"}, [("shop", "orders", "TABLE")]),
        ({"table_name_filter_pattern": "ORDERS"}, []),
        ({"table_name_filter_pattern": "order%"}, ALL_TABLES[1:]),
        ({"table_name_filter_pattern": "%s"}, [("shop", "orders", "TABLE")]),
        # "_" is a wildcard: order_x also matches orderyx ...
        (
            {"table_name_filter_pattern": "order_x"},
            [("shop", "order_x", "TABLE"), ("shop", "orderyx", "TABLE")],
        ),
        # ... unless escaped with a backslash.
        ({"table_name_filter_pattern": "order\\_x"}, [("shop", "order_x", "TABLE")]),
        ({"table_name_filter_pattern": "order\\%"}, []),
        ({"table_name_filter_pattern": "tables"}, []),  # information_schema.tables is hidden
        ({"table_types": ["VIEW"]}, [("shop", "order_view", "VIEW")]),
        # "TABLE" is the spec's (JDBC/ODBC) name; "BASE TABLE" stays an alias of it.
        ({"table_types": ["TABLE"]}, [t for t in ALL_TABLES if t[2] == "TABLE"]),
        ({"table_types": ["BASE TABLE"]}, [t for t in ALL_TABLES if t[2] == "TABLE"]),
        ({"table_types": ["TABLE", "VIEW"]}, ALL_TABLES),
        ({"table_types": ["SYSTEM TABLE"]}, []),
        ({"table_types": ["BASE TABLE", "VIEW"]}, ALL_TABLES),
        # lower-case "table" is the generic type some clients send: tables and views
        ({"table_types": ["table"]}, ALL_TABLES),
        (
            {"db_schema_filter_pattern": "sh%", "table_name_filter_pattern": "%_x"},
            [("shop", "order_x", "TABLE"), ("shop", "orderyx", "TABLE")],
        ),
        (
            {"catalog": CATALOG, "db_schema_filter_pattern": "shop", "table_types": ["VIEW"]},
            [("shop", "order_view", "VIEW")],
        ),
    ],
)
def test_get_tables_filters(
    cat_client: flight.FlightClient, kwargs: dict[str, Any], expected: list[tuple[str, ...]]
) -> None:
    assert _tables(cat_client, **kwargs) == expected


def test_get_tables_include_schema_decodes_to_the_query_schema(
    cat_client: flight.FlightClient,
) -> None:
    schema, table, _ = _fetch(cat_client, sql_pb2.CommandGetTables(include_schema=True))
    assert schema.equals(TABLES_WITH_SCHEMA)
    assert _rows(table, "db_schema_name", "table_name", "table_type") == ALL_TABLES
    assert table.column("table_schema").type == pa.binary()
    for s, t, blob in _rows(table, "db_schema_name", "table_name", "table_schema"):
        decoded = pa.ipc.read_schema(pa.py_buffer(blob))
        assert decoded.equals(_query_schema(cat_client, f"select * from {s}.{t}"))


def test_get_tables_include_schema_on_the_demo_catalog(client: flight.FlightClient) -> None:
    command = sql_pb2.CommandGetTables(db_schema_filter_pattern="demo", include_schema=True)
    schema, table, _ = _fetch(client, command)
    assert schema.equals(TABLES_WITH_SCHEMA)
    for s, t, blob in _rows(table, "db_schema_name", "table_name", "table_schema"):
        decoded = pa.ipc.read_schema(pa.py_buffer(blob))
        assert decoded.equals(_query_schema(client, f"select * from {s}.{t}"))
    assert {"logs", "metrics"} <= set(table.column("table_name").to_pylist())


def test_get_tables_grafana_tables_resource(client: flight.FlightClient) -> None:
    """Grafana's /flightsql/tables: types ["BASE TABLE","table"], columns by position."""
    schema, table, _ = _fetch(client, sql_pb2.CommandGetTables(table_types=["BASE TABLE", "table"]))
    assert schema.names == ["catalog_name", "db_schema_name", "table_name", "table_type"]
    assert schema.equals(TABLES)
    rows = _rows(table, "db_schema_name", "table_name")
    assert ("demo", "logs") in rows and ("demo", "metrics") in rows
    assert rows == sorted(rows)
    # Column 1 is the schema and column 2 the table, by position.
    assert table.column(1).to_pylist()[rows.index(("demo", "logs"))] == "demo"
    assert table.column(2).to_pylist()[rows.index(("demo", "logs"))] == "logs"
    assert set(table.column("table_type").to_pylist()) == {"TABLE"}


def test_get_tables_grafana_columns_resource(client: flight.FlightClient) -> None:
    """Grafana's /flightsql/columns?table=metrics reads row 0 of batch 0."""
    command = sql_pb2.CommandGetTables(table_name_filter_pattern="metrics", include_schema=True)
    _, table, batches = _fetch(client, command)
    assert batches >= 1 and table.num_rows >= 1
    assert table.column("table_name")[0].as_py() == "metrics"
    decoded = pa.ipc.read_schema(pa.py_buffer(table.column("table_schema")[0].as_py()))
    assert decoded.equals(_query_schema(client, "select * from demo.metrics"))


def test_get_tables_without_match_sends_no_batch(client: flight.FlightClient) -> None:
    command = sql_pb2.CommandGetTables(table_name_filter_pattern="nope", include_schema=True)
    info = client.get_flight_info(_descriptor(command))
    assert info.schema.equals(TABLES_WITH_SCHEMA)
    reader = client.do_get(info.endpoints[0].ticket)
    assert reader.schema.equals(TABLES_WITH_SCHEMA)
    chunks = 0
    while True:
        try:
            reader.read_chunk()
        except StopIteration:
            break
        chunks += 1
    assert chunks == 0, "an unknown table must give zero batches, not an empty batch"


# -- pyarrow: table types and keys -----------------------------------------------------------


def test_get_table_types(client: flight.FlightClient) -> None:
    schema, table, _ = _fetch(client, sql_pb2.CommandGetTableTypes())
    assert schema.equals(TABLE_TYPES)
    assert table.column("table_type").to_pylist() == ["TABLE", "VIEW"]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (sql_pb2.CommandGetPrimaryKeys(db_schema="demo", table="metrics"), PRIMARY_KEYS),
        (sql_pb2.CommandGetPrimaryKeys(table="no_such_table"), PRIMARY_KEYS),
        (
            sql_pb2.CommandGetExportedKeys(catalog=CATALOG, db_schema="demo", table="logs"),
            FOREIGN_KEYS,
        ),
        (sql_pb2.CommandGetImportedKeys(db_schema="demo", table="logs"), FOREIGN_KEYS),
        (
            sql_pb2.CommandGetCrossReference(
                pk_db_schema="demo", pk_table="metrics", fk_db_schema="demo", fk_table="logs"
            ),
            FOREIGN_KEYS,
        ),
    ],
    ids=["primary", "primary-missing", "exported", "imported", "cross-reference"],
)
def test_key_commands_are_empty_with_exact_schemas(
    client: flight.FlightClient, command: Message, expected: pa.Schema
) -> None:
    schema, table, batches = _fetch(client, command)
    assert schema.equals(expected)
    assert table.num_rows == 0
    assert batches == 0
    assert schema.names == [f.name for f in expected]  # field order as in the spec


def test_get_schema_of_metadata_commands(client: flight.FlightClient) -> None:
    expected: list[tuple[Message, pa.Schema]] = [
        (sql_pb2.CommandGetCatalogs(), CATALOGS),
        (sql_pb2.CommandGetDbSchemas(db_schema_filter_pattern="%"), DB_SCHEMAS),
        (sql_pb2.CommandGetTables(), TABLES),
        (sql_pb2.CommandGetTables(include_schema=True), TABLES_WITH_SCHEMA),
        (sql_pb2.CommandGetTableTypes(), TABLE_TYPES),
        (sql_pb2.CommandGetPrimaryKeys(table="t"), PRIMARY_KEYS),
        (sql_pb2.CommandGetExportedKeys(table="t"), FOREIGN_KEYS),
        (sql_pb2.CommandGetImportedKeys(table="t"), FOREIGN_KEYS),
        (sql_pb2.CommandGetCrossReference(pk_table="a", fk_table="b"), FOREIGN_KEYS),
    ]
    for command, schema in expected:
        got = client.get_schema(_descriptor(command)).schema
        assert got.equals(schema), f"{command.DESCRIPTOR.name}: {got}"
