"""``python -m bench.overheads``: per-query costs of macro expansion and authentication.

Both are measured in one run on this machine, as medians of many repetitions:
- macro expansion of a typical dashboard panel query (target < 50 µs);
- GetFlightInfo(``select 1``) against two in-process servers that differ only in auth (an API
  key on every call; target: the difference < 0.2 ms with a warm token cache), interleaved.
Results go to ``bench/results/overheads.md``.
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.flight as flight

from flightsql_srv.app import Service
from flightsql_srv.auth.config import parse_auth
from flightsql_srv.config import Settings
from flightsql_srv.macros import MacroContext, TimeRange, expand
from flightsql_srv.protocol import pack, sql_pb2

RESULTS = Path(__file__).resolve().parent / "results" / "overheads.md"
PANEL_SQL = (
    "select $__dateBin(time) as time, host, avg(value) as value from demo.metrics "
    "where $__timeFilter(time) and metric = 'cpu' and host in ('host-01','host-02','host-03') "
    "group by 1, 2 order by 1"
)
API_KEY = "bench-api-key"


def macro_expansion_us(n: int = 5000) -> float:
    end = datetime.now(UTC)
    context = MacroContext(TimeRange(end - timedelta(hours=6), end), timedelta(seconds=60))
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        expand(PANEL_SQL, context)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def auth_overhead_us(n: int = 600) -> tuple[float, float]:
    """(median without auth, median with an API key) in µs, calls interleaved so that both
    servers see the same machine load."""
    base = {"port": 0, "health_port": 0, "metrics_port": -1, "ticket_secret": "bench"}
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    auth = parse_auth(
        {
            "api_keys": [{"name": "bench", "sha256": digest, "roles": ["all"]}],
            "roles": {"all": {"tables": ["*"]}},
        }
    )
    plain, keyed = Service(Settings(**base)), Service(Settings(**base, auth=auth))
    descriptor = flight.FlightDescriptor.for_command(
        pack(sql_pb2.CommandStatementQuery(query="select 1"))
    )
    bearer = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {API_KEY}".encode())])
    samples: tuple[list[float], list[float]] = ([], [])
    try:
        plain.start()
        keyed.start()
        clients = [flight.connect(f"grpc://127.0.0.1:{s.port}") for s in (plain, keyed)]
        calls = [
            lambda: clients[0].get_flight_info(descriptor),
            lambda: clients[1].get_flight_info(descriptor, bearer),
        ]
        for _ in range(n + 20):
            for call, out in zip(calls, samples, strict=True):
                started = time.perf_counter()
                call()
                out.append(time.perf_counter() - started)
        for client in clients:
            client.close()
    finally:
        plain.stop()
        keyed.stop()
    return tuple(statistics.median(x[20:]) * 1e6 for x in samples)  # type: ignore[return-value]


def main() -> int:
    expansion = macro_expansion_us()
    plain, keyed = auth_overhead_us()
    lines = [
        "# flightsql-srv per-query overheads",
        "",
        f"Run {datetime.now(UTC).isoformat(timespec='seconds')}: `python -m bench.overheads`.",
        "",
        "| measure | median | target |",
        "|---|---|---|",
        f"| macro expansion, typical panel query | {expansion:.1f} µs | < 50 µs |",
        f"| GetFlightInfo `select 1`, no auth | {plain:.0f} µs | |",
        f"| GetFlightInfo `select 1`, API key | {keyed:.0f} µs | |",
        f"| auth overhead per call | {keyed - plain:.0f} µs | < 200 µs |",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
