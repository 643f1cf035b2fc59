"""Security regression suite: the attack rows not already covered elsewhere.

docs/reliability.md ("Security regression suite") holds the whole attack table; rows covered
exactly by another module (test_errors, test_auth, test_roles, test_tickets, test_tls) point
there instead of being repeated here. Every row asserts the status class and a message that
helps and leaks nothing (no traceback, no secret, no file contents).

One module server: a one-table catalog (``fz.t`` plus ``fz.secret``), API-key authentication
with a ``reader`` key that may read only ``fz.t`` and an ``admin`` key that may read both.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from flightsql_srv.app import Service
from flightsql_srv.auth.config import parse_auth
from flightsql_srv.protocol import flight_pb2, pack, sql_pb2, unpack_command
from flightsql_srv.statements import MAX_PARAMETER_BYTES
from tests.conftest import running_server
from tests.helpers import (
    assert_flight_error,
    create_prepared,
    prepared_descriptor,
    statement_descriptor,
)

READER_KEY = "security-reader-7d1e"
ADMIN_KEY = "security-admin-42aa"
SECRET = "security-suite-secret"
READ_ONLY = r"flightsql-srv is read-only: \w+ \((DDL|DML|Statement)\) statements are not allowed"


def _bearer(key: str, **extra: Any) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {key}".encode())], timeout=30, **extra
    )


READER = _bearer(READER_KEY)
ADMIN = _bearer(ADMIN_KEY)


def _catalog(directory: Path) -> Path:
    table = pa.table({"host": ["a", "b", "a"], "value": [1.0, 2.0, 3.0]})
    pq.write_table(table, directory / "t.parquet")
    pq.write_table(pa.table({"token": ["s3cr3t-row"]}), directory / "secret.parquet")
    (directory / "fz.toml").write_text(
        '[tables.t]\nsource = "t.parquet"\nformat = "parquet"\n'
        '[tables.secret]\nsource = "secret.parquet"\nformat = "parquet"\n'
    )
    return directory


def _key(name: str, key: str, roles: list[str]) -> dict[str, Any]:
    return {"name": name, "sha256": hashlib.sha256(key.encode()).hexdigest(), "roles": roles}


@pytest.fixture(scope="module")
def srv() -> Iterator[Service]:
    auth = parse_auth(
        {
            "api_keys": [
                _key("reader", READER_KEY, ["reader"]),
                _key("admin", ADMIN_KEY, ["admin"]),
            ],
            "roles": {"reader": {"tables": ["fz.t"]}, "admin": {"tables": ["*"]}},
        }
    )
    with tempfile.TemporaryDirectory(prefix="security-") as directory:
        catalog = _catalog(Path(directory))
        with running_server(catalog=catalog, auth=auth, ticket_secret=SECRET) as service:
            yield service


@pytest.fixture(scope="module")
def client(srv: Service) -> Iterator[flight.FlightClient]:
    with flight.connect(f"grpc://127.0.0.1:{srv.port}") as c:
        yield c


def _query(client: flight.FlightClient, sql: str, options: Any = READER) -> pa.Table:
    info = client.get_flight_info(statement_descriptor(sql), options)
    table: pa.Table = client.do_get(info.endpoints[0].ticket, options).read_all()
    return table


def _plan(client: flight.FlightClient, sql: str) -> Callable[[], object]:
    return lambda: client.get_flight_info(statement_descriptor(sql), ADMIN)


def _no_leak(exc: BaseException) -> None:
    """Nothing the attacker should learn: keys, the ticket secret, another table's rows."""
    for secret in (READER_KEY, ADMIN_KEY, SECRET, "s3cr3t-row", "root:"):
        assert secret not in str(exc), f"the message leaks {secret!r}: {exc}"


# -- read-only escapes (the rest are in test_errors.py) -------------------------------------

ESCAPES = [
    pytest.param("update fz.t set host = 'x'", READ_ONLY, id="update"),
    pytest.param("drop view fz.t", READ_ONLY, id="drop-view"),
    pytest.param("create schema s2", READ_ONLY, id="create-schema"),
    pytest.param(
        "create external table e stored as parquet location 'https://example.com/x.parquet'",
        READ_ONLY,
        id="external-table-url",
    ),
    pytest.param(
        "explain analyze insert into fz.t select * from fz.t", READ_ONLY, id="explain-dml"
    ),
    pytest.param(
        "explain analyze copy (select 1) to '/tmp/flightsql-srv-security-copy.csv'",
        READ_ONLY,
        id="explain-copy",
    ),
    pytest.param("prepare p as select 1", READ_ONLY, id="sql-prepare"),
    pytest.param(
        "select 1; drop table fz.t", "only supports a single SQL statement", id="multi-statement"
    ),
    pytest.param(
        "select * from 'https://example.com/x.parquet'", r"not found", id="url-table-https"
    ),
    pytest.param("select * from 's3://bucket/x.parquet'", r"not found", id="url-table-s3"),
    pytest.param(
        "select * from read_parquet('/etc/passwd')",
        r"table function 'read_parquet' not found",
        id="read_parquet",
    ),
    pytest.param(
        "select * from read_csv('/etc/passwd')",
        r"table function 'read_csv' not found",
        id="read_csv",
    ),
    pytest.param(
        "select * from read_json('/etc/passwd')",
        r"table function 'read_json' not found",
        id="read_json",
    ),
]


