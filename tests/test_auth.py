"""Authentication: API keys, the Basic → Bearer handshake, session tokens, who may redeem
which ticket, what reaches the logs and metrics, the CLI around it, and what auth costs.

One in-process server (API keys + users, an empty catalog so it starts in milliseconds) serves
most tests; scrypt hashes are computed once for the module.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import grpc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightsql_srv.app import Service
from flightsql_srv.auth.config import AuthConfig, parse_auth
from flightsql_srv.auth.passwords import hash_password, verify_password
from flightsql_srv.config import ENV_PREFIX, ConfigError, load_settings
from flightsql_srv.discovery import METADATA_COMMANDS
from flightsql_srv.protocol import flight_pb2, pack, sql_pb2, unpack_command
from tests.conftest import ROOT, free_port, running_server, server_process
from tests.helpers import (
    assert_flight_error,
    prepared_descriptor,
    serve_subprocess,
    statement_descriptor,
)

KEY_A = "apikey-A-5c1f0e9d7b3a46e2"
KEY_B = "apikey-B-0a8d2f64c9e1b735"
WRONG_KEY = "apikey-Z-deadbeefdeadbeef"
#: 28 characters: "alice:" + it and "bob:" + it need two and one "=" of base64 padding.
PASSWORD = "correct horse battery staple"
WRONG_PASSWORD = "incorrect horse battery staple"
HANDSHAKE = "/arrow.flight.protocol.FlightService/Handshake"
QUERY = "select 41 + 1 as answer"
ANSWER = {"answer": [42]}
#: Every subprocess is bounded; one that starts serving by mistake is killed after this.
RUN_TIMEOUT = 30.0


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _auth_table(password_hash: str, **extra: Any) -> dict[str, Any]:
    return {
        "api_keys": [
            {"name": "key-a", "sha256": _sha256(KEY_A), "roles": ["reader"]},
            {"name": "key-b", "sha256": _sha256(KEY_B), "roles": ["reader"]},
        ],
        "users": [
            {"name": "alice", "password_hash": password_hash, "roles": ["reader"]},
            {"name": "bob", "password_hash": password_hash, "roles": ["reader"]},
        ],
        "roles": {"reader": {"tables": ["*"]}},
        **extra,
    }


def _bearer(token: str) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])


def _header(value: bytes) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(headers=[(b"authorization", value)])


def _basic(user: str, password: str, *, padded: bool) -> str:
    encoded = base64.b64encode(f"{user}:{password}".encode())
    return (encoded if padded else encoded.rstrip(b"=")).decode()


def _run(
    client: flight.FlightClient, descriptor: flight.FlightDescriptor, options: Any
) -> dict[str, Any]:
    info = client.get_flight_info(descriptor, options)
    assert len(info.endpoints) == 1
    table: pa.Table = client.do_get(info.endpoints[0].ticket, options).read_all()
    return table.to_pydict()


def _metric(url: str, name: str, **labels: str) -> float:
    """One sample from a /metrics page (0 when the series does not exist yet)."""
    page = urllib.request.urlopen(url, timeout=5).read().decode()
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(f"{name}{{{selector}}}" if labels else name) + r" (\S+)$"
    match = re.search(pattern, page, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def password_hash() -> str:
    """scrypt is deliberately slow: hash once for the module."""
    return hash_password(PASSWORD)


@pytest.fixture(scope="module")
def auth(password_hash: str) -> AuthConfig:
    return parse_auth(_auth_table(password_hash))


@pytest.fixture(scope="module")
def empty_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No tables: servers start in milliseconds and literal queries still work."""
    path: Path = tmp_path_factory.mktemp("empty-catalog")
    return path


@pytest.fixture(scope="module")
def srv(auth: AuthConfig, empty_catalog: Path) -> Iterator[Service]:
    with running_server(auth=auth, catalog=empty_catalog, metrics_port=free_port()) as service:
        yield service


@pytest.fixture(scope="module")
def uri(srv: Service) -> str:
    return f"grpc://127.0.0.1:{srv.port}"


@pytest.fixture(scope="module")
def metrics_url(srv: Service) -> str:
    return f"http://127.0.0.1:{srv.metrics_port}/metrics"


@pytest.fixture
def client(uri: str) -> Iterator[flight.FlightClient]:
    with flight.connect(uri) as c:
        yield c


@pytest.fixture(scope="module")
def alice_token(uri: str) -> str:
    with flight.connect(uri) as c:
        key, value = c.authenticate_basic_token("alice", PASSWORD)
    assert key == b"authorization"
    assert value.startswith(b"Bearer ")
    return value.decode().removeprefix("Bearer ")


@dataclass(frozen=True)
class Issued:
    """Tickets and handles legitimately issued to API key A."""

    info: flight.FlightInfo
    ticket: flight.Ticket
    metadata_ticket: flight.Ticket
    handle: bytes


def _issue(uri: str, options: flight.FlightCallOptions) -> Issued:
    with flight.connect(uri) as c:
        info = c.get_flight_info(statement_descriptor(QUERY), options)
        tables = c.get_flight_info(
            flight.FlightDescriptor.for_command(pack(sql_pb2.CommandGetTables())), options
        )
        body = pack(sql_pb2.ActionCreatePreparedStatementRequest(query="select $1 + 1 as x"))
        (result,) = c.do_action(flight.Action("CreatePreparedStatement", body), options)
    prepared = unpack_command(result.body.to_pybytes())
    assert isinstance(prepared, sql_pb2.ActionCreatePreparedStatementResult)
    return Issued(
        info=info,
        ticket=info.endpoints[0].ticket,
        metadata_ticket=tables.endpoints[0].ticket,
        handle=prepared.prepared_statement_handle,
    )


@pytest.fixture(scope="module")
def issued(uri: str) -> Issued:
    """Issued to key A once; tests must not cancel it."""
    return _issue(uri, _bearer(KEY_A))


