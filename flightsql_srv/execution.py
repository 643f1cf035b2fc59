"""One DoGet from start to end: admission, planning, first batch, streaming, and the audit
record, with cancellation (CancelFlightInfo, shutdown) and the query timeout enforced."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent import futures

import pyarrow as pa
import pyarrow.flight as flight

from flightsql_srv.admission import Admission
from flightsql_srv.audit import Auditor, QueryRecord
from flightsql_srv.batches import byte_size
from flightsql_srv.engine import Plan

__all__ = ["Executor"]


class Executor:
    """Runs planned queries under the server's limits.

    Args:
        admission: the concurrency limit and wait queue.
        auditor: receives every finished query's record.
        query_timeout: seconds a query may run (0: no limit).
    """

    def __init__(self, admission: Admission, auditor: Auditor, query_timeout: float) -> None:
        self.admission = admission
        self.auditor = auditor
        self.query_timeout = query_timeout
        # Fetching the first batch happens here so that a query which produces nothing for
        # longer than the timeout can still be answered with DEADLINE_EXCEEDED.
        self._pool = futures.ThreadPoolExecutor(thread_name_prefix="first-batch")

    def run(
        self,
        record: QueryRecord,
        plan: Callable[[], Plan],
        cancelled: threading.Event,
        on_close: Callable[[], None],
    ) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """Admit, plan and start the query; returns its schema and batches.

        Errors before the first batch are raised here (and audited); later ones end the
        stream. ``on_close`` runs exactly once, when the query is over for good.
        """
        try:
            self.admission.acquire()
        except Exception as exc:
            self._close(record, exc, on_close, admitted=False)
            raise
        deadline = time.monotonic() + self.query_timeout if self.query_timeout else None
        try:
            planned = plan()
            record.plan_s = time.monotonic() - record.started
            job = self._pool.submit(planned.execute)
            try:
                schema, batches = job.result(
                    timeout=None if deadline is None else max(0.0, deadline - time.monotonic())
                )
            except futures.TimeoutError:
                # The engine cannot be interrupted mid-batch: it finishes in the background
                # and only then frees its slot.
                job.add_done_callback(lambda _: self._finish(record, on_close))
                record.outcome, record.error_class = "timeout", "DEADLINE_EXCEEDED"
                raise flight.FlightTimedOutError(self._timeout_message()) from None
            record.first_batch_s = time.monotonic() - record.started
        except flight.FlightTimedOutError:
            raise
        except Exception as exc:
            self._close(record, exc, on_close, admitted=True)
            raise
        finish = _Once(lambda: self._finish(record, on_close))
        stream = self._stream(record, batches, cancelled, deadline, finish)
        # A stream that is never read (the client gave up while the first batch was being
        # computed) never runs its own clean-up: finish when it is collected instead.
        weakref.finalize(stream, finish)
        return schema, stream

    def _timeout_message(self) -> str:
        return (
            f"query exceeded query_timeout ({self.query_timeout:g} s); narrow it or ask the "
            "operator to raise the limit"
        )

    def _stream(
        self,
        record: QueryRecord,
        batches: Iterator[pa.RecordBatch],
        cancelled: threading.Event,
        deadline: float | None,
        finish: Callable[[], None],
    ) -> Iterator[pa.RecordBatch]:
        try:
            for batch in batches:
                if cancelled.is_set():
                    record.outcome, record.error_class = "cancelled", "CANCELLED"
                    raise flight.FlightCancelledError("the query was cancelled")
                if deadline is not None and time.monotonic() > deadline:
                    record.outcome, record.error_class = "timeout", "DEADLINE_EXCEEDED"
                    raise flight.FlightTimedOutError(self._timeout_message())
                record.rows += batch.num_rows
                record.bytes += byte_size(batch)
                yield batch
            record.outcome = "ok"
        except (flight.FlightCancelledError, flight.FlightTimedOutError):
            raise
        except Exception as exc:
            record.outcome, record.error_class = "error", type(exc).__name__
            raise
        finally:
            finish()

    def _close(
        self,
        record: QueryRecord,
        exc: BaseException,
        on_close: Callable[[], None],
        admitted: bool,
    ) -> None:
        record.outcome = "rejected" if not admitted else "error"
        record.error_class = type(exc).__name__
        if admitted:
            self._finish(record, on_close)
        else:
            on_close()
            self.auditor.finish(record)

    def _finish(self, record: QueryRecord, on_close: Callable[[], None]) -> None:
        if record.outcome == "running":
            record.outcome = "disconnected"  # the stream ended before it was read through
        self.admission.release()
        on_close()
        self.auditor.finish(record)


class _Once:
    """Calls ``action`` the first time it is called, never again (thread-safe)."""

    def __init__(self, action: Callable[[], None]) -> None:
        self._action: Callable[[], None] | None = action
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            action, self._action = self._action, None
        if action is not None:
            action()
