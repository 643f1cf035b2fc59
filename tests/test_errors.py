"""Errors clients see: bad SQL, the read-only guard, malformed requests, unsupported RPCs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightsql_srv.protocol import pack, sql_pb2
from tests.helpers import assert_flight_error, statement_descriptor

BAD_SQL = "selec 1"
#: DataFusion's parser message for BAD_SQL, which must reach the client unchanged.
BAD_SQL_MESSAGE = r"ParserError\(\"Expected: an SQL statement, found: selec"
READ_ONLY = r"read-only"


def _put_update(client: flight.FlightClient, sql: str) -> pa.Buffer | None:
    """DoPut(CommandStatementUpdate) with no batches: pyarrow's closest to descriptor-only."""
    descriptor = flight.FlightDescriptor.for_command(
        pack(sql_pb2.CommandStatementUpdate(query=sql))
    )
    writer, reader = client.do_put(descriptor, pa.schema([]))
    with writer:
        writer.done_writing()
        metadata: pa.Buffer | None = reader.read()
    return metadata


def _action(client: flight.FlightClient, kind: str, body: bytes = b"") -> list[Any]:
    return list(client.do_action(flight.Action(kind, body)))


# -- bad SQL ---------------------------------------------------------------------------


def test_bad_sql_via_adbc(conn: Any) -> None:
    with conn.cursor() as cur:
        assert_flight_error(
            lambda: cur.execute(BAD_SQL),
            adbc.ProgrammingError,
            "INVALID_ARGUMENT.*" + BAD_SQL_MESSAGE,
        )
        cur.execute("select 1 as x")  # the cursor survives the error
        assert cur.fetchall() == [(1,)]


def test_bad_sql_fails_at_get_flight_info(client: flight.FlightClient) -> None:
    assert_flight_error(
        lambda: client.get_flight_info(statement_descriptor(BAD_SQL)),
        pa.ArrowInvalid,
        BAD_SQL_MESSAGE,
    )
    assert_flight_error(
        lambda: client.get_schema(statement_descriptor(BAD_SQL)), pa.ArrowInvalid, BAD_SQL_MESSAGE
    )


def test_unknown_table_names_the_table(client: flight.FlightClient) -> None:
    assert_flight_error(
        lambda: client.get_flight_info(statement_descriptor("select * from demo.nope")),
        pa.ArrowInvalid,
        r"table '.*demo\.nope' not found",
    )


@pytest.mark.parametrize("sql", ["", "   ", "\n\t"])
def test_empty_query_is_invalid_argument(client: flight.FlightClient, sql: str) -> None:
    assert_flight_error(
        lambda: client.get_flight_info(statement_descriptor(sql)), pa.ArrowInvalid, r"empty"
    )


def test_oversized_query_is_invalid_argument(client: flight.FlightClient) -> None:
    sql = "select 1 as x -- " + "x" * (1024 * 1024)
    assert_flight_error(
        lambda: client.get_flight_info(statement_descriptor(sql)), pa.ArrowInvalid, r"longer than"
    )


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        # Each of these took the server down (stack overflow in planning) before the limit.
        (" union all ".join(f"select {i} as x" for i in range(4000)), r"3999 UNION.*at most 500"),
        ("select " + "+".join(["1"] * 12_000), r"11999 operators; at most 2500"),
        ("select 1 where " + " or ".join(f"1 = {i}" for i in range(6000)), r"use IN \(\.\.\.\)"),
    ],
    ids=["union-chain", "plus-chain", "or-chain"],
)
def test_query_too_deep_to_plan_is_invalid_argument(
    client: flight.FlightClient, sql: str, message: str
) -> None:
    assert_flight_error(
        lambda: client.get_flight_info(statement_descriptor(sql)), pa.ArrowInvalid, message
    )
    assert (
        client.do_get(
            client.get_flight_info(statement_descriptor("select 1 as x")).endpoints[0].ticket
        )
        .read_all()
        .num_rows
        == 1
    )


def test_large_queries_below_the_depth_limits_run(client: flight.FlightClient) -> None:
    """Long IN lists, quoted operators and a few hundred unions are fine."""
    for sql in (
        "select count(*) as n from demo.metrics where host in ("
        + ",".join(f"'host-{i:02d}'" for i in range(20_000))
        + ")",
        "select '" + "+" * 10_000 + "' as x -- " + "or " * 5000,
        " union all ".join(f"select {i} as x" for i in range(300)),
    ):
        info = client.get_flight_info(statement_descriptor(sql))
        assert client.do_get(info.endpoints[0].ticket).read_all().num_rows >= 1


# -- read-only -------------------------------------------------------------------------

