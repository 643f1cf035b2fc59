"""``python -m bench``: run every scenario once against a fresh server and write the results.

The run is bounded: RPCs carry timeouts and a watchdog stops the server (then the process)
when ``--time-limit`` passes. The server subprocess is terminated on every exit path.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import pyarrow.flight as flight

from bench import data, report, scenarios
from bench.server import RssSampler, ServerProcess, running_server

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCAN_TARGET_RATIO = 0.5
RSS_TARGET_GROWTH_MB = 150
RSS_INTERVAL_S = 0.05
FULL = {"rows": 10_000_000, "repeat": 5, "select1_n": 200, "time_limit": 600.0}
QUICK = {"rows": 1_000_000, "repeat": 2, "select1_n": 50, "time_limit": 80.0}


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark flightsql-srv (subprocess on loopback) against in-process "
        "DataFusion: SELECT 1 latency, full-scan throughput, server RSS.",
    )
    p.add_argument("--rows", type=int, help=f"rows to generate (default {FULL['rows']:_})")
    p.add_argument("--repeat", type=int, help=f"full-scan repetitions (default {FULL['repeat']})")
    p.add_argument(
        "--select1-n", type=int, help=f"SELECT 1 round trips (default {FULL['select1_n']})"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"CI smoke run: {QUICK['rows']:_} rows, {QUICK['repeat']} repetitions, "
        f"{QUICK['select1_n']} SELECT 1 (explicit flags still win)",
    )
    p.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="directory for latest.json / latest.md"
    )
    p.add_argument("--data-dir", type=Path, default=data.DATA_DIR, help="Parquet cache directory")
    p.add_argument(
        "--time-limit",
        type=float,
        help=f"seconds before the run is aborted (default {FULL['time_limit']:.0f}, "
        f"quick {QUICK['time_limit']:.0f})",
    )
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name, default in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    for name in ("rows", "repeat", "select1_n"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class Watchdog:
    """Stops the server when the time limit passes, and the whole process 30 s later."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = threading.Event()
        self._server: ServerProcess | None = None
        self._timers = [
            threading.Timer(max(seconds, 0.0), self._expire),
            threading.Timer(max(seconds, 0.0) + 30.0, self._hard_exit),
        ]
        for timer in self._timers:
            timer.daemon = True
            timer.start()

    def watch(self, server: ServerProcess) -> None:
        self._server = server
        if self.expired.is_set():
            server.stop()

    def _expire(self) -> None:
        self.expired.set()
        _log(f"time limit of {self.seconds:.0f} s exceeded: stopping the server")
        if self._server is not None:
            self._server.stop()

    def _hard_exit(self) -> None:
        _log("still running 30 s after the time limit: exiting")
        if self._server is not None:
            self._server.proc.kill()
        os._exit(3)

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()


def _rss_run(client: str, rep: int, sampler: RssSampler) -> dict[str, Any]:
    """Server RSS at start, peak and end of one scan (MB)."""
    mb = report.MB
    return {
        "client": client,
        "repetition": rep,
        "start_mb": sampler.samples[0] / mb,
        "peak_mb": sampler.peak / mb,
        "end_mb": sampler.samples[-1] / mb,
        "samples": len(sampler.samples),
    }


def _scan_summary(runs: list[scenarios.ScanRun]) -> dict[str, Any]:
    best = min(runs, key=lambda run: run.seconds)
    return {**best.as_dict(), "runs": [run.as_dict() for run in runs]}