# -- every RPC needs credentials -------------------------------------------------------


def _cmd(message: Any) -> flight.FlightDescriptor:
    return flight.FlightDescriptor.for_command(pack(message))


def _bind(client: flight.FlightClient, handle: bytes, options: Any) -> None:
    batch = pa.record_batch([pa.array([41], pa.int64())], names=["0"])
    writer, reader = client.do_put(prepared_descriptor(handle), batch.schema, options)
    with writer:
        writer.write_batch(batch)
        writer.done_writing()
        reader.read()


def _action(client: flight.FlightClient, name: str, body: bytes, options: Any) -> list[Any]:
    return list(client.do_action(flight.Action(name, body), options))


def _cancel_body(info: flight.FlightInfo) -> bytes:
    message = flight_pb2.FlightInfo.FromString(info.serialize())
    return flight_pb2.CancelFlightInfoRequest(info=message).SerializeToString()


def _set_session_body() -> bytes:
    request = flight_pb2.SetSessionOptionsRequest()
    request.session_options["timezone"].string_value = "UTC"
    return request.SerializeToString()


#: pyarrow 26's FlightClient.get_schema raises a plain OSError for every Flight status (its
#: other calls raise the Flight* classes); the status survives as "Detail: <code>".
_STATUS_DETAILS: dict[str, type[flight.FlightError]] = {
    "Unauthenticated": flight.FlightUnauthenticatedError,
    "Unauthorized": flight.FlightUnauthorizedError,
}


def _get_schema(
    client: flight.FlightClient, descriptor: flight.FlightDescriptor, options: Any
) -> pa.Schema:
    """``client.get_schema``, raising the Flight error class its status stands for."""
    try:
        result = client.get_schema(descriptor, options)
    except flight.FlightError:
        raise
    except OSError as exc:
        match = re.search(r"Detail: (\w+)$", str(exc))
        if match and match.group(1) in _STATUS_DETAILS:
            raise _STATUS_DETAILS[match.group(1)](str(exc)) from exc
        raise
    schema: pa.Schema = result.schema
    return schema


def _exchange(client: flight.FlightClient, options: Any) -> None:
    writer, reader = client.do_exchange(statement_descriptor(QUERY), options)
    with writer:
        writer.done_writing()
        reader.read_all()


Rpc = Callable[[flight.FlightClient, Issued, Any], object]

RPCS: list[Any] = [
    pytest.param(
        lambda c, i, o: c.get_flight_info(statement_descriptor(QUERY), o), id="GetFlightInfo"
    ),
    *[
        pytest.param(
            lambda c, i, o, command=command: c.get_flight_info(_cmd(command()), o),
            id=f"GetFlightInfo-{command.DESCRIPTOR.name}",
        )
        for command in METADATA_COMMANDS
    ],
    pytest.param(
        lambda c, i, o: c.get_flight_info(prepared_descriptor(i.handle), o),
        id="GetFlightInfo-prepared",
    ),
    pytest.param(
        lambda c, i, o: c.get_flight_info(
            _cmd(
                sql_pb2.CommandStatementSubstraitPlan(
                    plan=sql_pb2.SubstraitPlan(plan=b"x", version="0.1")
                )
            ),
            o,
        ),
        id="GetFlightInfo-substrait",
    ),
    pytest.param(
        lambda c, i, o: c.get_flight_info(flight.FlightDescriptor.for_path("demo", "logs"), o),
        id="GetFlightInfo-path",
    ),
    pytest.param(lambda c, i, o: _get_schema(c, statement_descriptor(QUERY), o), id="GetSchema"),
    pytest.param(
        lambda c, i, o: _get_schema(c, _cmd(sql_pb2.CommandGetTables()), o),
        id="GetSchema-GetTables",
    ),
    pytest.param(lambda c, i, o: c.do_get(i.ticket, o).read_all(), id="DoGet"),
    pytest.param(lambda c, i, o: c.do_get(i.metadata_ticket, o).read_all(), id="DoGet-metadata"),
    pytest.param(lambda c, i, o: _bind(c, i.handle, o), id="DoPut-bind"),
    pytest.param(
        lambda c, i, o: _action(
            c,
            "CreatePreparedStatement",
            pack(sql_pb2.ActionCreatePreparedStatementRequest(query=QUERY)),
            o,
        ),
        id="DoAction-CreatePreparedStatement",
    ),
    pytest.param(
        lambda c, i, o: _action(
            c,
            "ClosePreparedStatement",
            pack(sql_pb2.ActionClosePreparedStatementRequest(prepared_statement_handle=i.handle)),
            o,
        ),
        id="DoAction-ClosePreparedStatement",
    ),
    pytest.param(
        lambda c, i, o: _action(c, "CancelFlightInfo", _cancel_body(i.info), o),
        id="DoAction-CancelFlightInfo",
    ),
    pytest.param(
        lambda c, i, o: _action(c, "SetSessionOptions", _set_session_body(), o),
        id="DoAction-SetSessionOptions",
    ),
    pytest.param(
        lambda c, i, o: _action(
            c, "GetSessionOptions", flight_pb2.GetSessionOptionsRequest().SerializeToString(), o
        ),
        id="DoAction-GetSessionOptions",
    ),
    pytest.param(lambda c, i, o: list(c.list_actions(o)), id="ListActions"),
    pytest.param(lambda c, i, o: list(c.list_flights(options=o)), id="ListFlights"),
    pytest.param(lambda c, i, o: _exchange(c, o), id="DoExchange"),
]

#: (call options, the message expected) for the ways of sending no valid credentials.
NO_CREDENTIALS: list[Any] = [
    pytest.param(lambda: None, "missing credentials", id="none"),
    pytest.param(lambda: _bearer(WRONG_KEY), "invalid bearer token", id="wrong-bearer"),
    pytest.param(lambda: _header(b"Bearer "), "missing credentials", id="empty-bearer"),
    pytest.param(
        lambda: _header(b"Basic " + _basic("alice", PASSWORD, padded=True).encode()),
        "missing credentials",
        id="basic-outside-handshake",
    ),
]