WRITES = [
    pytest.param("create table t(a int)", id="create-table"),
    pytest.param("create table t2 as select 1", id="create-table-as"),
    pytest.param("create view v as select 1", id="create-view"),
    pytest.param("insert into demo.metrics select * from demo.metrics limit 1", id="insert-select"),
    pytest.param("insert into demo.logs values (now(), 'h', 's', 'info', 'm')", id="insert"),
    pytest.param("set datafusion.execution.batch_size = 1", id="set"),
    pytest.param(
        "create external table e stored as csv location '/etc/passwd'", id="external-table"
    ),
    pytest.param("drop table demo.metrics", id="drop"),
    pytest.param("delete from demo.metrics", id="delete"),
]


@pytest.mark.parametrize("sql", WRITES)
def test_writes_are_refused_via_adbc(conn: Any, sql: str) -> None:
    with conn.cursor() as cur:
        assert_flight_error(lambda: cur.execute(sql), adbc.ProgrammingError, READ_ONLY)


@pytest.mark.parametrize("sql", WRITES)
def test_writes_are_refused_at_get_flight_info(client: flight.FlightClient, sql: str) -> None:
    assert_flight_error(
        lambda: client.get_flight_info(statement_descriptor(sql)), pa.ArrowInvalid, READ_ONLY
    )


def test_tables_survive_refused_writes(conn: Any) -> None:
    with conn.cursor() as cur:
        for sql in ("drop table demo.metrics", "delete from demo.logs"):
            assert_flight_error(lambda q=sql: cur.execute(q), adbc.ProgrammingError, READ_ONLY)
        cur.execute("select count(*) from demo.logs")
        assert cur.fetchall()[0][0] > 0
        cur.execute("select count(*) from demo.metrics")
        assert cur.fetchall()[0][0] > 0


@pytest.mark.parametrize("suffix", ["out.csv", "out_dir/"])
def test_copy_is_refused_and_writes_nothing(
    conn: Any, client: flight.FlightClient, tmp_path: Path, suffix: str
) -> None:
    target = tmp_path / suffix
    sql = f"copy (select 1 as x) to '{target}' stored as csv"
    with conn.cursor() as cur:
        assert_flight_error(lambda: cur.execute(sql), adbc.ProgrammingError, READ_ONLY)
    assert_flight_error(
        lambda: client.get_flight_info(statement_descriptor(sql)), pa.ArrowInvalid, READ_ONLY
    )
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_url_table_is_refused(client: flight.FlightClient) -> None:
    exc = assert_flight_error(
        lambda: client.get_flight_info(statement_descriptor("select * from '/etc/passwd'")),
        pa.ArrowInvalid,
        r"not found",
    )
    assert "root:" not in str(exc)


def test_statement_update_via_pyarrow_is_read_only(client: flight.FlightClient) -> None:
    assert_flight_error(
        lambda: _put_update(client, "create table t(a int)"),
        pa.ArrowNotImplementedError,
        r"read-only.*CommandStatementUpdate",
    )


def test_executescript_is_read_only(conn: Any) -> None:
    with conn.cursor() as cur:
        assert_flight_error(
            lambda: cur.executescript("create table t(a int)"),
            adbc.NotSupportedError,
            r"read-only",
        )


def test_execute_update_is_read_only(conn: Any) -> None:
    with conn.cursor() as cur:
        stmt = cur.adbc_statement
        stmt.set_sql_query("insert into demo.metrics select * from demo.metrics limit 1")
        assert_flight_error(stmt.execute_update, adbc.NotSupportedError, r"read-only")


def test_executemany_is_refused(conn: Any) -> None:
    with conn.cursor() as cur:
        assert_flight_error(
            lambda: cur.executemany("insert into demo.metrics (value) values ($1)", [(1,), (2,)]),
            (adbc.ProgrammingError, adbc.NotSupportedError),
            READ_ONLY,
        )


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("BeginTransaction", pack(sql_pb2.ActionBeginTransactionRequest())),
        (
            "EndTransaction",
            pack(
                sql_pb2.ActionEndTransactionRequest(
                    transaction_id=b"t",
                    action=sql_pb2.ActionEndTransactionRequest.END_TRANSACTION_COMMIT,
                )
            ),
        ),
        (
            "BeginSavepoint",
            pack(sql_pb2.ActionBeginSavepointRequest(transaction_id=b"t", name="s")),
        ),
    ],
)
def test_transactions_are_unimplemented(
    client: flight.FlightClient, kind: str, body: bytes
) -> None:
    assert_flight_error(lambda: _action(client, kind, body), pa.ArrowNotImplementedError, kind)


# -- malformed requests ----------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(b"\xff\x00garbage", id="not-protobuf"),
        pytest.param(b"select 1", id="raw-sql"),
        pytest.param(b"", id="empty"),
    ],
)
def test_malformed_descriptor_is_invalid_argument(
    client: flight.FlightClient, command: bytes
) -> None:
    descriptor = flight.FlightDescriptor.for_command(command)
    assert_flight_error(
        lambda: client.get_flight_info(descriptor), pa.ArrowInvalid, r"google\.protobuf\.Any"
    )
    assert_flight_error(
        lambda: client.get_schema(descriptor), pa.ArrowInvalid, r"google\.protobuf\.Any"
    )


