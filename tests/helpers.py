"""Shared assertions and small client-side helpers for the Flight SQL tests."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightsql_srv.protocol import pack, sql_pb2, unpack_command
from tests.conftest import server_process

__all__ = [
    "until",
    "assert_flight_error",
    "statement_descriptor",
    "prepared_descriptor",
    "create_prepared",
    "bind_parameters",
    "drain",
    "serve_subprocess",
]

#: Fragments of a formatted Python traceback; none may reach a client.
_TRACEBACK_FRAGMENTS = ("Traceback", 'File "')


def assert_flight_error(
    error: pytest.ExceptionInfo[BaseException] | BaseException | Callable[[], object],
    code_class: type[BaseException] | tuple[type[BaseException], ...],
    message_regex: str,
) -> BaseException:
    """Assert that an error has the expected class, a matching message and no traceback.

    Args:
        error: a ``pytest.raises`` ExceptionInfo, an exception, or a callable that must raise.
        code_class: the client exception class standing for the status code, e.g.
            ``pa.ArrowInvalid`` (INVALID_ARGUMENT via pyarrow),
            ``flight.FlightUnauthenticatedError`` or ``adbc.ProgrammingError``.
        message_regex: searched (``re.search``, DOTALL) in ``str(exception)``.

    Returns:
        The exception, for further checks.
    """
    if isinstance(error, pytest.ExceptionInfo):
        exc: BaseException = error.value
    elif isinstance(error, BaseException):
        exc = error
    else:
        try:
            result = error()
        except Exception as raised:  # any class may be the one expected
            exc = raised
        else:
            pytest.fail(f"expected {code_class} matching {message_regex!r}, got {result!r}")
    message = str(exc)
    assert isinstance(exc, code_class), (
        f"expected {code_class}, got {type(exc).__module__}.{type(exc).__name__}: {message}"
    )
    assert re.search(message_regex, message, re.DOTALL), (
        f"message does not match {message_regex!r}: {message}"
    )
    for fragment in _TRACEBACK_FRAGMENTS:
        assert fragment not in message, f"the message leaks a traceback ({fragment!r}): {message}"
    return exc


def statement_descriptor(sql: str) -> flight.FlightDescriptor:
    """A CMD descriptor holding ``Any(CommandStatementQuery)``."""
    return flight.FlightDescriptor.for_command(pack(sql_pb2.CommandStatementQuery(query=sql)))


def prepared_descriptor(handle: bytes) -> flight.FlightDescriptor:
    """A CMD descriptor holding ``Any(CommandPreparedStatementQuery)``."""
    command = sql_pb2.CommandPreparedStatementQuery(prepared_statement_handle=handle)
    return flight.FlightDescriptor.for_command(pack(command))


def create_prepared(
    client: flight.FlightClient, sql: str
) -> sql_pb2.ActionCreatePreparedStatementResult:
    """DoAction CreatePreparedStatement; the single result must be an Any-wrapped result."""
    body = pack(sql_pb2.ActionCreatePreparedStatementRequest(query=sql))
    results = list(client.do_action(flight.Action("CreatePreparedStatement", body)))
    assert len(results) == 1
    message = unpack_command(results[0].body.to_pybytes())
    assert isinstance(message, sql_pb2.ActionCreatePreparedStatementResult)
    return message


def bind_parameters(
    client: flight.FlightClient, handle: bytes, batch: pa.RecordBatch
) -> pa.Buffer | None:
    """DoPut(CommandPreparedStatementQuery) with ``batch``; returns the PutResult metadata."""
    writer, reader = client.do_put(prepared_descriptor(handle), batch.schema)
    with writer:
        writer.write_batch(batch)
        writer.done_writing()
        metadata: pa.Buffer | None = reader.read()
    return metadata


def drain(reader: Any) -> tuple[int, list[int]]:
    """Read a Flight stream chunk by chunk without keeping the batches.

    Returns:
        The row count and each batch's IPC size in bytes.
    """
    rows, sizes = 0, []
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            return rows, sizes
        if chunk.data is not None:
            rows += chunk.data.num_rows
            sizes.append(pa.ipc.get_record_batch_size(chunk.data))


@contextmanager
def serve_subprocess(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], int, list[str]]]:
    """:func:`tests.conftest.server_process`, also yielding a list that holds the server's
    output lines once the block has ended."""
    output: list[str] = []
    with server_process(*args, env=env, output_lines=output) as (proc, port):
        yield proc, port, output


def until(condition: Callable[[], bool], seconds: float, step: float = 0.1) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` pass; returns whether it held."""
    deadline = time.monotonic() + seconds
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


def failure(call: Callable[[], object]) -> BaseException:
    """The exception ``call`` raises (its class is the caller's to check)."""
    try:
        call()
    except Exception as exc:  # the class is checked by the caller
        return exc
    raise AssertionError("expected the call to fail")


def peak_rss(pid: int, work: Callable[[], None]) -> tuple[int, int]:
    """Run ``work`` while sampling process ``pid``'s RSS every 5 ms; (before, peak) bytes."""
    process = psutil.Process(pid)
    baseline = peak = int(process.memory_info().rss)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, int(process.memory_info().rss))
            except psutil.Error:
                return
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        work()
    finally:
        done.set()
        sampler.join()
    return baseline, peak
