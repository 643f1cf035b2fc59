"""What a query's macros are expanded against: its time range, interval and "now".

:func:`context_from_headers` builds a :class:`MacroContext` from request metadata:

* ``query_range_begin`` / ``query_range_end`` (what the micromegas Grafana plugin sends): both
  present and non-empty, else no range. Any :func:`~.timeparse.parse_time` form; the end rounds
  *up* (``now/d`` as the end is the end of today, like Grafana).
* ``interval_ms``: the bucket width in milliseconds (Grafana's ``intervalMs``).
* ``max_data_points``: without ``interval_ms`` but with a range, the interval is derived the
  way Grafana does (range / max points, rounded to a "nice" step, see :func:`auto_interval`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from flightsql_srv.errors import InvalidArgument

from .timeparse import EPOCH, UTC, epoch_ns, parse_time, rfc3339_seconds

__all__ = [
    "TimeRange",
    "MacroContext",
    "auto_interval",
    "context_from_headers",
    "RANGE_BEGIN_HEADER",
    "RANGE_END_HEADER",
    "INTERVAL_MS_HEADER",
    "MAX_DATA_POINTS_HEADER",
]

RANGE_BEGIN_HEADER = "query_range_begin"
RANGE_END_HEADER = "query_range_end"
INTERVAL_MS_HEADER = "interval_ms"
MAX_DATA_POINTS_HEADER = "max_data_points"

#: Larger buckets would overflow timestamp[ns] arithmetic in the expanded SQL.
MAX_INTERVAL_MS = 100 * 365 * 86_400_000
_SECOND = timedelta(seconds=1)
_MILLI = timedelta(milliseconds=1)


@dataclass(frozen=True)
class TimeRange:
    """A closed time range ``[start, end]``; both ends are stored as timezone-aware UTC.

    Aware datetimes in another zone are converted to UTC; naive ones are refused.
    The renderings used by the macros are computed once per instance.

    Raises:
        ValueError: a naive datetime.
        InvalidArgument: ``start`` is after ``end``.
    """

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value: datetime = getattr(self, name)
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"TimeRange.{name} must be timezone-aware, got {value!r}")
            if value.utcoffset() != timedelta(0) or value.tzinfo is not UTC:
                object.__setattr__(self, name, value.astimezone(UTC))
        if self.start > self.end:
            raise InvalidArgument(
                f"time range start {self.start.isoformat()} is after its end {self.end.isoformat()}"
            )

    @cached_property
    def start_rfc3339(self) -> str:
        """``2024-01-01T00:00:00Z`` (second precision, truncated)."""
        return rfc3339_seconds(self.start)

    @cached_property
    def end_rfc3339(self) -> str:
        """``2024-01-01T00:00:00Z`` (second precision, truncated)."""
        return rfc3339_seconds(self.end)

    @cached_property
    def start_s(self) -> int:
        """Unix seconds (floored)."""
        return (self.start - EPOCH) // _SECOND

    @cached_property
    def end_s(self) -> int:
        """Unix seconds (floored)."""
        return (self.end - EPOCH) // _SECOND

    @cached_property
    def start_ms(self) -> int:
        """Unix milliseconds (floored)."""
        return (self.start - EPOCH) // _MILLI

    @cached_property
    def end_ms(self) -> int:
        """Unix milliseconds (floored)."""
        return (self.end - EPOCH) // _MILLI

    @cached_property
    def start_ns(self) -> int:
        """Unix nanoseconds."""
        return epoch_ns(self.start)

    @cached_property
    def end_ns(self) -> int:
        """Unix nanoseconds."""
        return epoch_ns(self.end)


@dataclass(frozen=True)
class MacroContext:
    """The inputs of macro expansion for one query.

    Attributes:
        range: the dashboard time range, if the request sent one.
        interval: the bucket width (Grafana's ``$__interval``), if known.
        now: the reference for relative times given as macro arguments (``'now-6h'``); ``None``
            means the wall clock at expansion time. Set it when the same SQL is expanded twice
            (e.g. at GetFlightInfo and DoGet) and must expand the same way.
    """

    range: TimeRange | None = None
    interval: timedelta | None = None
    now: datetime | None = None

    def __post_init__(self) -> None:
        if self.interval is not None and self.interval < timedelta(0):
            raise InvalidArgument(f"interval must not be negative, got {self.interval}")
        if self.now is not None and self.now.tzinfo is None:
            raise ValueError("MacroContext.now must be timezone-aware")


# Grafana's interval rounding (pkg/tsdb intervalv2 roundInterval): (upper bound, result) in ms.
_NICE_STEPS_MS: tuple[tuple[int, int], ...] = (
    (10, 1),
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1_500, 1_000),
    (3_500, 2_000),
    (7_500, 5_000),
    (12_500, 10_000),
    (17_500, 15_000),
    (25_000, 20_000),
    (45_000, 30_000),
    (90_000, 60_000),
    (210_000, 120_000),
    (450_000, 300_000),
    (750_000, 600_000),
    (1_050_000, 900_000),
    (1_500_000, 1_200_000),
    (2_700_000, 1_800_000),
    (5_400_000, 3_600_000),
    (9_000_000, 7_200_000),
    (16_200_000, 10_800_000),
    (32_400_000, 21_600_000),
    (86_400_000, 43_200_000),
    (172_800_000, 86_400_000),
    (604_800_000, 86_400_000),
    (1_814_400_000, 604_800_000),
)


def auto_interval(
    time_range: TimeRange, max_data_points: int, min_interval: timedelta = _MILLI
) -> timedelta:
    """Grafana's interval for a range and a point budget: ``(end - start) / max_data_points``,
    at least ``min_interval``, rounded to a nice step (1 s, 2 s, 5 s, 10 s, 15 s, 20 s, 30 s,
    1 m, ... 1 d, 1 w, 30 d, 1 y)."""
    if max_data_points <= 0:
        raise InvalidArgument(f"max_data_points must be positive, got {max_data_points}")
    raw = max((time_range.end - time_range.start) / max_data_points, min_interval)
    raw_ms = raw / _MILLI
    for bound, step in _NICE_STEPS_MS:
        if raw_ms <= bound:
            return timedelta(milliseconds=step)
    if raw_ms < 3_628_800_000:
        return timedelta(days=30)
    return timedelta(days=365)


def _header(headers: Mapping[str, str | Sequence[str]], name: str) -> str:
    value = headers.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        value = value[0] if len(value) else ""
    return value.strip()


def context_from_headers(
    headers: Mapping[str, str | Sequence[str]], *, now: datetime | None = None
) -> MacroContext:
    """Build the macro context from request metadata (lower-case keys; values may be lists,
    as pyarrow's ``ServerCallContext`` middleware gives them).

    ``now`` (default: the wall clock) resolves relative range headers and is kept in the
    context so relative macro arguments resolve against the same instant.

    Raises:
        InvalidArgument: a header is present but malformed (the message names it).
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    begin = _header(headers, RANGE_BEGIN_HEADER)
    end = _header(headers, RANGE_END_HEADER)
    time_range = None
    if begin and end:
        try:
            start_t = parse_time(begin, now)
        except ValueError as exc:
            raise InvalidArgument(f"header {RANGE_BEGIN_HEADER}: {exc}") from None
        try:
            end_t = parse_time(end, now, round_up=True)
        except ValueError as exc:
            raise InvalidArgument(f"header {RANGE_END_HEADER}: {exc}") from None
        if start_t > end_t:
            raise InvalidArgument(
                f"headers {RANGE_BEGIN_HEADER}={begin!r} is after {RANGE_END_HEADER}={end!r}"
            )
        time_range = TimeRange(start_t, end_t)

    interval = None
    raw_interval = _header(headers, INTERVAL_MS_HEADER)
    if raw_interval:
        try:
            ms = float(raw_interval)
            if not 0 <= ms <= MAX_INTERVAL_MS:
                raise ValueError
        except ValueError:
            raise InvalidArgument(
                f"header {INTERVAL_MS_HEADER}: expected a number of milliseconds from 0 to "
                f"{MAX_INTERVAL_MS} (100 years), got {raw_interval!r}"
            ) from None
        interval = timedelta(milliseconds=ms)
    else:
        raw_points = _header(headers, MAX_DATA_POINTS_HEADER)
        if raw_points:
            try:
                points = int(raw_points)
                if not 0 < points <= 2**63 - 1:
                    raise ValueError
            except ValueError:
                raise InvalidArgument(
                    f"header {MAX_DATA_POINTS_HEADER}: expected an integer from 1 to {2**63 - 1}, "
                    f"got {raw_points!r}"
                ) from None
            if time_range is not None:
                interval = auto_interval(time_range, points)
    return MacroContext(range=time_range, interval=interval, now=now)
