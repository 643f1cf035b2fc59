"""Prometheus metrics: per-RPC counts, latency and in-flight calls, health, build info.

RPCs are measured by a Flight server middleware, so a DoGet is timed from the call to the
last batch leaving, without Python in the streaming path.
"""

from __future__ import annotations

import threading
import time
from functools import partial
from typing import Any
from wsgiref.simple_server import WSGIServer

import pyarrow.flight as flight
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from flightsql_srv import __version__

__all__ = ["Metrics", "MetricsMiddlewareFactory"]

_METHODS = {m: m.name.lower() for m in flight.FlightMethod}


class Metrics:
    """The server's metric families, in their own registry."""

    def __init__(self) -> None:
        self._http: WSGIServer | None = None
        self.registry = CollectorRegistry()
        self.rpcs = Counter(
            "flightsql_rpcs",
            "Flight RPCs handled, by method and outcome (ok or the error class).",
            ["method", "outcome"],
            registry=self.registry,
        )
        self.rpc_seconds = Histogram(
            "flightsql_rpc_duration_seconds",
            "Time from RPC start to its last message, by method.",
            ["method"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "flightsql_rpcs_in_flight",
            "RPCs currently running.",
            ["method"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "flightsql_auth_failures",
            "Calls rejected by authentication, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.catalog_problems = Gauge(
            "flightsql_catalog_tables_left_out",
            "Declared tables not served because their source could not be read at start-up.",
            registry=self.registry,
        )
        self.reloads = Counter(
            "flightsql_catalog_reloads",
            "Catalog and macro reloads, by outcome (ok, or failed: the previous one is kept).",
            ["outcome"],
            registry=self.registry,
        )
        self.health_serving = Gauge(
            "flightsql_health_serving",
            "1 when the health port reports SERVING.",
            registry=self.registry,
        )
        Info("flightsql_build", "Server build.", registry=self.registry).info(
            {"version": __version__}
        )
        self.queries = Counter(
            "flightsql_queries",
            "Queries run (DoGet of a query ticket), by kind and outcome.",
            ["kind", "outcome"],
            registry=self.registry,
        )
        phases = Histogram(
            "flightsql_query_phase_seconds",
            "Seconds from a query's DoGet to: planned, first batch ready, last batch sent.",
            ["phase"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120, 600),
            registry=self.registry,
        )
        self._phases = {p: phases.labels(p) for p in ("plan", "first_batch", "total")}
        self.rows = Counter("flightsql_result_rows", "Result rows sent.", registry=self.registry)
        self.bytes = Counter(
            "flightsql_result_bytes", "Result Arrow bytes sent.", registry=self.registry
        )
        self.queries_running = Gauge(
            "flightsql_queries_running", "Queries holding a slot.", registry=self.registry
        )
        self.queries_waiting = Gauge(
            "flightsql_queries_waiting", "Queries waiting for a slot.", registry=self.registry
        )
        self.workers = Gauge(
            "flightsql_engine_workers",
            "Engine worker processes, by state (idle, busy, starting).",
            ["state"],
            registry=self.registry,
        )
        self.worker_restarts = Counter(
            "flightsql_engine_worker_restarts",
            "Engine workers replaced, by reason (timeout, cancelled, memory, stalled, "
            "abandoned, reload, recycled: kept more than worker_recycle_memory, memory_idle: "
            "an idle one retired to hold memory_limit, or how a crashed one ended).",
            ["reason"],
            registry=self.registry,
        )
        self.query_memory = Gauge(
            "flightsql_engine_query_memory_bytes",
            "Memory the engine workers hold above their start: what running queries use and "
            "what idle workers kept from earlier ones (memory_limit bounds the sum).",
            registry=self.registry,
        )
        self._calls = 0
        self._calls_lock = threading.Lock()

    def watch_admission(self, admission: Any) -> None:
        """Report the admission queue's live numbers."""
        self.queries_running.set_function(lambda: admission.running)
        self.queries_waiting.set_function(lambda: admission.waiting)

    def watch_workers(self, pool: Any) -> None:
        """Report the engine workers' live numbers (see :class:`~flightsql_srv.workers.pool.
        EnginePool`)."""
        for state in ("idle", "busy", "starting"):
            self.workers.labels(state).set_function(partial(_state_count, pool, state))
        self.query_memory.set_function(pool.memory)

    def worker_restarted(self, reason: str) -> None:
        """Count a replaced worker; crash reasons are folded so the label set stays small."""
        self.worker_restarts.labels(reason if " " not in reason else "crashed").inc()

    def query_finished(self, record: Any) -> None:
        """Count a finished query (see :class:`flightsql_srv.audit.QueryRecord`)."""
        self.queries.labels(record.kind, record.outcome).inc()
        self.rows.inc(record.rows)
        self.bytes.inc(record.bytes)
        for phase, seconds in (
            ("plan", record.plan_s),
            ("first_batch", record.first_batch_s),
            ("total", record.total_s),
        ):
            if seconds is not None:
                self._phases[phase].observe(seconds)

    @property
    def calls_in_flight(self) -> int:
        """RPCs started and not yet completed (all methods)."""
        with self._calls_lock:
            return self._calls

    def _call_started(self, method: str) -> None:
        self.in_flight.labels(method).inc()
        with self._calls_lock:
            self._calls += 1

    def _call_completed(self, method: str, seconds: float, outcome: str) -> None:
        self.in_flight.labels(method).dec()
        self.rpc_seconds.labels(method).observe(seconds)
        self.rpcs.labels(method, outcome).inc()
        with self._calls_lock:
            self._calls -= 1

    def serve(self, host: str, port: int) -> int:
        """Expose ``/metrics`` over HTTP; returns the bound port."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        bound: int = self._http.server_port
        return bound

    def close(self) -> None:
        """Stop serving ``/metrics`` (nothing when it was not served)."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _CallMetrics(flight.ServerMiddleware):  # type: ignore[misc]
    def __init__(self, metrics: Metrics, method: str) -> None:
        self._metrics = metrics
        self._method = method
        self._started = time.perf_counter()
        metrics._call_started(method)

    def call_completed(self, exception: BaseException | None) -> None:
        outcome = "ok" if exception is None else type(exception).__name__
        elapsed = time.perf_counter() - self._started
        self._metrics._call_completed(self._method, elapsed, outcome)


class MetricsMiddlewareFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Times every RPC and counts its outcome."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def start_call(self, info: Any, headers: dict[str, list[str]]) -> _CallMetrics:
        return _CallMetrics(self._metrics, _METHODS.get(info.method, str(info.method)))


def _state_count(pool: Any, state: str) -> int:
    count: int = pool.states()[state]
    return count
