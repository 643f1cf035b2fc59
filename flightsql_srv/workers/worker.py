"""An engine worker process: a Flight server on a Unix socket that plans and runs one query at
a time on its own DataFusion engine.

The front leases a worker for one query, so whatever that query does to the process (a stack
overflow, a runaway allocation, a batch that never ends) costs only that query: the front
kills the process and starts another. Inside, the worker checks the query's deadline and a
cancel request between batches (a clean error for the client); the front's kill is the
backstop for the time in between.

A result stream whose reader stops reading for ``stall_timeout`` seconds ends the process
(exit code :data:`EXIT_STALLED`): nothing else would free the slot it holds.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent import futures
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from flightsql_srv.batches import byte_size
from flightsql_srv.catalog import SchemaDecl
from flightsql_srv.config import Settings
from flightsql_srv.engine import Engine, Plan
from flightsql_srv.errors import ServiceError
from flightsql_srv.observability import configure_logging
from flightsql_srv.query import Query
from flightsql_srv.workers.protocol import (
    CANCEL,
    DROP,
    FINISH,
    INLINE,
    PARKED,
    PLAN,
    PROBE,
    FinishReply,
    PlanReply,
    WorkRequest,
    error_class,
    error_to_flight,
    write_inline,
)

__all__ = ["main", "plan_query", "EXIT_STALLED"]

log = logging.getLogger("flightsql_srv.worker")

#: Exit status of a worker that ended a stream nobody read.
EXIT_STALLED = 3
_PR_SET_PDEATHSIG = 1
#: How long GetFlightInfo waits for a query it started to be over (then its result comes
#: with the reply); a longer one goes on while the client gets its FlightInfo, so that it
#: can cancel it (CancelFlightInfo) or fetch it.
EARLY_WAIT_S = 0.25
_Starter = Callable[[WorkRequest, Plan], tuple["_Stream", pa.Schema, Iterator[pa.RecordBatch]]]


def plan_query(engine: Engine, request: WorkRequest) -> Plan:
    """Plan a request's query (SQL or Substrait) on ``engine``."""
    query: Query = request.query
    if query.substrait is not None:
        plan = engine.plan_substrait(
            query.substrait,
            query.options,
            limit=query.limit,
            grafana=query.grafana,
            visible=query.visible,
        )
    else:
        plan = engine.plan(
            query.sql,
            query.params,
            query.options,
            bounds=query.bounds,
            limit=query.limit,
            grafana=query.grafana,
            visible=query.visible,
            explain_paths=query.explain_paths,
            fixed_partitions=request.fixed_partitions or request.partition is not None,
        )
    return replace(plan, partition=request.partition) if request.partition else plan


class _Stream:
    """The result stream of the query a worker runs, with its stop conditions."""

    def __init__(self, request: WorkRequest) -> None:
        self.deadline = time.monotonic() + request.timeout if request.timeout else None
        self.timeout = request.timeout
        self.cancelled = threading.Event()
        self.done = threading.Event()
        #: When the last batch was handed to gRPC and not yet taken (None: not waiting).
        self.waiting_since: float | None = None
        self.finish = FinishReply("running", 0, 0)
        self.plan_s = 0.0

    def batches(self, batches: Iterator[pa.RecordBatch]) -> Generator[pa.RecordBatch, None, None]:
        """``batches``, stopped by a cancel or the deadline; a failure ends the stream
        cleanly and is reported by :attr:`finish`, so the front answers the client with
        its status code (see :class:`FinishReply`)."""
        rows = size = 0
        outcome, failure = "disconnected", None
        try:
            for batch in batches:
                if self.cancelled.is_set():
                    outcome, failure = (
                        "cancelled",
                        flight.FlightCancelledError("the query was cancelled"),
                    )
                    return
                if self.deadline is not None and time.monotonic() > self.deadline:
                    outcome, failure = (
                        "timeout",
                        flight.FlightTimedOutError(
                            f"query exceeded query_timeout ({self.timeout:g} s); narrow it or ask "
                            "the operator to raise the limit"
                        ),
                    )
                    return
                rows += batch.num_rows
                size += byte_size(batch)
                self.waiting_since = time.monotonic()
                yield batch
                self.waiting_since = None
            outcome = "ok"
        except Exception as exc:
            outcome, failure = "error", exc
        finally:
            self.waiting_since = None
            # Arrow's allocator keeps freed pages for reuse; between queries they are idle.
            pa.default_memory_pool().release_unused()
            self.finish = FinishReply(
                outcome,
                rows,
                size,
                error_class(failure) if failure is not None else "",
                str(failure) if failure is not None else "",
                self.plan_s,
            )
            self.done.set()


