"""Isolation and hard limits, against a real server process with the demo catalog: queries
built to crash, freeze or exhaust the engine cost only themselves.

The server runs as documented for a small deployment (``--memory-limit 256MiB
--query-timeout 4 --max-concurrent-queries 3 --stall-timeout 2``); each bomb is sized to
exceed its limit 2-4x, and every wait is bounded.
"""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.processes import ServiceProcesses
from bench.server import RssSampler
from flightsql_srv.protocol import pack, sql_pb2
from tests.conftest import free_port, server_process
from tests.helpers import statement_descriptor, until

MEMORY_LIMIT = 256 * 2**20
#: What the service may hold beyond memory_limit: the front, the idle workers and the fork
#: server (docs/architecture.md documents the figure).
OVERHEAD = 500 * 2**20
#: DataFusion plans a chain of casts recursively: 10,000 of them overflow a thread's stack
#: (SIGSEGV), and the operator-depth check does not count casts.
CRASH = "select 1" + "::bigint" * 10_000
#: Minutes of CPU in one aggregate: nothing comes out until it is done.
CPU_BOMB = "select count(distinct md5(cast(value as varchar))) from range(1000000000)"


class Server:
    def __init__(self, port: int, health_port: int, metrics_port: int, pid: int) -> None:
        self.port, self.health_port, self.metrics_port = port, health_port, metrics_port
        self.uri = f"grpc://127.0.0.1:{port}"
        self.processes = ServiceProcesses(pid)
        channel = grpc.insecure_channel(f"127.0.0.1:{health_port}")
        self.health = health_pb2_grpc.HealthStub(channel)

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    def running(self) -> float:
        return self.metric("flightsql_queries_running")

    def serving(self, timeout: float = 1.0) -> bool:
        reply = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def cpu_percent(self, seconds: float = 0.5) -> float:
        self.processes.cpu_percent()
        time.sleep(seconds)
        return self.processes.cpu_percent()


def _start(*args: str, **kwargs: Any) -> Iterator[Server]:
    health, metrics = free_port(), free_port()
    with server_process(
        "--health-port", str(health), "--metrics-port", str(metrics), *args, **kwargs
    ) as (proc, port):
        yield Server(port, health, metrics, proc.pid)


LIMIT_BYTES = 256 * 2**20
LIMITS = (
    "--memory-limit",
    "256MiB",
    "--query-timeout",
    "4",
    "--max-concurrent-queries",
    "3",
    "--queue-timeout",
    "5",
    "--stall-timeout",
    "2",
    # The memory tests measure memory_limit alone: no worker is replaced for what it keeps.
    "--worker-recycle-memory",
    "unlimited",
)


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    yield from _start(*LIMITS)


def _open(client: flight.FlightClient, sql: str, **options: Any) -> flight.FlightStreamReader:
    call = flight.FlightCallOptions(**options)
    info = client.get_flight_info(statement_descriptor(sql), call)
    return client.do_get(info.endpoints[0].ticket, call)


def _rows(uri: str, sql: str, **options: Any) -> int:
    with flight.connect(uri) as client:
        return int(_open(client, sql, **options).read_all().num_rows)