@pytest.mark.parametrize("sql, message", ESCAPES)
def test_read_only_escape_is_refused_at_planning(
    client: flight.FlightClient, sql: str, message: str
) -> None:
    _no_leak(assert_flight_error(_plan(client, sql), pa.ArrowInvalid, message))


def test_refused_escapes_change_nothing(client: flight.FlightClient) -> None:
    """After every escape attempt the table is whole and nothing was written."""
    for param in ESCAPES:
        with pytest.raises(pa.ArrowInvalid):
            _plan(client, param.values[0])()
    assert _query(client, "select count(*) as n from fz.t").to_pydict() == {"n": [3]}
    assert not Path("/tmp/flightsql-srv-security-copy.csv").exists()


# -- information_schema across roles (the table listings are in test_roles.py) ----------------


def test_hidden_table_columns_are_not_in_information_schema(client: flight.FlightClient) -> None:
    sql = "select table_name, column_name from information_schema.columns where table_schema='fz'"
    reader = _query(client, sql).to_pydict()
    admin = _query(client, sql, ADMIN).to_pydict()
    assert set(reader["table_name"]) == {"t"}
    assert set(admin["table_name"]) == {"t", "secret"}
    assert "token" not in reader["column_name"]


def test_hidden_table_is_not_describable(client: flight.FlightClient) -> None:
    exc = assert_flight_error(
        lambda: _query(client, "describe fz.secret"), pa.ArrowInvalid, r"not found"
    )
    _no_leak(exc)


# -- SQL injection through parameters -------------------------------------------------------

INJECTIONS = [
    "a' or '1'='1",
    "a'; drop table fz.t; --",
    "a' union select token from fz.secret --",
    "$1",
    "$__timeFilter(time)",
]


@pytest.mark.parametrize("value", INJECTIONS)
def test_bound_parameter_is_data_not_sql(client: flight.FlightClient, value: str) -> None:
    """A bound value is compared as a string: no row matches, no other table is read."""
    handle = _prepared_as(client, READER, "select * from fz.t where host = $1")
    metadata = _bind(client, handle, pa.record_batch([pa.array([value])], names=["0"]), READER)
    bound = sql_pb2.DoPutPreparedStatementResult.FromString(metadata.to_pybytes())
    info = client.get_flight_info(prepared_descriptor(bound.prepared_statement_handle), READER)
    table = client.do_get(info.endpoints[0].ticket, READER).read_all()
    assert table.num_rows == 0
    assert table.schema.names == ["host", "value"]
    assert _query(client, "select count(*) as n from fz.t").to_pydict() == {"n": [3]}


# -- oversized input (the >1 MiB query is in test_errors.py) ----------------------------------


def test_oversized_header_is_refused_by_grpc(client: flight.FlightClient) -> None:
    """gRPC's 16 KiB metadata limit answers before any handler runs; the server lives on."""
    options = flight.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {READER_KEY}".encode()), (b"x-big", b"a" * 100_000)],
        timeout=30,
    )
    exc = assert_flight_error(
        lambda: client.get_flight_info(statement_descriptor("select 1"), options),
        pa.ArrowInvalid,
        r"resource exhausted.*metadata size exceeds hard limit",
    )
    _no_leak(exc)
    assert _query(client, "select 1 as one").to_pydict() == {"one": [1]}


def test_oversized_parameter_batch_is_invalid_argument(client: flight.FlightClient) -> None:
    handle = _prepared_as(client, READER, "select $1 as a")
    big = pa.record_batch([pa.array(["x" * (MAX_PARAMETER_BYTES + 1)])], names=["0"])
    assert_flight_error(
        lambda: _bind(client, handle, big, READER),
        pa.ArrowInvalid,
        rf"parameter data is larger than {MAX_PARAMETER_BYTES} bytes",
    )


def test_many_parameter_rows_are_invalid_argument(client: flight.FlightClient) -> None:
    handle = _prepared_as(client, READER, "select $1 as a")
    rows = pa.record_batch([pa.array(range(10_000))], names=["0"])
    assert_flight_error(
        lambda: _bind(client, handle, rows, READER),
        pa.ArrowInvalid,
        r"binds exactly one row of parameters, got 10000",
    )


def _prepared_as(client: flight.FlightClient, options: Any, sql: str) -> bytes:
    body = pack(sql_pb2.ActionCreatePreparedStatementRequest(query=sql))
    (result,) = client.do_action(flight.Action("CreatePreparedStatement", body), options)
    message = unpack_command(result.body.to_pybytes())
    assert isinstance(message, sql_pb2.ActionCreatePreparedStatementResult)
    return bytes(message.prepared_statement_handle)