@pytest.mark.parametrize("options, message", NO_CREDENTIALS)
@pytest.mark.parametrize("rpc", RPCS)
def test_every_rpc_is_refused_without_valid_credentials(
    client: flight.FlightClient, issued: Issued, rpc: Rpc, options: Any, message: str
) -> None:
    exc = assert_flight_error(
        lambda: rpc(client, issued, options()), flight.FlightUnauthenticatedError, message
    )
    # A rejected credential is never echoed back.
    assert WRONG_KEY not in str(exc)
    assert PASSWORD not in str(exc)


@pytest.mark.parametrize("rpc", RPCS)
def test_every_rpc_passes_authentication_with_an_api_key(
    client: flight.FlightClient, uri: str, rpc: Rpc
) -> None:
    """The same calls with a valid key get past authentication (they may still fail for
    their own reasons, e.g. the demo table of the path descriptor is not in this catalog).
    Own tickets: CancelFlightInfo would spoil the shared ones."""
    try:
        rpc(client, _issue(uri, _bearer(KEY_A)), _bearer(KEY_A))
    except flight.FlightUnauthenticatedError as exc:
        pytest.fail(f"a valid API key was refused: {exc}")
    except (flight.FlightError, pa.ArrowException):
        pass


def test_adbc_without_credentials_is_unauthenticated(uri: str) -> None:
    with adbc.connect(uri, autocommit=True) as conn:
        with conn.cursor() as cur:
            with pytest.raises(adbc.ProgrammingError) as raised:
                cur.execute(QUERY)
            assert_flight_error(raised, adbc.ProgrammingError, "UNAUTHENTICATED")
        with pytest.raises(adbc.ProgrammingError) as raised:
            conn.adbc_get_objects(depth="tables").read_all()
        assert_flight_error(raised, adbc.ProgrammingError, "UNAUTHENTICATED")
        with pytest.raises(adbc.ProgrammingError) as raised:
            conn.adbc_get_table_types()
        assert_flight_error(raised, adbc.ProgrammingError, "UNAUTHENTICATED")


