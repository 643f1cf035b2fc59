"""``python -m bench``: every scenario, against every contender, in one bounded run.

Our server (subprocess), in-process DataFusion on the same files and roapi (when installed; in
its default memory mode and in file mode) answer the same queries: ``SELECT 1``, a Grafana
panel, a dashboard of 8 concurrent panels, a full scan with server RSS and time to first batch,
throughput with 1-8 client threads and from 8 client processes, and parallel fetch when the
server supports it. Each server's memory is sampled over the whole run. Results go to
``bench/results/latest.{json,md}`` and PNG plots beside them. RPCs carry timeouts and a watchdog
stops the servers (then the process) when ``--time-limit`` passes; the subprocesses are
terminated on every exit path.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import data, plots, report, roapi, suite
from bench.server import ServerProcess

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_TUNABLE = (
    "rows",
    "select1_n",
    "panel_n",
    "dashboard_reps",
    "scan_repeat",
    "scaling_s",
    "processes_s",
)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark flightsql-srv against in-process DataFusion and roapi on "
        "loopback: SELECT 1, a Grafana panel, a dashboard, full scan, scaling, 8 client processes, "
        "parallel fetch.",
    )
    full, quick = suite.FULL, suite.QUICK
    p.add_argument("--rows", type=int, help=f"rows to generate (default {full.rows:_})")
    p.add_argument("--select1-n", type=int, help=f"SELECT 1 round trips (default {full.select1_n})")
    p.add_argument(
        "--panel-n", type=int, help=f"panel queries per variant (default {full.panel_n})"
    )
    p.add_argument(
        "--dashboard-reps", type=int, help=f"dashboard repetitions (default {full.dashboard_reps})"
    )
    p.add_argument(
        "--scan-repeat", type=int, help=f"full-scan repetitions (default {full.scan_repeat})"
    )
    p.add_argument(
        "--scaling-s", type=float, help=f"seconds per concurrency level (default {full.scaling_s})"
    )
    p.add_argument(
        "--processes-s",
        type=float,
        help=f"seconds of the 8-process scenario per contender (default {full.processes_s:g})",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"CI smoke run: {quick.rows:_} rows and few repetitions (explicit flags still win)",
    )
    p.add_argument(
        "--roapi",
        metavar="PATH",
        help="roapi executable (default: beside this Python, else on PATH)",
    )
    p.add_argument("--no-roapi", action="store_true", help="leave roapi out even if installed")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="directory for latest.json / latest.md"
    )
    p.add_argument("--data-dir", type=Path, default=data.DATA_DIR, help="Parquet cache directory")
    p.add_argument(
        "--time-limit",
        type=float,
        help=f"seconds before the run is aborted (default {full.time_limit:.0f}, "
        f"quick {quick.time_limit:.0f})",
    )
    args = p.parse_args(argv)
    defaults = quick if args.quick else full
    for name in (*_TUNABLE, "time_limit"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(defaults, name))
        elif name != "time_limit" and getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return args


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class Watchdog:
    """Stops the servers when the time limit passes, and the whole process 30 s later."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = threading.Event()
        self._servers: list[ServerProcess] = []
        self._timers = [
            threading.Timer(max(seconds, 0.0), self._expire),
            threading.Timer(max(seconds, 0.0) + 30.0, self._hard_exit),
        ]
        for timer in self._timers:
            timer.daemon = True
            timer.start()

    def watch(self, server: ServerProcess) -> None:
        self._servers.append(server)
        if self.expired.is_set():
            server.stop()

    def _expire(self) -> None:
        self.expired.set()
        _log(f"time limit of {self.seconds:.0f} s exceeded: stopping the servers")
        for server in self._servers:
            server.stop()

    def _hard_exit(self) -> None:
        _log("still running 30 s after the time limit: exiting")
        for server in self._servers:
            server.proc.kill()
        os._exit(3)

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()


def _run(args: argparse.Namespace, watchdog: Watchdog) -> dict[str, Any]:
    started = time.perf_counter()
    load_start = os.getloadavg()
    params = dataclasses.replace(
        suite.QUICK if args.quick else suite.FULL,
        time_limit=args.time_limit,
        **{name: getattr(args, name) for name in _TUNABLE},
    )
    binary = None if args.no_roapi else roapi.find_binary(args.roapi)
    missing = "left out (--no-roapi)" if args.no_roapi else "not installed"
    measured = suite.run(params, args.data_dir, binary, watchdog.watch, missing)
    return {
        "schema_version": 2,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "config": {
            "command": " ".join(["python -m bench", *sys.argv[1:]]).strip(),
            **dataclasses.asdict(params),
            "rss_interval_s": suite.RSS_INTERVAL_S,
            "run_rss_interval_s": suite.RUN_RSS_INTERVAL_S,
            "roapi_requested": not args.no_roapi,
            "load_average_start": load_start,
        },
        **measured,
        "load_average_end": os.getloadavg(),
        "runtime_s": time.perf_counter() - started,
    }


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds, so the servers are terminated


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
    if not args.no_plots:
        results["plots"] = plots.write_plots(results, args.out)
    print(report.render_targets(results))
    json_path, md_path = report.write_results(results, args.out)
    _log(f"wrote {json_path} and {md_path} (run took {results['runtime_s']:.1f} s)")
    problems = report.problems(results)
    for problem in problems:
        _log(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
