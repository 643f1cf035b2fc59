"""Load and soak: N concurrent ADBC clients against a server subprocess for a fixed duration.

Run ``python -m bench.load --duration 30 --clients 4`` (``--help`` for options). Each client
process holds one ADBC connection (reconnecting every ``--reconnect-every`` operations) and
picks, at random with fixed weights:

* **dashboard**: Grafana panel queries (``x-client-type: grafana``, ``query_range_begin`` /
  ``query_range_end`` headers, ``$__timeFilter`` and ``$__timeGroup`` macros) over a random
  6-hour window of ``bench.points`` (one file) or ``bench.points_days`` (a file per day);
* **metadata**: ``adbc_get_objects`` (GetCatalogs/GetDbSchemas/GetTables), ``adbc_get_table_schema``
  and ``adbc_get_info`` (GetSqlInfo);
* **scan**: every row of a random multi-day window; the row count is checked against the
  deterministic data set, so a truncated stream counts as an error.

Meanwhile a sampler records the server's RSS, open file descriptors, threads and CPU. The
report gives throughput and latency percentiles per kind, errors, the resource figures at start
and end, and their least-squares slope over the post-warm-up part of the run (a leak shows as a
steady positive slope). It writes ``<name>.md``, ``<name>.json`` and ``<name>.png`` to
``bench/results/``. The run is bounded: every RPC has a timeout, clients stop at the deadline,
and the server subprocess is terminated on every exit path.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import random
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as adbc
import grpc
import numpy as np
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import data, report
from bench.processes import ServiceProcesses
from bench.server import running_server

__all__ = ["LoadConfig", "run", "main", "expected_rows", "slope_per_min"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
KINDS = ("dashboard", "metadata", "scan")
RPC_TIMEOUT_S = 60.0
_HEADER = adbc_driver_flightsql.StatementOptions.RPC_CALL_HEADER_PREFIX.value
_SERIES = len(data.HOSTS) * len(data.METRICS)

#: The same rows twice: one Parquet file, and one file per day (bench.server's catalog).
TABLES = ("bench.points", "bench.points_days")
#: Grafana-style panels (time series, stat, table) on either benchmark table.
DASHBOARD_SQL = (
    "select $__timeGroup(time, '5m') as time, host, avg(value) as value from {table} "
    "where $__timeFilter(time) and metric = 'cpu' group by 1, 2 order by 1",
    "select metric, max(value) as peak, avg(value) as mean from {table} "
    "where $__timeFilter(time) group by metric order by metric",
    "select time, host, metric, value from {table} "
    "where $__timeFilter(time) and host = 'host-07' order by time desc limit 500",
)
SCAN_SQL = "select time, host, metric, value from {table} where $__timeFilter(time)"


@dataclass
class LoadConfig:
    """What to run; the defaults are the CI-sized run."""

    duration: float = 30.0
    clients: int = 4
    rows: int = 1_000_000
    scan_days: float = 3.0
    weights: tuple[float, float, float] = (0.6, 0.25, 0.15)  # dashboard, metadata, scan
    reconnect_every: int = 50
    sample_interval: float = 0.5
    warmup_fraction: float = 0.5
    idle_tail: float = 10.0  # seconds of idling after the load before a last reading
    seed: int = 1
    name: str = "load"
    out: Path | None = RESULTS_DIR
    data_dir: Path = data.DATA_DIR


@dataclass
class KindStats:
    """Latencies (seconds) of the successful operations of one kind, and the failures."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class Sample:
    """One reading of the server process."""

    t: float
    rss_mb: float
    fds: int
    threads: int
    cpu_percent: float
    serving: bool  # grpc.health.v1 Check answered SERVING within a second


