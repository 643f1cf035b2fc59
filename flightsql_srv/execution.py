"""Engine work for one call, from admission to the audit record: planning for GetFlightInfo,
and a DoGet's query from its first batch to the end of its stream. The work itself runs in an
engine worker (:mod:`flightsql_srv.workers`); this module decides what to ask and records
what happened."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.flight as flight

from flightsql_srv.audit import Auditor, QueryRecord
from flightsql_srv.query import Query
from flightsql_srv.workers.pool import EnginePool
from flightsql_srv.workers.protocol import FinishReply, PlanReply, WorkRequest

__all__ = ["Executor"]

#: Outcomes an audit record may have; a worker's end (a kill reason) becomes "error".
_OUTCOMES = {"ok", "error", "timeout", "cancelled", "disconnected"}
#: Seconds and entries of the plan schemas kept for repeated GetFlightInfo/prepare calls.
_PLAN_TTL_S = 30.0
_PLAN_CACHE_SIZE = 512
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

    def plan(
        self,
        query: Query,
        key: str,
        query_id: str,
        context: flight.ServerCallContext | None = None,
        fixed_partitions: bool = False,
    ) -> PlanReply:
        """Plan ``query`` in a worker: its result schema and fixed partition count.

        A plan made moments ago for the same query (ADBC prepares, then asks for the
        FlightInfo of the same statement) is reused while the catalog is the same."""
        request = WorkRequest(query_id, query, fixed_partitions, timeout=self.query_timeout)
        cache_key = None if fixed_partitions else (self.pool.generation, request.key())
        cached = self._plans.get(cache_key) if cache_key else None
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        lease = self.pool.lease(key, query_id, self.query_timeout, context)
        reply = self.pool.plan(lease, request)
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
        try:
            lease = self.pool.lease(key, record.query_id, self.query_timeout, context, cancelled)
        except Exception as exc:
            record.outcome, record.error_class = "rejected", type(exc).__name__
            on_close()
            self.auditor.finish(record)
            raise
        leased = time.monotonic()
        lease.on_done = lambda reply: self._finish(record, reply, on_close, leased)
        request = WorkRequest(
            record.query_id, query, partition=partition, timeout=self.query_timeout
        )
        schema, stream = self.pool.execute(lease, request)
        record.first_batch_s = time.monotonic() - record.started
        # A stream that is never read (the client gave up while the first batch was being
        # computed) never runs its own clean-up: finish when it is collected instead.
        weakref.finalize(stream, self.pool.finish, lease)
        return schema, stream

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
