"""One benchmark run: every scenario against every contender, results as one JSON-able dict.

Scenario results share one shape, ``{"rows": [{"contender", "variant", ...measures}]}``, so
the report can put each contender's row next to the in-process and roapi rows of the same
variant. Contenders are interleaved inside each scenario (round-robin calls, or alternating
repetitions) so that load from elsewhere on the machine affects them alike.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
import pyarrow.flight as flight

from bench import checks, concurrency, data, queries, roapi, scenarios
from bench.contenders import (
    INPROCESS,
    OURS,
    ROAPI,
    Contender,
    Session,
    flight_contender,
    inprocess_contender,
)
from bench.report import MB, machine_info
from bench.server import RssSampler, ServerProcess, running_server

__all__ = ["Params", "FULL", "QUICK", "run"]

RSS_INTERVAL_S = 0.05
PARALLEL_PROBE = 4
PARALLEL_HEADER = "parallel_endpoints"
#: Alternating slices per concurrency level and contender.
SCALING_SLICES = 3


@dataclass(frozen=True)
class Params:
    """How much of everything one run does."""

    rows: int
    select1_n: int
    panel_n: int
    dashboard_reps: int
    scan_repeat: int
    scaling_s: float
    time_limit: float
    #: Seconds of sampling one latency variant may take; slow ones get fewer samples.
    latency_budget_s: float
    #: Seconds of dashboard bursts one contender may take.
    dashboard_budget_s: float
    clients: tuple[int, ...] = (1, 2, 4, 8)


FULL = Params(
    rows=10_000_000,
    select1_n=200,
    panel_n=40,
    dashboard_reps=10,
    scan_repeat=3,
    scaling_s=3.0,
    time_limit=420.0,
    latency_budget_s=8.0,
    dashboard_budget_s=15.0,
)
QUICK = Params(
    rows=200_000,
    select1_n=10,
    panel_n=5,
    dashboard_reps=2,
    scan_repeat=2,
    scaling_s=0.2,
    time_limit=80.0,
    latency_budget_s=0.5,
    dashboard_budget_s=1.0,
)


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _row(contender: str, variant: str, **measures: Any) -> dict[str, Any]:
    return {"contender": contender, "variant": variant, **measures}


class _Sessions:
    """Sessions opened once per (contender, headers) and closed at the end of the run."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._open: dict[tuple[str, str], Session] = {}

    def get(self, contender: Contender, headers: dict[str, str] | None = None) -> Session:
        key = (contender.name, repr(sorted((headers or {}).items())))
        if key not in self._open:
            session = contender.session(headers)
            self._stack.callback(session.close)
            self._open[key] = session
        return self._open[key]


def _query_call(session: Session, sql: str) -> Callable[[], object]:
    return lambda: session.query(sql)


# --- correctness ------------------------------------------------------------------------------


def _checks(contenders: list[Contender], sessions: _Sessions) -> dict[str, Any]:
    """Fingerprint every checked query on every contender; all must agree with ours."""
    cases: list[tuple[str, str]] = [
        ("whole table, file", queries.CHECK.replace("{table}", "{points}")),
        ("whole table, day directory", queries.CHECK.replace("{table}", "{days}")),
        ("panel, file", queries.PANEL.replace("{table}", "{points}")),
        ("panel, day directory", queries.PANEL.replace("{table}", "{days}")),
        *((f"dashboard: {name}", sql) for name, sql in queries.DASHBOARD),
    ]
    ours = contenders[0]
    grafana = queries.PANEL_GRAFANA.replace("{table}", "{points}")
    results = []
    for name, template in cases:
        prints = {
            c.name: checks.fingerprint(sessions.get(c).query(c.sql(template))) for c in contenders
        }
        if name == "panel, file":
            prints[f"{OURS} (Grafana macros)"] = checks.fingerprint(
                sessions.get(ours, queries.grafana_headers()).query(ours.sql(grafana))
            )
        reference = prints[OURS]
        agree = all(checks.same(reference, fp) for fp in prints.values())
        results.append({"query": name, "agree": agree, "fingerprints": prints})
    return {"agree": all(r["agree"] for r in results), "queries": results}


# --- a. SELECT 1 ------------------------------------------------------------------------------


