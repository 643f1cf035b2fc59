"""Time and duration parsing for time ranges and macro arguments, all in UTC.

Accepted times (:func:`parse_time`):

* RFC 3339 with ``Z`` or any ``±hh:mm`` offset and any number of fractional digits
  (``2024-01-01T00:00:00Z``, ``2024-01-01T00:00:00.5Z``, ``2024-01-01T02:00:00+02:00``).
  Digits past microseconds are truncated (Python datetimes hold microseconds).
* Epoch milliseconds as a plain integer (``1704067200000``), what Grafana's ``from``/``to`` are.
* Grafana relative times: ``now``, then any sequence of ``+N<unit>`` / ``-N<unit>`` offsets and
  ``/<unit>`` roundings, e.g. ``now-6h``, ``now+5m``, ``now-1d/d``, ``now/w``. Units are
  ``s m h d w M y`` (``M`` month, ``y`` year: calendar arithmetic, day clamped to the month's
  end). Rounding goes to the start of the unit in UTC (weeks start on Monday, ISO 8601); with
  ``round_up=True`` to its last millisecond instead, as Grafana does for the *end* of a range.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta, timezone

__all__ = [
    "UTC",
    "EPOCH",
    "MIN_TIME",
    "MAX_TIME",
    "TIME_RANGE_TEXT",
    "parse_time",
    "parse_duration",
    "rfc3339_seconds",
    "epoch_ns",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Times outside these bounds do not fit timestamp[ns], which every range is rendered in.
MIN_TIME = datetime(1677, 9, 22, tzinfo=UTC)
MAX_TIME = datetime(2262, 4, 11, tzinfo=UTC)
TIME_RANGE_TEXT = "1677-09-22T00:00:00Z to 2262-04-11T00:00:00Z"

_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))?"
)
_EPOCH_MS = re.compile(r"-?[0-9]{1,19}")
_RELATIVE = re.compile(r"now((?:[+-][0-9]*[smhdwMy]|/[smhdwMy])*)")
_RELATIVE_OP = re.compile(r"([+-])([0-9]*)([smhdwMy])|/([smhdwMy])")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w|y)")

_FIXED_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
    "y": timedelta(days=365),
}

_FORMS = (
    "expected RFC 3339 (2024-01-01T00:00:00Z, 2024-01-01T02:00:00.5+02:00), epoch "
    "milliseconds (1704067200000) or a Grafana relative time (now, now-6h, now-1d/d)"
)


def parse_time(text: str, now: datetime, *, round_up: bool = False) -> datetime:
    """Parse a point in time; the result is timezone-aware UTC.

    Args:
        text: RFC 3339, epoch milliseconds or a Grafana relative time (see the module doc).
        now: the reference for relative times (timezone-aware).
        round_up: round ``/unit`` to the end of the unit instead of its start (range ends).

    Raises:
        ValueError: the text is none of the accepted forms or out of range.
    """
    s = text.strip()
    try:
        if s.startswith("now"):
            parsed = _relative(s, now, round_up, text)
        elif _EPOCH_MS.fullmatch(s):
            parsed = EPOCH + timedelta(milliseconds=int(s))
        else:
            m = _RFC3339.fullmatch(s)
            if m is None:
                raise ValueError(f"cannot parse time {text!r}: {_FORMS}")
            parsed = _rfc3339(m, text)
    except OverflowError:
        parsed = None
    if parsed is None or not MIN_TIME <= parsed <= MAX_TIME:
        raise ValueError(f"time {text!r} is out of range: accepted {TIME_RANGE_TEXT}")
    return parsed


def _rfc3339(m: re.Match[str], text: str) -> datetime:
    year, month, day, hour, minute, second, frac, z, sign, oh, om = m.groups()
    if z is None and sign is None:
        raise ValueError(
            f"time {text!r} has no zone: add Z (UTC) or an offset such as +02:00 (RFC 3339)"
        )
    try:
        tz = UTC
        if sign is not None:
            if int(oh) > 23 or int(om) > 59:
                raise ValueError("bad offset")
            delta = timedelta(hours=int(oh), minutes=int(om))
            tz = timezone(-delta if sign == "-" else delta)
        micro = int((frac or "")[:6].ljust(6, "0"))
        parsed = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tz
        )
        return parsed.astimezone(UTC)
    except ValueError:
        raise ValueError(f"time {text!r} is not a valid date and time: {_FORMS}") from None


def _relative(s: str, now: datetime, round_up: bool, text: str) -> datetime:
    m = _RELATIVE.fullmatch(s)
    if m is None:
        raise ValueError(f"cannot parse relative time {text!r}: {_FORMS}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    t = now.astimezone(UTC)
    for op in _RELATIVE_OP.finditer(m.group(1)):
        sign, digits, unit, round_unit = op.groups()
        if round_unit is not None:
            t = _round(t, round_unit, round_up)
            continue
        n = int(digits) if digits else 1
        if sign == "-":
            n = -n
        if unit == "M":
            t = _add_months(t, n)
        elif unit == "y":
            t = _add_months(t, 12 * n)
        else:
            t = t + n * _FIXED_UNITS[unit]
    return t


def _add_months(t: datetime, n: int) -> datetime:
    year, month0 = divmod(t.month - 1 + n, 12)
    year += t.year
    if not 1 <= year <= 9999:
        raise OverflowError
    day = min(t.day, calendar.monthrange(year, month0 + 1)[1])
    return t.replace(year=year, month=month0 + 1, day=day)


def _round(t: datetime, unit: str, up: bool) -> datetime:
    if unit == "s":
        start, step = t.replace(microsecond=0), timedelta(seconds=1)
    elif unit == "m":
        start, step = t.replace(second=0, microsecond=0), timedelta(minutes=1)
    elif unit == "h":
        start, step = t.replace(minute=0, second=0, microsecond=0), timedelta(hours=1)
    else:
        midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
        if unit == "d":
            start, step = midnight, timedelta(days=1)
        elif unit == "w":
            start, step = midnight - timedelta(days=t.weekday()), timedelta(weeks=1)
        elif unit == "M":
            start = midnight.replace(day=1)
            return _add_months(start, 1) - timedelta(milliseconds=1) if up else start
        else:  # "y"
            start = midnight.replace(month=1, day=1)
            return _add_months(start, 12) - timedelta(milliseconds=1) if up else start
    return start + step - timedelta(milliseconds=1) if up else start


def parse_duration(text: str) -> timedelta:
    """Parse a Grafana-style duration: ``'5m'``, ``1h``, ``30s``, ``1d``, ``500ms``, ``2w``.

    Quotes (single or double) around the value are optional. Units: ``ms s m h d w y``
    (``y`` = 365 days); the number may have a fraction (``1.5h``).

    Raises:
        ValueError: anything else.
    """
    s = text.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        s = s[1:-1].strip()
    m = _DURATION.fullmatch(s)
    if m is None:
        raise ValueError(
            f"cannot parse duration {text!r}: expected a number and a unit "
            "(ms, s, m, h, d, w, y), e.g. '5m', 1h, 30s, 500ms"
        )
    number, unit = m.groups()
    try:
        if "." in number:
            return float(number) * _FIXED_UNITS[unit]
        return int(number) * _FIXED_UNITS[unit]
    except OverflowError:
        raise ValueError(f"duration {text!r} is out of range") from None


def rfc3339_seconds(t: datetime) -> str:
    """``2024-01-01T00:00:00Z``: UTC, second precision, fraction truncated (Go's RFC3339)."""
    u = t.astimezone(UTC)
    return f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}Z"


def epoch_ns(t: datetime) -> int:
    """Nanoseconds since the Unix epoch (exact; datetimes hold microseconds)."""
    return (t - EPOCH) // timedelta(microseconds=1) * 1000
