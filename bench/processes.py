"""A running service as the operating system sees it: the front process and every process
it started (the engine workers and the server they fork from).

Memory is the sum of each process's proportional set size (PSS): pages shared between the
workers (libraries, the page cache of the demo's Parquet files) count once in all, as they
take memory once; what a query allocates counts in full.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil

__all__ = ["ServiceProcesses"]


@dataclass
class _Memory:
    rss: int


class ServiceProcesses:
    """The process tree of a service started as ``pid``; mirrors the parts of
    :class:`psutil.Process` that the tests and benchmarks read."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._root = psutil.Process(pid)
        self._cpu: dict[int, float] = {}
        self._known: dict[int, psutil.Process] = {}

    def processes(self) -> list[psutil.Process]:
        """The front and its descendants that are alive now (raises once the front is gone)."""
        found = [self._root, *self._root.children(recursive=True)]
        # Keep Process objects: psutil checks a pid was not reused through them.
        self._known = {p.pid: self._known.get(p.pid, p) for p in found}
        return list(self._known.values())

    def memory(self) -> int:
        """Bytes the service holds: the sum of its processes' PSS."""
        total = 0
        for process in self.processes():
            try:
                total += process.memory_full_info().pss
            except psutil.Error:
                pass  # a worker that ended between listing and reading
        return total

    def memory_info(self) -> _Memory:
        """:meth:`memory` in :meth:`psutil.Process.memory_info`'s shape."""
        return _Memory(self.memory())

    def cpu_seconds(self) -> float:
        """CPU time used so far by the service, the processes that ended included (a
        replaced engine worker's time stays with the fork server that reaped it)."""
        return sum(self._cpu_by_pid().values())

    def cpu_percent(self) -> float:
        """Percent of one core the service used since the previous call (as psutil's: the
        first call returns 0)."""
        readings = self._cpu_by_pid()
        stamp = time.monotonic()
        previous, self._cpu = self._cpu, {**readings, -1: stamp}
        if -1 not in previous:
            return 0.0
        elapsed = stamp - previous[-1]
        used = sum(v - previous.get(pid, 0.0) for pid, v in readings.items())
        return 100.0 * used / elapsed if elapsed > 0 else 0.0

    def _cpu_by_pid(self) -> dict[int, float]:
        """User + system CPU seconds of each process alive now, with those of its children
        that ended and were reaped."""
        readings: dict[int, float] = {}
        for process in self.processes():
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue  # a worker that ended between listing and reading
            readings[process.pid] = (
                times.user + times.system + times.children_user + times.children_system
            )
        return readings