def expected_rows(total_rows: int, begin_us: int, end_us: int) -> int:
    """Rows of :mod:`bench.data`'s file with ``begin_us <= time <= end_us`` (inclusive, as
    ``$__timeFilter`` expands); ``total_rows`` must be a multiple of the series count."""
    ticks = total_rows // _SERIES
    step = max(data.SPAN_US // -(-total_rows // _SERIES), 1)
    first = max(-(-(begin_us - data.START_US) // step), 0)
    last = min((end_us - data.START_US) // step, ticks - 1)
    return max(last - first + 1, 0) * _SERIES


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, in value units per minute."""
    if len(points) < 3:
        return 0.0
    t, v = np.array(points, dtype=float).T
    if np.ptp(t) == 0:
        return 0.0
    return float(np.polyfit(t, v, 1)[0] * 60.0)


class ServerSampler:
    """Samples RSS, open fds, threads, CPU and health of the server every ``interval`` s."""

    def __init__(self, pid: int, interval: float, health_port: int) -> None:
        self._process = psutil.Process(pid)
        self._service = ServiceProcesses(pid)
        self._channel = grpc.insecure_channel(f"127.0.0.1:{health_port}")
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="server-sampler", daemon=True)
        self._t0 = time.monotonic()
        self.samples: list[Sample] = []

    def take(self) -> None:
        """Append one reading (none once the process is gone)."""
        try:
            with self._process.oneshot():
                sample = Sample(
                    t=time.monotonic() - self._t0,
                    rss_mb=self._service.memory() / report.MB,
                    fds=self._process.num_fds(),
                    threads=self._process.num_threads(),
                    cpu_percent=self._service.cpu_percent(),
                    serving=False,
                )
        except psutil.Error:
            return  # the server is gone; the run reports that through its clients
        sample.serving = self._serving()
        self.samples.append(sample)

    def _serving(self) -> bool:
        request = health_pb2.HealthCheckRequest(service="")
        try:
            status = self._health.Check(request, timeout=1.0).status
        except grpc.RpcError:
            return False
        return bool(status == health_pb2.HealthCheckResponse.SERVING)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.take()

    def __enter__(self) -> ServerSampler:
        self._process.cpu_percent()  # primes the CPU counter
        self.take()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.take()
        self._channel.close()


class Client:
    """One simulated user: an ADBC connection and a loop of weighted random operations."""

    def __init__(self, uri: str, config: LoadConfig, index: int, deadline: float) -> None:
        self.uri = uri
        self.config = config
        self.deadline = deadline
        self.rng = random.Random(config.seed * 1000 + index)
        self.stats = {kind: KindStats() for kind in KINDS}
        self._ops: dict[str, Callable[[Any], None]] = {
            "dashboard": self._dashboard,
            "metadata": self._metadata,
            "scan": self._scan,
        }

    def _connect(self) -> Any:
        timeouts = {
            adbc_driver_flightsql.DatabaseOptions.TIMEOUT_QUERY.value: str(RPC_TIMEOUT_S),
            adbc_driver_flightsql.DatabaseOptions.TIMEOUT_FETCH.value: str(RPC_TIMEOUT_S),
        }
        return adbc.connect(self.uri, db_kwargs=timeouts, autocommit=True)

    def _window(self, seconds: float) -> tuple[int, int]:
        """A random ``[begin, end]`` inside the data's span, whole seconds, in µs."""
        span_s = data.SPAN_US // 1_000_000
        begin_s = self.rng.randrange(0, max(int(span_s - seconds), 1))
        begin = data.START_US + begin_s * 1_000_000
        return begin, begin + int(seconds) * 1_000_000

    @staticmethod
    def _rfc3339(us: int) -> str:
        return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _query(self, conn: Any, sql: str, window: tuple[int, int]) -> int:
        """Run ``sql`` with the window in the Grafana headers; returns the row count."""
        with conn.cursor() as cur:
            cur.adbc_statement.set_options(
                **{
                    _HEADER + "x-client-type": "grafana",
                    _HEADER + "query_range_begin": self._rfc3339(window[0]),
                    _HEADER + "query_range_end": self._rfc3339(window[1]),
                }
            )
            cur.execute(sql)
            rows: int = cur.fetch_arrow_table().num_rows
        return rows

    def _dashboard(self, conn: Any) -> None:
        sql = self.rng.choice(DASHBOARD_SQL).format(table=self.rng.choice(TABLES))
        if self._query(conn, sql, self._window(6 * 3600)) == 0:
            raise AssertionError(f"dashboard query returned no rows: {sql}")

    def _metadata(self, conn: Any) -> None:
        objects = conn.adbc_get_objects(depth="all").read_all()
        if objects.num_rows == 0:
            raise AssertionError("adbc_get_objects returned no catalog")
        schema = conn.adbc_get_table_schema("points", db_schema_filter="bench")
        if schema.names != ["time", "host", "metric", "value"]:
            raise AssertionError(f"unexpected bench.points schema: {schema.names}")
        if not conn.adbc_get_info():
            raise AssertionError("adbc_get_info returned nothing")

    def _scan(self, conn: Any) -> None:
        window = self._window(self.config.scan_days * 86_400)
        got = self._query(conn, SCAN_SQL.format(table=self.rng.choice(TABLES)), window)
        want = expected_rows(self.config.rows, *window)
        if got != want:  # a truncated or doubled stream
            raise AssertionError(f"scan returned {got} rows, expected {want}")

    def run(self) -> None:
        """Loop until the deadline; every failure is recorded, none stops the client."""
        kinds, weights = list(KINDS), list(self.config.weights)
        conn, done = None, 0
        try:
            while time.monotonic() < self.deadline:
                if conn is None or done % self.config.reconnect_every == 0:
                    if conn is not None:
                        conn.close()
                    conn = self._connect()
                kind = self.rng.choices(kinds, weights)[0]
                started = time.perf_counter()
                try:
                    self._ops[kind](conn)
                except Exception as exc:  # every failure is a finding, whatever its class
                    self.stats[kind].errors.append(f"{type(exc).__name__}: {exc}"[:500])
                    conn.close()
                    conn = None  # a fresh connection after an error, as a pool would
                else:
                    self.stats[kind].latencies.append(time.perf_counter() - started)
                done += 1
        finally:
            if conn is not None:
                conn.close()


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    p50, p95, p99 = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
    return {
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "max_ms": max(latencies) * 1000,
    }


def _resources(samples: list[Sample], warmup_fraction: float) -> dict[str, Any]:
    """Start/peak/end per resource and the slope after warm-up."""
    if not samples:
        return {}
    cut = samples[-1].t * warmup_fraction
    steady = [s for s in samples if s.t >= cut]
    out: dict[str, Any] = {"warmup_s": cut, "steady_samples": len(steady)}
    for name in ("rss_mb", "fds", "threads"):
        values = [getattr(s, name) for s in samples]
        steady_values = [getattr(s, name) for s in steady]
        warm = [getattr(s, name) for s in samples if s.t < cut] or values[:1]
        out[name] = {
            "start": values[0],
            "warmup_peak": max(warm),
            "after_warmup": steady_values[0],
            "end": values[-1],
            "peak": max(values),
            "steady_min": min(steady_values),
            "steady_max": max(steady_values),
            "slope_per_min": slope_per_min([(s.t, getattr(s, name)) for s in steady]),
        }
    out["cpu_percent_mean"] = float(np.mean([s.cpu_percent for s in samples]))
    out["not_serving_samples"] = sum(not s.serving for s in samples)
    out["samples"] = len(samples)
    return out


def _health_port(args: Any) -> int:
    """The ``--health-port`` that :func:`bench.server.running_server` gave the server."""
    args = list(args)
    return int(args[args.index("--health-port") + 1])


def _idle_reading(pid: int, seconds: float, health_port: int) -> dict[str, float]:
    """RSS, fds and threads after ``seconds`` without load: what the server keeps."""
    time.sleep(seconds)  # a fixed idle period is the measurement itself, not a wait
    sampler = ServerSampler(pid, seconds, health_port)
    sampler.take()
    if not sampler.samples:
        return {}
    s = sampler.samples[0]
    return {"after_s": seconds, "rss_mb": s.rss_mb, "fds": s.fds, "threads": s.threads}


def _client_main(uri: str, config: LoadConfig, index: int, deadline: float, results: Any) -> None:
    """One client process: run until ``deadline`` (``time.monotonic`` is system-wide on
    Linux), then report its stats and CPU seconds."""
    client = Client(uri, config, index, deadline)
    try:
        client.run()
    finally:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        results.put((index, client.stats, usage.ru_utime + usage.ru_stime))


def _run_clients(
    uri: str, config: LoadConfig, deadline: float
) -> tuple[list[Any], float, list[int | None]]:
    """Start ``config.clients`` client processes and collect their results (bounded).

    Processes, not threads: the ADBC Go driver shares per-driver state between connections
    of one process and crashed with "concurrent map read and map write" at 8 threads; one
    process per client also keeps the clients' Python off each other's GIL.

    Returns:
        Each finished client's stats, their CPU seconds, and every client's exit code.
    """
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_client_main, args=(uri, config, i, deadline, results), name=f"load-client-{i}"
        )
        for i in range(config.clients)
    ]
    for proc in procs:
        proc.start()
    stats, cpu = [], 0.0
    for _ in procs:  # read before joining: a child blocks until its result is taken
        wait = max(deadline - time.monotonic(), 0) + RPC_TIMEOUT_S + 30
        try:
            _, client_stats, client_cpu = results.get(timeout=wait)
        except queue.Empty:
            break
        stats.append(client_stats)
        cpu += client_cpu
    for proc in procs:
        proc.join(10)
        if proc.is_alive():  # a client that never reported: stop it, count it as hung
            proc.kill()
            proc.join(10)
    return stats, cpu, [proc.exitcode for proc in procs]


def _summary(clients: list[dict[str, KindStats]], elapsed: float) -> dict[str, Any]:
    kinds: dict[str, Any] = {}
    for kind in KINDS:
        latencies = [x for c in clients for x in c[kind].latencies]
        errors = [e for c in clients for e in c[kind].errors]
        kinds[kind] = {
            "ok": len(latencies),
            "errors": len(errors),
            "per_s": len(latencies) / elapsed if elapsed else 0.0,
            **_percentiles(latencies),
            "first_errors": sorted(set(errors))[:5],
        }
    return kinds


def run(config: LoadConfig) -> dict[str, Any]:
    """Run the load against a fresh server subprocess and return the results (also written
    to ``config.out`` unless it is None)."""
    if config.rows % _SERIES:
        raise ValueError(f"rows must be a multiple of {_SERIES}, got {config.rows}")
    dataset = data.ensure_dataset(config.rows, config.data_dir)
    days = data.ensure_days(dataset)
    load_before = os.getloadavg()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    with running_server(dataset.path, days) as server:
        started = time.monotonic()
        deadline = started + config.duration
        health_port = _health_port(server.proc.args)
        with ServerSampler(server.pid, config.sample_interval, health_port) as sampler:
            clients, client_cpu, exit_codes = _run_clients(server.uri, config, deadline)
        hung = config.clients - len(clients)  # crashed or stuck: never reported
        elapsed = time.monotonic() - started
        idle = _idle_reading(server.pid, config.idle_tail, health_port)
        server_alive = server.proc.poll() is None
        log_tail = server.log_tail(40)
    result = {
        "schema_version": 1,
        "date": started_at,
        "config": {
            **{k: v for k, v in asdict(config).items() if k not in ("out", "data_dir")},
            "command": "python -m bench.load " + _flags(config),
        },
        "machine": report.machine_info(),
        "conditions": {
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            # the clients share the cores with the server: their CPU is part of the picture
            "client_cpu_percent": 100 * client_cpu / elapsed,
            "note": "shared machine: other processes may compete for the cores",
        },
        "elapsed_s": elapsed,
        "kinds": _summary(clients, elapsed),
        "hung_clients": hung,
        "client_exit_codes": exit_codes,
        "server_alive_at_end": server_alive,
        "server_log_tail": log_tail,
        "resources": _resources(sampler.samples, config.warmup_fraction),
        "idle_after": idle,
        "samples": [asdict(s) for s in sampler.samples],
    }
    result["errors_total"] = sum(k["errors"] for k in result["kinds"].values())
    if config.out is not None:
        write(result, config.out, config.name)
    return result


def _flags(config: LoadConfig) -> str:
    return (
        f"--duration {config.duration:g} --clients {config.clients} --rows {config.rows} "
        f"--scan-days {config.scan_days:g} --sample-interval {config.sample_interval:g} "
        f"--weights {' '.join(f'{w:g}' for w in config.weights)} --name {config.name}"
    )


def render_markdown(r: dict[str, Any]) -> str:
    """The human-readable report."""
    c, m, res = r["config"], r["machine"], r["resources"]
    lines = [
        f"# flightsql-srv {c['name']}: {c['clients']} clients for {c['duration']:g} s",
        "",
        f"`{c['command']}` on {r['date']}: {m['cpu_model']}, {m['usable_cores']} usable cores, "
        f"{m['memory_gb']} GB; pyarrow {m['pyarrow']}, datafusion {m['datafusion']}. "
        f"Load average before {r['conditions']['loadavg_before'][0]:.2f}, after "
        f"{r['conditions']['loadavg_after'][0]:.2f} ({r['conditions']['note']}). Data: "
        f"{c['rows']:,} rows (bench.data); scans read {c['scan_days']:g} days, dashboards 6 h.",
        "",
        "| kind | ok | ops/s | p50 ms | p95 ms | p99 ms | max ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, k in r["kinds"].items():
        lines.append(
            f"| {kind} | {k['ok']} | {k['per_s']:.1f} | {k['p50_ms']:.0f} | {k['p95_ms']:.0f} "
            f"| {k['p99_ms']:.0f} | {k['max_ms']:.0f} | {k['errors']} |"
        )
    lines += [
        "",
        f"Errors: **{r['errors_total']}**; clients that never reported: {r['hung_clients']};"
        f" server alive at the end: {r['server_alive_at_end']}; mean server CPU "
        f"{res.get('cpu_percent_mean', 0):.0f}%, clients' CPU "
        f"{r['conditions']['client_cpu_percent']:.0f}% (100% = one core).",
        "",
        f"Health (grpc.health.v1, every sample): NOT_SERVING or no answer in "
        f"{res.get('not_serving_samples', 0)} of {res.get('samples', 0)} samples.",
        "",
        f"Server resources (warm-up = first {res.get('warmup_s', 0):.0f} s; slope is the "
        "least-squares fit over the rest):",
        "",
        "| resource | start | after warm-up | end | peak | slope after warm-up |",
        "|---|---|---|---|---|---|",
    ]
    for name, unit in (("rss_mb", "MB"), ("fds", "fds"), ("threads", "threads")):
        x = res.get(name)
        if x:
            lines.append(
                f"| {name} | {x['start']:.0f} | {x['after_warmup']:.0f} | {x['end']:.0f} "
                f"| {x['peak']:.0f} | {x['slope_per_min']:+.2f} {unit}/min |"
            )
    idle = r.get("idle_after") or {}
    if idle:
        lines += [
            "",
            f"After {idle['after_s']:g} s without load: RSS {idle['rss_mb']:.0f} MB, "
            f"{idle['fds']} fds, {idle['threads']} threads.",
        ]
    lines += ["", f"![server RSS, fds and threads over time]({c['name']}.png)", ""]
    errors = [e for k in r["kinds"].values() for e in k["first_errors"]]
    if errors:
        lines += ["First errors:", "", *[f"- `{e}`" for e in errors], ""]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    """RSS, fds and threads against time, one panel each, warm-up shaded."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    samples = r["samples"]
    t = [s["t"] for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    for ax, (name, label) in zip(
        axes, (("rss_mb", "RSS (MB)"), ("fds", "open fds"), ("threads", "threads")), strict=True
    ):
        ax.plot(t, [s[name] for s in samples], linewidth=1)
        ax.axvspan(0, r["resources"].get("warmup_s", 0), color="grey", alpha=0.15)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds (shaded: warm-up)")
    c = r["config"]
    fig.suptitle(f"flightsql-srv server process, {c['clients']} clients, {c['duration']:g} s")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(r: dict[str, Any], out: Path, name: str) -> None:
    """``<name>.json``, ``<name>.md`` and ``<name>.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(render_markdown(r), encoding="utf-8")
    try:
        plot(r, out / f"{name}.png")
    except ImportError:  # matplotlib is the optional `bench` extra
        print("[load] matplotlib missing: no plot (pip install '.[bench]')", file=sys.stderr)


def _parse(argv: list[str] | None) -> LoadConfig:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    d = LoadConfig()
    p.add_argument("--duration", type=float, default=d.duration, help="seconds of load")
    p.add_argument("--clients", type=int, default=d.clients, help="concurrent ADBC clients")
    p.add_argument("--rows", type=int, default=d.rows, help="rows in the generated table")
    p.add_argument("--scan-days", type=float, default=d.scan_days, help="days per large scan")
    p.add_argument("--sample-interval", type=float, default=d.sample_interval)
    p.add_argument(
        "--weights",
        type=float,
        nargs=3,
        default=d.weights,
        metavar=KINDS,
        help="relative weights of dashboard, metadata and scan operations",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--idle-tail", type=float, default=d.idle_tail, help="idle seconds at the end")
    p.add_argument("--name", default=d.name, help="report name: <name>.md/.json/.png")
    p.add_argument("--out", type=Path, default=d.out, help="results directory")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.clients < 1 or not 0 < args.scan_days <= 30:
        p.error("--duration > 0, --clients >= 1 and 0 < --scan-days <= 30 are required")
    return LoadConfig(
        duration=args.duration,
        clients=args.clients,
        rows=args.rows,
        scan_days=args.scan_days,
        weights=tuple(args.weights),
        sample_interval=args.sample_interval,
        seed=args.seed,
        idle_tail=args.idle_tail,
        name=args.name,
        out=args.out,
    )


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when there were no errors, 1 otherwise."""
    config = _parse(argv)
    result = run(config)
    print(render_markdown(result))
    return 0 if result["errors_total"] == 0 and not result["hung_clients"] else 1


if __name__ == "__main__":
    sys.exit(main())
