"""Shared fixtures: real servers on 127.0.0.1 with free ports, always torn down."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import pyarrow.flight as flight
import pytest

from flightsql_srv.app import Service
from flightsql_srv.config import Settings

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = "test-secret"


@contextmanager
def running_server(**overrides: Any) -> Iterator[Service]:
    """An in-process service on free ports, health probing started; ``.port`` is Flight's."""
    values: dict[str, Any] = {
        "port": 0,
        "health_port": 0,
        "metrics_port": -1,
        "ticket_secret": TEST_SECRET,
        **overrides,
    }
    service = Service(Settings(**values))
    try:
        service.start()
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def server() -> Iterator[Service]:
    """The demo catalog, served once for the whole session."""
    with running_server() as srv:
        yield srv


@pytest.fixture(scope="session")
def uri(server: Service) -> str:
    return f"grpc://127.0.0.1:{server.port}"


@pytest.fixture
def client(uri: str) -> Iterator[flight.FlightClient]:
    with flight.connect(uri) as c:
        yield c


@pytest.fixture
def conn(uri: str) -> Iterator[Any]:
    """An ADBC DB-API connection (autocommit, as the server has no transactions)."""
    with adbc.connect(uri, autocommit=True) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def server_process(
    *args: str,
    env: dict[str, str] | None = None,
    ready_timeout: float = 30.0,
    output_lines: list[str] | None = None,
    ready_headers: list[tuple[bytes, bytes]] | None = None,
    inherit_settings: bool = True,
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``flightsql-srv serve`` as a subprocess; yields (process, port) once it answers.

    Args:
        output_lines: receives the server's output (kept in a temporary file) at the end.
        ready_headers: call headers for the readiness probe (credentials, when auth is on).
        inherit_settings: pass this process's ``FLIGHTSQL_SRV_*`` variables on.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "flightsql_srv", "serve", "--port", str(port), *args]
    if "--health-port" not in args:
        cmd += ["--health-port", str(free_port())]
    if "--metrics-port" not in args:
        cmd += ["--metrics-port", "-1"]
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a full pipe blocks the server
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={
            **{
                k: v
                for k, v in os.environ.items()
                if inherit_settings or not k.startswith("FLIGHTSQL_SRV_")
            },
            **(env or {}),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def output() -> str:
        log.seek(0)
        return log.read()

    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {output()}")
            try:
                with flight.connect(f"grpc://127.0.0.1:{port}") as c:
                    probe = flight.FlightCallOptions(headers=ready_headers or [], timeout=1.0)
                    list(c.list_actions(probe))
                break
            except (flight.FlightError, OSError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server did not answer in time: {output()}") from None
                time.sleep(0.1)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        text = output()
        if output_lines is not None:
            output_lines.extend(text.splitlines(keepends=True))
        print(f"--- server output ---\n{text}")  # pytest shows it when the test fails
        log.close()
