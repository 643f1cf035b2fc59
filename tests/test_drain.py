"""SIGTERM: health goes NOT_SERVING, new queries get UNAVAILABLE, in-flight streams finish."""

from __future__ import annotations

import signal
import threading
import time

import grpc
import pyarrow.flight as flight
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flightsql_srv.protocol import pack, sql_pb2
from tests.conftest import free_port, server_process

#: Far more than gRPC and socket buffers hold (~100 MB), so the stream is still being served
#: while the test checks health: a smaller result could be fully buffered, and the server
#: drained and gone, before the first health check.
ROWS = 2_000_000


def _descriptor(sql: str) -> flight.FlightDescriptor:
    return flight.FlightDescriptor.for_command(pack(sql_pb2.CommandStatementQuery(query=sql)))


def test_sigterm_drains_slow_reader_and_exits_zero() -> None:
    health_port = free_port()
    with server_process("--health-port", str(health_port), "--shutdown-grace", "20") as (
        proc,
        port,
    ):
        client = flight.connect(f"grpc://127.0.0.1:{port}")
        info = client.get_flight_info(_descriptor(f"select * from demo.metrics limit {ROWS}"))
        reader = client.do_get(info.endpoints[0].ticket)
        received = reader.read_chunk().data.num_rows

        proc.send_signal(signal.SIGTERM)
        stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{health_port}"))
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
            if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            time.sleep(0.05)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING

        with pytest.raises(flight.FlightUnavailableError, match="shutting down"):
            client.get_flight_info(_descriptor("select 1"))

        # The slow reader still gets every row.
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            received += chunk.data.num_rows
            time.sleep(0.01)
        assert received == ROWS
        client.close()
        assert proc.wait(timeout=30) == 0


def test_grace_exceeded_cancels_and_still_exits() -> None:
    with server_process("--shutdown-grace", "0.5") as (proc, port):
        client = flight.connect(f"grpc://127.0.0.1:{port}")
        info = client.get_flight_info(_descriptor("select * from demo.metrics"))
        reader = client.do_get(info.endpoints[0].ticket)
        reader.read_chunk()
        stopped = threading.Event()

        def drain() -> None:
            try:
                while True:
                    reader.read_chunk()
                    time.sleep(0.2)  # far slower than the grace allows
            except (StopIteration, flight.FlightError, OSError):
                stopped.set()

        threading.Thread(target=drain, daemon=True).start()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert stopped.wait(10), "the cancelled stream did not end"
        client.close()