def _in_background(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``work`` in a thread; the list receives its result or exception."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(work())
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _after_idle(srv: Server) -> None:
    """Wait until no query holds a slot (a previous test's kill is accounted for)."""
    assert until(lambda: srv.running() == 0, 10), "a query slot was not given back"


# -- 1. crash containment -------------------------------------------------------------------


def test_a_query_that_crashes_the_engine_fails_alone(srv: Server) -> None:
    _after_idle(srv)
    slow = "select count(*) as n from range(300000000) where value % 7 = 3"
    other, result = _in_background(lambda: _rows(srv.uri, slow))
    time.sleep(0.3)  # the other client's query is running when the crash comes
    with flight.connect(srv.uri) as client:
        with pytest.raises(flight.FlightInternalError) as raised:
            _open(client, CRASH).read_all()
    message = str(raised.value)
    assert "crashed its engine worker" in message and "SIGSEGV" in message
    assert "query " in message  # the id, for the operator's log
    crashed_at = time.monotonic()
    assert _rows(srv.uri, "select 1 as x") == 1
    assert time.monotonic() - crashed_at < 2.0, "the next query was not answered within 2 s"
    assert srv.serving()
    other.join(30)
    assert result == [1], f"the concurrent query did not survive the crash: {result}"
    assert srv.metric('flightsql_engine_worker_restarts_total{reason="crashed"}') >= 1


def test_a_crash_while_planning_in_get_flight_info_is_contained(srv: Server) -> None:
    _after_idle(srv)
    with flight.connect(srv.uri) as client:
        with pytest.raises(flight.FlightInternalError, match="crashed its engine worker"):
            client.get_flight_info(statement_descriptor(CRASH))
    assert _rows(srv.uri, "select 2 as x") == 1
    assert srv.serving()


# -- 2. hard time limit ---------------------------------------------------------------------


def _cpu_falls(srv: Server, seconds: float) -> float:
    """Service CPU (% of a core) once it falls below 20 %, or the last reading."""
    reading = 100.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reading = srv.cpu_percent(0.25)
        if reading < 20:
            break
    return reading


def test_query_timeout_stops_the_engine_inside_one_long_batch(srv: Server) -> None:
    _after_idle(srv)
    started = time.monotonic()
    with pytest.raises(flight.FlightTimedOutError, match="query_timeout"):
        _rows(srv.uri, CPU_BOMB)
    waited = time.monotonic() - started
    assert 3.5 < waited < 6.0, f"the timeout came after {waited:.1f} s, not ~4 s"
    assert _cpu_falls(srv, 2.0) < 20, "the engine kept working past query_timeout"
    assert until(lambda: srv.running() == 0, 2.0)
    assert srv.metric('flightsql_engine_worker_restarts_total{reason="timeout"}') >= 1


def test_query_timeout_during_planning_time_constant_folding(srv: Server) -> None:
    """Planning folds constants: a literal that takes long to build is work before any
    batch, and still stops at the deadline."""
    _after_idle(srv)
    folding = "select count(*) from (select " + " || ".join(["md5(repeat('x', 30000000))"] * 150)
    folding += " as h) t"
    started = time.monotonic()
    with flight.connect(srv.uri) as client:
        with pytest.raises((flight.FlightTimedOutError, flight.FlightServerError)):
            _open(client, folding).read_all()
    assert time.monotonic() - started < 7.0
    assert _cpu_falls(srv, 2.0) < 20
    assert until(lambda: srv.running() == 0, 2.0)


def test_cancel_flight_info_stops_a_running_aggregate(srv: Server) -> None:
    _after_idle(srv)
    with flight.connect(srv.uri) as client:
        info = client.get_flight_info(statement_descriptor(CPU_BOMB))
        reader_thread, result = _in_background(
            lambda: client.do_get(info.endpoints[0].ticket).read_all()
        )
        assert until(lambda: srv.running() == 1, 5)
        time.sleep(0.5)
        request = sql_pb2.ActionCancelQueryRequest(info=info.serialize())
        list(client.do_action(flight.Action("CancelQuery", pack(request))))
        cancelled_at = time.monotonic()
        reader_thread.join(5)
    assert result and isinstance(result[0], flight.FlightCancelledError), result
    assert _cpu_falls(srv, 2.0) < 20
    assert time.monotonic() - cancelled_at < 4.0
    assert until(lambda: srv.running() == 0, 2.0)


def test_client_deadline_stops_the_engine(srv: Server) -> None:
    _after_idle(srv)
    with pytest.raises(flight.FlightTimedOutError):
        _rows(srv.uri, CPU_BOMB, timeout=1.0)
    assert _cpu_falls(srv, 2.5) < 20, "the engine kept working for a client that gave up"
    assert until(lambda: srv.running() == 0, 2.0)


# -- 3. memory limit ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bomb",
    [
        "select length(repeat('x', 700000000)) as n",  # one huge scalar
        "select cardinality(range(100000000)) as n",  # one huge array (800 MB)
        "select max(length(s)) from (select repeat('y', 4000000) as s from range(200)) t",
    ],
    ids=["repeat", "range-array", "wide-rows"],
)
def test_memory_limit_holds_for_allocations_the_pool_cannot_see(srv: Server, bomb: str) -> None:
    _after_idle(srv)
    with RssSampler(srv.processes.pid, interval=0.05) as memory:
        with pytest.raises(flight.FlightServerError, match="memory_limit") as raised:
            _rows(srv.uri, bomb)
        assert _rows(srv.uri, "select 1 as x") == 1
    assert "datafusion.runtime" not in str(raised.value)  # no setting users cannot reach
    peak = memory.peak
    print(f"\n{bomb[:40]}: service memory peak {peak / 2**20:.0f} MB")
    assert peak <= MEMORY_LIMIT + OVERHEAD, f"service memory reached {peak / 2**20:.0f} MB"
    assert srv.serving()


def test_memory_limit_stops_the_biggest_of_concurrent_queries(srv: Server) -> None:
    _after_idle(srv)
    ok = "select count(*) as n from range(200000000) where value % 3 = 0"
    bombs = [
        _in_background(lambda: _rows(srv.uri, "select length(repeat('z', 400000000)) as n"))
        for _ in range(2)
    ]
    survivor, result = _in_background(lambda: _rows(srv.uri, ok))
    with RssSampler(srv.processes.pid, interval=0.05) as memory:
        for thread, _ in bombs:
            thread.join(30)
        survivor.join(30)
    failures = [out[0] for _, out in bombs if isinstance(out[0], Exception)]
    assert failures, "no query was stopped although together they crossed memory_limit"
    assert all("memory_limit" in str(f) for f in failures), failures
    assert result == [1], f"a query within the limit did not survive: {result}"
    assert memory.peak <= MEMORY_LIMIT + OVERHEAD


