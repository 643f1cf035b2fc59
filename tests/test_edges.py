"""Clean edges (issue 15, outcome 5): values at and past the limits of what a request may
carry answer INVALID_ARGUMENT naming the header and the accepted range; nothing answers with
an absolute server path; logged values cannot forge log lines; prepared handles expire;
session cookies count only for the principal they were issued to.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightsql_srv.app import Service
from flightsql_srv.auth.config import parse_auth
from flightsql_srv.protocol import flight_pb2
from tests.conftest import running_server
from tests.helpers import (
    assert_flight_error,
    prepared_descriptor,
    serve_subprocess,
    statement_descriptor,
)
from tests.test_sessions import CookieJar

READER_KEY = "edges-reader-key"
ADMIN_KEY = "edges-admin-key"
TIME_RANGE = r"1677-09-22T00:00:00Z to 2262-04-11T00:00:00Z"


def _key(name: str, key: str, roles: list[str]) -> dict[str, Any]:
    return {"name": name, "sha256": hashlib.sha256(key.encode()).hexdigest(), "roles": roles}


def _options(key: str | None = None, **headers: str) -> flight.FlightCallOptions:
    pairs = [(k.encode(), v.encode()) for k, v in headers.items()]
    if key is not None:
        pairs.append((b"authorization", f"Bearer {key}".encode()))
    return flight.FlightCallOptions(headers=pairs, timeout=30)


@pytest.fixture(scope="module")
def macros_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory: Path = tmp_path_factory.mktemp("edge-macros")
    (directory / "ranged.toml").write_text(
        '[macros.since_start]\nparams = []\ntemplate = "$__timeFrom()"\n'
        'description = "needs a time range"\n'
    )
    return directory


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, macros_dir: Path) -> Iterator[Service]:
    auth = parse_auth(
        {
            "api_keys": [
                _key("reader", READER_KEY, ["reader"]),
                _key("admin", ADMIN_KEY, ["admin"]),
            ],
            "roles": {"reader": {"tables": ["demo.logs"]}, "admin": {"tables": ["*"]}},
        }
    )
    with running_server(auth=auth, macros=macros_dir, prepared_ttl=1.0) as service:
        yield service


@pytest.fixture(scope="module")
def client(srv: Service) -> Iterator[flight.FlightClient]:
    with flight.connect(f"grpc://127.0.0.1:{srv.port}") as c:
        yield c


def _plan(client: flight.FlightClient, sql: str, **headers: str) -> Any:
    return lambda: client.get_flight_info(statement_descriptor(sql), _options(ADMIN_KEY, **headers))


# -- headers out of range ---------------------------------------------------------------------

OUT_OF_RANGE = [
    pytest.param(
        {"query_range_begin": "0001-01-01T00:00:00Z", "query_range_end": "2024-01-01T00:00:00Z"},
        rf"header query_range_begin: time '0001-01-01T00:00:00Z' is out of range: accepted "
        rf"{TIME_RANGE}",
        id="begin-year-1",
    ),
    pytest.param(
        {"query_range_begin": "2024-01-01T00:00:00Z", "query_range_end": "9999-12-31T23:59:59Z"},
        rf"header query_range_end: time '9999-12-31T23:59:59Z' is out of range: accepted "
        rf"{TIME_RANGE}",
        id="end-year-9999",
    ),
    pytest.param(
        {"query_range_begin": "now-1000y", "query_range_end": "now"},
        rf"header query_range_begin: time 'now-1000y' is out of range: accepted {TIME_RANGE}",
        id="relative-before-1677",
    ),
    pytest.param(
        {"query_range_begin": "-9999999999999", "query_range_end": "now"},
        rf"header query_range_begin: .* is out of range: accepted {TIME_RANGE}",
        id="epoch-ms-before-1677",
    ),
    pytest.param(
        {"limit": "99999999999999999999999999"},
        r"header limit: expected a row count \(0 to 9223372036854775807\), "
        r"got '99999999999999999999999999'",
        id="huge-limit",
    ),
    pytest.param(
        {"interval_ms": "99999999999999"},
        r"header interval_ms: expected a number of milliseconds from 0 to 3153600000000 "
        r"\(100 years\), got '99999999999999'",
        id="huge-interval",
    ),
    pytest.param(
        {"interval_ms": "nan"},
        r"header interval_ms: expected a number of milliseconds from 0 to 3153600000000",
        id="nan-interval",
    ),
    pytest.param(
        {"max_data_points": "99999999999999999999999999"},
        r"header max_data_points: expected an integer from 1 to 9223372036854775807",
        id="huge-max-data-points",
    ),
]


@pytest.mark.parametrize(("headers", "message"), OUT_OF_RANGE)
def test_out_of_range_header_is_invalid_argument(
    client: flight.FlightClient, headers: dict[str, str], message: str
) -> None:
    assert_flight_error(_plan(client, "select 1 as x", **headers), pa.ArrowInvalid, message)


def test_range_at_the_accepted_bounds_is_served(client: flight.FlightClient) -> None:
    headers = {
        "query_range_begin": "1677-09-22T00:00:00Z",
        "query_range_end": "2262-04-11T00:00:00Z",
        "interval_ms": "3153600000000",
        "limit": "9223372036854775807",
    }
    sql = "select count(*) as n from demo.logs where $__timeFilter(time)"
    info = _plan(client, sql, **headers)()
    table = client.do_get(info.endpoints[0].ticket, _options(ADMIN_KEY)).read_all()
    assert table.num_rows == 1


# -- bytes that are not UTF-8 -------------------------------------------------------------------


def _field(number: int, data: bytes) -> bytes:
    return bytes([(number << 3) | 2, len(data)]) + data


@pytest.mark.parametrize(
    ("method", "request_bytes"),
    [
        pytest.param(
            "GetFlightInfo", bytes([0x08, 1]) + _field(3, b"\xff\xfe") + _field(3, b"t"), id="path"
        ),
        pytest.param("DoAction", _field(1, b"\xffClose"), id="action-type"),
    ],
)
def test_non_utf8_strings_are_refused_by_pyarrow_before_our_code(
    srv: Service, client: flight.FlightClient, method: str, request_bytes: bytes
) -> None:
    """FlightDescriptor.path and Action.type are proto3 ``string`` fields: pyarrow's C++
    server fails to parse the request and answers INTERNAL with an empty message before any
    Python code runs (docs/security.md). The server goes on serving."""
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        call = channel.unary_stream(
            f"/arrow.flight.protocol.FlightService/{method}",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        metadata = [("authorization", f"Bearer {ADMIN_KEY}")]
        with pytest.raises(grpc.RpcError) as raised:
            list(call(request_bytes, metadata=metadata, timeout=10))
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert raised.value.details() == ""
    info = client.get_flight_info(statement_descriptor("select 1 as x"), _options(ADMIN_KEY))
    assert info.schema.names == ["x"]


def test_non_utf8_command_text_is_invalid_argument(srv: Service) -> None:
    """A Flight SQL command is ``bytes`` to Flight: its strings reach our decoder."""
    command = _field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery")
    command += _field(2, _field(1, b"select \xff"))
    descriptor = flight.FlightDescriptor.for_command(command)
    with flight.connect(f"grpc://127.0.0.1:{srv.port}") as c:
        assert_flight_error(
            lambda: c.get_flight_info(descriptor, _options(ADMIN_KEY)),
            pa.ArrowInvalid,
            r"malformed CommandStatementQuery.*bad UTF-8",
        )


# -- no absolute server paths -----------------------------------------------------------------


def test_user_macro_error_names_the_file_not_its_path(
    client: flight.FlightClient, macros_dir: Path
) -> None:
    exc = assert_flight_error(
        _plan(client, "select $__since_start() as t"),
        pa.ArrowInvalid,
        r"\$__since_start at position 8: in its expansion \(template from ranged\.toml\)",
    )
    assert str(macros_dir) not in str(exc)
    assert not re.search(r"(?<![\w.])/(tmp|home|root|work|usr|var)/", str(exc)), str(exc)


# -- prepared handles expire --------------------------------------------------------------------


def test_prepared_handle_expires(client: flight.FlightClient) -> None:
    """``prepared_ttl`` (1 s here; 7 days by default) bounds a handle's life."""
    call = _options(ADMIN_KEY)
    handle = create_prepared_as(client, "select 1 as x", call)
    assert client.get_flight_info(prepared_descriptor(handle), call).schema.names == ["x"]
    time.sleep(1.2)  # the condition under test: the handle's lifetime has passed
    assert_flight_error(
        lambda: client.get_flight_info(prepared_descriptor(handle), call),
        flight.FlightUnauthenticatedError,
        r"prepared statement handle expired; create the prepared statement again",
    )


