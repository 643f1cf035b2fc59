"""Signed, self-contained tickets: tampering, expiry, replicas and secret rotation."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from tests.conftest import running_server
from tests.helpers import (
    assert_flight_error,
    create_prepared,
    prepared_descriptor,
    statement_descriptor,
)

QUERY = "select 41 + 1 as answer"
ANSWER = {"answer": [42]}


@pytest.fixture(scope="module")
def empty_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No tables: these servers start in milliseconds and ``select`` literals still work."""
    path: Path = tmp_path_factory.mktemp("empty-catalog")
    return path


@contextmanager
def _client(**settings: Any) -> Iterator[flight.FlightClient]:
    with running_server(**settings) as srv, flight.connect(f"grpc://127.0.0.1:{srv.port}") as c:
        yield c


def _ticket(client: flight.FlightClient, sql: str = QUERY) -> bytes:
    info = client.get_flight_info(statement_descriptor(sql))
    ticket: bytes = info.endpoints[0].ticket.ticket
    return ticket


def _redeem(client: flight.FlightClient, ticket: bytes) -> dict[str, Any]:
    table: pa.Table = client.do_get(flight.Ticket(ticket)).read_all()
    return table.to_pydict()


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_genuine_ticket_is_redeemed(client: flight.FlightClient) -> None:
    assert _redeem(client, _ticket(client)) == ANSWER


# The wire form is b"F2" + key id (4) + nonce (12) + ciphertext + tag (16); the cases do not
# depend on that beyond choosing bytes that fall in each part.
TAMPERINGS = [
    pytest.param(lambda t: _flip(t, len(t) - 5), id="flip-payload-byte"),
    pytest.param(lambda t: _flip(t, len(t) // 2), id="flip-middle-byte"),
    pytest.param(lambda t: _flip(t, 3), id="flip-key-id-byte"),
    pytest.param(lambda t: _flip(t, 10), id="flip-nonce-byte"),
    pytest.param(lambda t: _flip(t, len(t) - 1), id="flip-tag-byte"),
    pytest.param(lambda t: _flip(t, 0), id="flip-first-byte"),
    pytest.param(lambda t: t[:-1], id="truncate-one"),
    pytest.param(lambda t: t[:20], id="truncate-to-20"),
    pytest.param(lambda t: t + b" ", id="append-byte"),
    pytest.param(lambda t: os.urandom(len(t)), id="random-bytes"),
    pytest.param(lambda t: b"", id="empty"),
    pytest.param(lambda t: t[:6] + os.urandom(12) + t[18:], id="replace-nonce"),
]


@pytest.mark.parametrize("tamper", TAMPERINGS)
def test_tampered_ticket_is_unauthenticated(client: flight.FlightClient, tamper: Any) -> None:
    ticket = _ticket(client)
    forged = tamper(ticket)
    assert forged != ticket
    assert_flight_error(
        lambda: _redeem(client, forged), flight.FlightUnauthenticatedError, r"ticket"
    )


def test_ticket_reveals_nothing(client: flight.FlightClient) -> None:
    """Encrypted: neither the SQL nor the principal nor the body's keys can be read, and two
    tickets for the same query differ."""
    ticket = _ticket(client, "select 'visible-marker' as m")
    assert b"visible-marker" not in ticket and b"select" not in ticket
    assert b'"kind"' not in ticket and b"principal" not in ticket
    assert ticket != _ticket(client, "select 'visible-marker' as m")


def test_prepared_handle_is_not_a_ticket(client: flight.FlightClient) -> None:
    handle = create_prepared(client, QUERY).prepared_statement_handle
    assert_flight_error(
        lambda: _redeem(client, handle), flight.FlightUnauthenticatedError, r"ticket"
    )


def test_ticket_is_not_a_prepared_handle(client: flight.FlightClient) -> None:
    ticket = _ticket(client)
    assert_flight_error(
        lambda: client.get_flight_info(prepared_descriptor(ticket)),
        flight.FlightUnauthenticatedError,
        r"prepared statement handle",
    )


def test_expired_ticket(empty_catalog: Path) -> None:
    ttl = 0.2
    with _client(catalog=empty_catalog, ticket_ttl=ttl) as c:
        ticket = _ticket(c)
        issued = time.monotonic()
        time.sleep(max(0.0, ttl + 0.1 - (time.monotonic() - issued)))  # the condition under test
        assert_flight_error(
            lambda: _redeem(c, ticket),
            flight.FlightUnauthenticatedError,
            r"expired.*GetFlightInfo",
        )
        assert _redeem(c, _ticket(c)) == ANSWER  # a fresh one works


def test_replicas_with_the_same_secret_share_tickets(empty_catalog: Path) -> None:
    with (
        _client(catalog=empty_catalog, ticket_secret="shared") as a,
        _client(catalog=empty_catalog, ticket_secret="shared") as b,
    ):
        assert _redeem(b, _ticket(a)) == ANSWER
        assert _redeem(a, _ticket(b)) == ANSWER
        handle = create_prepared(a, QUERY).prepared_statement_handle
        info = b.get_flight_info(prepared_descriptor(handle))
        assert _redeem(a, info.endpoints[0].ticket.ticket) == ANSWER


def test_replica_with_another_secret_refuses(empty_catalog: Path) -> None:
    with (
        _client(catalog=empty_catalog, ticket_secret="one") as a,
        _client(catalog=empty_catalog, ticket_secret="two") as b,
    ):
        assert_flight_error(
            lambda: _redeem(b, _ticket(a)), flight.FlightUnauthenticatedError, r"secret"
        )


def test_secret_rotation(empty_catalog: Path) -> None:
    with (
        _client(catalog=empty_catalog, ticket_secret="old") as old,
        _client(catalog=empty_catalog, ticket_secret="new,old") as rotated,
        _client(catalog=empty_catalog, ticket_secret="new") as new_only,
    ):
        assert _redeem(rotated, _ticket(old)) == ANSWER  # old tickets still redeem
        fresh = _ticket(rotated)  # ...while the first secret signs new ones
        assert _redeem(new_only, fresh) == ANSWER
        assert_flight_error(
            lambda: _redeem(old, fresh), flight.FlightUnauthenticatedError, r"signature"
        )


def test_ephemeral_secret_servers_do_not_share(empty_catalog: Path) -> None:
    with (
        _client(catalog=empty_catalog, ticket_secret="") as a,
        _client(catalog=empty_catalog, ticket_secret="") as b,
    ):
        ticket = _ticket(a)
        assert _redeem(a, ticket) == ANSWER
        assert_flight_error(
            lambda: _redeem(b, ticket), flight.FlightUnauthenticatedError, r"ticket"
        )
