"""Engine work for one call, from admission to the audit record: planning for GetFlightInfo,
and a DoGet's query from its first batch to the end of its stream. The work itself runs in an
engine worker (:mod:`flightsql_srv.workers`); this module decides what to ask and records
what happened."""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.flight as flight

from flightsql_srv.audit import Auditor, QueryRecord
from flightsql_srv.errors import Overloaded
from flightsql_srv.query import Query
from flightsql_srv.workers.deaths import outcome_of
from flightsql_srv.workers.pool import EnginePool
from flightsql_srv.workers.protocol import FinishReply, PlanReply, WorkRequest

__all__ = ["Executor", "ReadyResults"]

#: Outcomes an audit record may have; a worker's end (a kill reason) becomes "error".
_OUTCOMES = {"ok", "error", "timeout", "cancelled", "disconnected"}
#: Seconds and entries of the plan schemas kept for repeated GetFlightInfo/prepare calls.
_PLAN_TTL_S = 30.0
_PLAN_CACHE_SIZE = 512
#: Results run at GetFlightInfo come back whole up to this size (bytes) and wait for their
#: DoGet, all of them together at most _READY_BYTES, each at most _READY_TTL_S seconds.
_INLINE_BYTES = 1 << 20
_READY_BYTES = 64 << 20
_READY_TTL_S = 60.0
#: The error class audit records give these outcomes (the gRPC status).
_STATUS = {"timeout": "DEADLINE_EXCEEDED", "cancelled": "CANCELLED"}


class Executor:
    """Runs engine work under the server's limits.

    Args:
        pool: the engine workers (and the admission they are leased under).
        auditor: receives every finished query's record.
        query_timeout: seconds a query may run (0: no limit).
    """

    def __init__(self, pool: EnginePool, auditor: Auditor, query_timeout: float) -> None:
        self.pool = pool
        self.auditor = auditor
        self.query_timeout = query_timeout
        self._plans: dict[tuple[int, bytes], tuple[float, PlanReply]] = {}
        self._plans_lock = threading.Lock()
        self._ready = ReadyResults(_READY_TTL_S, _READY_BYTES, _INLINE_BYTES)

    def plan(
        self,
        query: Query,
        key: str,
        query_id: str,
        context: flight.ServerCallContext | None = None,
        fixed_partitions: bool = False,
        run: bool = False,
    ) -> PlanReply:
        """Plan ``query`` in a worker: its result schema and fixed partition count.

        With ``run``, the worker also runs it, so that the DoGet of ``query_id`` finds it
        started: a small result comes back whole and waits here (one round trip to a worker
        for the whole query), a larger one waits in the worker (see :meth:`EnginePool.plan`).

        Without, a plan made moments ago for the same query (ADBC prepares, then asks for
        the FlightInfo of the same statement) is reused while the catalog is the same."""
        budget = self._ready.budget() if run else -1
        request = WorkRequest(
            query_id, query, fixed_partitions, timeout=self.query_timeout, run_inline=budget
        )
        # A run is never cached: what it started belongs to its query id.
        cache_key = None if fixed_partitions or run else (self.pool.generation, request.key())
        cached = self._plans.get(cache_key) if cache_key else None
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        lease = self.pool.lease(key, query_id, self.query_timeout, context)
        reply, result = self.pool.plan(lease, request)
        if result is not None:
            self._ready.put(query_id, request.key(), result)
        if cache_key is not None:
            with self._plans_lock:
                self._plans[cache_key] = (time.monotonic() + _PLAN_TTL_S, reply)
                while len(self._plans) > _PLAN_CACHE_SIZE:
                    self._plans.pop(next(iter(self._plans)))
        return reply

    def run(
        self,
        record: QueryRecord,
        query: Query,
        partition: tuple[int, int, int] | None,
        key: str,
        cancelled: threading.Event,
        on_close: Callable[[], None],
        context: flight.ServerCallContext | None = None,
    ) -> tuple[pa.Schema, Iterator[flight.FlightDataStream]]:
        """Admit and start the query; returns its schema and the stream to send.

        Errors before the first batch are raised here (and audited); later ones end the
        stream. ``on_close`` runs exactly once, when the query is over for good.
        """
        request = WorkRequest(
            record.query_id, query, partition=partition, timeout=self.query_timeout
        )
        # What ran at GetFlightInfo serves only the same query (DoGet's own headers may add
        # a range or a limit the ticket does not carry).
        result = self._ready.take(record.query_id, request.key())
        if result is not None:
            return result.schema, self._send(record, result, on_close)
        try:
            lease = self.pool.claim(record.query_id, request.key(), context, cancelled)
            if lease is not None:
                record.plan_s = 0.0  # planned (and started) at GetFlightInfo
            else:
                lease = self.pool.lease(
                    key, record.query_id, self.query_timeout, context, cancelled
                )
        except Exception as exc:
            record.outcome, record.error_class = "rejected", type(exc).__name__
            on_close()
            self.auditor.finish(record)
            raise
        leased = time.monotonic()
        lease.on_done = lambda reply: self._finish(record, reply, on_close, leased)
        schema, stream = self.pool.execute(lease, request)
        record.first_batch_s = time.monotonic() - record.started
        # A stream that is never read (the client gave up while the first batch was being
        # computed) never runs its own clean-up: finish when it is collected instead.
        weakref.finalize(stream, self.pool.finish, lease)
        return schema, stream

    def failed(self, record: QueryRecord, error: Exception) -> None:
        """Audit a query that failed at its GetFlightInfo (where it was planned and run)."""
        rejected = isinstance(error, Overloaded)
        record.outcome, record.error_class = (
            ("rejected", type(error).__name__) if rejected else outcome_of(error)
        )
        self.auditor.finish(record)

    def discard(self, query_id: str) -> None:
        """Forget a result run at GetFlightInfo (its query was cancelled)."""
        self._ready.take(query_id, b"")
        self.pool.drop(query_id)

    def _send(
        self, record: QueryRecord, result: pa.Table, on_close: Callable[[], None]
    ) -> Iterator[flight.FlightDataStream]:
        """A DoGet of a result that came whole with its plan: sent from here, in C++."""
        record.plan_s = 0.0  # planned (and run) at GetFlightInfo
        record.first_batch_s = time.monotonic() - record.started
        ended: list[str] = []

        def end(outcome: str) -> None:
            if not ended:
                ended.append(outcome)
                reply = FinishReply(outcome, result.num_rows, result.nbytes)
                self._finish(record, reply, on_close, record.started)

        def stream() -> Iterator[flight.FlightDataStream]:
            outcome = "disconnected"
            try:
                yield flight.RecordBatchStream(result)
                outcome = "ok"
            finally:
                end(outcome)

        batches = stream()
        weakref.finalize(batches, end, "disconnected")  # a stream never started
        return batches

    def _finish(
        self,
        record: QueryRecord,
        reply: FinishReply,
        on_close: Callable[[], None],
        leased: float,
    ) -> None:
        if reply.outcome in _OUTCOMES:
            record.outcome = reply.outcome
            record.error_class = _STATUS.get(reply.outcome, reply.error_class)
        else:  # the worker was stopped or crashed: the reason is the class
            record.outcome, record.error_class = "error", reply.error_class or reply.outcome
        record.rows, record.bytes = reply.rows, reply.nbytes
        if reply.plan_s:
            record.plan_s = leased - record.started + reply.plan_s
        on_close()
        self.auditor.finish(record)


