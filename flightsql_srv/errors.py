"""Domain errors and the single place where they become gRPC status codes.

Handlers raise the small hierarchy below; :func:`rpc_boundary` (used by every RPC in
``server.py``) lets them through, and turns anything else into INTERNAL with a query id,
logging the traceback on the server only.

pyarrow maps Python exception *classes* to status codes (``ValueError`` → INVALID_ARGUMENT,
``KeyError`` → NOT_FOUND, ``NotImplementedError`` → UNIMPLEMENTED) but appends the formatted
exception to the message; it has no way to send RESOURCE_EXHAUSTED. The server sets
``sys.tracebacklimit = 0`` while it runs so that suffix carries no stack frames; the Flight
error classes (UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE, ...) carry no suffix at all.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.flight as flight

__all__ = [
    "ServiceError",
    "InvalidArgument",
    "ReadOnlyViolation",
    "NotFound",
    "Unimplemented",
    "ResourceExhausted",
    "Overloaded",
    "PermissionDenied",
    "rpc_boundary",
]

log = logging.getLogger("flightsql_srv")


class ServiceError(Exception):
    """Base class for errors a client caused or should be told about."""


class InvalidArgument(ServiceError, ValueError):
    """The request is malformed or the SQL does not plan (INVALID_ARGUMENT)."""


class ReadOnlyViolation(InvalidArgument):
    """The statement would write (DDL, DML, COPY, SET); this server is read-only."""


class NotFound(ServiceError, pa.ArrowKeyError):  # type: ignore[misc]
    """A named object does not exist or is not visible to the caller (NOT_FOUND)."""


class Unimplemented(ServiceError, NotImplementedError):
    """The request is valid Flight SQL that this server does not serve (UNIMPLEMENTED)."""


class ResourceExhausted(ServiceError, flight.FlightServerError):  # type: ignore[misc]
    """A query needs more than the server allows (memory). pyarrow cannot send
    RESOURCE_EXHAUSTED, so this is UNKNOWN with the message (ADBC: OperationalError)."""


class Overloaded(ServiceError, flight.FlightUnavailableError):  # type: ignore[misc]
    """Too many queries right now (UNAVAILABLE: retry later, possibly elsewhere)."""


class PermissionDenied(ServiceError, flight.FlightUnauthorizedError):  # type: ignore[misc]
    """The caller may not do this with what its roles grant (PERMISSION_DENIED)."""


class SourceUnavailable(ServiceError, flight.FlightUnavailableError):  # type: ignore[misc]
    """A table's storage could not be reached (UNAVAILABLE: retry once it is back)."""


# Keep the class names short: pyarrow prints them in the status detail.
for _cls in (InvalidArgument, ReadOnlyViolation, NotFound, Unimplemented):
    _cls.__module__ = "builtins"

_PASS_THROUGH: tuple[type[BaseException], ...] = (ServiceError, flight.FlightError)


@contextlib.contextmanager
def rpc_boundary(rpc: str) -> Iterator[None]:
    """Let domain and Flight errors through; turn anything else into INTERNAL.

    Args:
        rpc: the RPC name, for the server-side log line.
    """
    try:
        yield
    except _PASS_THROUGH:
        raise
    except Exception as exc:
        error_id = uuid.uuid4().hex[:12]
        log.error(
            "unexpected error",
            exc_info=exc,
            extra={"fields": {"rpc": rpc, "error_id": error_id}},
        )
        raise flight.FlightInternalError(
            f"internal error in {rpc} (error id {error_id}); the server log has the details"
        ) from None
