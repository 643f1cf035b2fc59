"""Admission control: at most ``max_concurrent`` queries run, at most ``per_key`` of them for
one principal (or, without authentication, one peer); a bounded queue waits.

A query that finds no slot it may take waits in line (up to ``queue_timeout`` seconds); when
the line itself is full, or the wait runs out, it is refused with UNAVAILABLE (pyarrow cannot
send RESOURCE_EXHAUSTED), so a burst degrades into clear, retryable errors instead of an
overloaded engine, and one caller cannot hold every slot.
"""

from __future__ import annotations

import threading
from collections import Counter

from flightsql_srv.errors import Overloaded

__all__ = ["Admission"]


class Admission:
    """Counts running and waiting queries, in all and per key.

    Args:
        max_concurrent: queries allowed to run at once.
        max_queued: queries allowed to wait for a slot.
        queue_timeout: seconds a query waits before it is refused.
        per_key: queries one key may run at once (0: ``max_concurrent``).
    """

    def __init__(
        self, max_concurrent: int, max_queued: int, queue_timeout: float, per_key: int = 0
    ) -> None:
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.queue_timeout = queue_timeout
        self.per_key = min(per_key or max_concurrent, max_concurrent)
        self._cond = threading.Condition()
        self.running = 0
        self.waiting = 0
        self._by_key: Counter[str] = Counter()

    def _free(self, key: str) -> bool:
        return self.running < self.max_concurrent and self._by_key[key] < self.per_key

    def acquire(self, key: str = "") -> None:
        """Take a slot for ``key``, waiting in line if needed.

        Raises:
            Overloaded: the line is full, or no slot freed up in time.
        """
        with self._cond:
            if not self._free(key):
                if self.waiting >= self.max_queued:
                    raise Overloaded(
                        f"too many queries: {self.running} running and {self.waiting} waiting "
                        "(max_concurrent_queries / max_queued_queries); retry later"
                    )
                self.waiting += 1
                try:
                    admitted = self._cond.wait_for(lambda: self._free(key), self.queue_timeout)
                finally:
                    self.waiting -= 1
                if not admitted:
                    mine = self._by_key[key]
                    share = (
                        f"; {mine} of them yours, at most {self.per_key} per caller "
                        "(max_queries_per_principal)"
                        if mine >= self.per_key
                        else ""
                    )
                    raise Overloaded(
                        f"no query slot freed up within {self.queue_timeout:g} s "
                        f"({self.running} running{share}; queue_timeout); retry later"
                    )
            self.running += 1
            self._by_key[key] += 1

    def release(self, key: str = "") -> None:
        """Give ``key``'s slot back."""
        with self._cond:
            self.running -= 1
            self._by_key[key] -= 1
            if self._by_key[key] <= 0:
                del self._by_key[key]
            self._cond.notify_all()