def _select1(contenders: list[Contender], sessions: _Sessions, p: Params) -> dict[str, Any]:
    calls: dict[tuple[str, str], Callable[[], object]] = {}
    clients: list[flight.FlightClient] = []
    for c in contenders:
        variant = "ADBC" if c.uri else "SessionContext.sql"
        calls[(c.name, variant)] = _query_call(sessions.get(c), queries.SELECT1)
        if c.uri:
            client = flight.connect(c.uri)
            clients.append(client)
            calls[(c.name, "pyarrow GetFlightInfo+DoGet")] = lambda client=client: (
                scenarios.flight_query(client, queries.SELECT1)
            )
    try:
        stats = scenarios.interleaved_latency(
            {f"{k[0]}|{k[1]}": v for k, v in calls.items()},
            p.select1_n,
            budget_s=p.latency_budget_s,
        )
    finally:
        for client in clients:
            client.close()
    rows = [_row(*key.split("|"), **asdict(s)) for key, s in stats.items()]
    return {"n": p.select1_n, "rows": rows}


# --- b. panel query ---------------------------------------------------------------------------


def _panel(contenders: list[Contender], sessions: _Sessions, p: Params) -> dict[str, Any]:
    calls: dict[str, Callable[[], object]] = {}
    for layout, table in (("file", "{points}"), ("day directory", "{days}")):
        plain = queries.PANEL.replace("{table}", table)
        grafana = queries.PANEL_GRAFANA.replace("{table}", table)
        for c in contenders:
            calls[f"{c.name}|{layout}, SQL"] = _query_call(sessions.get(c), c.sql(plain))
            if c.name == OURS:
                session = sessions.get(c, queries.grafana_headers())
                calls[f"{c.name}|{layout}, Grafana macros"] = _query_call(session, c.sql(grafana))
    stats = scenarios.interleaved_latency(calls, p.panel_n, budget_s=p.latency_budget_s)
    rows = [_row(*key.split("|"), **asdict(s)) for key, s in stats.items()]
    return {
        "n": p.panel_n,
        "sql": queries.PANEL,
        "grafana_sql": queries.PANEL_GRAFANA,
        "rows": rows,
    }


# --- c. dashboard -----------------------------------------------------------------------------


def _dashboard(contenders: list[Contender], p: Params) -> dict[str, Any]:
    walls: dict[str, list[float]] = {c.name: [] for c in contenders}
    with ExitStack() as stack:
        pools = {
            c.name: stack.enter_context(concurrency.Pool(c.session, len(queries.DASHBOARD)))
            for c in contenders
        }
        sql = {c.name: [c.sql(q) for _, q in queries.DASHBOARD] for c in contenders}
        spent = dict.fromkeys(walls, 0.0)
        for rep in range(p.dashboard_reps + 1):  # the first round warms up
            for c in contenders:
                # A slow contender stops early (after 3 timed bursts) rather than unbound the run.
                if len(walls[c.name]) >= 3 and spent[c.name] > p.dashboard_budget_s:
                    continue
                wall = pools[c.name].burst(sql[c.name])
                spent[c.name] += wall
                if rep:
                    walls[c.name].append(wall)
    rows = [
        _row(name, "8 panels at once", **asdict(scenarios.latency_stats(values)))
        for name, values in walls.items()
    ]
    return {
        "panels": [name for name, _ in queries.DASHBOARD],
        "repetitions": p.dashboard_reps,
        "rows": rows,
    }


# --- d./f. full scan, RSS, time to first batch ------------------------------------------------


def _rss_growth(samplers: list[RssSampler], baseline: int) -> dict[str, float]:
    peak = max([baseline, *(s.peak for s in samplers)])
    return {
        "baseline_mb": baseline / MB,
        "peak_mb": peak / MB,
        "growth_mb": (peak - baseline) / MB,
        "first_scan_growth_mb": (samplers[0].peak - baseline) / MB,
    }


@contextmanager
def _sampled(pid: int | None, samplers: list[RssSampler]) -> Iterator[None]:
    if pid is None:
        yield
        return
    sampler = RssSampler(pid, interval=RSS_INTERVAL_S)
    with sampler:
        yield
    samplers.append(sampler)


