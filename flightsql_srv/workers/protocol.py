"""The messages between the front and an engine worker.

Both sides speak Arrow Flight over a Unix socket: ``DoAction`` for planning and control,
``DoGet`` for results. Requests and replies are small JSON documents; a failure travels as a
Flight error whose ``extra_info`` names the service error class and its message, so the
front can answer the client exactly as if it had planned the query itself.

The front treats everything a worker sends as untrusted input: a reply that does not parse
becomes :class:`WorkerProtocolError`, never an unhandled exception.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from flightsql_srv.contexts import Visibility
from flightsql_srv.errors import (
    InvalidArgument,
    NotFound,
    Overloaded,
    PermissionDenied,
    ReadOnlyViolation,
    ResourceExhausted,
    SourceUnavailable,
    Unimplemented,
)
from flightsql_srv.query import Query

__all__ = [
    "WorkRequest",
    "PlanReply",
    "FinishReply",
    "WorkerProtocolError",
    "read_inline",
    "write_inline",
    "error_to_flight",
    "error_from_flight",
]

#: Action types a worker answers.
PLAN, PROBE, CANCEL, FINISH, DROP = "plan", "probe", "cancel", "finish", "drop"
#: Replies larger than this are refused (a schema of thousands of columns is ~1 MB).
MAX_REPLY_BYTES = 64 * 1024 * 1024

#: Service errors that cross the boundary by class name; anything else is INTERNAL.
_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (
        InvalidArgument,
        ReadOnlyViolation,
        NotFound,
        Unimplemented,
        ResourceExhausted,
        Overloaded,
        SourceUnavailable,
        PermissionDenied,
    )
}
_ERRORS["FlightTimedOutError"] = flight.FlightTimedOutError
_ERRORS["FlightCancelledError"] = flight.FlightCancelledError


class WorkerProtocolError(Exception):
    """A worker sent something that is not a valid reply."""


@dataclass(frozen=True)
class WorkRequest:
    """One query for a worker: plan it, or run it (all of it, or some partitions)."""

    query_id: str
    query: Query
    fixed_partitions: bool = False
    #: (index, endpoints, partitions) for parallel fetch.
    partition: tuple[int, int, int] | None = None
    #: Seconds the query may still run (0: no limit); checked between batches.
    timeout: float = 0.0
    #: Plan and start running (GetFlightInfo of a one-endpoint result): a result of at most
    #: this many bytes comes back with the plan, a larger one waits in the worker for the
    #: DoGet of the same query id (-1: only plan).
    run_inline: int = -1

    def encode(self) -> bytes:
        return self._encoded

    @cached_property
    def _encoded(self) -> bytes:
        visible = self.query.visible
        return json.dumps(
            {
                "id": self.query_id,
                "query": self.query.body(),
                "visible": sorted(visible) if visible is not None else None,
                "explain_paths": self.query.explain_paths,
                "fixed_partitions": self.fixed_partitions,
                "partition": list(self.partition) if self.partition else None,
                "timeout": self.timeout,
                "run_inline": self.run_inline,
            }
        ).encode()

    def key(self) -> bytes:
        """What the plan depends on: the request without its id, time budget and run."""
        return self._key

    @cached_property
    def _key(self) -> bytes:
        return replace(self, query_id="", timeout=0.0, run_inline=-1).encode()

    @classmethod
    def decode(cls, data: bytes) -> WorkRequest:
        """Parse a request (in the worker: it comes from the front, which built it)."""
        raw = json.loads(data)
        visible: Visibility = None
        if raw["visible"] is not None:
            visible = frozenset((str(s), str(t)) for s, t in raw["visible"])
        query = replace(
            Query.from_body(raw["query"]),
            visible=visible,
            explain_paths=bool(raw.get("explain_paths", False)),
        )
        partition = raw["partition"]
        return cls(
            query_id=str(raw["id"]),
            query=query,
            fixed_partitions=bool(raw["fixed_partitions"]),
            partition=(int(partition[0]), int(partition[1]), int(partition[2]))
            if partition
            else None,
            timeout=float(raw["timeout"]),
            run_inline=int(raw["run_inline"]),
        )


#: What became of a planned query: only planned; run, its whole result follows the reply
#: (an Arrow IPC stream, the action's second result); running, its stream waits in the worker.
PLANNED, INLINE, PARKED = "planned", "inline", "parked"


@dataclass(frozen=True)
class PlanReply:
    """A planned query: its result schema, how many fixed partitions it has, and whether it
    runs already (see :attr:`WorkRequest.run_inline`)."""

    schema: pa.Schema
    partitions: int
    result: str = PLANNED

    def encode(self) -> bytes:
        schema = base64.b64encode(self.schema.serialize().to_pybytes()).decode()
        return json.dumps(
            {"schema": schema, "partitions": self.partitions, "result": self.result}
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> PlanReply:
        raw = _document(data)
        partitions, result = raw.get("partitions"), raw.get("result", PLANNED)
        if type(partitions) is not int or partitions < 1:
            raise WorkerProtocolError("plan reply without a positive partition count")
        if result not in (PLANNED, INLINE, PARKED):
            raise WorkerProtocolError(f"plan reply with an unknown result {str(result)[:32]!r}")
        return cls(_schema(raw.get("schema")), partitions, result)


def read_inline(data: bytes) -> pa.Table:
    """The result that came with a plan reply (an Arrow IPC stream), read in C++."""
    if len(data) > MAX_REPLY_BYTES:
        raise WorkerProtocolError(f"inline result of {len(data)} bytes is larger than allowed")
    try:
        table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        table.validate()
    except (OSError, pa.ArrowException) as exc:
        raise WorkerProtocolError(f"inline result is not a valid Arrow stream: {exc}") from None
    return table


def write_inline(schema: pa.Schema, batches: list[pa.RecordBatch]) -> pa.Buffer:
    """``batches`` as the Arrow IPC stream :func:`read_inline` reads."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue()


