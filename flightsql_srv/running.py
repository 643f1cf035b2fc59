"""Queries in flight on this replica, so CancelFlightInfo can stop them.

Each DoGet registers its ticket's query id with an event; the result stream checks the event
between batches. A cancel that arrives before DoGet is remembered (bounded, for the ticket's
lifetime) so the later DoGet is refused instead of run.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import pyarrow.flight as flight

__all__ = ["RunningQueries"]

_REMEMBERED = 10_000


class RunningQueries:
    """Cancel events of running queries, by query id."""

    def __init__(self, ticket_ttl: float) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}
        self._cancelled: OrderedDict[str, float] = OrderedDict()
        self._ttl = ticket_ttl

    def start(self, query_id: str) -> threading.Event:
        """Register a query about to run; refuses one that was cancelled already."""
        with self._lock:
            self._forget_expired()
            if query_id in self._cancelled:
                raise flight.FlightCancelledError("the query was cancelled (CancelFlightInfo)")
            event = self._running.setdefault(query_id, threading.Event())
        return event

    def finish(self, query_id: str) -> None:
        with self._lock:
            self._running.pop(query_id, None)

    def cancel(self, query_id: str) -> bool:
        """Stop the query if it runs here, and refuse it later; True if it was running."""
        with self._lock:
            self._cancelled[query_id] = time.monotonic() + self._ttl
            while len(self._cancelled) > _REMEMBERED:
                self._cancelled.popitem(last=False)
            event = self._running.get(query_id)
        if event is not None:
            event.set()
        return event is not None

    def cancel_all(self) -> int:
        """Stop every running query (shutdown); returns how many there were."""
        with self._lock:
            events = list(self._running.values())
        for event in events:
            event.set()
        return len(events)

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._running)

    def _forget_expired(self) -> None:
        now = time.monotonic()
        while self._cancelled and next(iter(self._cancelled.values())) < now:
            self._cancelled.popitem(last=False)