def _scan(
    contenders: list[Contender], sessions: _Sessions, p: Params, expected_rows: int
) -> dict[str, Any]:
    runs: dict[tuple[str, str], list[scenarios.ScanRun]] = {}
    samplers: dict[str, list[RssSampler]] = {c.name: [] for c in contenders if c.pid}
    baselines = {c.name: RssSampler(c.pid).rss() for c in contenders if c.pid}
    flight_client = flight.connect(contenders[0].uri) if contenders[0].uri else None
    try:
        for rep in range(1, p.scan_repeat + 1):
            _log(f"full scan repetition {rep}/{p.scan_repeat}")
            for c in contenders:
                sql = c.sql(queries.SCAN)
                with _sampled(c.pid, samplers.get(c.name, [])):
                    run = scenarios.scan(sessions.get(c), sql)
                runs.setdefault((c.name, "ADBC" if c.uri else "C stream"), []).append(run)
                if c.name == OURS and flight_client is not None:
                    with _sampled(c.pid, samplers[c.name]):
                        run = scenarios.scan_flight(flight_client, sql)
                    runs.setdefault((c.name, "pyarrow.flight"), []).append(run)
    finally:
        if flight_client is not None:
            flight_client.close()
    rows = []
    for (name, variant), values in runs.items():
        best = min(values, key=lambda r: r.seconds)
        median_s = statistics.median(r.seconds for r in values)
        rows.append(
            _row(
                name,
                variant,
                **best.as_dict(),
                median_seconds=median_s,
                runs=[r.as_dict() for r in values],
            )
        )
    rss = {name: _rss_growth(s, baselines[name]) for name, s in samplers.items() if s}
    return {
        "sql": queries.SCAN,
        "repeat": p.scan_repeat,
        "rows_match": all(r.rows == expected_rows for v in runs.values() for r in v),
        "rows": rows,
        "rss": rss,
    }


# --- e. concurrency scaling -------------------------------------------------------------------


def _scaling(contenders: list[Contender], p: Params) -> dict[str, Any]:
    """Queries/s at each client count; each level's time is cut into slices that alternate
    between contenders, so a burst of outside load is shared rather than hitting one."""
    mix = [q for _, q in queries.DASHBOARD]
    slice_s = p.scaling_s / SCALING_SLICES
    rows = []
    for clients in p.clients:
        totals = {c.name: [0, 0.0] for c in contenders}
        for _ in range(SCALING_SLICES):
            for c in contenders:
                part = concurrency.throughput(c.session, clients, [c.sql(q) for q in mix], slice_s)
                totals[c.name][0] += part.queries
                totals[c.name][1] += part.seconds
        for name, (count, seconds) in totals.items():
            result = concurrency.Throughput(clients, int(count), seconds)
            rows.append(_row(name, f"{clients} clients", **asdict(result), qps=result.qps))
    return {
        "seconds_per_level": p.scaling_s,
        "slices": SCALING_SLICES,
        "queries": "the 8 dashboard panels in turn",
        "rows": rows,
    }


# --- parallel fetch (opt-in server feature) ---------------------------------------------------


def _parallel(ours: Contender, p: Params, expected_rows: int) -> dict[str, Any]:
    """Full scan with and without the ``parallel_endpoints`` header, if the server honours it."""
    assert ours.uri is not None
    sql = ours.sql(queries.SCAN)
    with flight.connect(ours.uri) as client:
        returned = {
            n: len(scenarios.flight_info(client, sql, {PARALLEL_HEADER: str(n)}).endpoints)
            for n in (2, PARALLEL_PROBE)
        }
    endpoints = returned[PARALLEL_PROBE]
    if endpoints <= 1:
        return {"supported": False, "endpoints_for_probe": endpoints, "rows": []}
    variants: dict[str, int | None] = {"1 endpoint (default)": None}
    variants.update({f"{PARALLEL_HEADER}: {n} ({got} returned)": n for n, got in returned.items()})
    runs: dict[str, list[scenarios.ScanRun]] = {v: [] for v in variants}
    sessions = {
        v: ours.session({PARALLEL_HEADER: str(n)} if n else None) for v, n in variants.items()
    }
    try:
        for _ in range(p.scan_repeat):
            for v, session in sessions.items():
                runs[v].append(scenarios.scan(session, sql))
    finally:
        for session in sessions.values():
            session.close()
    rows = [
        _row(OURS, v, **min(values, key=lambda r: r.seconds).as_dict())
        for v, values in runs.items()
    ]
    return {
        "supported": True,
        "endpoints_for_probe": endpoints,
        "rows_match": all(r.rows == expected_rows for v in runs.values() for r in v),
        "rows": rows,
    }


