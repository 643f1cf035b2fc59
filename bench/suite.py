"""One benchmark run: every scenario against every contender, results as one JSON-able dict.

Scenario results share one shape, ``{"rows": [{"contender", "variant", ...measures}]}``, so
the report can put each contender's row next to the in-process and roapi rows of the same
variant. Every server's memory is sampled over the whole run, beside the finer sampling
during the scans. Contenders are interleaved inside each scenario (round-robin calls, or alternating
repetitions) so that load from elsewhere on the machine affects them alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil

from bench import clients, data, latency, queries, roapi, scans
from bench.common import Sessions, log
from bench.contenders import (
    INPROCESS,
    OURS,
    ROAPI,
    ROAPI_FILE,
    Contender,
    flight_contender,
    inprocess_contender,
)
from bench.machine import machine_info
from bench.params import FULL, QUICK, Params
from bench.processes import ServiceProcesses
from bench.report import MB
from bench.server import RssSampler, ServerProcess, running_server

__all__ = ["Params", "FULL", "QUICK", "RSS_INTERVAL_S", "RUN_RSS_INTERVAL_S", "run"]

RSS_INTERVAL_S = scans.RSS_INTERVAL_S
#: Sampling interval of each server's memory over the whole run (coarser than the scans').
RUN_RSS_INTERVAL_S = 0.1
#: The roapi contenders and whether each loads its tables into memory.
ROAPI_MODES = ((ROAPI, True), (ROAPI_FILE, False))


# --- the run ----------------------------------------------------------------------------------


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds the service ``pid`` (with its engine workers) has used so
    far (0 once it is gone)."""
    try:
        return ServiceProcesses(pid or 0).cpu_seconds()
    except psutil.Error:
        return 0.0


def _roapi_status(binary: str | None, missing: str) -> dict[str, str]:
    if binary is None:
        return {"status": missing, "version": ""}
    return {"status": "ok", "version": roapi.version(binary)}


def _start_roapi(
    stack: ExitStack,
    binary: str,
    tables: dict[str, Path],
    status: dict[str, dict[str, str]],
    watch: Callable[[ServerProcess], None],
) -> list[Contender]:
    """Both roapi modes, each as a contender unless it fails to start (then its status says
    why)."""
    started = []
    for name, memory in ROAPI_MODES:
        try:
            peer = stack.enter_context(roapi.running_roapi(binary, tables, memory))
        except (RuntimeError, TimeoutError) as exc:
            status[name] = {"status": f"failed to start: {exc}".splitlines()[0], "version": ""}
            continue
        watch(peer)
        names = {"points": "points", "days": "points_days"}
        started.append(flight_contender(name, peer.uri, peer.pid, names, status[name]["version"]))
    return started


def _run_rss(samplers: dict[str, RssSampler], scan: dict[str, Any]) -> dict[str, Any]:
    """Each server's memory over the whole run: at the start, the highest sample (of the run's
    sampler and the scans' finer one) and at the end, in MB."""
    out = {}
    for name, sampler in samplers.items():
        scan_peak = scan.get("rss", {}).get(name, {}).get("peak_mb", 0.0)
        out[name] = {
            "start_mb": sampler.samples[0] / MB,
            "peak_mb": max(sampler.peak / MB, scan_peak),
            "end_mb": sampler.samples[-1] / MB,
            "samples": len(sampler.samples),
        }
    return out


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
    log(f"data: {dataset.rows:,} rows in {dataset.path.name} and {days.name}/")
    machine = machine_info()
    status = {
        OURS: {"status": "ok", "version": machine["flightsql_srv"]},
        INPROCESS: {"status": "ok", "version": machine["datafusion"]},
        **{name: _roapi_status(roapi_binary, roapi_missing) for name, _ in ROAPI_MODES},
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
            tables = {"points": dataset.path, "points_days": days}
            contenders += _start_roapi(stack, roapi_binary, tables, status, watch)
        log("servers up: " + ", ".join(f"{c.name} ({c.uri or 'in-process'})" for c in contenders))
        sessions = Sessions(stack)
        steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("checks", lambda: latency.run_checks(contenders, sessions)),
            # The scan first: its RSS growth is then measured on a server that concurrent
            # scenarios have not yet grown (allocators keep what they once held).
            ("scan", lambda: scans.run_scan(contenders, sessions, p, dataset.rows)),
            ("select1", lambda: latency.run_select1(contenders, sessions, p)),
            ("panel", lambda: latency.run_panel(contenders, sessions, p)),
            ("dashboard", lambda: clients.run_dashboard(contenders, p)),
            ("scaling", lambda: clients.run_scaling(contenders, p)),
            ("processes", lambda: clients.run_processes(contenders, p)),
            ("parallel", lambda: scans.run_parallel(contenders[0], p, dataset.rows)),
        ]
        timings: dict[str, float] = {}
        cpu: dict[str, dict[str, float]] = {c.name: {} for c in contenders if c.pid}
        rss: dict[str, dict[str, float]] = {c.name: {"start": 0.0} for c in contenders if c.pid}
        for c in contenders:
            if c.pid:
                rss[c.name]["start"] = round(RssSampler(c.pid).rss() / MB, 1)
        run_samplers = {
            c.name: stack.enter_context(RssSampler(c.pid, interval=RUN_RSS_INTERVAL_S))
            for c in contenders
            if c.pid
        }
        for name, step in steps:
            log(f"scenario {name}")
            started = time.perf_counter()
            before = {c.name: _cpu_seconds(c.pid) for c in contenders if c.pid}
            results[name] = step()
            for server_name, seconds in before.items():
                pid = next(c.pid for c in contenders if c.name == server_name)
                cpu[server_name][name] = round(_cpu_seconds(pid) - seconds, 2)
                rss[server_name][name] = round(RssSampler(pid).rss() / MB, 1)
            timings[name] = round(time.perf_counter() - started, 2)
            log(f"scenario {name} took {timings[name]:.1f} s")
        for sampler in run_samplers.values():
            sampler.stop()  # the last sample, while the servers still run
        results["scenario_seconds"] = timings
        results["server_cpu_seconds"] = cpu
        results["server_rss_after_mb"] = rss
        results["server_rss"] = _run_rss(run_samplers, results["scan"])
    return results