class _Early:
    """A query run from its GetFlightInfo, for the DoGet of the same query id: a thread
    starts it and reads batches until the result is over or larger than the reply may
    carry; a larger one (or one still running when the reply is due) waits here."""

    def __init__(
        self, request: WorkRequest, plan: Plan, start: _Starter, runner: futures.Executor
    ) -> None:
        self.query_id = request.query_id
        self.budget = request.run_inline
        self.taken: list[pa.RecordBatch] = []
        self.error: BaseException | None = None
        #: Set once ``taken`` holds the whole result, more than the budget, or an error.
        self.ready = threading.Event()
        self.complete = False
        self._stream: _Stream | None = None
        self._rest: Generator[pa.RecordBatch, None, None] | None = None
        self._schema = plan.schema
        runner.submit(self._read, request, plan, start)

    def _read(self, request: WorkRequest, plan: Plan, start: _Starter) -> None:
        try:
            self._stream, self._schema, batches = start(request, plan)
            self._rest = self._stream.batches(batches)
            size = 0
            for batch in self._rest:
                self.taken.append(batch)
                size += byte_size(batch)
                if size > self.budget:
                    self._stream.waiting_since = None  # not stalled: its DoGet comes
                    return
            self.complete = True
            self.error = self._stream.finish.error()
        except Exception as exc:
            self.error = exc
        finally:
            self.ready.set()

    def inline(self) -> pa.Buffer:
        """The whole result as the Arrow IPC stream the reply carries."""
        return write_inline(self._schema, self.taken)

    def resume(self) -> flight.GeneratorStream:
        """The result stream, for the DoGet (waits until the first batches are read)."""
        self.ready.wait()
        if self.error is not None:
            raise self.error
        return flight.GeneratorStream(self._schema, self._batches())

    def _batches(self) -> Iterator[pa.RecordBatch]:
        stream, rest = self._stream, self._rest
        assert stream is not None and rest is not None
        try:
            for batch in self.taken:
                stream.waiting_since = time.monotonic()
                yield batch
            stream.waiting_since = None
            yield from rest
        finally:
            rest.close()

    def drop(self) -> bool:
        """End a result nobody will fetch; False while the engine still works on it (the
        front then kills the worker: nothing else stops it)."""
        if not self.ready.is_set():
            return False
        if self._rest is not None:
            self._rest.close()
        return True

    def abandon(self) -> None:
        """End it once the engine is done with it (the front drops a result before the
        worker runs another query, so this is not expected)."""
        self.ready.wait()
        self.drop()