def test_many_planning_bombs_stay_within_the_limit(srv: Server) -> None:
    """GetFlightInfo alone (no DoGet) is engine work under admission and the limit."""
    _after_idle(srv)
    folding = "select length(repeat('p', 300000000) || repeat('q', 300000000)) as n"
    with RssSampler(srv.processes.pid, interval=0.05) as memory:
        calls = [
            _in_background(
                lambda: flight.connect(srv.uri).get_flight_info(statement_descriptor(folding))
            )
            for _ in range(6)
        ]
        for thread, _ in calls:
            thread.join(40)
    assert memory.peak <= MEMORY_LIMIT + OVERHEAD, f"{memory.peak / 2**20:.0f} MB"
    assert _rows(srv.uri, "select 1 as x") == 1


# -- 4. no freezes --------------------------------------------------------------------------


def test_memory_idle_workers_kept_counts_against_the_limit(srv: Server) -> None:
    """Workers keep what their queries allocated (the allocators do not give it back); with
    two of them holding ~200 MB each after queries the pool refused, the service would sit
    at 1.5x memory_limit while idle. Idle workers are replaced, biggest first, instead."""
    _after_idle(srv)
    hoarder = "select cardinality(array_agg(value)) from range(20000000)"
    for _ in range(2):
        queries = [_in_background(lambda: _rows(srv.uri, hoarder)) for _ in range(2)]
        for thread, _ in queries:
            thread.join(30)
    held = srv.metric("flightsql_engine_query_memory_bytes")
    retired = 'flightsql_engine_worker_restarts_total{reason="memory_idle"}'
    assert until(lambda: srv.metric(retired) >= 1, 2), "no idle worker was retired"
    assert until(lambda: srv.metric("flightsql_engine_query_memory_bytes") <= LIMIT_BYTES, 2), (
        f"idle workers hold {srv.metric('flightsql_engine_query_memory_bytes') / 2**20:.0f} "
        f"MiB, memory_limit is {LIMIT_BYTES / 2**20:.0f} MiB"
    )
    print(f"\nheld after the queries: {held / 2**20:.0f} MiB (memory_limit 256 MiB)")
    assert _rows(srv.uri, "select 1 as x") == 1


def _recycled(srv: Server) -> float:
    return srv.metric('flightsql_engine_worker_restarts_total{reason="recycled"}')


def test_a_worker_that_keeps_too_much_is_replaced_after_its_query() -> None:
    """The allocator keeps what a query freed (``srv`` shows it, with recycling off): a
    worker keeping more than worker_recycle_memory is replaced when its query ends, so the
    service goes back to its idle size."""
    hoarder = "select cardinality(array_agg(value)) from range(20000000)"
    recycling = contextmanager(_start)(
        "--worker-recycle-memory", "64MiB", "--max-concurrent-queries", "2"
    )
    with recycling as small:
        before = small.processes.memory()
        assert _rows(small.uri, hoarder) == 1
        assert until(lambda: _recycled(small) == 1, 10), "the worker was not replaced"
        assert until(lambda: small.processes.memory() < before + 64 * 2**20, 10), (
            f"{(small.processes.memory() - before) / 2**20:.0f} MiB more than before the query"
        )
        assert _rows(small.uri, "select 1 as x") == 1


def test_health_answers_fast_while_the_engine_is_saturated(srv: Server) -> None:
    _after_idle(srv)
    heavy = [
        _in_background(lambda: _rows(srv.uri, "select count(*) from range(400000000)"))
        for _ in range(3)
    ]
    time.sleep(0.5)
    slowest = 0.0
    for _ in range(20):
        started = time.monotonic()
        assert srv.serving(timeout=2.0)
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.05)
    for thread, _ in heavy:
        thread.join(30)
    print(f"\nslowest health Check with 3 queries saturating the engine: {slowest * 1000:.0f} ms")
    assert slowest < 0.1


def test_huge_sql_is_refused_before_macro_work(srv: Server) -> None:
    sql = "select $__timeFilter(" + "," * (12 * 2**20) + ")"
    started = time.monotonic()
    with flight.connect(srv.uri) as client, pytest.raises(pa.ArrowInvalid):
        client.get_flight_info(statement_descriptor(sql))
    assert time.monotonic() - started < 2.0


# -- 5. no starvation -----------------------------------------------------------------------


