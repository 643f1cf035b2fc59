"""The servers under test as subprocesses on loopback, plus an RSS sampler for them.

:func:`running_server` writes a temporary catalog declaring the benchmark data as
``bench.points`` (one file) and ``bench.points_days`` (the day-partitioned directory), starts
``python -m flightsql_srv serve`` on free ports, and :func:`supervised` (shared with
:mod:`bench.roapi`) waits, bounded, until it answers and always terminates it, even when the
benchmark fails or is interrupted.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pyarrow.flight as flight

from bench.processes import ServiceProcesses

__all__ = [
    "ROOT",
    "ServerProcess",
    "RssSampler",
    "running_server",
    "supervised",
    "free_ports",
    "toml_string",
]

ROOT = Path(__file__).resolve().parent.parent
TICKET_SECRET = "bench-secret"


@dataclass
class ServerProcess:
    """A started server: its process, Flight SQL URI, log file and a name for messages."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    name: str = "server"

    @property
    def uri(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 10 s); safe to call twice."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all sockets held until all are picked)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
        return ports


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _write_catalog(directory: Path, parquet: Path, days: Path) -> None:
    # time_column bounds Grafana-style requests to their range; sort_by is true of both layouts
    # (the generator writes in time order), so DataFusion may skip sorts.
    tables = []
    for name, source, what in (
        ("points", toml_string(parquet.resolve().as_posix()), "one file"),
        ("points_days", toml_string(days.resolve().as_posix() + "/"), "one file per day"),
    ):
        tables.append(
            f"[tables.{name}]\n"
            f"source = {source}\n"
            'format = "parquet"\n'
            'time_column = "time"\n'
            'sort_by = ["time"]\n'
            f'description = "30 days, 20 hosts x 5 metrics, {what}"\n'
        )
    (directory / "bench.toml").write_text(
        'description = "flightsql-srv benchmark data"\n\n' + "\n".join(tables), encoding="utf-8"
    )


def flight_probe(server: ServerProcess) -> None:
    """Raises unless the server answers a Flight ListActions."""
    with flight.connect(server.uri) as client:
        client.wait_for_available(timeout=0.5)
        list(client.list_actions())


def _wait_ready(
    server: ServerProcess, timeout: float, probe: Callable[[ServerProcess], None]
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with code {server.proc.returncode} before answering:\n"
                + server.log_tail()
            )
        try:
            probe(server)
            return
        except Exception:  # any failure of the probe means "not yet"
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{server.name} did not answer within {timeout:.0f} s:\n" + server.log_tail()
                ) from None
            time.sleep(0.1)


@contextmanager
def supervised(
    name: str,
    cmd: list[str],
    port: int,
    workdir: Path,
    probe: Callable[[ServerProcess], None],
    ready_timeout: float = 60.0,
    cwd: Path = ROOT,
) -> Iterator[ServerProcess]:
    """Start ``cmd`` in ``cwd`` (output to ``workdir/<name>.log``), yield once ``probe``
    passes, and always stop it on the way out."""
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=os.environ.copy(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(proc, port, log_path, name)
    try:
        _wait_ready(server, ready_timeout, probe)
        yield server
    finally:
        server.stop()


@contextmanager
def running_server(
    parquet: Path, days: Path, ready_timeout: float = 60.0, server_root: Path = ROOT
) -> Iterator[ServerProcess]:
    """Serve ``parquet`` as ``bench.points`` and ``days`` as ``bench.points_days``, with the
    ``flightsql_srv`` package of ``server_root`` (another checkout, for comparisons)."""
    with tempfile.TemporaryDirectory(prefix="flightsql-bench-") as tmp:
        catalog = Path(tmp) / "catalog"
        catalog.mkdir()
        _write_catalog(catalog, parquet, days)
        port, health_port = free_ports(2)
        cmd = [
            sys.executable,
            "-m",
            "flightsql_srv",
            "serve",
            "--port",
            str(port),
            "--health-port",
            str(health_port),
            "--metrics-port",
            "-1",
            "--catalog",
            str(catalog),
            "--ticket-secret",
            TICKET_SECRET,
            "--log-level",
            "warning",
        ]
        with supervised(
            "flightsql-srv", cmd, port, Path(tmp), flight_probe, ready_timeout, server_root
        ) as server:
            yield server


class RssSampler:
    """Samples a service's memory (its processes' PSS, see :mod:`bench.processes`) every
    ``interval`` seconds in a thread.

    Use as a context manager around the measured section; ``peak`` is the highest sample
    seen, including one taken on entry and one on exit.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self._process = ServiceProcesses(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.samples: list[int] = []

    def rss(self) -> int:
        """The current memory in bytes (0 once the service is gone)."""
        try:
            value: int = self._process.memory_info().rss
        except psutil.Error:
            return 0
        return value

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.samples.append(self.rss())

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)

    def __enter__(self) -> RssSampler:
        self.samples.append(self.rss())
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling, with one last sample; safe to call twice."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self.samples.append(self.rss())

    def __exit__(self, *exc: object) -> None:
        self.stop()