def test_adbc_with_a_wrong_bearer_is_unauthenticated(uri: str) -> None:
    kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {WRONG_KEY}"}
    with pytest.raises(adbc.ProgrammingError) as raised:
        with adbc.connect(uri, db_kwargs=kwargs, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(QUERY)
    assert_flight_error(raised, adbc.ProgrammingError, "UNAUTHENTICATED.*invalid bearer token")
    assert WRONG_KEY not in str(raised.value)


# -- API keys, handshake, session tokens -------------------------------------------------


def test_api_key_via_adbc_authorization_header(uri: str) -> None:
    kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {KEY_A}"}
    with adbc.connect(uri, db_kwargs=kwargs, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute(QUERY)
            assert cur.fetchall() == [(42,)]
            cur.execute("select $1 + 1 as x", (41,))  # prepared + DoPut binding
            assert cur.fetchall() == [(42,)]
        assert conn.adbc_get_table_types()
        conn.adbc_get_objects(depth="all").read_all()


def test_every_api_key_works_and_each_is_its_own_principal(
    client: flight.FlightClient, issued: Issued
) -> None:
    assert _run(client, statement_descriptor(QUERY), _bearer(KEY_B)) == ANSWER
    # Key A's ticket is A's alone.
    assert client.do_get(issued.ticket, _bearer(KEY_A)).read_all().to_pydict() == ANSWER
    with pytest.raises(flight.FlightUnauthorizedError) as raised:
        client.do_get(issued.ticket, _bearer(KEY_B)).read_all()
    assert_flight_error(raised, flight.FlightUnauthorizedError, "another principal")


def _sample(srv: Service, name: str, labels: dict[str, str]) -> float:
    value = srv.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def test_adbc_username_password_handshake_then_bearer(srv: Service, uri: str) -> None:
    """The Go driver sends unpadded Basic on Handshake, then the returned bearer on every
    call. The server refuses Basic outside the Handshake (see the parametrized test above),
    so queries succeeding after exactly one handshake and no auth failure prove it."""
    handshakes = {"method": "handshake", "outcome": "ok"}
    before = _sample(srv, "flightsql_rpcs_total", handshakes)
    failures_before = sum(
        _sample(srv, "flightsql_auth_failures_total", {"reason": r})
        for r in ("missing", "unknown_token", "bad_signature", "expired", "malformed")
    )
    kwargs = {"username": "alice", "password": PASSWORD}
    with adbc.connect(uri, db_kwargs=kwargs, autocommit=True) as conn:
        with conn.cursor() as cur:
            for _ in range(3):
                cur.execute(QUERY)
                assert cur.fetchall() == [(42,)]
            cur.execute("select $1 + 1 as x", (1,))
            assert cur.fetchall() == [(2,)]
        conn.adbc_get_objects(depth="db_schemas").read_all()
    assert _wait_for(lambda: _sample(srv, "flightsql_rpcs_total", handshakes) == before + 1)
    failures_after = sum(
        _sample(srv, "flightsql_auth_failures_total", {"reason": r})
        for r in ("missing", "unknown_token", "bad_signature", "expired", "malformed")
    )
    assert failures_after == failures_before


@pytest.mark.parametrize(
    "user, password", [("alice", WRONG_PASSWORD), ("mallory", PASSWORD), ("alice", "")]
)
def test_adbc_wrong_password_fails_at_connect(uri: str, user: str, password: str) -> None:
    kwargs = {"username": user, "password": password}
    with pytest.raises(adbc.ProgrammingError) as raised:
        with adbc.connect(uri, db_kwargs=kwargs, autocommit=True):
            pass
    exc = assert_flight_error(
        raised, adbc.ProgrammingError, "UNAUTHENTICATED.*invalid username or password"
    )
    assert WRONG_PASSWORD not in str(exc) and PASSWORD not in str(exc)


def test_pyarrow_authenticate_basic_token(client: flight.FlightClient) -> None:
    key, value = client.authenticate_basic_token("alice", PASSWORD)
    assert key == b"authorization"
    assert value.startswith(b"Bearer fss1."), value
    options = flight.FlightCallOptions(headers=[(key, value)])
    assert _run(client, statement_descriptor(QUERY), options) == ANSWER
    assert list(client.list_actions(options))
    tables = client.get_flight_info(_cmd(sql_pb2.CommandGetTableTypes()), options)
    client.do_get(tables.endpoints[0].ticket, options).read_all()


def test_pyarrow_authenticate_basic_token_wrong_password(client: flight.FlightClient) -> None:
    for user, password in [("alice", WRONG_PASSWORD), ("nobody", PASSWORD)]:
        with pytest.raises(flight.FlightUnauthenticatedError) as raised:
            client.authenticate_basic_token(user, password)
        assert_flight_error(
            raised, flight.FlightUnauthenticatedError, "invalid username or password"
        )


@dataclass(frozen=True)
class HandshakeOutcome:
    code: grpc.StatusCode
    details: str
    authorization: str | None
    messages: int
    seconds: float


def _raw_handshake(port: int, authorization: str | None, timeout: float = 10.0) -> HandshakeOutcome:
    """A Handshake as the Go client (ADBC, Grafana) makes it: only the ``authorization``
    header, no HandshakeRequest; wait for the headers, read until EOF, then half-close."""
    release = threading.Event()

    def requests() -> Iterator[bytes]:
        release.wait(timeout)
        yield from ()

    started = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        method = channel.stream_stream(
            HANDSHAKE, request_serializer=lambda m: m, response_deserializer=lambda m: m
        )
        metadata = [("authorization", authorization)] if authorization is not None else None
        call = method(requests(), metadata=metadata, timeout=timeout)
        messages = 0
        try:
            headers = dict(call.initial_metadata() or ())
            for _ in call:
                messages += 1
        except grpc.RpcError:
            headers = {}
        finally:
            release.set()
        trailers = dict(call.trailing_metadata() or ())
        value = headers.get("authorization") or trailers.get("authorization")
        return HandshakeOutcome(
            call.code(), call.details() or "", value, messages, time.monotonic() - started
        )


@pytest.mark.parametrize("user", ["alice", "bob"], ids=["two-pad-chars", "one-pad-char"])
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
def test_raw_handshake_like_the_go_client(
    client: flight.FlightClient, srv: Service, user: str, padded: bool
) -> None:
    encoded = _basic(user, PASSWORD, padded=padded)
    assert padded == encoded.endswith("=")  # both users' credentials need padding
    outcome = _raw_handshake(srv.port, f"Basic {encoded}")
    assert outcome.code == grpc.StatusCode.OK, outcome
    assert outcome.seconds < 5.0, outcome
    assert outcome.messages == 0
    assert outcome.authorization is not None and outcome.authorization.startswith("Bearer fss1.")
    # Echoed verbatim, the value authorises GetFlightInfo and DoGet.
    options = _header(outcome.authorization.encode())
    assert _run(client, statement_descriptor(QUERY), options) == ANSWER


@pytest.mark.parametrize(
    "authorization, message",
    [
        (None, "missing credentials"),
        ("Basic " + _basic("alice", WRONG_PASSWORD, padded=False), "invalid username or password"),
        ("Basic " + _basic("ghost", PASSWORD, padded=False), "invalid username or password"),
        ("Basic !!not base64!!", "malformed Basic credentials"),
        ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "malformed Basic credentials"),
    ],
    ids=["no-header", "wrong-password", "unknown-user", "not-base64", "not-utf8"],
)
def test_raw_handshake_with_bad_credentials(
    srv: Service, authorization: str | None, message: str
) -> None:
    outcome = _raw_handshake(srv.port, authorization)
    assert outcome.code == grpc.StatusCode.UNAUTHENTICATED, outcome
    assert message in outcome.details
    assert outcome.authorization is None
    assert PASSWORD not in outcome.details and WRONG_PASSWORD not in outcome.details


def _flip_char(text: str, index: int) -> str:
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda t: _flip_char(t, len("fss1.") + 3), id="flip-in-mac"),
        pytest.param(lambda t: _flip_char(t, len(t) // 2), id="flip-middle"),
        pytest.param(lambda t: _flip_char(t, len(t) - 8), id="flip-in-payload"),
        pytest.param(lambda t: t[:-6], id="truncated"),
        pytest.param(lambda t: "fss1.", id="prefix-only"),
        pytest.param(lambda t: t.replace("fss1.", "fss2.", 1), id="other-prefix"),
    ],
)
def test_tampered_session_token_is_unauthenticated(
    client: flight.FlightClient, alice_token: str, tamper: Callable[[str], str]
) -> None:
    assert _run(client, statement_descriptor(QUERY), _bearer(alice_token)) == ANSWER
    forged = tamper(alice_token)
    assert forged != alice_token
    with pytest.raises(flight.FlightUnauthenticatedError) as raised:
        client.get_flight_info(statement_descriptor(QUERY), _bearer(forged))
    assert_flight_error(raised, flight.FlightUnauthenticatedError, "(?i)invalid|malformed")


def test_session_token_with_a_forged_principal_is_unauthenticated(
    client: flight.FlightClient, alice_token: str
) -> None:
    """The token is encrypted: the principal cannot be read, and changing the ciphertext
    where it would be (or anywhere) is caught."""
    raw = alice_token.removeprefix("fss1.")
    data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    assert b"alice" not in data and b"user:" not in data
    forged_data = data[:18] + bytes([data[18] ^ 0x01]) + data[19:]
    forged = "fss1." + base64.urlsafe_b64encode(forged_data).decode().rstrip("=")
    with pytest.raises(flight.FlightUnauthenticatedError) as raised:
        client.get_flight_info(statement_descriptor(QUERY), _bearer(forged))
    assert_flight_error(raised, flight.FlightUnauthenticatedError, "signature")