def test_streams_nobody_reads_give_their_slots_back(srv: Server) -> None:
    _after_idle(srv)
    wide = "select value, repeat('w', 2000) as pad from range(100000000)"
    clients, readers = [], []
    for _ in range(3):  # every slot
        client = flight.connect(srv.uri)
        reader = _open(client, wide)
        reader.read_chunk()  # one batch, then nothing
        clients.append(client)
        readers.append(reader)
    # Without the stall timeout, nothing would answer until query_timeout or later.
    started = time.monotonic()
    assert _rows(srv.uri, "select 1 as x") == 1
    waited = time.monotonic() - started
    print(f"\na query behind 3 unread streams was answered after {waited:.1f} s")
    assert waited < 4.5  # stall_timeout (2 s) + a worker restart
    for client in clients:
        client.close()


# -- queries that start at GetFlightInfo (docs/architecture.md) -------------------------------


def test_a_small_result_is_fetched_without_a_slot(srv: Server) -> None:
    """GetFlightInfo ran it and kept the result: its DoGet is answered while every slot the
    client may use is busy (a DoGet that needed one would wait for query_timeout)."""
    _after_idle(srv)
    with flight.connect(srv.uri) as client:
        info = client.get_flight_info(statement_descriptor("select 41 + 1 as x"))
        bombs = [_in_background(lambda: _rows(srv.uri, CPU_BOMB)) for _ in range(2)]
        assert until(lambda: srv.running() == 2, 5)  # this client's share (3 slots - 1)
        started = time.monotonic()
        table = client.do_get(info.endpoints[0].ticket).read_all()
        waited = time.monotonic() - started
    assert table.column("x").to_pylist() == [42]
    assert waited < 1.0, f"the DoGet waited {waited:.1f} s"
    for thread, _ in bombs:
        thread.join(10)


def test_a_large_result_streams_on_from_its_flight_info(srv: Server) -> None:
    _after_idle(srv)
    with flight.connect(srv.uri) as client:
        info = client.get_flight_info(statement_descriptor("select value from range(2000000)"))
        assert srv.running() == 1  # it runs, waiting in its worker for the DoGet
        table = client.do_get(info.endpoints[0].ticket).read_all()
    assert table.num_rows == 2_000_000
    assert pc.sum(table.column("value")).as_py() == 1_999_999 * 2_000_000 // 2
    assert until(lambda: srv.running() == 0, 2.0)


def test_an_unfetched_result_gives_its_slot_back(srv: Server) -> None:
    _after_idle(srv)
    with flight.connect(srv.uri) as client:
        info = client.get_flight_info(statement_descriptor("select value from range(2000000)"))
        assert srv.running() == 1
        started = time.monotonic()
        assert until(lambda: srv.running() == 0, 8.0), "the parked query kept its slot"
        print(f"\nan unfetched result gave its slot back after {time.monotonic() - started:.1f} s")
        # The ticket still works: the query runs again.
        assert client.do_get(info.endpoints[0].ticket).read_all().num_rows == 2_000_000


def test_a_failing_run_fails_its_flight_info(srv: Server) -> None:
    with flight.connect(srv.uri) as client, pytest.raises(pa.ArrowInvalid, match="query failed"):
        client.get_flight_info(statement_descriptor("select cast('x' as int) as n"))


@pytest.fixture(scope="module")
def two_principals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config: Path = tmp_path_factory.mktemp("auth") / "auth.toml"
    lines = ['[auth.roles.reader]\ntables = ["*"]\n']
    for name in ("greedy", "patient"):
        digest = hashlib.sha256(f"key-{name}".encode()).hexdigest()
        lines.append(
            f'[[auth.api_keys]]\nname = "{name}"\nsha256 = "{digest}"\nroles = ["reader"]\n'
        )
    config.write_text("\n".join(lines))
    yield from _start(
        "--config",
        str(config),
        "--max-concurrent-queries",
        "3",
        "--queue-timeout",
        "1",
        "--query-timeout",
        "20",
        ready_headers=[(b"authorization", b"Bearer key-greedy")],
    )


def test_one_principal_cannot_hold_every_slot(two_principals: Server) -> None:
    srv = two_principals

    def as_(name: str) -> dict[str, Any]:
        return {"headers": [(b"authorization", f"Bearer key-{name}".encode())]}

    long = "select count(*) from range(3000000000)"
    greedy = [_in_background(lambda: _rows(srv.uri, long, **as_("greedy"))) for _ in range(3)]
    assert until(lambda: srv.running() == 2, 5)
    time.sleep(1.5)  # the third waited its queue_timeout out
    assert srv.running() == 2, "one principal took every slot"
    assert _rows(srv.uri, "select 1 as x", **as_("patient")) == 1
    third = [out for _, out in greedy if out]
    assert third and "max_queries_per_principal" in str(third[0][0]), third
