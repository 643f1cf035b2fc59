"""``python -m bench.isolation --server-root <checkout>``: what the engine-worker process model
costs, against another checkout's server (e.g. the last commit before it), in one run.

Both servers serve the bench dataset and are measured interleaved, so they see the same
machine load:
- ``SELECT 1`` p50 through ADBC (target: at most +0.3 ms);
- full-scan throughput through pyarrow.flight (target: >= 95 % of before);
- panel queries/s from 8 client processes, one ADBC connection each (target: >= before).
Results go to ``bench/results/isolation.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import pyarrow.flight as flight

from bench import data, server
from bench.concurrency import ClientProcesses
from bench.contenders import connect_adbc
from bench.queries import PANEL, SCAN
from flightsql_srv.protocol import pack, sql_pb2

RESULTS = Path(__file__).resolve().parent / "results" / "isolation.md"
TABLE = "bench.points"


def _panel() -> str:
    return PANEL.replace("{table}", TABLE)


def _select1_ms(cursors: dict[str, Any], n: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in cursors}
    for _ in range(n):
        for name, cursor in cursors.items():
            started = time.perf_counter()
            cursor.execute("SELECT 1")
            cursor.fetch_arrow_table()
            samples[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def _scan_mb_s(uris: dict[str, str], repeats: int) -> dict[str, float]:
    best: dict[str, float] = dict.fromkeys(uris, 0.0)
    sql = SCAN.replace("{points}", TABLE)
    for _ in range(repeats):
        for name, uri in uris.items():
            with flight.connect(uri) as client:
                command = pack(sql_pb2.CommandStatementQuery(query=sql))
                started = time.perf_counter()
                info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
                table = client.do_get(info.endpoints[0].ticket).read_all()
                seconds = time.perf_counter() - started
            best[name] = max(best[name], table.nbytes / 1e6 / seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-root", type=Path, required=True, help="the 'before' checkout")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--select1-n", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0, help="per concurrency run")
    args = parser.parse_args()
    dataset = data.ensure_dataset(args.rows)
    days = data.ensure_days(dataset)
    before_root = args.server_root.resolve()
    with (
        server.running_server(dataset.path, days, server_root=before_root) as before,
        server.running_server(dataset.path, days) as after,
    ):
        uris = {"before": before.uri, "after": after.uri}
        connections = {name: connect_adbc(uri) for name, uri in uris.items()}
        cursors = {name: conn.cursor() for name, conn in connections.items()}
        select1 = _select1_ms(cursors, args.select1_n)
        for conn in connections.values():
            conn.close()
        scan = _scan_mb_s(uris, 3)
        qps = {name: 0.0 for name in uris}
        with ClientProcesses(8) as clients:
            for _ in range(2):  # interleaved: before, after, before, after
                for name, uri in uris.items():
                    measured = clients.throughput(uri, _panel(), args.seconds).qps
                    qps[name] = max(qps[name], measured)
    lines = [
        "# Engine workers vs the in-process engine",
        "",
        f"Before: `{before_root}`. {args.rows:_} rows; one run, interleaved.",
        "",
        "| measure | before | after | ratio | target |",
        "|---|---|---|---|---|",
        f"| SELECT 1 p50 through ADBC (ms) | {select1['before']:.2f} | {select1['after']:.2f} "
        f"| +{select1['after'] - select1['before']:.2f} ms | ≤ +0.3 ms |",
        f"| full scan through pyarrow.flight (MB/s, best of 3) | {scan['before']:.0f} | "
        f"{scan['after']:.0f} | {scan['after'] / scan['before']:.2f}× | ≥ 0.95× |",
        f"| panel q/s, 8 client processes (best of 2) | {qps['before']:.1f} | "
        f"{qps['after']:.1f} | {qps['after'] / qps['before']:.2f}× | ≥ 1.0× |",
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
