"""Many clients at once: a dashboard's burst of panels, and throughput under N clients.

A client is either a thread with its own session (its own connection for a server), or, in
:class:`ClientProcesses`, an OS process with its own ADBC connection, as separate applications
would be: no GIL and no client library is shared between them. Either way the clients are
created, connected and warm before the clock starts, and a barrier releases them together.
DataFusion, ADBC and pyarrow release the GIL while they work, so threads overlap too.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.contenders import RPC_TIMEOUT, Session, connect_adbc

__all__ = ["Throughput", "Pool", "throughput", "ClientProcesses"]


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


# --- clients in their own processes -----------------------------------------------------------

#: In a client process: the barrier shared with the parent, set by :func:`_init_client`.
_start: Any = None


def _init_client(barrier: Any) -> None:
    global _start
    _start = barrier


def _process_client(uri: str, sql: str, seconds: float) -> tuple[int, float, float]:
    """In a client process: connect, run ``sql`` once, wait for the others, then run it for
    ``seconds``; the queries completed, when this client started and when its last query
    ended (``time.monotonic``: one clock for all processes on Linux)."""
    try:
        conn = connect_adbc(uri)
        cursor = conn.cursor()
        cursor.execute(sql)
        cursor.fetch_arrow_table()
    except BaseException:
        _start.abort()  # the parent and the other clients stop waiting
        raise
    try:
        _start.wait(timeout=RPC_TIMEOUT)
        count, started = 0, time.monotonic()
        while time.monotonic() < started + seconds:
            cursor.execute(sql)
            cursor.fetch_arrow_table()
            count += 1
        return count, started, time.monotonic()
    finally:
        cursor.close()
        conn.close()


class ClientProcesses:
    """``size`` client processes, spawned once and reused for every :meth:`throughput`."""

    def __init__(self, size: int) -> None:
        self.size = size
        context = multiprocessing.get_context("spawn")
        self._start = context.Barrier(size + 1)
        self._pool = context.Pool(size, initializer=_init_client, initargs=(self._start,))

    def throughput(self, uri: str, sql: str, seconds: float) -> Throughput:
        """Every process opens its own connection to ``uri`` and loops over ``sql`` for
        ``seconds``; the wall time runs until the last in-flight query ends."""
        # chunksize=1 and a barrier every client must reach: one call per process.
        pending = self._pool.starmap_async(
            _process_client, [(uri, sql, seconds)] * self.size, chunksize=1
        )
        try:
            self._start.wait(timeout=RPC_TIMEOUT)
        except threading.BrokenBarrierError:
            pending.get(timeout=RPC_TIMEOUT)  # raises the client's error
            raise
        results = pending.get(timeout=seconds + RPC_TIMEOUT)
        wall = max(end for *_, end in results) - min(start for _, start, _ in results)
        return Throughput(self.size, sum(count for count, *_ in results), wall)

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()

    def __enter__(self) -> ClientProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