class EngineWorker(flight.FlightServerBase):  # type: ignore[misc]
    """The worker's Flight server (see the module docstring)."""

    def __init__(self, location: str, engine: Engine, stall_timeout: float) -> None:
        self.engine = engine
        self.stall_timeout = stall_timeout
        self.current: _Stream | None = None
        self.early: _Early | None = None
        # One thread runs what GetFlightInfo starts (a query at a time: the front leases
        # the worker for one), kept rather than started per query.
        self._runner = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="early")
        super().__init__(location)

    def do_action(self, context: flight.ServerCallContext, action: flight.Action) -> list[bytes]:
        body = action.body.to_pybytes() if action.body is not None else b""
        try:
            return self._action(action.type, body)
        except ServiceError as exc:  # some are Flight errors too: they cross by class name
            raise error_to_flight(exc) from None
        except flight.FlightError:
            raise
        except Exception as exc:
            raise error_to_flight(exc) from None

    def _action(self, kind: str, body: bytes) -> list[Any]:
        if kind == PLAN:
            request = WorkRequest.decode(body)
            plan = plan_query(self.engine, request)
            if request.run_inline >= 0:
                return self._run_early(request, plan)
            partitions = plan.partitions() if request.fixed_partitions else 1
            return [PlanReply(plan.schema, partitions).encode()]
        if kind == PROBE:
            self.engine.probe()
            return [b"{}"]
        if kind == CANCEL:
            if self.current is not None:
                self.current.cancelled.set()
            return [b"{}"]
        if kind == DROP:
            early, self.early = self.early, None
            return [json.dumps({"dropped": early is not None and early.drop()}).encode()]
        if kind == FINISH:
            current = self.current
            if current is None:
                return [FinishReply("ok", 0, 0).encode()]
            if not current.done.wait(float(body or b"1")):
                return [FinishReply("running", 0, 0).encode()]
            return [current.finish.encode()]
        raise NotImplementedError(f"unknown worker action {kind!r}")

    def do_get(
        self, context: flight.ServerCallContext, ticket: flight.Ticket
    ) -> flight.FlightDataStream:
        try:
            request = WorkRequest.decode(ticket.ticket)
            early, self.early = self.early, None
            if early is not None and early.query_id == request.query_id:
                return early.resume()
            if early is not None:
                early.abandon()
            stream, schema, batches = self._start(request)
        except Exception as exc:
            raise error_to_flight(exc) from None
        return flight.GeneratorStream(schema, stream.batches(batches))

    def _start(
        self, request: WorkRequest, plan: Plan | None = None
    ) -> tuple[_Stream, pa.Schema, Iterator[pa.RecordBatch]]:
        """Plan (unless planned already) and start running ``request``: the first batch is
        ready when this returns."""
        stream = self.current = _Stream(request)
        try:
            started = time.monotonic()
            plan = plan or plan_query(self.engine, request)
            stream.plan_s = time.monotonic() - started
            schema, batches = plan.execute()
        except Exception as exc:
            stream.finish = FinishReply("error", 0, 0, error_class(exc), str(exc))
            stream.done.set()
            raise
        return stream, schema, batches

    def _run_early(self, request: WorkRequest, plan: Plan) -> list[Any]:
        """Start a planned query at GetFlightInfo (see :class:`_Early`): a small result that
        is over within :data:`EARLY_WAIT_S` comes with the reply, anything else waits."""
        if self.early is not None:
            self.early.abandon()
        early = _Early(request, plan, self._start, self._runner)
        if early.ready.wait(EARLY_WAIT_S) and early.complete and early.error is None:
            return [PlanReply(plan.schema, 1, INLINE).encode(), flight.Result(early.inline())]
        if early.ready.is_set() and early.error is not None:
            raise error_to_flight(early.error)
        self.early = early
        return [PlanReply(plan.schema, 1, PARKED).encode()]

    def watch_stalls(self) -> None:
        """End the process when a result stream has not been read for ``stall_timeout``."""
        while True:
            time.sleep(min(1.0, self.stall_timeout / 4))
            current = self.current
            since = current.waiting_since if current is not None else None
            if since is not None and time.monotonic() - since > self.stall_timeout:
                log.warning(
                    "result stream not read: ending the worker to free its slot",
                    extra={"fields": {"stall_timeout": self.stall_timeout}},
                )
                os._exit(EXIT_STALLED)


def _die_with_front(front: int) -> None:
    """Exit when the front does, however it ended (even killed): our parent is the fork
    server, which outlives a killed front while it has children, so watch the front."""
    try:  # the fork server's end, on Linux
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(front, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                pass  # alive, under another user (not expected, harmless)

    threading.Thread(target=watch, name="front-watch", daemon=True).start()


def main(socket_path: str, settings: Settings, schemas: list[SchemaDecl], **options: Any) -> None:
    """Run a worker until it is killed. ``options``: ``stall_timeout`` (seconds), ``env``
    (the front's environment) and ``front`` (its pid)."""
    _die_with_front(options["front"])
    os.environ.clear()
    os.environ.update(options["env"])
    # The terminal's Ctrl-C reaches the whole process group; the front decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(settings.log_level, settings.log_format)
    engine = Engine(settings, schemas)
    server = EngineWorker(
        flight.Location.for_grpc_unix(socket_path), engine, options["stall_timeout"]
    )
    threading.Thread(target=server.watch_stalls, name="stall-watch", daemon=True).start()
    server.serve()