def create_prepared_as(client: flight.FlightClient, sql: str, call: Any) -> bytes:
    from flightsql_srv.protocol import pack, sql_pb2, unpack_command

    body = pack(sql_pb2.ActionCreatePreparedStatementRequest(query=sql))
    (result,) = client.do_action(flight.Action("CreatePreparedStatement", body), call)
    message = unpack_command(result.body.to_pybytes())
    handle: bytes = message.prepared_statement_handle
    return handle


def test_prepared_handle_lifetime_defaults_to_seven_days() -> None:
    from flightsql_srv.config import Settings

    assert Settings().prepared_ttl == 7 * 86400


# -- session cookies are bound to their principal ---------------------------------------------


def _schema_of_session(client: flight.FlightClient, call: Any) -> str:
    (result,) = client.do_action(flight.Action("GetSessionOptions", b""), call)
    options = flight_pb2.GetSessionOptionsResult.FromString(result.body.to_pybytes())
    return options.session_options["schema"].string_value


def test_session_cookie_counts_only_for_its_principal(srv: Service) -> None:
    jar = CookieJar()
    request = flight_pb2.SetSessionOptionsRequest()
    request.session_options["schema"].string_value = "demo"
    with flight.connect(f"grpc://127.0.0.1:{srv.port}", middleware=[jar]) as reader:
        list(
            reader.do_action(
                flight.Action("SetSessionOptions", request.SerializeToString()),
                _options(READER_KEY),
            )
        )
        assert _schema_of_session(reader, _options(READER_KEY)) == "demo"
    cookie = "; ".join(f"{k}={v}" for k, v in jar.cookies.items())
    with flight.connect(f"grpc://127.0.0.1:{srv.port}") as other:
        stolen = _options(ADMIN_KEY, cookie=cookie)
        assert _schema_of_session(other, stolen) == "public"
        assert _schema_of_session(other, _options(READER_KEY, cookie=cookie)) == "demo"