def test_foreign_any_is_invalid_argument(client: flight.FlightClient) -> None:
    from google.protobuf import any_pb2

    wrapper = any_pb2.Any(type_url="type.googleapis.com/some.other.Message", value=b"\x08\x01")
    descriptor = flight.FlightDescriptor.for_command(wrapper.SerializeToString())
    assert_flight_error(
        lambda: client.get_flight_info(descriptor), pa.ArrowInvalid, r"some\.other\.Message"
    )


@pytest.mark.parametrize(
    "path",
    [pytest.param(("x",), id="one-element"), pytest.param(("a", "b", "c"), id="three-elements")],
)
def test_bad_path_descriptor_is_a_clear_error(
    client: flight.FlightClient, path: tuple[str, ...]
) -> None:
    descriptor = flight.FlightDescriptor.for_path(*path)
    for call in (client.get_flight_info, client.get_schema):
        assert_flight_error(
            lambda c=call: c(descriptor), pa.ArrowInvalid, r"(path|command) descriptor"
        )


def test_unknown_action_is_unimplemented(client: flight.FlightClient) -> None:
    assert_flight_error(
        lambda: _action(client, "DropEverything"), pa.ArrowNotImplementedError, r"DropEverything"
    )


def test_create_prepared_with_wrong_body_is_invalid_argument(client: flight.FlightClient) -> None:
    body = pack(sql_pb2.CommandStatementQuery(query="select 1"))
    assert_flight_error(
        lambda: _action(client, "CreatePreparedStatement", body),
        pa.ArrowInvalid,
        r"ActionCreatePreparedStatementRequest",
    )


def test_bulk_ingest_is_read_only(conn: Any) -> None:
    with conn.cursor() as cur:
        assert_flight_error(
            lambda: cur.adbc_ingest("t", pa.table({"a": [1]}), mode="create"),
            adbc.NotSupportedError,
            r"read-only.*ingest",
        )


def test_doput_of_a_plain_query_is_unimplemented(client: flight.FlightClient) -> None:
    descriptor = statement_descriptor("select 1")
    writer, reader = client.do_put(descriptor, pa.schema([]))

    def finish() -> None:
        with writer:
            writer.done_writing()
            reader.read()

    assert_flight_error(finish, pa.ArrowNotImplementedError, r"CommandStatementQuery")


# -- and the server is still fine -------------------------------------------------------


def _abuse(client: flight.FlightClient, cur: Any) -> list[tuple[Callable[[], object], Any, str]]:
    """Bad requests of every kind, with the error each must get."""
    begin = pack(sql_pb2.ActionBeginTransactionRequest())
    return [
        (lambda: client.get_flight_info(statement_descriptor(BAD_SQL)), pa.ArrowInvalid, "selec"),
        (
            lambda: client.get_flight_info(statement_descriptor("create table t(a int)")),
            pa.ArrowInvalid,
            READ_ONLY,
        ),
        (
            lambda: client.get_flight_info(flight.FlightDescriptor.for_command(b"\xff\x00g")),
            pa.ArrowInvalid,
            "Any",
        ),
        (
            lambda: client.get_flight_info(flight.FlightDescriptor.for_path("x")),
            pa.ArrowInvalid,
            "(path|command) descriptor",
        ),
        (
            lambda: client.do_get(flight.Ticket(b"\x00" * 80)).read_all(),
            flight.FlightUnauthenticatedError,
            "ticket",
        ),
        (lambda: _action(client, "BeginTransaction", begin), pa.ArrowNotImplementedError, "Begin"),
        (lambda: _action(client, "Nope"), pa.ArrowNotImplementedError, "Nope"),
        (
            lambda: _put_update(client, "drop table demo.metrics"),
            pa.ArrowNotImplementedError,
            READ_ONLY,
        ),
        (lambda: cur.execute(BAD_SQL), adbc.ProgrammingError, "selec"),
        (
            lambda: cur.executescript("create table t(a int)"),
            adbc.NotSupportedError,
            READ_ONLY,
        ),
    ]


def test_server_healthy_after_errors(client: flight.FlightClient, conn: Any) -> None:
    with conn.cursor() as cur:
        calls = _abuse(client, cur)
        for _ in range(3):
            for call, code_class, message in calls:
                assert_flight_error(call, code_class, message)
        cur.execute("select count(*) from demo.metrics where host = 'host-00'")
        assert cur.fetchall()[0][0] > 0
    info = client.get_flight_info(statement_descriptor("select 1 as x"))
    assert client.do_get(info.endpoints[0].ticket).read_all().to_pydict() == {"x": [1]}