def _run(args: argparse.Namespace, watchdog: Watchdog) -> dict[str, Any]:
    started = time.perf_counter()
    _log(f"dataset: {args.rows:,} rows")
    dataset = data.ensure_dataset(args.rows, args.data_dir)
    if dataset.generated:
        _log(f"generated {dataset.path.name} in {dataset.generation_s:.1f} s")
    with running_server(dataset.path) as server:
        watchdog.watch(server)
        _log(f"server pid {server.pid} on {server.uri}")
        with scenarios.connect_adbc(server.uri) as conn, flight.connect(server.uri) as client:
            _log(f"select1: {args.select1_n} round trips, server then in-process")
            s1_server = scenarios.select1_server(conn, args.select1_n)
            s1_local = scenarios.select1_inprocess(args.select1_n)

            baseline = RssSampler(server.pid).rss()
            runs: dict[str, list[scenarios.ScanRun]] = {
                "server_adbc": [],
                "server_flight": [],
                "inprocess": [],
            }
            rss_runs: list[dict[str, Any]] = []
            server_scans: dict[str, Callable[[], scenarios.ScanRun]] = {
                "server_adbc": lambda: scenarios.scan_adbc(conn),
                "server_flight": lambda: scenarios.scan_flight(client),
            }
            for rep in range(1, args.repeat + 1):
                _log(f"full_scan repetition {rep}/{args.repeat}")
                for key, scan_once in server_scans.items():
                    with RssSampler(server.pid, interval=RSS_INTERVAL_S) as sampler:
                        runs[key].append(scan_once())
                    rss_runs.append(_rss_run(key, rep, sampler))
                runs["inprocess"].append(scenarios.scan_inprocess(dataset.path))
            after = RssSampler(server.pid).rss()
    scan: dict[str, Any] = {key: _scan_summary(value) for key, value in runs.items()}
    local_rate = scan["inprocess"]["rows_per_s"]
    scan.update(
        repeat=args.repeat,
        sql=scenarios.SCAN_SQL,
        ratio_adbc=scan["server_adbc"]["rows_per_s"] / local_rate,
        ratio_flight=scan["server_flight"]["rows_per_s"] / local_rate,
        ratio_adbc_mb=scan["server_adbc"]["mb_per_s"] / scan["inprocess"]["mb_per_s"],
        target_ratio=SCAN_TARGET_RATIO,
        rows_match=all(run.rows == dataset.rows for value in runs.values() for run in value),
    )
    mb = report.MB
    peak = max([baseline] + [int(run["peak_mb"] * mb) for run in rss_runs])
    return {
        "schema_version": 1,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "config": {
            "command": " ".join(["python -m bench", *sys.argv[1:]]).strip(),
            "rows": args.rows,
            "repeat": args.repeat,
            "select1_n": args.select1_n,
            "select1_warmup": scenarios.WARMUP,
            "rss_interval_s": RSS_INTERVAL_S,
            "time_limit_s": args.time_limit,
        },
        "machine": report.machine_info(),
        "data": {
            "path": str(dataset.path),
            "rows": dataset.rows,
            "bytes_on_disk": dataset.bytes_on_disk,
            "row_groups": dataset.row_groups,
            "generated": dataset.generated,
            "generation_s": dataset.generation_s,
        },
        "select1": {
            "n": args.select1_n,
            "server": vars(s1_server),
            "inprocess": vars(s1_local),
            "ratio_p50": s1_server.p50_ms / s1_local.p50_ms,
        },
        "full_scan": scan,
        "server_rss": {
            "baseline_mb": baseline / mb,
            "peak_mb": peak / mb,
            "growth_mb": (peak - baseline) / mb,
            "first_scan_growth_mb": rss_runs[0]["peak_mb"] - baseline / mb,
            "after_mb": after / mb,
            "samples": sum(run["samples"] for run in rss_runs),
            "target_growth_mb": RSS_TARGET_GROWTH_MB,
            "runs": rss_runs,
        },
        "runtime_s": time.perf_counter() - started,
    }


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds, so the server is terminated


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    watchdog = Watchdog(args.time_limit)
    try:
        results = _run(args, watchdog)
    except Exception as exc:
        if watchdog.expired.is_set():
            _log(f"aborted: time limit of {args.time_limit:.0f} s exceeded ({exc})")
            return 2
        raise
    finally:
        watchdog.cancel()
    print(report.render_table(results))
    json_path, md_path = report.write_results(results, args.out)
    _log(f"wrote {json_path} and {md_path} (run took {results['runtime_s']:.1f} s)")
    if not results["full_scan"]["rows_match"]:
        _log("row counts differ between server, in-process and generated data")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
