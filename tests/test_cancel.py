"""Cancellation: CancelFlightInfo, the legacy CancelQuery action and client disconnects.

A dedicated server keeps the running-query count free of other tests' streams. Streams
are read with ``read_chunk`` only: pyarrow's ``read_all`` turns a CANCELLED status into
KeyboardInterrupt.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow.flight as flight
import pytest

from flightsql_srv.protocol import flight_pb2, pack, sql_pb2, unpack_command
from tests.conftest import running_server
from tests.helpers import assert_flight_error, drain, statement_descriptor

BIG = "select * from demo.metrics"
WAIT_S = 10.0


@pytest.fixture(scope="module")
def service() -> Iterator[Any]:
    with running_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def total_rows(service: Any) -> int:
    with flight.connect(f"grpc://127.0.0.1:{service.port}") as c:
        info = c.get_flight_info(statement_descriptor("select count(*) as n from demo.metrics"))
        rows: int = c.do_get(info.endpoints[0].ticket).read_all().column("n")[0].as_py()
    assert rows > 1_000_000
    return rows


@pytest.fixture
def cancel_client(service: Any) -> Iterator[flight.FlightClient]:
    with flight.connect(f"grpc://127.0.0.1:{service.port}") as c:
        yield c
    _wait_until(lambda: service.flight.statements.running.active == 0)


def _wait_until(condition: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _active(service: Any) -> int:
    active: int = service.flight.statements.running.active
    return active


def _cancel_flight_info(client: flight.FlightClient, info: flight.FlightInfo) -> int:
    request = flight_pb2.CancelFlightInfoRequest(
        info=flight_pb2.FlightInfo.FromString(info.serialize())
    )
    action = flight.Action("CancelFlightInfo", request.SerializeToString())
    results = list(client.do_action(action))
    assert len(results) == 1
    status: int = flight_pb2.CancelFlightInfoResult.FromString(results[0].body.to_pybytes()).status
    return status


def _read_rest(reader: flight.FlightStreamReader) -> tuple[int, BaseException | None]:
    """Read chunks until the end or an error; returns (rows, error)."""
    rows = 0
    try:
        while True:
            chunk = reader.read_chunk()
            if chunk.data is not None:
                rows += chunk.data.num_rows
    except StopIteration:
        return rows, None
    except flight.FlightError as exc:
        return rows, exc


def _start(
    client: flight.FlightClient, service: Any
) -> tuple[flight.FlightInfo, flight.FlightStreamReader, int]:
    """GetFlightInfo + DoGet of the big query, one chunk read; the query is running."""
    info = client.get_flight_info(statement_descriptor(BIG))
    reader = client.do_get(info.endpoints[0].ticket)
    first = reader.read_chunk().data.num_rows
    assert first > 0
    assert _active(service) == 1
    return info, reader, first


def test_cancel_flight_info_stops_a_running_stream(
    service: Any, cancel_client: flight.FlightClient, total_rows: int
) -> None:
    info, reader, first = _start(cancel_client, service)
    assert _cancel_flight_info(cancel_client, info) == flight_pb2.CANCEL_STATUS_CANCELLED
    rest, error = _read_rest(reader)
    assert error is not None, "the stream must end with an error, not normally"
    assert_flight_error(error, flight.FlightError, "(?i)cancelled")
    assert first + rest < total_rows
    assert _wait_until(lambda: _active(service) == 0), "the cancelled query is still running"
    # The server stays healthy.
    again = cancel_client.get_flight_info(statement_descriptor("select 1 as x"))
    assert cancel_client.do_get(again.endpoints[0].ticket).read_all().num_rows == 1


def test_cancelled_stream_ends_with_status_cancelled(
    service: Any, cancel_client: flight.FlightClient
) -> None:
    """gRPC CANCELLED, as for a cancel before DoGet (not UNKNOWN with Python details)."""
    info, reader, _ = _start(cancel_client, service)
    assert _cancel_flight_info(cancel_client, info) == flight_pb2.CANCEL_STATUS_CANCELLED
    _, error = _read_rest(reader)
    assert error is not None
    assert_flight_error(error, flight.FlightCancelledError, "(?i)cancelled")
    assert "Python exception" not in str(error)


def test_cancel_before_do_get_refuses_the_ticket(
    service: Any, cancel_client: flight.FlightClient
) -> None:
    info = cancel_client.get_flight_info(statement_descriptor(BIG))
    assert _cancel_flight_info(cancel_client, info) == flight_pb2.CANCEL_STATUS_CANCELLED
    with pytest.raises(flight.FlightCancelledError) as raised:
        drain(cancel_client.do_get(info.endpoints[0].ticket))
    assert_flight_error(raised, flight.FlightCancelledError, "(?i)cancelled")
    assert _active(service) == 0
    # A fresh FlightInfo for the same SQL is a new query and runs.
    fresh = cancel_client.get_flight_info(statement_descriptor("select 42 as x"))
    assert cancel_client.do_get(fresh.endpoints[0].ticket).read_all().num_rows == 1


def test_metadata_flight_info_is_not_cancellable(cancel_client: flight.FlightClient) -> None:
    descriptor = flight.FlightDescriptor.for_command(pack(sql_pb2.CommandGetCatalogs()))
    info = cancel_client.get_flight_info(descriptor)
    assert _cancel_flight_info(cancel_client, info) == flight_pb2.CANCEL_STATUS_NOT_CANCELLABLE
    # ... and it is still served.
    table = cancel_client.do_get(info.endpoints[0].ticket).read_all()
    assert table.column("catalog_name").to_pylist() == ["flightsql"]


def test_legacy_cancel_query_action(
    service: Any, cancel_client: flight.FlightClient, total_rows: int
) -> None:
    info, reader, first = _start(cancel_client, service)
    body = pack(sql_pb2.ActionCancelQueryRequest(info=info.serialize()))
    results = list(cancel_client.do_action(flight.Action("CancelQuery", body)))
    assert len(results) == 1
    result = unpack_command(results[0].body.to_pybytes())  # Any-wrapped
    assert isinstance(result, sql_pb2.ActionCancelQueryResult)
    assert result.result == sql_pb2.ActionCancelQueryResult.CANCEL_RESULT_CANCELLED
    rest, error = _read_rest(reader)
    assert error is not None
    assert_flight_error(error, flight.FlightError, "(?i)cancelled")
    assert first + rest < total_rows
    assert _wait_until(lambda: _active(service) == 0)


def test_cancel_with_a_forged_ticket_is_unauthenticated(
    cancel_client: flight.FlightClient,
) -> None:
    info = cancel_client.get_flight_info(statement_descriptor("select 1"))
    message = flight_pb2.FlightInfo.FromString(info.serialize())
    message.endpoint[0].ticket.ticket = b"F1" + b"\x00" * 32 + b'{"kind":"query","id":"x"}'
    request = flight_pb2.CancelFlightInfoRequest(info=message)
    with pytest.raises(flight.FlightUnauthenticatedError) as raised:
        list(
            cancel_client.do_action(flight.Action("CancelFlightInfo", request.SerializeToString()))
        )
    assert_flight_error(raised, flight.FlightUnauthenticatedError, "ticket")


def test_client_disconnect_mid_stream_finishes_the_query(service: Any) -> None:
    client = flight.connect(f"grpc://127.0.0.1:{service.port}")
    try:
        _, reader, _ = _start(client, service)
        del reader
    finally:
        client.close()
    assert _wait_until(lambda: _active(service) == 0), "an abandoned query is still running"


def test_reader_cancel_mid_stream_finishes_the_query(
    service: Any, cancel_client: flight.FlightClient
) -> None:
    """What ADBC's adbc_cancel() does: cancel the call (gRPC CANCELLED) mid-stream."""
    _, reader, _ = _start(cancel_client, service)
    reader.cancel()
    assert _wait_until(lambda: _active(service) == 0), "a cancelled call is still running"