# --- the run ----------------------------------------------------------------------------------


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds ``pid`` has used so far (0 once it is gone)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def _roapi_status(binary: str | None, missing: str) -> dict[str, str]:
    if binary is None:
        return {"status": missing, "version": ""}
    return {"status": "ok", "version": roapi.version(binary)}


def run(
    p: Params,
    data_dir: Path,
    roapi_binary: str | None,
    watch: Callable[[ServerProcess], None],
    roapi_missing: str = "not installed",
) -> dict[str, Any]:
    """Generate (or reuse) the data, start the servers, run every scenario; the results.

    Without ``roapi_binary`` roapi is left out and reported with status ``roapi_missing``.
    """
    dataset = data.ensure_dataset(p.rows, data_dir)
    days = data.ensure_days(dataset)
    _log(f"data: {dataset.rows:,} rows in {dataset.path.name} and {days.name}/")
    machine = machine_info()
    status = {
        OURS: {"status": "ok", "version": machine["flightsql_srv"]},
        INPROCESS: {"status": "ok", "version": machine["datafusion"]},
        ROAPI: _roapi_status(roapi_binary, roapi_missing),
    }
    results: dict[str, Any] = {"machine": machine, "contenders": status}
    results["data"] = {
        "rows": dataset.rows,
        "file": str(dataset.path),
        "file_bytes": dataset.bytes_on_disk,
        "file_row_groups": dataset.row_groups,
        "days": str(days),
        "days_files": len(list(days.rglob("*.parquet"))),
        "days_bytes": sum(f.stat().st_size for f in days.rglob("*.parquet")),
        "days_row_group_rows": data.DAY_ROW_GROUP_ROWS,
        "generated": dataset.generated,
        "window": list(queries.WINDOW),
    }
    with ExitStack() as stack:
        server = stack.enter_context(running_server(dataset.path, days))
        watch(server)
        contenders = [
            flight_contender(
                OURS,
                server.uri,
                server.pid,
                {"points": "bench.points", "days": "bench.points_days"},
                status[OURS]["version"],
            ),
            inprocess_contender(dataset.path, days, status[INPROCESS]["version"]),
        ]
        if roapi_binary is not None:
            try:
                peer = stack.enter_context(
                    roapi.running_roapi(roapi_binary, {"points": dataset.path, "points_days": days})
                )
                watch(peer)
                contenders.append(
                    flight_contender(
                        ROAPI,
                        peer.uri,
                        peer.pid,
                        {"points": "points", "days": "points_days"},
                        status[ROAPI]["version"],
                    )
                )
            except (RuntimeError, TimeoutError) as exc:
                status[ROAPI] = {"status": f"failed to start: {exc}".splitlines()[0], "version": ""}
        _log("servers up: " + ", ".join(f"{c.name} ({c.uri or 'in-process'})" for c in contenders))
        sessions = _Sessions(stack)
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("checks", lambda: _checks(contenders, sessions)),
            ("select1", lambda: _select1(contenders, sessions, p)),
            ("panel", lambda: _panel(contenders, sessions, p)),
            ("dashboard", lambda: _dashboard(contenders, p)),
            ("scan", lambda: _scan(contenders, sessions, p, dataset.rows)),
            ("scaling", lambda: _scaling(contenders, p)),
            ("parallel", lambda: _parallel(contenders[0], p, dataset.rows)),
        ]
        timings: dict[str, float] = {}
        cpu: dict[str, dict[str, float]] = {c.name: {} for c in contenders if c.pid}
        for name, step in steps:
            _log(f"scenario {name}")
            started = time.perf_counter()
            before = {c.name: _cpu_seconds(c.pid) for c in contenders if c.pid}
            results[name] = step()
            for server_name, seconds in before.items():
                pid = next(c.pid for c in contenders if c.name == server_name)
                cpu[server_name][name] = round(_cpu_seconds(pid) - seconds, 2)
            timings[name] = round(time.perf_counter() - started, 2)
            _log(f"scenario {name} took {timings[name]:.1f} s")
        results["scenario_seconds"] = timings
        results["server_cpu_seconds"] = cpu
    return results
