"""Plans made by GetFlightInfo, kept for the DoGet that follows it.

A ticket is self-contained, so DoGet can always plan again (on any replica); on the replica
that planned it, the plan is simply reused. Entries are taken once, expire with the ticket,
and are bounded in number, least recently added out.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from flightsql_srv.engine import Plan

__all__ = ["PlanCache"]


class PlanCache:
    """Plans by query id, each valid only for the same query on the same engine.

    Args:
        ttl: seconds an entry lives (a ticket's lifetime).
        size: entries kept at most.
    """

    def __init__(self, ttl: float, size: int = 256) -> None:
        self._ttl = ttl
        self._size = size
        self._entries: OrderedDict[str, tuple[float, object, object, Plan]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, query_id: str, engine: object, query: object, plan: Plan) -> None:
        """Keep ``plan`` of ``query`` (as planned on ``engine``) for ``query_id``."""
        now = time.monotonic()
        with self._lock:
            self._entries[query_id] = (now + self._ttl, engine, query, plan)
            # Oldest first: drop what is over the size or expired (plans pin their engine).
            while self._entries and (
                len(self._entries) > self._size or next(iter(self._entries.values()))[0] < now
            ):
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every plan (the catalog was replaced)."""
        with self._lock:
            self._entries.clear()

    def take(self, query_id: str, engine: object, query: object) -> Plan | None:
        """The plan kept for ``query_id`` if it is for ``query`` on ``engine`` and still
        fresh; it is removed either way (a second DoGet of the ticket plans again)."""
        with self._lock:
            entry = self._entries.pop(query_id, None)
        if entry is None:
            return None
        expires, planned_on, planned_query, plan = entry
        if expires < time.monotonic() or planned_on is not engine or planned_query != query:
            return None
        return plan

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
