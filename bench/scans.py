"""Scenario runners for large results: the full scan with server RSS and time to first
batch (d, f), and parallel fetch through the ``parallel_endpoints`` header."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow.flight as flight

from bench import queries, scenarios
from bench.common import Sessions, log, row
from bench.contenders import OURS, Contender
from bench.params import Params
from bench.report import MB
from bench.server import RssSampler

__all__ = ["RSS_INTERVAL_S", "PARALLEL_HEADER", "run_scan", "run_parallel"]

RSS_INTERVAL_S = 0.05
PARALLEL_PROBE = 4
PARALLEL_HEADER = "parallel_endpoints"


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


def run_scan(
    contenders: list[Contender], sessions: Sessions, p: Params, expected_rows: int
) -> dict[str, Any]:
    runs: dict[tuple[str, str], list[scenarios.ScanRun]] = {}
    samplers: dict[str, list[RssSampler]] = {c.name: [] for c in contenders if c.pid}
    baselines = {c.name: RssSampler(c.pid).rss() for c in contenders if c.pid}
    flight_client = flight.connect(contenders[0].uri) if contenders[0].uri else None
    try:
        for rep in range(1, p.scan_repeat + 1):
            log(f"full scan repetition {rep}/{p.scan_repeat}")
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
            row(
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


# --- parallel fetch (opt-in server feature) ---------------------------------------------------


def run_parallel(ours: Contender, p: Params, expected_rows: int) -> dict[str, Any]:
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
        row(OURS, v, **min(values, key=lambda r: r.seconds).as_dict()) for v, values in runs.items()
    ]
    return {
        "supported": True,
        "endpoints_for_probe": endpoints,
        "rows_match": all(r.rows == expected_rows for v in runs.values() for r in v),
        "rows": rows,
    }
