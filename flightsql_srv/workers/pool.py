"""The front's side of the engine workers: start them, lease one per query, watch them, and
replace one that crashed or had to be killed.

A lease is one query's hold on one worker, from admission to the end of its result stream.
The supervisor thread checks every lease each tick: the query's deadline, CancelFlightInfo,
a client that went away while the engine was still planning or computing the first batch,
and the memory the worker gained since it started (the sum over all workers must stay under
``memory_limit``). A worker that crosses one is killed, which no query can resist; the query
it ran is answered with the reason, and every other worker goes on.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from flightsql_srv.admission import Admission
from flightsql_srv.catalog import SchemaDecl
from flightsql_srv.config import Settings
from flightsql_srv.errors import Overloaded
from flightsql_srv.workers import worker as worker_process
from flightsql_srv.workers.deaths import death_error, exit_reason, outcome_of
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
    WorkerProtocolError,
    WorkRequest,
    error_from_flight,
    read_inline,
)

__all__ = ["EnginePool", "Lease", "memory_of"]

log = logging.getLogger("flightsql_srv.workers")

_TICK_S = 0.025
#: How often idle workers are checked (alive, memory kept).
_IDLE_CHECK_S = 0.25
#: How long a worker gets to end a query on its own (cancel, deadline between batches, a
#: reader that went away) before it is killed.
_GRACE_S = 1.0
_START_TIMEOUT_S = 120.0
#: Idle workers a health probe asks before it gives up (each may be taken meanwhile).
_PROBE_ATTEMPTS = 3
#: How long the question "how did the stream end" may wait in the worker (a stream lasts at
#: most query_timeout; without one, this).
_STREAM_WAIT_S = 7 * 86400.0
#: A worker idle this long that holds more than half of worker_recycle_memory above its
#: start is replaced (not sooner: a fresh worker costs a fork and cold caches, and
#: dashboards come back every few seconds); one holding more than all of it is replaced
#: when its query ends: under steady load a worker is never idle.
_IDLE_RECYCLE_S = 30.0
#: Seconds a result run at GetFlightInfo waits in its worker for the DoGet (clients ask for
#: it at once); then the worker is freed, and a later DoGet runs the query again.
PARK_S = 5.0
_PAGE = os.sysconf("SC_PAGE_SIZE")
#: gRPC options of the front's calls to its workers: the largest HTTP/2 frames, so a batch
#: crosses the local hop in a few frames rather than in 16 KiB ones (a third less CPU in the
#: worker on a full scan, see docs/architecture.md).
_LOCAL_HOP = [("grpc.http2.max_frame_size", (1 << 24) - 1)]
_context = multiprocessing.get_context("forkserver")
# Workers fork from a server that has imported the engine once: a new worker is ready in a
# fraction of a second instead of paying for Python, pyarrow and DataFusion imports.
_context.set_forkserver_preload(["flightsql_srv.workers.worker"])


def memory_of(pid: int) -> int:
    """Anonymous resident bytes of a process (what queries allocate; shared library pages
    are left out, they are the same pages in every worker). 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            fields = f.read().split()
    except OSError:
        return 0
    return (int(fields[1]) - int(fields[2])) * _PAGE


@dataclass(eq=False)
class _Worker:
    number: int
    generation: int
    process: BaseProcess
    path: str
    client: flight.FlightClient | None = None
    #: Anonymous resident bytes once ready: what the worker holds before any query.
    baseline: int = 0
    lease: Lease | None = None
    kill_reason: str | None = None
    idle_since: float = 0.0
    #: :meth:`usage` while idle: what earlier queries left (measured at every idle check).
    kept: int = 0

    def usage(self) -> int:
        return max(0, memory_of(self.process.pid or 0) - self.baseline)


