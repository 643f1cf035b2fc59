"""Where a query's time goes inside the server: py-spy samples of a running server, grouped
into the phases of a query.

``python -m bench.profile`` starts the server on the benchmark data, runs a client loop per
workload (``SELECT 1``; the Grafana panel with macros and a range) for a fixed time while
``py-spy record`` samples the server (native frames included, idle threads excluded), and
writes ``bench/results/profile-<label>.md``. ``--server-root`` runs another checkout's server
(e.g. a ``git worktree`` of an older commit) for a before/after comparison on one machine.

Requires py-spy (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import server as bench_server
from bench.contenders import AdbcSession
from bench.data import ensure_dataset, ensure_days
from bench.queries import PANEL_GRAFANA, SELECT1, grafana_headers, render

__all__ = ["PHASES", "classify", "main"]

RESULTS = Path(__file__).resolve().parent / "results"
#: Samples per second. Native stacks need the process paused for each sample, so keep the
#: rate low enough not to change what is measured.
RATE = 100

#: (phase, stack fragments): a sample belongs to the first phase one of whose fragments is
#: in its stack. Order matters: specific phases before the RPC that contains them.
PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("GetFlightInfo: DataFusion planning", ("Engine._plan_sql", "Engine.plan_substrait")),
    ("GetFlightInfo: macros, signing, other Python", ("get_flight_info",)),
    ("DoGet: DataFusion execution start + first batch", ("Plan.execute",)),
    ("DoGet: streaming batches (Python generator)", ("Executor._stream",)),
    ("DoGet: ticket, admission, audit, other Python", ("do_get", "Executor.run")),
    ("middleware: auth, headers, sessions, metrics", ("start_call", "call_completed")),
    ("health probe and file watch", ("HealthService", "DirectoryWatcher")),
    ("Arrow Flight / gRPC (C++: IPC, transport)", ("libarrow_flight", "libgrpc", "cygrpc")),
)
OTHER = "other (interpreter, allocator, threads)"
#: Frames that mean a thread is waiting, not working. py-spy cannot tell idle threads apart
#: in native mode, so a sample whose innermost frames wait is left out.
_WAITING = (
    "acquire_lock",
    "Condition.wait",
    "Event.wait",
    "Future.result",
    "SimpleQueue_get",
    "epoll_wait",
    "pthread_cond",
    "sem_wait",
    "futex",
    "nanosleep",
    "time_sleep",
    "select (",
    "poll (",
)


def waiting(stack: str) -> bool:
    """Whether the innermost frames of ``stack`` wait (lock, queue, poll, sleep)."""
    inner = stack.split(";")[-4:]
    return any(marker in frame for frame in inner for marker in _WAITING)


def classify(stack: str) -> str:
    """The phase of one sampled stack (frames joined by ``;``)."""
    for phase, fragments in PHASES:
        if any(fragment in stack for fragment in fragments):
            return phase
    return OTHER


@dataclass
class Profile:
    """The samples of one workload."""

    name: str
    queries: int
    seconds: float
    phases: Counter[str]
    functions: Counter[str]

    @property
    def samples(self) -> int:
        return sum(self.phases.values())


def _read_samples(path: Path) -> tuple[Counter[str], Counter[str]]:
    """Phase and our-function (self time) counts from a py-spy raw (collapsed) file."""
    phases: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit() or waiting(stack):
            continue
        phases[classify(stack)] += int(count)
        ours = [f for f in stack.split(";") if "flightsql_srv" in f]
        if ours:
            functions[ours[-1].split(" (")[0]] += int(count)
    return phases, functions


def profile_workload(
    name: str, pid: int, query: Callable[[], object], seconds: float, py_spy: str
) -> Profile:
    """Run ``query`` in a loop for ``seconds`` while py-spy samples ``pid``."""
    for _ in range(20):  # warm caches and connections first
        query()
    with tempfile.TemporaryDirectory(prefix="flightsql-profile-") as tmp:
        raw, log = Path(tmp) / "samples.txt", Path(tmp) / "py-spy.log"
        with open(log, "wb") as log_file:
            spy = subprocess.Popen(
                [py_spy, "record", "--native", "--rate", str(RATE), "--format", "raw"]
                + ["--output", str(raw), "--pid", str(pid), "--duration", str(int(seconds))],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            time.sleep(0.5)  # py-spy attaches
            started, queries = time.monotonic(), 0
            while time.monotonic() - started < seconds - 0.5:
                query()
                queries += 1
            elapsed = time.monotonic() - started
        finally:
            spy.wait(timeout=seconds + 60)
        if not raw.exists():
            raise RuntimeError(f"py-spy wrote no samples: {log.read_text(errors='replace')}")
        phases, functions = _read_samples(raw)
    return Profile(name, queries, elapsed, phases, functions)


def render_report(profiles: list[Profile], label: str, root: Path) -> str:
    """The Markdown report."""
    lines = [
        f"# Where the time goes ({label})",
        "",
        f"Run {datetime.now(UTC).isoformat(timespec='seconds')}: "
        f"`python -m bench.profile --label {label}` with the server from `{root}`. py-spy "
        f"samples the server process ({RATE} Hz, native frames, idle threads left out) while one "
        "ADBC client loops over each workload on the same machine. Shares are of the server's "
        "busy samples; a sample is put in the first phase whose frames it contains.",
        "",
    ]
    for p in profiles:
        lines += [
            f"## {p.name}",
            "",
            f"{p.queries} queries in {p.seconds:.1f} s ({p.queries / p.seconds:.1f}/s), "
            f"{p.samples} busy samples ({p.samples / max(p.queries, 1):.1f} per query).",
            "",
            "| phase | share |",
            "|---|---|",
        ]
        for phase, count in p.phases.most_common():
            lines.append(f"| {phase} | {100 * count / max(p.samples, 1):.1f} % |")
        lines += ["", "Our functions by self time (top 8):", ""]
        for function, count in p.functions.most_common(8):
            lines.append(f"- `{function}`: {100 * count / max(p.samples, 1):.1f} %")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--label", default="latest", help="report name: profile-LABEL.md")
    parser.add_argument("--seconds", type=float, default=10.0, help="per workload")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--server-root", type=Path, default=bench_server.ROOT)
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("py-spy is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    dataset = ensure_dataset(args.rows)
    days = ensure_days(dataset)
    root = args.server_root.resolve()
    with bench_server.running_server(dataset.path, days, server_root=root) as srv:
        plain = AdbcSession(srv.uri)
        grafana = AdbcSession(srv.uri, grafana_headers())
        panel = render(PANEL_GRAFANA, {"table": "bench.points"})
        try:
            profiles = [
                profile_workload(
                    "SELECT 1", srv.pid, lambda: plain.query(SELECT1), args.seconds, py_spy
                ),
                profile_workload(
                    "Grafana panel (macros, 6 h range, single file)",
                    srv.pid,
                    lambda: grafana.query(panel),
                    args.seconds,
                    py_spy,
                ),
            ]
        finally:
            plain.close()
            grafana.close()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"profile-{args.label}.md"
    out.write_text(render_report(profiles, args.label, root), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