def test_session_token_from_another_secret_is_unauthenticated(
    auth: AuthConfig, empty_catalog: Path, alice_token: str
) -> None:
    with running_server(auth=auth, catalog=empty_catalog, ticket_secret="other-secret") as other:
        with flight.connect(f"grpc://127.0.0.1:{other.port}") as c:
            with pytest.raises(flight.FlightUnauthenticatedError) as raised:
                c.get_flight_info(statement_descriptor(QUERY), _bearer(alice_token))
    assert_flight_error(raised, flight.FlightUnauthenticatedError, "signature")


def test_expired_session_token_is_unauthenticated(password_hash: str, empty_catalog: Path) -> None:
    auth = parse_auth(_auth_table(password_hash, session_ttl=1))
    with running_server(auth=auth, catalog=empty_catalog, metrics_port=free_port()) as short:
        url = f"http://127.0.0.1:{short.metrics_port}/metrics"
        expired_before = _metric(url, "flightsql_auth_failures_total", reason="expired")
        with flight.connect(f"grpc://127.0.0.1:{short.port}") as c:
            header = c.authenticate_basic_token("alice", PASSWORD)
            options = flight.FlightCallOptions(headers=[header])
            assert _run(c, statement_descriptor(QUERY), options) == ANSWER
            time.sleep(1.0)
            deadline = time.monotonic() + 3.0
            error: BaseException | None = None
            while error is None and time.monotonic() < deadline:
                try:
                    c.get_flight_info(statement_descriptor(QUERY), options)
                except flight.FlightUnauthenticatedError as exc:
                    error = exc
                else:
                    time.sleep(0.05)
            assert error is not None, "the session token was still accepted 4 s after a 1 s TTL"
            exc = assert_flight_error(
                error, flight.FlightUnauthenticatedError, "(?i)session token expired"
            )
            message = str(exc).split(". Detail:")[0]
            assert "handshake" in message, message
            # Tickets expire with "call GetFlightInfo again"; that cannot renew a session
            # token, so the advice must not be given for one.
            assert "GetFlightInfo" not in message, message
            # A fresh handshake works again.
            renewed = flight.FlightCallOptions(
                headers=[c.authenticate_basic_token("alice", PASSWORD)]
            )
            assert _run(c, statement_descriptor(QUERY), renewed) == ANSWER
        assert _metric(url, "flightsql_auth_failures_total", reason="expired") == expired_before + 1


# -- tickets and handles belong to their principal ---------------------------------------


@pytest.fixture
def alice(alice_token: str) -> flight.FlightCallOptions:
    return _bearer(alice_token)


def test_ticket_theft_is_permission_denied(
    client: flight.FlightClient, issued: Issued, alice: Any
) -> None:
    for ticket in (issued.ticket, issued.metadata_ticket):
        with pytest.raises(flight.FlightUnauthorizedError) as raised:
            client.do_get(ticket, alice).read_all()
        assert_flight_error(raised, flight.FlightUnauthorizedError, "another principal")
        client.do_get(ticket, _bearer(KEY_A)).read_all()  # the owner still can


def test_prepared_handle_theft_is_permission_denied(
    client: flight.FlightClient, issued: Issued, alice: Any
) -> None:
    with pytest.raises(flight.FlightUnauthorizedError) as raised:
        client.get_flight_info(prepared_descriptor(issued.handle), alice)
    assert_flight_error(raised, flight.FlightUnauthorizedError, "another principal")
    # pyarrow 26 turns every Flight error raised by a get_schema handler into UNKNOWN (its
    # _get_schema callback lacks the `except FlightError` the other callbacks have), so
    # only the refusal and its message are checked here, not PERMISSION_DENIED.
    with pytest.raises((flight.FlightUnauthorizedError, pa.ArrowException)) as raised:
        _get_schema(client, prepared_descriptor(issued.handle), alice)
    assert "issued to another principal" in str(raised.value)
    assert "Traceback" not in str(raised.value)
    with pytest.raises(flight.FlightUnauthorizedError) as raised:
        _bind(client, issued.handle, alice)
    assert_flight_error(raised, flight.FlightUnauthorizedError, "another principal")


def test_bound_handle_theft_is_permission_denied(
    client: flight.FlightClient, issued: Issued, alice: Any
) -> None:
    """The handle DoPut returns (carrying A's parameters) is A's too."""
    batch = pa.record_batch([pa.array([41], pa.int64())], names=["0"])
    writer, reader = client.do_put(prepared_descriptor(issued.handle), batch.schema, _bearer(KEY_A))
    with writer:
        writer.write_batch(batch)
        writer.done_writing()
        metadata = reader.read()
    assert metadata is not None
    bound = sql_pb2.DoPutPreparedStatementResult.FromString(metadata.to_pybytes())
    handle = bound.prepared_statement_handle
    assert _run(client, prepared_descriptor(handle), _bearer(KEY_A)) == {"x": [42]}
    with pytest.raises(flight.FlightUnauthorizedError) as raised:
        client.get_flight_info(prepared_descriptor(handle), alice)
    assert_flight_error(raised, flight.FlightUnauthorizedError, "another principal")


def test_cancel_of_another_principals_query_is_permission_denied(
    client: flight.FlightClient, issued: Issued, alice: Any
) -> None:
    with pytest.raises(flight.FlightUnauthorizedError) as raised:
        _action(client, "CancelFlightInfo", _cancel_body(issued.info), alice)
    assert_flight_error(raised, flight.FlightUnauthorizedError, "another principal")
    # Not cancelled: the owner can still redeem it.
    assert client.do_get(issued.ticket, _bearer(KEY_A)).read_all().to_pydict() == ANSWER