# -- logs: no forged lines ----------------------------------------------------------------------

_TEXT_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_logged_values_cannot_forge_log_lines(log_format: str) -> None:
    forged = "2030-01-01 00:00:00,000 ERROR forged record user=admin"
    sql = f"select 'a\n{forged}\r\x1b[2J\u2028' as x"
    with serve_subprocess("--log-format", log_format) as (_, port, output):
        with flight.connect(f"grpc://127.0.0.1:{port}") as c:
            info = c.get_flight_info(statement_descriptor(sql), _options(**{"x-user-id": "u"}))
            c.do_get(info.endpoints[0].ticket).read_all()
            with pytest.raises(pa.ArrowInvalid):
                c.get_flight_info(statement_descriptor(f"select nope\n{forged}"))
    lines = [line for line in output if line.strip()]
    assert any("forged record" in line for line in lines), "the query was not logged"
    for line in lines:
        if line.startswith(("WARNING: All log messages", "E0000", "I0000")):
            continue  # gRPC's own C++ logging
        if log_format == "json":
            assert line.startswith("{"), line
            assert "\x1b" not in line and "\u2028" not in line, line
        else:
            assert _TEXT_RECORD.match(line) or line.startswith("    | "), line
            assert not line.startswith("2030-01-01"), f"a forged record: {line}"
            assert "\x1b" not in line and "\r" not in line and "\u2028" not in line, line
