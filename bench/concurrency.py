"""Many clients at once: a dashboard's burst of panels, and throughput under N clients.

Every client is a thread with its own session (its own connection for a server); the threads
are created and connected before the clock starts, and a barrier releases them together.
DataFusion, ADBC and pyarrow release the GIL while they work, so the threads really overlap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bench.contenders import Session

__all__ = ["Throughput", "Pool", "throughput"]


class Pool:
    """``size`` sessions, each served by its own thread, for repeated concurrent bursts."""

    def __init__(self, open_session: Callable[[], Session], size: int) -> None:
        self.sessions = [open_session() for _ in range(size)]
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="bench-client")

    def burst(self, queries: Sequence[str]) -> float:
        """Run ``queries[i]`` on session ``i``, all at once; the wall time until the last
        result is in (seconds). Raises if any query fails."""
        started = time.perf_counter()
        futures = [
            self._executor.submit(session.query, sql)
            for session, sql in zip(self.sessions, queries, strict=False)
        ]
        for future in futures:
            future.result()
        return time.perf_counter() - started

    def close(self) -> None:
        self._executor.shutdown()
        for session in self.sessions:
            session.close()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Throughput:
    """Queries completed by ``clients`` clients in ``seconds`` of wall time."""

    clients: int
    queries: int
    seconds: float

    @property
    def qps(self) -> float:
        return self.queries / self.seconds if self.seconds > 0 else 0.0


def throughput(
    open_session: Callable[[], Session], clients: int, queries: Sequence[str], seconds: float
) -> Throughput:
    """``clients`` threads each loop over ``queries`` (starting at different ones) until
    ``seconds`` have passed; the wall time runs until the last in-flight query ends."""
    sessions = [open_session() for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    counts = [0] * clients
    errors: list[BaseException] = []
    deadline = [0.0]

    def client(index: int) -> None:
        session, i = sessions[index], index
        barrier.wait()
        try:
            while time.perf_counter() < deadline[0]:
                session.query(queries[i % len(queries)])
                counts[index] += 1
                i += 1
        except BaseException as exc:  # reported by the caller, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    try:
        for thread in threads:
            thread.start()
        started = time.perf_counter()
        deadline[0] = started + seconds
        barrier.wait()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        for session in sessions:
            session.close()
    if errors:
        raise errors[0]
    return Throughput(clients, sum(counts), elapsed)