def test_principal_survives_a_new_handshake(uri: str, client: flight.FlightClient) -> None:
    """A ticket belongs to the user, not to one session token: a reconnecting client (a
    new handshake) can still redeem it, and another user cannot."""
    first = flight.FlightCallOptions(headers=[client.authenticate_basic_token("bob", PASSWORD)])
    info = client.get_flight_info(statement_descriptor(QUERY), first)
    with flight.connect(uri) as other:
        second = flight.FlightCallOptions(headers=[other.authenticate_basic_token("bob", PASSWORD)])
        assert other.do_get(info.endpoints[0].ticket, second).read_all().to_pydict() == ANSWER


def test_adbc_partition_theft_is_permission_denied(uri: str) -> None:
    """A partition (ticket) alice got through ADBC is hers: a connection with API key A
    reading it gets PERMISSION_DENIED, while she can read it."""
    as_alice = {"username": "alice", "password": PASSWORD}
    as_key_a = {"adbc.flight.sql.authorization_header": f"Bearer {KEY_A}"}
    with adbc.connect(uri, db_kwargs=as_alice, autocommit=True) as conn, conn.cursor() as cur:
        partitions, _ = cur.adbc_execute_partitions(QUERY)
        assert len(partitions) == 1
        cur.adbc_read_partition(partitions[0])
        assert cur.fetch_arrow_table().to_pydict() == ANSWER
    with adbc.connect(uri, db_kwargs=as_key_a, autocommit=True) as conn, conn.cursor() as cur:
        with pytest.raises(adbc.ProgrammingError) as raised:
            cur.adbc_read_partition(partitions[0])
            cur.fetch_arrow_table()
    assert_flight_error(
        raised,
        adbc.ProgrammingError,
        r"another principal.*\(PermissionDenied;",
    )


# -- logs, metrics, leaks ------------------------------------------------------------------


@contextmanager
def _auth_server_process(config: Path, key: str) -> Iterator[tuple[int, list[str]]]:
    """``flightsql-srv serve --config`` as a subprocess, ready once ``key`` is accepted."""
    output: list[str] = []
    with server_process(
        "--config",
        str(config),
        output_lines=output,
        ready_headers=[(b"authorization", f"Bearer {key}".encode())],
        inherit_settings=False,
        ready_timeout=RUN_TIMEOUT,
    ) as (_, port):
        yield port, output


def _config_file(directory: Path, password_hash: str, extra_top: str = "") -> Path:
    users = "".join(
        f'[[auth.users]]\nname = "{name}"\npassword_hash = "{password_hash}"\nroles = ["reader"]\n'
        for name in ("alice", "bob")
    )
    text = (
        f'catalog = "{directory / "catalog"}"\n'
        'log_level = "debug"\n'
        f"{extra_top}"
        "[auth]\n"
        "session_ttl = 600\n"
        f'[[auth.api_keys]]\nname = "grafana"\nsha256 = "{_sha256(KEY_A)}"\nroles = ["reader"]\n'
        f"{users}"
        '[auth.roles.reader]\ntables = ["*"]\n'
    )
    (directory / "catalog").mkdir(exist_ok=True)
    path = directory / "server.toml"
    path.write_text(text)
    return path


def test_secrets_never_reach_the_logs(tmp_path: Path, password_hash: str) -> None:
    config = _config_file(tmp_path, password_hash)
    secrets: dict[str, str] = {
        "api key": KEY_A,
        "wrong api key": WRONG_KEY,
        "password": PASSWORD,
        "wrong password": WRONG_PASSWORD,
        "basic (padded)": _basic("alice", PASSWORD, padded=True),
        "basic (unpadded)": _basic("alice", PASSWORD, padded=False),
        "basic wrong password": _basic("alice", WRONG_PASSWORD, padded=False),
    }
    with _auth_server_process(config, KEY_A) as (port, output):
        with flight.connect(f"grpc://127.0.0.1:{port}") as c:
            assert _run(c, statement_descriptor(QUERY), _bearer(KEY_A)) == ANSWER
            for bad in (WRONG_KEY, KEY_A + "x", KEY_A.upper()):
                with pytest.raises(flight.FlightUnauthenticatedError):
                    c.get_flight_info(statement_descriptor(QUERY), _bearer(bad))
            header = c.authenticate_basic_token("alice", PASSWORD)
            token = header[1].decode().removeprefix("Bearer ")
            secrets["session token"] = token
            secrets["session token signature part"] = token.removeprefix("fss1.")[:40]
            assert _run(c, statement_descriptor(QUERY), _bearer(token)) == ANSWER
            with pytest.raises(flight.FlightUnauthenticatedError):
                c.get_flight_info(statement_descriptor(QUERY), _bearer(_flip_char(token, 20)))
            with pytest.raises(flight.FlightUnauthenticatedError):
                c.authenticate_basic_token("alice", WRONG_PASSWORD)
            with pytest.raises(pa.ArrowInvalid):  # an error path with a valid key
                c.get_flight_info(statement_descriptor("select nope"), _bearer(token))
        for authorization in (
            "Basic " + secrets["basic (unpadded)"],
            "Basic " + secrets["basic wrong password"],
        ):
            _raw_handshake(port, authorization)
    log = "\n".join(output)
    assert "authentication failed" in log, log  # the failures were logged, so this means something
    for what, secret in secrets.items():
        assert secret not in log, f"the {what} appears in the server output:\n{log}"


