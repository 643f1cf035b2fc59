"""Why an engine worker ended, and what the query it ran is told: the kill reasons of the
supervisor, an exit status or signal, and the client-facing error and audit outcome of each."""

from __future__ import annotations

import signal
from multiprocessing.process import BaseProcess

import pyarrow.flight as flight

from flightsql_srv.config import Settings
from flightsql_srv.errors import ResourceExhausted
from flightsql_srv.workers.worker import EXIT_STALLED

__all__ = ["death_error", "exit_reason", "outcome_of"]

#: Why a worker ended → the error its query gets (anything else is a crash).
DEATHS: dict[str, tuple[type[Exception], str]] = {
    "timeout": (
        flight.FlightTimedOutError,
        "{query} exceeded query_timeout ({query_timeout:g} s); narrow it or ask the operator "
        "to raise the limit",
    ),
    "cancelled": (flight.FlightCancelledError, "{query} was cancelled"),
    "disconnected": (flight.FlightCancelledError, "{query} stopped: the client went away"),
    "memory": (
        ResourceExhausted,
        "{query} needed more memory than memory_limit ({memory_limit}) allows and was "
        "stopped; narrow it (filters, fewer columns or rows, a LIMIT, smaller literals) or ask "
        "the operator to raise memory_limit",
    ),
    "stopped": (
        flight.FlightUnavailableError,
        "{query} stopped: the server is shutting down; retry",
    ),
    "reload": (
        flight.FlightUnavailableError,
        "{query} stopped: its engine worker was replaced (catalog reload); retry",
    ),
}
CRASHED = (
    flight.FlightInternalError,
    "{query} crashed its engine worker ({reason}); the server and other queries are not "
    "affected. This is an engine bug: simplify the query (e.g. fewer nested expressions) and "
    "report it with the query id",
)


def death_error(query_id: str, reason: str, settings: Settings) -> Exception:
    """The client-facing error for query ``query_id`` whose worker ended for ``reason``."""
    cls, template = DEATHS.get(reason, CRASHED)
    error: Exception = cls(
        template.format(
            query=f"query {query_id}",
            reason=reason,
            query_timeout=settings.query_timeout,
            memory_limit=settings.memory_limit,
        )
    )
    return error


def outcome_of(error: Exception) -> tuple[str, str]:
    """(audit outcome, error class) of a query that failed with ``error``."""
    if isinstance(error, flight.FlightTimedOutError):
        return "timeout", "DEADLINE_EXCEEDED"
    if isinstance(error, flight.FlightCancelledError):
        return "cancelled", "CANCELLED"
    return "error", type(error).__name__


def exit_reason(process: BaseProcess) -> str:
    """Why a process ended, from its exit status."""
    code = process.exitcode
    if code == EXIT_STALLED:
        return "stalled"
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"
