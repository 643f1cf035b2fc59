"""Admission control: at most ``max_concurrent`` queries run; a bounded queue waits.

A query that finds every slot taken waits in line (up to ``queue_timeout`` seconds); when the
line itself is full, or the wait runs out, it is refused with UNAVAILABLE (pyarrow cannot send
RESOURCE_EXHAUSTED), so a burst degrades into clear, retryable errors instead of an
overloaded engine.
"""

from __future__ import annotations

import threading

from flightsql_srv.errors import Overloaded

__all__ = ["Admission"]


class Admission:
    """Counts running and waiting queries.

    Args:
        max_concurrent: queries allowed to run at once.
        max_queued: queries allowed to wait for a slot.
        queue_timeout: seconds a query waits before it is refused.
    """

    def __init__(self, max_concurrent: int, max_queued: int, queue_timeout: float) -> None:
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.queue_timeout = queue_timeout
        self._cond = threading.Condition()
        self.running = 0
        self.waiting = 0

    def acquire(self) -> None:
        """Take a slot, waiting in line if needed.

        Raises:
            Overloaded: the line is full, or no slot freed up in time.
        """
        with self._cond:
            if self.running < self.max_concurrent:
                self.running += 1
                return
            if self.waiting >= self.max_queued:
                raise Overloaded(
                    f"too many queries: {self.running} running and {self.waiting} waiting "
                    "(max_concurrent_queries / max_queued_queries); retry later"
                )
            self.waiting += 1
            try:
                admitted = self._cond.wait_for(
                    lambda: self.running < self.max_concurrent, self.queue_timeout
                )
            finally:
                self.waiting -= 1
            if not admitted:
                raise Overloaded(
                    f"no query slot freed up within {self.queue_timeout:g} s "
                    f"({self.running} running; queue_timeout); retry later"
                )
            self.running += 1

    def release(self) -> None:
        """Give a slot back."""
        with self._cond:
            self.running -= 1
            self._cond.notify()