def test_auth_failure_metrics(client: flight.FlightClient, srv: Service, metrics_url: str) -> None:
    def count(reason: str) -> float:
        return _metric(metrics_url, "flightsql_auth_failures_total", reason=reason)

    reasons = ["missing", "unknown_token", "bad_password", "malformed", "bad_signature"]
    before = {r: count(r) for r in reasons}
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.get_flight_info(statement_descriptor(QUERY))
    with pytest.raises(flight.FlightUnauthenticatedError):
        list(client.list_actions(_bearer(WRONG_KEY)))
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token("alice", WRONG_PASSWORD)
    assert _raw_handshake(srv.port, "Basic ***").code == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.get_flight_info(statement_descriptor(QUERY), _bearer("fss1.AAAAAAAAAAAAAAAAAAAA"))
    after = {r: count(r) for r in reasons}
    assert {r: after[r] - before[r] for r in reasons} == dict.fromkeys(reasons, 1.0), after
    page = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    assert "# TYPE flightsql_auth_failures_total counter" in page


def test_rejected_calls_do_not_leak_in_flight_calls(
    client: flight.FlightClient, srv: Service, issued: Issued, metrics_url: str
) -> None:
    for _ in range(10):
        for param in RPCS:
            rpc = param.values[0]
            with pytest.raises(flight.FlightUnauthenticatedError):
                rpc(client, issued, _bearer(WRONG_KEY))
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.do_get(issued.ticket).read_all()
        assert _raw_handshake(srv.port, None).code == grpc.StatusCode.UNAUTHENTICATED
    assert _wait_for(lambda: srv.metrics.calls_in_flight == 0), srv.metrics.calls_in_flight
    page = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    gauges = re.findall(r"^flightsql_rpcs_in_flight\{[^}]*\} (\S+)$", page, re.MULTILINE)
    assert gauges and all(float(v) == 0 for v in gauges), gauges
    # Accepted calls still complete and are counted.
    assert _run(client, statement_descriptor(QUERY), _bearer(KEY_A)) == ANSWER
    assert _wait_for(lambda: srv.metrics.calls_in_flight == 0), srv.metrics.calls_in_flight


# -- command line: hash-password, config errors, secure defaults ---------------------------


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}