@dataclass(eq=False)
class Lease:
    """One query's hold on one worker."""

    worker: _Worker
    key: str
    query_id: str
    deadline: float | None
    context: flight.ServerCallContext | None
    cancelled: threading.Event | None
    #: planning, parked (a result waits for its DoGet), dropping, starting (until the first
    #: batch), streaming, finishing, ended.
    phase: str = "planning"
    parked_until: float = 0.0
    #: The :meth:`WorkRequest.key` of a parked query (its DoGet must ask for the same).
    request_key: bytes = b""
    kill_at: float | None = None
    kill_reason: str = ""
    cancel_sent: bool = False
    on_done: Callable[[FinishReply], None] = field(default=lambda reply: None)
    #: The worker's answer to "how did the stream end", asked as the stream starts.
    ending: futures.Future[list[bytes]] | None = None


class EnginePool:
    """``size`` engine worker processes over one catalog, and the supervisor that watches them.

    Args:
        settings: the service settings (memory_limit, query_timeout, stall_timeout...).
        schemas: the catalog every worker registers.
        admission: the query slots (a lease holds one).
        size: how many workers run.
        on_restart: called with the reason each time a worker is replaced.
    """

    def __init__(
        self,
        settings: Settings,
        schemas: list[SchemaDecl],
        admission: Admission,
        size: int,
        on_restart: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._settings = settings
        self._schemas = schemas
        self.admission = admission
        self.size = size
        self._on_restart = on_restart
        self._memory_limit = settings.memory_limit_bytes
        self._recycle_bytes = settings.worker_recycle_bytes
        self._dir = tempfile.mkdtemp(prefix="flightsql-srv-workers-")
        self._cond = threading.Condition()
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []
        #: Leases of results run at GetFlightInfo that wait for their DoGet, by query id.
        self._parked: dict[str, Lease] = {}
        self._starting = 0
        self._generation = 0
        self._spawned = 0
        self._stopping = False
        self._idle_checked = 0.0
        self._helpers = futures.ThreadPoolExecutor(thread_name_prefix="worker-calls")
        # One waiting call per running stream (see execute).
        self._endings = futures.ThreadPoolExecutor(
            max_workers=max(4, 2 * size), thread_name_prefix="worker-endings"
        )
        self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start every worker and wait until each answers.

        Raises:
            RuntimeError: a worker could not start (its error is in the log).
        """
        started = [self._spawn(n) for n in range(self.size)]
        for worker in started:
            self._await_ready(worker)
        self._supervisor.start()

    def stop(self) -> None:
        """Kill every worker (in-flight queries have been drained or cancelled by now)."""
        with self._cond:
            self._stopping = True
            workers = list(self._workers)
            self._cond.notify_all()
        for worker in workers:
            worker.kill_reason = worker.kill_reason or "stopped"
            worker.process.kill()
        for worker in workers:
            worker.process.join(5)
        self._helpers.shutdown(wait=False, cancel_futures=True)
        self._endings.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self._dir, ignore_errors=True)

    def reload(self, schemas: list[SchemaDecl]) -> None:
        """Serve a new catalog: idle workers are replaced now, busy ones after their query."""
        with self._cond:
            self._schemas = schemas
            self._generation += 1
            stale = list(self._idle)
        for worker in stale:
            self._retire(worker, "reload")

    def _spawn(self, number: int) -> _Worker:
        with self._cond:
            self._spawned += 1
            path = os.path.join(self._dir, f"w{number}-{self._spawned}.sock")
            process = _context.Process(
                target=worker_process.main,
                args=(path, self._settings, self._schemas),
                # The fork server keeps the environment it started with; object store
                # credentials and the like must be the front's as of now.
                kwargs={
                    "stall_timeout": self._settings.stall_timeout,
                    "env": dict(os.environ),
                    "front": os.getpid(),
                },
                name=f"flightsql-srv-worker-{number}",
                daemon=True,
            )
            worker = _Worker(number, self._generation, process, path)
            process.start()
            self._workers.append(worker)
            self._starting += 1
        return worker

    def _await_ready(self, worker: _Worker) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        try:
            while True:
                if not worker.process.is_alive():
                    raise RuntimeError(
                        f"engine worker {worker.number} exited while starting "
                        f"(exit code {worker.process.exitcode}); see its log lines above"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"engine worker {worker.number} did not start in {_START_TIMEOUT_S:g} s"
                    )
                if os.path.exists(worker.path) and self._answers(worker):
                    break
                time.sleep(0.01)
        except RuntimeError:
            with self._cond:
                self._starting -= 1
            worker.kill_reason = "failed to start"
            worker.process.kill()
            raise
        worker.baseline = memory_of(worker.process.pid or 0)
        with self._cond:
            self._starting -= 1
            worker.idle_since = time.monotonic()
            self._idle.append(worker)
            self._cond.notify()

    @staticmethod
    def _answers(worker: _Worker) -> bool:
        try:
            client = worker.client or flight.connect(
                f"grpc+unix://{worker.path}", generic_options=_LOCAL_HOP
            )
            worker.client = client
            list(client.do_action(flight.Action(PROBE, b""), _options(10.0)))
            return True
        except (flight.FlightError, pa.ArrowException):
            return False

    def _replace(self, worker: _Worker) -> None:
        """Start a worker in ``worker``'s place (in the background)."""
        if self._stopping:
            return
        replacement = self._spawn(worker.number)

        def wait() -> None:
            try:
                self._await_ready(replacement)
            except RuntimeError as exc:
                log.error("engine worker did not start", extra={"fields": {"error": str(exc)}})
                time.sleep(1.0)  # a catalog that cannot load: do not spin
                with self._cond:
                    if replacement in self._workers:
                        self._workers.remove(replacement)
                self._replace(replacement)

        threading.Thread(target=wait, name="worker-start", daemon=True).start()

    def _retire(self, worker: _Worker, reason: str) -> None:
        """Replace a worker that holds no lease: an idle one (unless a query took it just
        now), or one whose lease has just ended."""
        with self._cond:
            if worker in self._idle:
                self._idle.remove(worker)
            elif worker.lease is not None:
                return  # leased meanwhile: it is retired when that lease ends, if still due
            worker.kill_reason = worker.kill_reason or reason
        worker.process.kill()

    # -- leases ------------------------------------------------------------------------------

    def lease(
        self,
        key: str,
        query_id: str,
        timeout: float,
        context: flight.ServerCallContext | None = None,
        cancelled: threading.Event | None = None,
    ) -> Lease:
        """Take a query slot for ``key`` (a principal or peer) and an idle worker.

        Args:
            timeout: seconds the query may run from now (0: no limit).

        Raises:
            Overloaded: no slot or worker freed up within ``queue_timeout``.
        """
        self.admission.acquire(key)
        wait_until = time.monotonic() + self.admission.queue_timeout
        with self._cond:
            while not self._idle and not self._stopping:
                left = wait_until - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    if self._idle:
                        break
                    self.admission.release(key)
                    raise Overloaded(
                        "no engine worker became free within queue_timeout "
                        f"({self.admission.queue_timeout:g} s); retry later"
                    )
            if self._stopping:
                self.admission.release(key)
                raise flight.FlightUnavailableError("the server is shutting down; retry")
            worker = self._idle.pop()
            # Idle workers are checked every _IDLE_CHECK_S: one may have died since.
            while not worker.process.is_alive() and self._idle:
                worker = self._idle.pop()
            deadline = time.monotonic() + timeout if timeout else None
            lease = Lease(worker, key, query_id, deadline, context, cancelled)
            worker.lease = lease
        return lease

    def plan(self, lease: Lease, request: WorkRequest) -> tuple[PlanReply, pa.Table | None]:
        """Plan on the leased worker, and run when the request says so: returns the plan and,
        when the worker sent it along, the whole result.

        The lease ends here, unless the worker parked a larger result: then it is kept for
        :meth:`claim` (by the DoGet of the same query id) for at most :data:`PARK_S` seconds.
        """
        parked = False
        try:
            results = self._call(lease, PLAN, request.encode())
            reply: PlanReply = self._parse(lease, PlanReply.decode, results[:1])
            table: pa.Table | None = None
            if reply.result == INLINE:
                table = self._parse(lease, read_inline, results[1:])
            elif len(results) != 1:
                self._parse(lease, PlanReply.decode, results)  # refuses it
            if reply.result == PARKED:
                with self._cond:
                    parked = self._stopping is False
                    if parked:
                        lease.phase, lease.context = "parked", None
                        lease.request_key = request.key()
                        lease.parked_until = time.monotonic() + PARK_S
                        self._parked[lease.query_id] = lease
            return reply, table
        finally:
            if not parked:
                self._end(lease, FinishReply("planned", 0, 0))

    def claim(
        self,
        query_id: str,
        key: bytes,
        context: flight.ServerCallContext | None = None,
        cancelled: threading.Event | None = None,
    ) -> Lease | None:
        """The lease of a query whose result waits in its worker (see :meth:`plan`), taken
        for its DoGet if that asks for the same request (``key``, see
        :meth:`WorkRequest.key`); None when there is none (another replica planned it, it
        expired, or the DoGet asks for something else: then it is dropped)."""
        with self._cond:
            lease = self._parked.get(query_id)
            if lease is not None and lease.request_key == key:
                del self._parked[query_id]
                lease.phase, lease.context, lease.cancelled = "starting", context, cancelled
                return lease
        if lease is not None:
            self.drop(query_id)
        return None

    def drop(self, query_id: str) -> None:
        """Give up a parked result (its query was cancelled, or nobody fetched it in time)."""
        with self._cond:
            lease = self._parked.pop(query_id, None)
            if lease is not None:
                lease.phase = "dropping"
        if lease is not None:
            self._helpers.submit(self._drop, lease)

    def _drop(self, lease: Lease) -> None:
        try:
            results = self._call(lease, DROP, b"")
            dropped = len(results) == 1 and json.loads(results[0]) == {"dropped": True}
        except Exception:  # a worker that died or answered nonsense is replaced
            dropped = False
        if not dropped:  # the engine still works on it: nothing else stops it
            self.kill(lease.worker, "cancelled")
        self._end(lease, FinishReply("unclaimed", 0, 0))

    def execute(
        self, lease: Lease, request: WorkRequest
    ) -> tuple[pa.Schema, Iterator[flight.FlightDataStream]]:
        """Start the query on the leased worker: returns once its first batch is ready.

        The batches come as one :class:`flight.RecordBatchStream` over the worker's stream,
        read in C++; the lease ends when the client has read it, or stopped reading.
        """
        lease.phase = "starting"
        client = lease.worker.client
        assert client is not None
        try:
            reader = client.do_get(flight.Ticket(request.encode()), _options(0))
            schema = reader.schema
        except (flight.FlightError, pa.ArrowException) as exc:
            error = self._failure(lease, exc)
            outcome, error_class = outcome_of(error)
            self._end(lease, FinishReply(outcome, 0, 0, error_class))
            raise error from None
        lease.phase = "streaming"
        # Ask now how the stream will end: the worker answers as it ends, so the client's
        # end of stream does not wait for one more round trip.
        lease.ending = self._endings.submit(self._call, lease, FINISH, str(_STREAM_WAIT_S).encode())
        return schema, self._stream(lease, reader)

    def _stream(
        self, lease: Lease, reader: flight.FlightStreamReader
    ) -> Iterator[flight.FlightDataStream]:
        over = False
        try:
            yield flight.RecordBatchStream(reader.to_reader())
            over = True
            # Read through: how the stream ended in the worker decides what the client hears
            # (an error raised inside the stream would reach it as UNKNOWN).
            with self._cond:
                if lease.phase != "ended":  # the supervisor may have ended it already
                    lease.phase = "finishing"
            reply = self._finish_reply(lease, wait=_GRACE_S)
            self._end(lease, reply)
            error = reply.error()
            if error is not None:
                raise error
        finally:
            if not over:  # the client went away, or the stream broke
                self.finish(lease)

    def finish(self, lease: Lease) -> None:
        """The client is done with the stream (read through, failed or gone): let the worker
        finish in the background and take its slot back."""
        with self._cond:
            if lease.phase in ("finishing", "ended"):
                return
            lease.phase = "finishing"
        if self._stopping:
            self._end(lease, FinishReply("cancelled", 0, 0, "CANCELLED"))
            return
        self._helpers.submit(self._complete, lease)

    def _complete(self, lease: Lease) -> None:
        try:
            reply = self._finish_reply(lease, wait=_GRACE_S)
        except Exception:  # the worker died meanwhile, or answered nonsense
            reply = FinishReply("disconnected", 0, 0)
        self._end(lease, reply)

    def _finish_reply(self, lease: Lease, wait: float) -> FinishReply:
        """How the lease's stream ended, from the worker (asked when it started, see
        :meth:`execute`); a worker still running it after ``wait`` seconds is killed."""
        assert lease.ending is not None
        try:
            results = lease.ending.result(timeout=wait)
        except futures.TimeoutError:
            self.kill(lease.worker, "abandoned")
            return FinishReply("disconnected", 0, 0)
        reply: FinishReply = self._parse(lease, FinishReply.decode, results)
        if reply.outcome == "running":  # the worker's own wait ran out first
            self.kill(lease.worker, "abandoned")
            return FinishReply("disconnected", 0, 0)
        return reply

    def _end(self, lease: Lease, reply: FinishReply) -> None:
        """Give the lease's slot and worker back (once)."""
        worker = lease.worker
        kept = worker.usage()  # read from /proc before taking the lock
        with self._cond:
            if lease.phase == "ended":
                return
            lease.phase = "ended"
            worker.lease = None
            if self._parked.get(lease.query_id) is lease:
                del self._parked[lease.query_id]
            alive = (
                worker in self._workers and worker.kill_reason is None and worker.process.is_alive()
            )
            fresh = worker.generation == self._generation and not self._worn(kept, 1)
            if alive and fresh:
                worker.idle_since = time.monotonic()
                worker.kept = kept
                self._idle.append(worker)
                self._cond.notify()
        if alive and not fresh:
            stale = worker.generation != self._generation
            self._retire(worker, "reload" if stale else "recycled")
        self.admission.release(lease.key)
        try:
            lease.on_done(reply)
        except Exception:
            log.exception("recording a finished query failed")

    # -- calls to a worker -------------------------------------------------------------------

    def _call(self, lease: Lease, kind: str, body: bytes) -> list[bytes]:
        """Call a worker action; its results."""
        client = lease.worker.client
        assert client is not None
        try:
            return [
                r.body.to_pybytes()
                for r in client.do_action(flight.Action(kind, body), _options(0))
            ]
        except (flight.FlightError, pa.ArrowException) as exc:
            raise self._failure(lease, exc) from None

    def _parse(self, lease: Lease, decode: Callable[[bytes], Any], results: list[bytes]) -> Any:
        try:
            if len(results) != 1:
                raise WorkerProtocolError(f"{len(results)} results instead of 1")
            return decode(results[0])
        except WorkerProtocolError as exc:
            log.error(
                "engine worker sent an invalid reply: replacing it",
                extra={"fields": {"query_id": lease.query_id, "error": str(exc)}},
            )
            self.kill(lease.worker, "invalid reply")
            raise flight.FlightInternalError(
                f"the engine sent an invalid reply (query {lease.query_id}); retry the query"
            ) from None

    def _failure(self, lease: Lease, exc: BaseException) -> Exception:
        """The client-facing error for a failed call to the lease's worker."""
        if isinstance(exc, flight.FlightError):
            sent = error_from_flight(exc)
            if sent is not None:
                return sent
        worker = lease.worker
        worker.process.join(2.0)  # a kill or a crash: the process is (nearly) gone already
        if worker.process.is_alive():
            self.kill(worker, "unresponsive")
            error: Exception = flight.FlightUnavailableError(
                f"the engine did not answer (query {lease.query_id}): {exc}; retry the query"
            )
            return error
        # Mark it before its lease ends, so the dead worker is never handed out again.
        worker.kill_reason = worker.kill_reason or exit_reason(worker.process)
        return death_error(lease.query_id, worker.kill_reason, self._settings)

    def kill(self, worker: _Worker, reason: str) -> None:
        """Kill a worker for ``reason``; the supervisor replaces it."""
        if worker.kill_reason is None:
            worker.kill_reason = reason
        worker.process.kill()

    # -- supervision -------------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stopping:
            try:
                self._tick(time.monotonic())
            except Exception:
                log.exception("engine supervisor tick failed")
            time.sleep(_TICK_S)

    def _tick(self, now: float) -> None:
        with self._cond:
            workers = list(self._workers)
        # Leased workers are watched every tick; idle ones, which hold no query, less often
        # (the tick shares the front's interpreter with every call).
        idle_check = now - self._idle_checked >= _IDLE_CHECK_S
        if idle_check:
            self._idle_checked = now
        usage: dict[_Worker, int] = {}
        for worker in workers:
            lease = worker.lease
            if lease is None and not idle_check:
                continue
            if not worker.process.is_alive():
                self._buried(worker)
                continue
            if lease is not None:
                self._check_lease(lease, now)
                if self._memory_limit is not None:  # a /proc read: only when it is needed
                    usage[worker] = worker.usage()
            elif worker in self._idle:
                due = now - worker.idle_since > _IDLE_RECYCLE_S
                if due or self._memory_limit is not None:
                    # Its last query may still be handing memory back (or taking it: an
                    # early result's thread) when the lease ends: measure again.
                    worker.kept = worker.usage()
                if due and self._worn(worker.kept, 2):
                    self._retire(worker, "recycled")
        if self._memory_limit is not None and (usage or idle_check):
            self._hold_memory_limit(usage, self._memory_limit)

    def _worn(self, kept: int, share: int) -> bool:
        """Whether a worker keeping ``kept`` bytes is over ``1/share`` of
        worker_recycle_memory (and so due for a fresh one)."""
        return self._recycle_bytes is not None and kept > self._recycle_bytes // share

    def _hold_memory_limit(self, usage: dict[_Worker, int], limit: int) -> None:
        """Keep what the workers hold above their start within ``limit``: the running
        queries' workers (``usage``) and the memory idle workers kept from earlier queries,
        which the allocators do not give back. Idle workers go first, biggest first (that
        costs no query); then the query using the most is stopped."""
        with self._cond:
            idle = sorted((w for w in self._idle if w.kept), key=lambda w: w.kept, reverse=True)
        total = sum(usage.values()) + sum(w.kept for w in idle)
        for worker in idle:
            if total <= limit:
                return
            total -= worker.kept
            self._retire(worker, "memory_idle")
        if not usage or total <= limit:
            return
        biggest = max(usage, key=lambda w: usage[w])
        log.warning(
            "memory_limit crossed: stopping the query using the most",
            extra={
                "fields": {
                    "query_id": biggest.lease.query_id if biggest.lease else "",
                    "query_bytes": usage[biggest],
                    "all_queries_bytes": total,
                    "memory_limit_bytes": limit,
                }
            },
        )
        self.kill(biggest, "memory")

    def _check_lease(self, lease: Lease, now: float) -> None:
        if lease.phase in ("finishing", "ended", "dropping"):
            return
        if lease.phase == "parked":
            if now > lease.parked_until:
                self.drop(lease.query_id)
            elif lease.deadline is not None and now > lease.deadline:
                self.kill(lease.worker, "timeout")
            return
        if lease.ending is not None and lease.ending.done():
            return  # the worker's stream is over; the front is still sending what it read
        interruptible = lease.phase == "streaming"  # the worker checks between batches
        if lease.cancelled is not None and lease.cancelled.is_set() and not lease.cancel_sent:
            lease.cancel_sent = True
            if not interruptible:
                self.kill(lease.worker, "cancelled")
                return
            self._helpers.submit(self._send_cancel, lease)
            lease.kill_at, lease.kill_reason = now + _GRACE_S, "cancelled"
        if lease.deadline is not None and now > lease.deadline and lease.kill_at is None:
            if not interruptible:
                self.kill(lease.worker, "timeout")
                return
            lease.kill_at, lease.kill_reason = lease.deadline + _GRACE_S, "timeout"
        if not interruptible and lease.context is not None and lease.context.is_cancelled():
            self.kill(lease.worker, "disconnected")
            return
        if lease.kill_at is not None and now > lease.kill_at:
            self.kill(lease.worker, lease.kill_reason)

    def _send_cancel(self, lease: Lease) -> None:
        client = lease.worker.client
        try:
            if client is not None:
                list(client.do_action(flight.Action(CANCEL, b""), _options(_GRACE_S)))
        except (flight.FlightError, pa.ArrowException):
            pass  # the kill that follows the grace period stops it

    def _buried(self, worker: _Worker) -> None:
        """A worker process is gone: account for it, end its lease, start another."""
        with self._cond:
            if worker not in self._workers:
                return
            self._workers.remove(worker)
            if worker in self._idle:
                self._idle.remove(worker)
        reason = worker.kill_reason or exit_reason(worker.process)
        lease = worker.lease
        expected = reason in ("reload", "recycled", "memory_idle", "stopped")
        (log.info if expected else log.warning)(
            "engine worker replaced",
            extra={
                "fields": {
                    "worker": worker.number,
                    "reason": reason,
                    "exit_code": worker.process.exitcode,
                    "query_id": lease.query_id if lease else None,
                }
            },
        )
        self._on_restart(reason)
        if worker.client is not None:
            worker.client.close()
        if lease is not None and lease.phase not in ("planning", "starting"):
            # A call waiting on this worker ends its lease itself, with the reason; a stream
            # that is being read or finished has nobody waiting: end its lease here.
            self._end(lease, FinishReply(reason, 0, 0, reason))
        self._replace(worker)

    # -- health and introspection ------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Which catalog the workers serve (it changes with every reload)."""
        return self._generation

    def probe(self, timeout: float = 5.0) -> None:
        """Raise unless the supervisor runs and a worker answers within ``timeout`` seconds
        (an idle one runs a trivial query; busy ones count as alive).

        A worker that is leased, recycled or killed while it is being asked proves nothing
        either way: another idle one is asked instead, so a query's death (or a memory kill)
        never reads as the whole engine failing. Workers being replaced are waited for.
        """
        if not self._supervisor.is_alive():
            raise RuntimeError("the engine supervisor is not running")
        deadline = time.monotonic() + timeout
        for _ in range(_PROBE_ATTEMPTS):
            with self._cond:
                busy = any(w.lease is not None and w.process.is_alive() for w in self._workers)
                if not busy:
                    self._cond.wait_for(
                        lambda: self._idle or self._stopping,
                        max(0.0, deadline - time.monotonic()),
                    )
                # The oldest idle worker: leases take the newest, so it is the least likely
                # to be taken while it answers.
                idle = self._idle[0] if self._idle else None
            if idle is None or idle.client is None:
                if busy:
                    return
                raise RuntimeError("no engine worker is running")
            try:
                remaining = max(0.5, deadline - time.monotonic())
                list(idle.client.do_action(flight.Action(PROBE, b""), _options(remaining)))
                return
            except (flight.FlightError, pa.ArrowException):
                with self._cond:
                    still_idle = idle in self._idle and idle.process.is_alive()
                if still_idle and not busy:
                    raise
                if still_idle:
                    return  # slow under load, but the busy workers answer their queries
        raise RuntimeError("every engine worker asked ended or was taken while answering")

    def states(self) -> dict[str, int]:
        """Workers by state: idle, busy, starting."""
        with self._cond:
            idle = len(self._idle)
            busy = sum(1 for w in self._workers if w.lease is not None)
            return {"idle": idle, "busy": busy, "starting": self._starting}

    def memory(self) -> int:
        """Bytes the workers hold above their start (what queries use now)."""
        with self._cond:
            workers = list(self._workers)
        return sum(w.usage() for w in workers)

    def pids(self) -> list[int]:
        with self._cond:
            return [w.process.pid for w in self._workers if w.process.pid]


def _options(timeout: float) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(timeout=timeout or None)
