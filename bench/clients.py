"""Scenario runners for many clients: the dashboard burst (c), scaling with 1-8 client
threads (e) and the panel from 8 client processes (g), each over all contenders."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

from bench import concurrency, queries, scenarios
from bench.common import row
from bench.contenders import Contender
from bench.params import Params

__all__ = ["run_dashboard", "run_scaling", "run_processes"]


# --- c. dashboard -----------------------------------------------------------------------------


def run_dashboard(contenders: list[Contender], p: Params) -> dict[str, Any]:
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
        row(name, "8 panels at once", **asdict(scenarios.latency_stats(values)))
        for name, values in walls.items()
    ]
    return {
        "panels": [name for name, _ in queries.DASHBOARD],
        "repetitions": p.dashboard_reps,
        "rows": rows,
    }


# --- e. concurrency scaling -------------------------------------------------------------------


def run_scaling(contenders: list[Contender], p: Params) -> dict[str, Any]:
    """Queries/s at each client count; each level's time is cut into slices that alternate
    between contenders, so a burst of outside load is shared rather than hitting one."""
    mix = [q for _, q in queries.DASHBOARD]
    slice_s = p.scaling_s / p.scaling_slices
    rows = []
    for clients in p.clients:
        totals = {c.name: [0, 0.0] for c in contenders}
        for _ in range(p.scaling_slices):
            for c in contenders:
                part = concurrency.throughput(c.session, clients, [c.sql(q) for q in mix], slice_s)
                totals[c.name][0] += part.queries
                totals[c.name][1] += part.seconds
        for name, (count, seconds) in totals.items():
            result = concurrency.Throughput(clients, int(count), seconds)
            rows.append(
                row(
                    name,
                    f"{clients} client{'s' if clients > 1 else ''}",
                    **asdict(result),
                    qps=result.qps,
                )
            )
    return {
        "seconds_per_level": p.scaling_s,
        "slices": p.scaling_slices,
        "queries": "the 8 dashboard panels in turn",
        "rows": rows,
    }


# --- g. client processes ----------------------------------------------------------------------


def run_processes(contenders: list[Contender], p: Params) -> dict[str, Any]:
    """Queries/s of the file panel from ``p.processes`` clients: for a server, each client is
    its own OS process with its own ADBC connection; in-process, they are threads of one
    process sharing one ``SessionContext`` (the reference an application embedding DataFusion
    gets). The time is cut into rounds alternating between contenders."""
    sql_template = queries.PANEL.replace("{table}", "{points}")
    slice_s = p.processes_s / p.processes_rounds
    totals = {c.name: [0, 0.0] for c in contenders}
    with concurrency.ClientProcesses(p.processes) as procs:
        for _ in range(p.processes_rounds):
            for c in contenders:
                sql = c.sql(sql_template)
                if c.uri is None:
                    part = concurrency.throughput(c.session, p.processes, [sql], slice_s)
                else:
                    part = procs.throughput(c.uri, sql, slice_s)
                totals[c.name][0] += part.queries
                totals[c.name][1] += part.seconds
    rows = []
    for c in contenders:
        count, seconds = totals[c.name]
        result = concurrency.Throughput(p.processes, int(count), seconds)
        how = "processes, ADBC" if c.uri else "threads, one process"
        rows.append(row(c.name, f"{p.processes} {how}", **asdict(result), qps=result.qps))
    return {
        "seconds": p.processes_s,
        "rounds": p.processes_rounds,
        "clients": p.processes,
        "sql": sql_template,
        "rows": rows,
    }
