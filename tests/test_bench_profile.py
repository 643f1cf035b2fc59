"""bench.profile: samples are put in the right phase and the report adds up."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.profile import OTHER, Profile, _read_samples, classify, render_report

PLAN = (
    "Thread.run (threading.py:982);FlightSqlServer.get_flight_info (flightsql_srv/server.py:221);"
    "Statements.plan (flightsql_srv/statements.py:136);"
    "Engine._plan_sql (flightsql_srv/engine.py:222);0x7f (datafusion/_internal.abi3.so)"
)
SIGN = (
    "FlightSqlServer.get_flight_info (flightsql_srv/server.py:221);"
    "Signer.sign (flightsql_srv/tickets.py:51)"
)
STREAM = (
    "grpc::ThreadManager::MainWorkLoop (pyarrow/libarrow_flight.so.2600);"
    "Executor._stream (flightsql_srv/execution.py:94);_batches (flightsql_srv/engine.py:95)"
)
TRANSPORT = "grpc::Server::SyncRequest (pyarrow/libarrow_flight.so.2600);memcpy (libc.so.6)"


def test_samples_go_to_the_innermost_phase_named() -> None:
    assert classify(PLAN) == "GetFlightInfo: DataFusion planning"
    assert classify(SIGN) == "GetFlightInfo: macros, signing, other Python"
    assert classify(STREAM) == "DoGet: streaming batches (Python generator)"
    assert classify(TRANSPORT) == "Arrow Flight / gRPC (C++: IPC, transport)"
    assert classify("_start (libc.so.6);malloc (libc.so.6)") == OTHER


def test_raw_samples_are_counted_by_phase_and_function(tmp_path: Path) -> None:
    raw = tmp_path / "samples.txt"
    raw.write_text(f"{PLAN} 3\n{SIGN} 2\n{TRANSPORT} 5\nnot a sample line\n")
    phases, functions = _read_samples(raw)
    assert sum(phases.values()) == 10
    assert phases["GetFlightInfo: DataFusion planning"] == 3
    assert functions == Counter({"Engine._plan_sql": 3, "Signer.sign": 2})
    report = render_report([Profile("SELECT 1", 100, 2.0, phases, functions)], "test", tmp_path)
    assert "| GetFlightInfo: DataFusion planning | 30.0 % |" in report
    assert "100 queries in 2.0 s (50.0/s), 10 busy samples" in report


def test_waiting_threads_are_left_out(tmp_path: Path) -> None:
    waits = (
        "Executor.run (flightsql_srv/execution.py:62);"
        "Future.result (concurrent/futures/_base.py:451);"
        "Condition.wait (threading.py:331);PyThread_acquire_lock_timed (libpython3.11.so);"
        "0x7f (libc.so.6)"
    )
    raw = tmp_path / "samples.txt"
    raw.write_text(f"{waits} 7\n{PLAN} 3\n")
    phases, _ = _read_samples(raw)
    assert sum(phases.values()) == 3
