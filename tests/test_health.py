"""grpc.health.v1 on the health port, the healthcheck command and /metrics."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flightsql_srv.health import HealthService
from tests.conftest import free_port, running_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _stub(port: int) -> health_pb2_grpc.HealthStub:
    return health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))


def test_check_and_watch_follow_the_lifecycle() -> None:
    with running_server() as service:
        stub = _stub(service.health_port)
        for name in ("", "arrow.flight.protocol.FlightService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == SERVING
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(watch).status == SERVING
        service.health.drain()
        assert next(watch).status == NOT_SERVING
        watch.cancel()


def test_probe_drives_status_failure_and_stuck_engine() -> None:
    state = {"mode": "ok"}
    release = threading.Event()

    def probe() -> None:
        if state["mode"] == "fail":
            raise RuntimeError("catalog broken")
        if state["mode"] == "hang":
            release.wait(10)

    health = HealthService("127.0.0.1", 0, probe, interval=0.2, stale_after=0.5)
    stub = _stub(health.port)

    def status() -> int:
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status

    try:
        health.start()
        assert status() == SERVING
        state["mode"] = "fail"
        assert health.check_now() is False
        assert status() == NOT_SERVING
        state["mode"] = "ok"
        assert health.check_now() is True
        assert status() == SERVING
        state["mode"] = "hang"  # the engine stops answering: stale after 0.5 s
        deadline = time.monotonic() + 5
        while status() == SERVING and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status() == NOT_SERVING
        state["mode"] = "ok"
        release.set()
        deadline = time.monotonic() + 5
        while status() != SERVING and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status() == SERVING
    finally:
        release.set()
        health.stop()


def _healthcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flightsql_srv", "healthcheck", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_healthcheck_command_exit_codes() -> None:
    with running_server() as service:
        ok = _healthcheck("--port", str(service.health_port))
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert ok.stdout.startswith("SERVING")
        service.health.drain()
        draining = _healthcheck("--port", str(service.health_port))
        assert draining.returncode == 1
        assert draining.stdout.startswith("NOT_SERVING")
    down = _healthcheck("--port", str(free_port()), "--timeout", "1")
    assert down.returncode == 1
    assert down.stdout.startswith("UNHEALTHY")


def test_metrics_page_counts_rpcs(conn: object) -> None:
    port = free_port()
    with running_server(metrics_port=port) as service:
        import adbc_driver_flightsql.dbapi as adbc

        with adbc.connect(f"grpc://127.0.0.1:{service.port}", autocommit=True) as c:
            with c.cursor() as cur:
                cur.execute("select 1")
                cur.fetchall()
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    text = page.decode()
    assert 'flightsql_rpcs_total{method="do_get",outcome="ok"}' in text
    assert "flightsql_health_serving 1.0" in text
    assert 'flightsql_build_info{version="' in text