@dataclass(frozen=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str


def _config_cases(password_hash: str) -> dict[str, tuple[str, list[str]]]:
    """id → (config text, strings the error must name)."""
    good_key = f'[[auth.api_keys]]\nname = "ok"\nsha256 = "{_sha256(KEY_A)}"\nroles = ["reader"]\n'
    roles = '[auth.roles.reader]\ntables = ["*"]\n'
    return {
        "unknown-role": (
            good_key + f'[[auth.api_keys]]\nname = "grafana"\nsha256 = "{_sha256(KEY_B)}"\n'
            'roles = ["readers"]\n' + roles,
            ["[[auth.api_keys]] #2", "'readers'", "not defined"],
        ),
        "unknown-role-of-user": (
            f'[[auth.users]]\nname = "alice"\npassword_hash = "{password_hash}"\n'
            'roles = ["admin"]\n' + roles,
            ["[[auth.users]] #1", "'admin'", "not defined"],
        ),
        "bad-sha256": (
            # The plain key where its digest belongs: rejected, and never echoed.
            good_key + f'[[auth.api_keys]]\nname = "grafana"\nsha256 = "{KEY_B}"\n' + roles,
            ["[[auth.api_keys]] #2", "sha256"],
        ),
        "bad-password-hash": (
            # The plain password where its hash belongs: rejected, and never echoed.
            f'[[auth.users]]\nname = "alice"\npassword_hash = "{PASSWORD}"\n' + roles,
            ["[[auth.users]] #1", "password_hash", "hash-password"],
        ),
        "unknown-key-in-auth": ("[auth]\napi_key = 'x'\n" + roles, ["[auth]", "api_key"]),
        "unknown-key-in-user": (
            '[[auth.users]]\nname = "alice"\npassword = "x"\n' + roles,
            ["[[auth.users]] #1", "password"],
        ),
        "bad-table-pattern": (
            good_key + '[auth.roles.reader]\ntables = ["demo.logs.extra"]\n',
            ["[auth.roles.reader]", "demo.logs.extra"],
        ),
        "bad-session-ttl": ("[auth]\nsession_ttl = -5\n" + good_key + roles, ["session_ttl"]),
    }


#: The cases also run through the command line (each costs a Python start); every case runs
#: through load_settings, which the command line calls.
CLI_CONFIG_CASES = ["unknown-role", "bad-sha256", "bad-password-hash", "unknown-key-in-auth"]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory, password_hash: str) -> dict[str, CliRun]:
    """Every command-line case of this module, run in parallel (each costs a Python start)."""
    directory = tmp_path_factory.mktemp("cli")
    ports = ["--port", "0", "--health-port", "0", "--metrics-port", "-1"]
    cases: dict[str, tuple[list[str], str]] = {
        "hash-password": (["hash-password"], PASSWORD),
        "hash-password-empty": (["hash-password"], ""),
        "host-any-without-auth": (["serve", "--host", "0.0.0.0", *ports], ""),
    }
    for name in CLI_CONFIG_CASES:
        text, _ = _config_cases(password_hash)[name]
        path = directory / f"{name}.toml"
        path.write_text(text)
        cases[f"config-{name}"] = (["serve", "--config", str(path), *ports], "")
    auth_file = directory / "auth-file.toml"
    auth_file.write_text(_config_cases(password_hash)["unknown-role"][0])
    cases["auth-file-unknown-role"] = (["serve", "--auth-file", str(auth_file), *ports], "")
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "flightsql_srv", *args],
            cwd=ROOT,
            env=_clean_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, _) in cases.items()
    }
    runs: dict[str, CliRun] = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(cases[name][1], timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        runs[name] = CliRun(proc.returncode, out, err)
    return runs


def test_hash_password_command(cli_runs: dict[str, CliRun], password_hash: str) -> None:
    run = cli_runs["hash-password"]
    assert run.returncode == 0, run
    encoded = run.stdout.strip()
    assert encoded.startswith("scrypt$"), run
    assert PASSWORD not in run.stdout + run.stderr
    assert verify_password(PASSWORD, encoded)
    assert not verify_password(WRONG_PASSWORD, encoded)
    assert encoded != password_hash  # salted
    # The output is accepted as a password_hash.
    parse_auth({"users": [{"name": "u", "password_hash": encoded}]})


def test_hash_password_with_empty_stdin_exits_2(cli_runs: dict[str, CliRun]) -> None:
    run = cli_runs["hash-password-empty"]
    assert run.returncode == 2, run
    assert "no password" in run.stderr
    assert run.stdout == ""


@pytest.mark.parametrize("case", list(_config_cases("scrypt$x")))
def test_auth_config_errors_name_the_entry(tmp_path: Path, password_hash: str, case: str) -> None:
    text, expected = _config_cases(password_hash)[case]
    path = tmp_path / "server.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_settings({}, env={}, config_file=path)
    message = str(raised.value)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in: {message}"
    for secret in (KEY_A, KEY_B, PASSWORD):
        assert secret not in message, f"a secret is echoed: {message}"


@pytest.mark.parametrize("case", CLI_CONFIG_CASES)
def test_auth_config_errors_exit_2_naming_the_entry(
    cli_runs: dict[str, CliRun], password_hash: str, case: str
) -> None:
    run = cli_runs[f"config-{case}"]
    assert run.returncode == 2, run
    assert "Traceback" not in run.stderr
    _, expected = _config_cases(password_hash)[case]
    for fragment in expected:
        assert fragment in run.stderr, f"{fragment!r} not in: {run.stderr}"
    for secret in (KEY_A, KEY_B, PASSWORD):
        assert secret not in run.stderr, f"a secret is echoed: {run.stderr}"


def test_auth_file_errors_exit_2_naming_the_file(cli_runs: dict[str, CliRun]) -> None:
    run = cli_runs["auth-file-unknown-role"]
    assert run.returncode == 2, run
    assert "auth-file.toml" in run.stderr and "[[auth.api_keys]] #2" in run.stderr, run.stderr


def test_public_address_without_auth_is_refused(cli_runs: dict[str, CliRun]) -> None:
    run = cli_runs["host-any-without-auth"]
    assert run.returncode == 2, run
    assert "--allow-unauthenticated" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.com"])
def test_load_settings_refuses_public_hosts_without_auth(host: str) -> None:
    with pytest.raises(ConfigError, match="--allow-unauthenticated"):
        load_settings({"host": host}, env={})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_hosts_need_no_auth(host: str) -> None:
    assert load_settings({"host": host}, env={}).host == host


def test_public_host_with_auth_is_accepted(tmp_path: Path, password_hash: str) -> None:
    config = _config_file(tmp_path, password_hash)
    settings = load_settings({"host": "0.0.0.0"}, env={}, config_file=config)
    assert settings.auth.enabled and settings.host == "0.0.0.0"
    assert not settings.allow_unauthenticated


def _serve_public_briefly(*args: str) -> list[str]:
    """Serve 0.0.0.0 without auth only for the moment it takes to answer one query on
    127.0.0.1; returns the server output."""
    with serve_subprocess(*args, env=_clean_env()) as (_, port, output):
        with flight.connect(f"grpc://127.0.0.1:{port}") as c:
            assert _run(c, statement_descriptor(QUERY), None) == ANSWER
    return output


def test_allow_unauthenticated_flag_starts_and_warns(empty_catalog: Path) -> None:
    """The refusal says "pass --allow-unauthenticated": that exact flag, with no value and
    followed by more options as in any command line, starts the server, which warns."""
    output = _serve_public_briefly(
        "--host", "0.0.0.0", "--catalog", str(empty_catalog), "--allow-unauthenticated"
    )
    warnings = []
    for line in output:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") == "warning" and "authentication" in entry.get("msg", "").lower():
            warnings.append(entry)
    assert warnings, "".join(output)
    assert any("allow-unauthenticated" in w["msg"] for w in warnings), warnings


# -- cost -----------------------------------------------------------------------------------


def test_auth_overhead_per_query(
    auth: AuthConfig, empty_catalog: Path, record_property: Any, capsys: Any
) -> None:
    """Median GetFlightInfo(select 1) latency with an API key vs without auth, interleaved
    on two otherwise identical servers (the header is sent to both)."""
    descriptor = statement_descriptor("select 1")
    options = _bearer(KEY_B)  # the second configured key: every key is compared anyway
    with (
        running_server(catalog=empty_catalog) as plain,
        running_server(catalog=empty_catalog, auth=auth) as authed,
        flight.connect(f"grpc://127.0.0.1:{plain.port}") as c_plain,
        flight.connect(f"grpc://127.0.0.1:{authed.port}") as c_auth,
    ):
        for _ in range(30):  # warm up both
            c_plain.get_flight_info(descriptor, options)
            c_auth.get_flight_info(descriptor, options)
        plain_s, auth_s = [], []
        for i in range(300):
            pairs = [(c_plain, plain_s), (c_auth, auth_s)]
            for c, samples in pairs if i % 2 else reversed(pairs):
                started = time.perf_counter()
                c.get_flight_info(descriptor, options)
                samples.append(time.perf_counter() - started)
    overhead_ms = (statistics.median(auth_s) - statistics.median(plain_s)) * 1e3
    record_property("auth_overhead_ms", round(overhead_ms, 4))
    with capsys.disabled():
        print(
            f"\nauth overhead per query (API key, GetFlightInfo select 1): {overhead_ms:.3f} ms "
            f"(median {statistics.median(auth_s) * 1e3:.3f} ms with auth, "
            f"{statistics.median(plain_s) * 1e3:.3f} ms without)"
        )
    assert overhead_ms < 2.0, f"auth adds {overhead_ms:.3f} ms per query (target 0.2 ms)"