def _bind(client: flight.FlightClient, handle: bytes, batch: pa.RecordBatch, options: Any) -> Any:
    writer, reader = client.do_put(prepared_descriptor(handle), batch.schema, options)
    with writer:
        writer.write_batch(batch)
        writer.done_writing()
        return reader.read()


# -- prepared-statement handle forgery (ticket forgery is in test_tickets.py) -----------------


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


HANDLE_FORGERIES = [
    pytest.param(lambda h: _flip(h, len(h) - 3), id="flip-payload-bit"),
    pytest.param(lambda h: _flip(h, 5), id="flip-key-id-bit"),
    pytest.param(lambda h: _flip(h, 12), id="flip-nonce-bit"),
    pytest.param(lambda h: h[:-1], id="truncate"),
    pytest.param(lambda h: h[:34], id="truncate-to-34"),
    pytest.param(lambda h: h[:18] + h[18:][::-1], id="reverse-ciphertext"),
]


@pytest.mark.parametrize("forge", HANDLE_FORGERIES)
def test_forged_handle_is_unauthenticated(client: flight.FlightClient, forge: Any) -> None:
    handle = _prepared_as(client, READER, "select host from fz.t")
    forged = forge(handle)
    assert forged != handle
    exc = assert_flight_error(
        lambda: client.get_flight_info(prepared_descriptor(forged), READER),
        flight.FlightUnauthenticatedError,
        r"invalid prepared statement handle",
    )
    _no_leak(exc)


def test_handle_resigned_with_another_secret_is_unauthenticated(
    client: flight.FlightClient, tmp_path: Path
) -> None:
    """A server with another secret signs a handle for ``fz.secret``; ours refuses it."""
    with running_server(catalog=tmp_path, ticket_secret="attacker-secret") as other:
        with flight.connect(f"grpc://127.0.0.1:{other.port}") as attacker:
            handle = create_prepared(attacker, "select 1 as x").prepared_statement_handle
    exc = assert_flight_error(
        lambda: client.get_flight_info(prepared_descriptor(handle), READER),
        flight.FlightUnauthenticatedError,
        r"signature does not match",
    )
    _no_leak(exc)


def test_handle_is_not_replayable_as_a_session_cookie_or_ticket(
    client: flight.FlightClient,
) -> None:
    """Each purpose has its own key: a genuine handle is no DoGet ticket."""
    handle = _prepared_as(client, READER, "select host from fz.t")
    assert_flight_error(
        lambda: client.do_get(flight.Ticket(handle), READER).read_all(),
        flight.FlightUnauthenticatedError,
        r"invalid ticket: signature does not match",
    )


def test_hidden_table_handle_of_admin_is_refused_to_reader(client: flight.FlightClient) -> None:
    """Replay across principals of a handle that reads what the reader may not see."""
    handle = _prepared_as(client, ADMIN, "select token from fz.secret")
    exc = assert_flight_error(
        lambda: client.get_flight_info(prepared_descriptor(handle), READER),
        flight.FlightUnauthorizedError,
        r"issued to another principal",
    )
    _no_leak(exc)


# -- auth bypass on the RPCs test_auth.py does not enumerate -----------------------------------

UNLISTED_ACTIONS = [
    ("CreatePreparedSubstraitPlan", pack(sql_pb2.ActionCreatePreparedSubstraitPlanRequest())),
    ("CancelQuery", pack(sql_pb2.ActionCancelQueryRequest())),
    ("CloseSession", flight_pb2.CloseSessionRequest().SerializeToString()),
    ("BeginTransaction", pack(sql_pb2.ActionBeginTransactionRequest())),
    ("EndTransaction", pack(sql_pb2.ActionEndTransactionRequest())),
    ("NoSuchAction", b""),
]


@pytest.mark.parametrize("kind, body", UNLISTED_ACTIONS, ids=[a for a, _ in UNLISTED_ACTIONS])
@pytest.mark.parametrize(
    "options",
    [
        pytest.param(flight.FlightCallOptions(timeout=30), id="none"),
        pytest.param(_bearer("not-a-key"), id="wrong-bearer"),
        pytest.param(_bearer(READER_KEY[:-1]), id="truncated-key"),
    ],
)
def test_every_action_needs_credentials(
    client: flight.FlightClient, kind: str, body: bytes, options: Any
) -> None:
    exc = assert_flight_error(
        lambda: list(client.do_action(flight.Action(kind, body), options)),
        flight.FlightUnauthenticatedError,
        r"(missing credentials|invalid bearer token)",
    )
    _no_leak(exc)


# -- found by fuzzing ------------------------------------------------------------------------


def test_overlong_session_timezone_is_an_invalid_value(client: flight.FlightClient) -> None:
    request = flight_pb2.SetSessionOptionsRequest()
    request.session_options["timezone"].string_value = "Europe/" + "x" * 300
    action = flight.Action("SetSessionOptions", request.SerializeToString())
    (result,) = client.do_action(action, READER)
    errors = flight_pb2.SetSessionOptionsResult.FromString(result.body.to_pybytes()).errors
    assert errors["timezone"].value == flight_pb2.SetSessionOptionsResult.INVALID_VALUE
