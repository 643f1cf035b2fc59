"""CommandGetSqlInfo: the dense-union result, each id in the spec's union child, the
Grafana (influxdata) positional contract for ids 508-512, and ADBC's adbc_get_info."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightsql_srv import __version__
from flightsql_srv.protocol import pack, sql_pb2
from tests.helpers import statement_descriptor

# The spec's SqlInfo schema, written out: six union children in this order, codes 0..5.
SQL_INFO = pa.schema(
    [
        pa.field("info_name", pa.uint32(), nullable=False),
        pa.field(
            "value",
            pa.dense_union(
                [
                    pa.field("string_value", pa.utf8()),
                    pa.field("bool_value", pa.bool_()),
                    pa.field("bigint_value", pa.int64()),
                    pa.field("int32_bitmask", pa.int32()),
                    pa.field("string_list", pa.list_(pa.field("item", pa.utf8()))),
                    pa.field(
                        "int32_to_int32_list_map",
                        pa.map_(pa.int32(), pa.list_(pa.field("item", pa.int32()))),
                    ),
                ],
                type_codes=[0, 1, 2, 3, 4, 5],
            ),
            nullable=False,
        ),
    ]
)
STRING, BOOL, BIGINT, INT32, STRING_LIST, MAP = range(6)


def _spec_children() -> dict[int, int]:
    """id -> union child, from the spec's table of SqlInfo ids (FlightSql.proto)."""
    child: dict[int, int] = {}
    groups: list[tuple[int, list[int]]] = [
        # server info
        (STRING, [0, 1, 2, 6, 7]),
        (BOOL, [3, 4, 5, 9, 10, 11]),
        (INT32, [8, 100, 101]),
        # syntax info
        (BOOL, [500, 501, 502, 506, 515, 516, *range(518, 522), 523, 524, 527, 532]),
        (BOOL, [536, 537, 539, 556, 563, 565, 566, *range(572, 577)]),
        (INT32, [503, 505, 507, 522, 525, 526, 528, 533, 534, 535, 538, 540, 562, 564]),
        (INT32, list(range(567, 572))),
        (STRING, [504, 513, 514, 529, 530, 531]),
        (STRING_LIST, [508, 509, 510, 511, 512]),
        (BIGINT, [i for i in range(541, 562) if i != 556]),
        (MAP, [517]),
    ]
    for code, ids in groups:
        for info in ids:
            assert info not in child, info
            child[info] = code
    return child


SPEC_CHILD = _spec_children()


def _sql_info(
    client: flight.FlightClient, ids: list[int] | None = None
) -> tuple[pa.Schema, pa.Table]:
    descriptor = flight.FlightDescriptor.for_command(
        pack(sql_pb2.CommandGetSqlInfo(info=ids or []))
    )
    info = client.get_flight_info(descriptor)
    assert len(info.endpoints) == 1
    assert client.get_schema(descriptor).schema.equals(info.schema)
    table = client.do_get(info.endpoints[0].ticket).read_all()
    assert table.schema.equals(info.schema)
    return info.schema, table


def _rows(table: pa.Table) -> list[tuple[int, int, Any]]:
    """(id, union type code, value) per row."""
    codes: list[int] = []
    values: list[Any] = []
    for chunk in table.column("value").chunks:
        codes += chunk.type_codes.to_pylist()
        values += chunk.to_pylist()
    return list(zip(table.column("info_name").to_pylist(), codes, values, strict=True))


@pytest.fixture(scope="module")
def all_info(server: Any) -> tuple[pa.Schema, list[tuple[int, int, Any]]]:
    with flight.connect(f"grpc://127.0.0.1:{server.port}") as client:
        schema, table = _sql_info(client)
    return schema, _rows(table)


def test_schema_is_the_spec_dense_union(
    all_info: tuple[pa.Schema, list[tuple[int, int, Any]]],
) -> None:
    schema, _ = all_info
    assert schema.equals(SQL_INFO), schema
    union = schema.field("value").type
    assert union.mode == "dense"
    assert union.type_codes == [0, 1, 2, 3, 4, 5]
    assert [union.field(i).name for i in range(union.num_fields)] == [
        "string_value",
        "bool_value",
        "bigint_value",
        "int32_bitmask",
        "string_list",
        "int32_to_int32_list_map",
    ]