@dataclass(frozen=True)
class FinishReply:
    """How a query's result stream ended in the worker.

    A worker ends a failed stream cleanly and reports the failure here, so the front can
    answer the client with the right status code: an error raised inside the stream would
    pass through the front's C++ stream and reach the client as UNKNOWN.
    """

    outcome: str
    rows: int
    nbytes: int
    #: The service error's class name when the query failed, and its message.
    error_class: str = ""
    message: str = ""
    #: Seconds the worker spent planning.
    plan_s: float = 0.0

    def encode(self) -> bytes:
        return json.dumps(vars(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> FinishReply:
        raw = _document(data)
        outcome, rows, size = raw.get("outcome"), raw.get("rows"), raw.get("nbytes")
        error_class, message = raw.get("error_class", ""), raw.get("message", "")
        plan_s = raw.get("plan_s", 0.0)
        if not (
            isinstance(outcome, str)
            and type(rows) is int
            and type(size) is int
            and isinstance(error_class, str)
            and isinstance(message, str)
            and type(plan_s) in (int, float)
        ):
            raise WorkerProtocolError("finish reply with missing or mistyped fields")
        return cls(outcome[:64], rows, size, error_class[:64], message, float(plan_s))

    def error(self) -> Exception | None:
        """The error to answer the client with, when the query failed."""
        if not self.error_class:
            return None
        cls = _ERRORS.get(self.error_class)
        error: Exception = (
            cls(self.message)
            if cls is not None
            else flight.FlightInternalError(f"the engine failed: {self.message}")
        )
        return error


def _document(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_REPLY_BYTES:
        raise WorkerProtocolError(f"reply of {len(data)} bytes is larger than allowed")
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WorkerProtocolError(f"reply is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise WorkerProtocolError("reply is not a JSON object")
    return raw


def _schema(value: Any) -> pa.Schema:
    if not isinstance(value, str):
        raise WorkerProtocolError("reply without a schema")
    try:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(value, validate=True)))
    except (ValueError, pa.ArrowException) as exc:
        raise WorkerProtocolError(f"reply with an unreadable schema: {exc}") from None


def error_class(exc: BaseException) -> str:
    """The name ``exc`` crosses the boundary as (``Internal`` for anything unexpected)."""
    return next((c.__name__ for c in type(exc).__mro__ if c.__name__ in _ERRORS), "Internal")


def error_to_flight(exc: BaseException) -> flight.FlightError:
    """``exc`` (raised in a worker) as a Flight error the front can turn back into it."""
    name = error_class(exc)
    detail = json.dumps({"class": name, "message": str(exc)}).encode()
    return flight.FlightServerError(str(exc), extra_info=detail)


def error_from_flight(exc: flight.FlightError) -> Exception | None:
    """The service error a worker sent, or None when ``exc`` did not come from
    :func:`error_to_flight` (the worker died, the socket broke)."""
    try:
        raw = json.loads(exc.extra_info or b"")
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("message"), str):
        return None
    message, cls = raw["message"], _ERRORS.get(str(raw.get("class")))
    error: Exception = (
        flight.FlightInternalError(f"the engine failed: {message}") if cls is None else cls(message)
    )
    return error
