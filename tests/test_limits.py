"""Limits: concurrency cap and queue, query timeout, memory pool, disconnects; audit record."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from bench.processes import ServiceProcesses
from flightsql_srv.app import Service
from flightsql_srv.audit import fingerprint
from flightsql_srv.protocol import pack, sql_pb2
from tests.conftest import free_port, running_server, server_process

HEAVY = "select count(distinct md5(cast(value as varchar))) as n from range(3000000)"


def _info(client: flight.FlightClient, sql: str) -> flight.FlightInfo:
    descriptor = flight.FlightDescriptor.for_command(pack(sql_pb2.CommandStatementQuery(query=sql)))
    return client.get_flight_info(descriptor)


def _open(client: flight.FlightClient, sql: str) -> flight.FlightStreamReader:
    return client.do_get(_info(client, sql).endpoints[0].ticket)


def test_concurrency_cap_refuses_when_queue_is_full() -> None:
    with running_server(max_concurrent_queries=1, max_queued_queries=0) as service:
        client = flight.connect(f"grpc://127.0.0.1:{service.port}")
        holder = _open(client, "select * from demo.metrics")
        holder.read_chunk()  # the only slot is taken while this stream is open
        with pytest.raises(flight.FlightUnavailableError, match="too many queries: 1 running"):
            _open(client, "select 1").read_all()
        holder.cancel()
        deadline = time.monotonic() + 10
        while service.admission.running and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _open(client, "select 1 as x").read_all().to_pydict() == {"x": [1]}


def test_queued_query_runs_when_a_slot_frees_up_or_times_out() -> None:
    with running_server(
        max_concurrent_queries=1, max_queued_queries=1, queue_timeout=5.0
    ) as service:
        client = flight.connect(f"grpc://127.0.0.1:{service.port}")
        holder = _open(client, "select * from demo.metrics")
        holder.read_chunk()
        results: list[object] = []
        waiter = threading.Thread(
            target=lambda: results.append(_open(client, "select 2 as y").read_all()),
        )
        waiter.start()
        deadline = time.monotonic() + 5
        while service.admission.waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.admission.waiting == 1
        holder.cancel()
        waiter.join(10)
        assert results and results[0].to_pydict() == {"y": [2]}  # type: ignore[attr-defined]

    with running_server(
        max_concurrent_queries=1, max_queued_queries=1, queue_timeout=0.3
    ) as service:
        client = flight.connect(f"grpc://127.0.0.1:{service.port}")
        holder = _open(client, "select * from demo.metrics")
        holder.read_chunk()
        with pytest.raises(
            flight.FlightUnavailableError, match="no query slot freed up within 0.3 s"
        ):
            _open(client, "select 1").read_all()
        holder.cancel()


def test_query_timeout_stops_slow_first_batch_and_slow_stream() -> None:
    with running_server(query_timeout=0.3) as service:
        client = flight.connect(f"grpc://127.0.0.1:{service.port}")
        with pytest.raises(flight.FlightTimedOutError, match="query_timeout"):
            _open(client, HEAVY).read_all()
        _wait_until_idle(service)  # the abandoned first batch frees its slot later
        # With the engine idle again, this first batch is quick; the slow reader is not.
        reader = _open(client, "select * from demo.metrics")
        with pytest.raises(flight.FlightTimedOutError, match="query_timeout"):
            while True:
                reader.read_chunk()
                time.sleep(0.1)
        _wait_until_idle(service)


def _wait_until_idle(service: Service) -> None:
    deadline = time.monotonic() + 30
    while service.admission.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.admission.running == 0


def test_memory_limit_gives_resource_exhausted_not_oom() -> None:
    with running_server(memory_limit="32MiB", max_concurrent_queries=1) as service:
        client = flight.connect(f"grpc://127.0.0.1:{service.port}")
        huge_sort = "select md5(cast(value as varchar)) as h from range(20000000) order by h"
        with pytest.raises(flight.FlightServerError, match="memory_limit") as raised:
            _open(client, huge_sort).read_all()
        # Nothing the client could change: DataFusion's own settings are not offered.
        assert "datafusion." not in str(raised.value)
        assert _open(client, "select 1 as x").read_all().num_rows == 1
        assert service.health.check_now()


def test_client_cancel_stops_the_engine() -> None:
    with server_process() as (proc, port):
        server = ServiceProcesses(proc.pid)
        client = flight.connect(f"grpc://127.0.0.1:{port}")
        sql = "select md5(cast(value as varchar)) as h from range(2000000000)"
        reader = _open(client, sql)
        stopped = threading.Event()

        def consume() -> None:  # a client that keeps reading, so the server keeps working
            try:
                while True:
                    reader.read_chunk()
            except (flight.FlightError, pa.ArrowException, StopIteration, OSError):
                stopped.set()

        threading.Thread(target=consume, daemon=True).start()
        server.cpu_percent()
        time.sleep(1.0)
        busy = server.cpu_percent()
        reader.cancel()  # what ADBC does on Ctrl-C or a fetch timeout
        assert stopped.wait(10)
        deadline = time.monotonic() + 10
        idle = busy
        while time.monotonic() < deadline:
            time.sleep(0.5)
            idle = server.cpu_percent()
            if idle < 15:
                break
        print(f"\nserver CPU while streaming {busy:.0f}%, after the client cancelled {idle:.0f}%")
        client.close()
        assert busy > 30, "the query was not running"
        assert idle < 15, "DataFusion kept working after the client cancelled"


LONG_SQL = "select " + " + ".join(f"{i} * x" for i in range(200)) + " as s from (select 1 as x)"


def test_audit_record_and_query_metrics() -> None:
    metrics_port = free_port()
    lines: list[str] = []
    args = ["--metrics-port", str(metrics_port), "--audit-sql-limit", "100"]
    with server_process(*args, output_lines=lines) as (_, port):
        client = flight.connect(f"grpc://127.0.0.1:{port}")
        options = flight.FlightCallOptions(
            headers=[(b"x-client-type", b"grafana"), (b"user-agent", b"audit-test")]
        )
        sql = "select host, value from demo.metrics where host = 'host-07' limit 10"
        descriptor = flight.FlightDescriptor.for_command(
            pack(sql_pb2.CommandStatementQuery(query=sql))
        )
        info = client.get_flight_info(descriptor, options)
        assert client.do_get(info.endpoints[0].ticket, options).read_all().num_rows == 10
        with pytest.raises(pa.ArrowInvalid):
            _open(client, "select cast('x' as int)").read_all()
        _open(client, LONG_SQL).read_all()
        page = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        text = page.read().decode()
        client.close()
    assert 'flightsql_queries_total{kind="sql",outcome="ok"}' in text
    assert 'flightsql_queries_total{kind="sql",outcome="error"}' in text
    assert "flightsql_result_rows_total" in text
    records = [json.loads(line) for line in lines if '"logger": "flightsql_srv.audit"' in line]
    ok = [r for r in records if r["sql"] == sql]
    assert ok, lines
    record = ok[0]
    assert record["outcome"] == "ok" and record["rows"] == 10 and record["bytes"] > 0
    assert record["client"]["x-client-type"] == "grafana"
    assert record["client"]["user-agent"]  # gRPC sets its own; ADBC and Grafana add theirs
    assert record["peer"] and len(record["fingerprint"]) == 16
    assert record["plan_s"] >= 0 and record["first_batch_s"] >= record["plan_s"]
    assert record["sql_length"] == len(sql)
    failed = [r for r in records if r["sql"] == "select cast('x' as int)"]
    assert failed and failed[0]["outcome"] == "error"
    assert failed[0]["error_class"] == "InvalidArgument"
    # --audit-sql-limit 100: a long statement keeps its first 100 characters, its length and
    # the fingerprint of all of it.
    long = [r for r in records if r["sql_length"] == len(LONG_SQL)]
    assert long and long[0]["sql"] == LONG_SQL[:100] and long[0]["outcome"] == "ok"
    assert long[0]["fingerprint"] == fingerprint(LONG_SQL) != fingerprint(LONG_SQL[:100])