def test_all_ids_sorted_and_plentiful(
    all_info: tuple[pa.Schema, list[tuple[int, int, Any]]],
) -> None:
    ids = [i for i, _, _ in all_info[1]]
    assert len(ids) >= 60
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_every_id_is_in_the_spec_child(
    all_info: tuple[pa.Schema, list[tuple[int, int, Any]]],
) -> None:
    wrong = []
    for info, code, value in all_info[1]:
        if info >= 10000:  # custom ids may use any child
            continue
        assert info in SPEC_CHILD, f"id {info} is not a SqlInfo id of the spec"
        if code != SPEC_CHILD[info]:
            wrong.append((info, code, SPEC_CHILD[info]))
        assert value is not None, f"id {info} has a null value"
    assert not wrong, f"(id, sent child, spec child): {wrong}"


def test_server_values(all_info: tuple[pa.Schema, list[tuple[int, int, Any]]]) -> None:
    values = {i: (code, v) for i, code, v in all_info[1]}
    assert values[sql_pb2.FLIGHT_SQL_SERVER_NAME] == (STRING, "flightsql-srv")
    assert values[sql_pb2.FLIGHT_SQL_SERVER_VERSION] == (STRING, __version__)
    assert values[sql_pb2.FLIGHT_SQL_SERVER_ARROW_VERSION] == (STRING, pa.__version__)
    assert values[sql_pb2.FLIGHT_SQL_SERVER_READ_ONLY] == (BOOL, True)
    assert values[sql_pb2.FLIGHT_SQL_SERVER_SQL] == (BOOL, True)
    assert values[sql_pb2.FLIGHT_SQL_SERVER_SUBSTRAIT][0] == BOOL
    assert values[sql_pb2.FLIGHT_SQL_SERVER_TRANSACTION] == (
        INT32,
        sql_pb2.SQL_SUPPORTED_TRANSACTION_NONE,
    )
    assert values[sql_pb2.FLIGHT_SQL_SERVER_CANCEL][0] == BOOL
    assert values[sql_pb2.SQL_IDENTIFIER_QUOTE_CHAR] == (STRING, '"')
    for info in range(508, 513):
        code, names = values[info]
        assert code == STRING_LIST
        assert names and all(isinstance(n, str) and n for n in names), info


def test_grafana_positional_rows_17_to_21(
    all_info: tuple[pa.Schema, list[tuple[int, int, Any]]],
) -> None:
    """influxdata's QueryEditor reads keywords and function lists from rows 17-21."""
    rows = all_info[1]
    assert [i for i, _, _ in rows[17:22]] == [508, 509, 510, 511, 512]
    assert all(code == STRING_LIST for _, code, _ in rows[17:22])


def test_function_lists_hold_real_datafusion_functions(
    client: flight.FlightClient, all_info: tuple[pa.Schema, list[tuple[int, int, Any]]]
) -> None:
    values = {i: v for i, _, v in all_info[1]}
    numeric, string, system, datetime = (values[i] for i in (509, 510, 511, 512))
    assert "abs" in numeric
    assert "upper" in string
    assert "date_bin" in datetime
    assert "now" in datetime or "date_bin" in datetime
    info = client.get_flight_info(
        statement_descriptor("select distinct routine_name from information_schema.routines")
    )
    routines = set(client.do_get(info.endpoints[0].ticket).read_all().column(0).to_pylist())
    for name, functions in [
        ("numeric", numeric),
        ("string", string),
        ("system", system),
        ("datetime", datetime),
    ]:
        unknown = sorted(set(functions) - routines)
        assert not unknown, f"{name} functions DataFusion does not know: {unknown[:10]}"
    # One function, one list.
    all_functions = numeric + string + system + datetime
    assert len(all_functions) == len(set(all_functions))


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([8], [8]),
        ([0, 508], [0, 508]),
        ([508, 0], [0, 508]),
        ([0, 99999], [0]),
        ([99999], []),
        ([4999], []),
    ],
)
def test_specific_ids(client: flight.FlightClient, ids: list[int], expected: list[int]) -> None:
    schema, table = _sql_info(client, ids)
    assert schema.equals(SQL_INFO)
    rows = _rows(table)
    assert [i for i, _, _ in rows] == expected
    for info, code, _ in rows:
        assert code == SPEC_CHILD[info]


def test_id_8_is_int32_zero(client: flight.FlightClient) -> None:
    """ADBC reads id 8 at connect with an unchecked Int32 assertion on child 3."""
    _, table = _sql_info(client, [8])
    assert _rows(table) == [(8, INT32, 0)]
    union = table.column("value").chunk(0)
    assert union.field(INT32).type == pa.int32()


def test_adbc_get_info_vendor_fields(conn: Any) -> None:
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "flightsql-srv"
    assert info["vendor_version"] == __version__
    assert info["vendor_arrow_version"] == pa.__version__
    assert info["driver_name"].startswith("ADBC Flight SQL Driver")
