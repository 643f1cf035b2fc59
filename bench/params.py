"""How much one benchmark run does: the full run and the CI-sized ``--quick`` one."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Params", "FULL", "QUICK"]


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
    #: Each concurrency level's time is cut into this many slices alternating contenders.
    scaling_slices: int
    #: Untimed rounds before each latency measurement.
    warmup: int
    #: Seconds of panel queries per contender from the client processes, in total over
    #: ``processes_rounds`` rounds that alternate between contenders.
    processes_s: float
    processes_rounds: int
    clients: tuple[int, ...] = (1, 2, 4, 8)
    #: Client processes (servers) or threads (in-process) of the multi-process scenario.
    processes: int = 8


FULL = Params(
    rows=10_000_000,
    select1_n=200,
    panel_n=30,
    dashboard_reps=10,
    scan_repeat=3,
    scaling_s=3.0,
    time_limit=420.0,
    latency_budget_s=5.0,
    dashboard_budget_s=12.0,
    scaling_slices=3,
    warmup=3,
    processes_s=10.0,
    processes_rounds=2,
)
QUICK = Params(
    rows=200_000,
    select1_n=10,
    panel_n=5,
    dashboard_reps=2,
    scan_repeat=2,
    scaling_s=0.2,
    time_limit=80.0,
    latency_budget_s=0.25,
    dashboard_budget_s=1.0,
    scaling_slices=1,
    warmup=1,
    processes_s=0.5,
    processes_rounds=1,
)