class ReadyResults:
    """Whole results of queries run at GetFlightInfo, kept for their DoGet (bounded in time
    and bytes: a client that never fetches costs at most ``max_bytes`` for ``ttl``)."""

    def __init__(self, ttl: float, max_bytes: int, each_bytes: int) -> None:
        self._ttl = ttl
        self._max_bytes = max_bytes
        self._each_bytes = each_bytes
        self._results: OrderedDict[str, tuple[float, bytes, pa.Table]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def budget(self) -> int:
        """The largest result that may come whole now (0 when the room is taken)."""
        with self._lock:
            self._expire(time.monotonic())
            return max(0, min(self._each_bytes, self._max_bytes - self._bytes))

    def put(self, query_id: str, key: bytes, result: pa.Table) -> None:
        """Keep the result of ``query_id``, run for the request whose key is ``key``."""
        with self._lock:
            self._results[query_id] = (time.monotonic() + self._ttl, key, result)
            self._bytes += result.nbytes

    def take(self, query_id: str, key: bytes) -> pa.Table | None:
        """The result of ``query_id``, once, if it was run for the same request (else it
        is forgotten)."""
        with self._lock:
            entry = self._results.pop(query_id, None)
            if entry is None:
                return None
            expires, ran_for, result = entry
            self._bytes -= result.nbytes
            return result if expires > time.monotonic() and ran_for == key else None

    def _expire(self, now: float) -> None:
        while self._results:
            query_id, (expires, _, result) = next(iter(self._results.items()))
            if expires > now:
                return
            del self._results[query_id]
            self._bytes -= result.nbytes
