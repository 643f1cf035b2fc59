"""Slowing down password guessing: failed sign-ins per (user, peer) and per peer, and a bound
on how many password hashes are computed at once.

A caller over the free allowance of failures is refused at once with "retry after N s"
(exponential, capped), without checking the password: no handler thread sleeps, and no hash is
computed. A success clears the (user, peer) record, so the real user from another address is
never held up by someone guessing from elsewhere. The per-peer record is not cleared by a
success: one valid account must not reset the count of a peer spraying other names.

pyarrow's middleware does not see the caller's address (``CallInfo`` carries only the method),
so the peer is the ``client_address_header`` a trusted proxy sets (e.g. nginx's
``X-Forwarded-For``); without one every caller shares one peer, and the (user, peer) record is
in effect a per-user one (docs/security.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LoginThrottle", "HashGate", "Busy", "Throttled"]

log = logging.getLogger("flightsql_srv")

#: Records idle this long are forgotten; records kept at most (oldest dropped first).
_FORGET_AFTER_S = 900.0
_MAX_RECORDS = 10_000
_MAX_KEY_CHARS = 256


class Throttled(Exception):
    """Too many failed sign-ins for this user or peer (UNAUTHENTICATED, retry later)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Busy(Exception):
    """Too many password checks at once (UNAVAILABLE, retry later)."""


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0
    logged: bool = False


class LoginThrottle:
    """Counts failed sign-ins and says how long a key must wait.

    Args:
        free: failures per (user, peer) before delays start.
        free_per_peer: failures per peer, whatever the user, before delays start.
        max_delay: the longest delay, in seconds; delays double from 1 s.
        on_burst: called with the key kind ("user" or "peer") when a key first gets delayed
            (metrics); the burst is also logged once.
        clock: monotonic seconds (tests).
    """

    def __init__(
        self,
        free: int = 5,
        free_per_peer: int = 20,
        max_delay: float = 30.0,
        on_burst: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._free = {"user": free, "peer": free_per_peer}
        self._max_delay = max_delay
        self._on_burst = on_burst
        self._clock = clock
        self._records: OrderedDict[tuple[str, str, str], _Record] = OrderedDict()
        self._lock = threading.Lock()

    def _keys(self, user: str, peer: str) -> list[tuple[str, str, str]]:
        user, peer = user[:_MAX_KEY_CHARS], peer[:_MAX_KEY_CHARS]
        return [("user", user, peer), ("peer", "", peer)]

    def _delay(self, kind: str, record: _Record) -> float:
        over = record.failures - self._free[kind]
        if over < 0:
            return 0.0
        return float(min(self._max_delay, 2.0 ** min(over, 32)))

    def check(self, user: str, peer: str) -> None:
        """Raise :class:`Throttled` while ``user`` from ``peer`` must wait."""
        now = self._clock()
        wait, kind = 0.0, "user"
        with self._lock:
            for key in self._keys(user, peer):
                record = self._records.get(key)
                if record is None:
                    continue
                left = record.last + self._delay(key[0], record) - now
                if left > wait:
                    wait, kind = left, key[0]
        if wait > 0:
            seconds = max(1, round(wait + 0.5))
            who = "this user from this address" if kind == "user" else "this address"
            raise Throttled(f"too many failed sign-ins for {who}; retry after {seconds} s", seconds)

    def failed(self, user: str, peer: str) -> None:
        """Count a failed password check."""
        now = self._clock()
        bursts = []
        with self._lock:
            self._forget(now)
            for key in self._keys(user, peer):
                record = self._records.pop(key, None) or _Record()
                record.failures += 1
                record.last = now
                self._records[key] = record  # most recent last
                if not record.logged and self._delay(key[0], record) > 0:
                    record.logged = True
                    bursts.append((key, record.failures))
        for (kind, name, address), failures in bursts:
            fields = {"kind": kind, "failures": failures, "peer": address or "(unknown)"}
            if kind == "user":
                fields["user"] = name
            log.warning(
                "repeated failed sign-ins: delaying further attempts", extra={"fields": fields}
            )
            if self._on_burst is not None:
                self._on_burst(kind)

    def succeeded(self, user: str, peer: str) -> None:
        """Forget the (user, peer) failures after a correct password."""
        with self._lock:
            self._records.pop(self._keys(user, peer)[0], None)

    def _forget(self, now: float) -> None:
        while self._records:
            key, record = next(iter(self._records.items()))
            if now - record.last < _FORGET_AFTER_S and len(self._records) < _MAX_RECORDS:
                return
            del self._records[key]


class HashGate:
    """At most ``slots`` password hashes at once, and at most ``queue`` callers waiting.

    scrypt takes 32 MiB and tens of milliseconds per check: without a bound, parallel
    handshakes multiply both before any identity is known.
    """

    def __init__(self, slots: int, queue: int, wait_s: float = 5.0) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._queue = queue
        self._waiting = 0
        self._wait_s = wait_s
        self._lock = threading.Lock()

    def run(self, check: Callable[[], bool]) -> bool:
        """Run ``check`` in a slot; raise :class:`Busy` when none frees up in time or the
        queue is full."""
        if not self._slots.acquire(blocking=False):
            with self._lock:
                if self._waiting >= self._queue:
                    raise Busy("too many sign-ins in progress; retry after 1 s")
                self._waiting += 1
            try:
                acquired = self._slots.acquire(timeout=self._wait_s)
            finally:
                with self._lock:
                    self._waiting -= 1
            if not acquired:
                raise Busy("too many sign-ins in progress; retry after 1 s")
        try:
            return check()
        finally:
            self._slots.release()
