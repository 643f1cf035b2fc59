"""The built-in Grafana macros, expanding byte-for-byte like the Grafana Flight SQL datasource.

=================================  =================================================================
``$__timeFilter(col)``             ``col >= '<from>' AND col <= '<to>'`` (also ``$__timeRange``)
``$__timeRangeFrom(col)``          ``col >= '<from>'``
``$__timeRangeTo(col)``            ``col <= '<to>'``
``$__timeFrom`` / ``$__timeTo``    ``cast('<from>' as timestamp)`` / ``cast('<to>' as timestamp)``
``$__unixEpochFilter(col)``        ``col >= <from_s> AND col <= <to_s>`` (``...NanoFilter``: ns)
``$__unixEpochFrom()`` ...         ``<from_s>``; ``To``, ``NanoFrom``, ``NanoTo`` likewise
``$__dateBin(col)``                ``date_bin(interval 'N second', col, timestamp '1970-...Z')``
``$__dateBinAlias(col)``           the same, then `` as col_binned``
``$__interval``                    ``interval 'N second'`` (never takes arguments)
``$__interval_ms``                 the interval in whole milliseconds (never takes arguments)
``$__timeGroup(col, hour)``        ``datepart('hour', col),datepart('day', col),...year``
``$__timeGroupAlias(col, hour)``   each item followed by `` as col_<unit>``
``$__timeGroup(col, '5m')``        ``date_bin(interval '300 second', col, timestamp '1970...Z')``
=================================  =================================================================

``<from>``/``<to>`` are RFC 3339 in UTC at second precision (fraction truncated), ``N`` is the
interval's whole seconds (truncated). Every macro that needs the range also takes it as two
trailing arguments (``$__timeFilter(time, 'now-6h', 'now')``, ``$__timeFrom('...', '...')``),
and ``$__dateBin``/``$__dateBinAlias`` take an optional stride (``$__dateBin(time, '5m')``), so
they work without request headers. ``$__timeFrom``/``$__timeTo`` ignore a single argument, as
Grafana does. The duration form of ``$__timeGroupAlias`` aliases the bucket with the column's
own (unqualified) name, ``time`` for expressions, so the result keeps its column name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta

from .context import MacroContext, TimeRange
from .errors import MacroError, location
from .timeparse import parse_duration, parse_time

__all__ = ["Arg", "Call", "BUILTINS", "BUILTIN_NAMES", "NO_ARGUMENTS", "range_hint"]

_EPOCH_LITERAL = "timestamp '1970-01-01T00:00:00Z'"
_TIME_GROUP_UNITS = ("minute", "hour", "day", "month", "year")
_INTERVAL_LITERAL = re.compile(r"interval\s+'([0-9]+)\s+seconds?'", re.IGNORECASE)
_IDENT_PART = r'(?:[A-Za-z_][A-Za-z0-9_]*|"(?:[^"]|"")+")'
_COLUMN_REF = re.compile(rf"(?:{_IDENT_PART}\s*\.\s*)*({_IDENT_PART})")
_SECOND = timedelta(seconds=1)
_EXAMPLE_FROM = "'2024-01-01T00:00:00Z'"
_EXAMPLE_TO = "'2024-01-02T00:00:00Z'"


class Arg:
    """One trimmed macro argument and its 1-based position in the expanded text."""

    __slots__ = ("text", "position")

    def __init__(self, text: str, position: int) -> None:
        self.text = text
        self.position = position


class Call:
    """One macro invocation as the built-ins see it."""

    __slots__ = ("name", "position", "source", "args", "context", "_now")

    def __init__(
        self,
        name: str,
        position: int,
        source: str,
        args: list[Arg] | None,
        context: MacroContext,
        now: Callable[[], datetime],
    ) -> None:
        self.name = name
        self.position = position
        self.source = source
        self.args = args
        self.context = context
        self._now = now

    @property
    def where(self) -> str:
        """`` (line L, column C)`` when the source text has several lines."""
        return location(self.source, self.position - 1)

    def error(self, detail: str) -> MacroError:
        """``$__name at position N: detail``."""
        return MacroError.at(self.name, self.position, self.where, detail)

    def count(self) -> int:
        """The number of arguments (0 without parentheses)."""
        return 0 if self.args is None else len(self.args)

    def arity_error(self, usage: str) -> MacroError:
        """The arguments do not match ``usage`` (e.g. ``(column) or (column, from, to)``)."""
        if self.args is None:
            got = "no argument list"
        else:
            got = f"{len(self.args)} argument{'' if len(self.args) == 1 else 's'}"
        return self.error(f"expects {usage}, got {got}")

    def column(self, index: int = 0) -> str:
        """Argument ``index``, which must not be empty."""
        assert self.args is not None
        arg = self.args[index]
        if not arg.text:
            raise self.error(f"argument {index + 1} is empty")
        return arg.text

    def time_range(self, base: int, usage: str, example: str | None = None) -> TimeRange:
        """The context's range, or the one given by two arguments after the first ``base``.

        ``example`` overrides the leading arguments shown in the missing-range hint.
        """
        n = self.count()
        if n == base + 2:
            assert self.args is not None
            now = self._now()
            start = self._bound(self.args[base], now, False)
            end = self._bound(self.args[base + 1], now, True)
            if start > end:
                raise self.error(
                    f"the range given as arguments ends before it starts "
                    f"({self.args[base].text} > {self.args[base + 1].text})"
                )
            return TimeRange(start, end)
        if n != base:
            raise self.arity_error(usage)
        if self.context.range is None:
            if example is None:
                leading = (self.args or [])[:base]
                example = ", ".join(a.text for a in leading if a.text) or ("time" if base else "")
            raise MacroError(
                f"$__{self.name} at position {self.position}{self.where} needs a time range: "
                + range_hint(self.name, example),
                macro=self.name,
                position=self.position,
            )
        return self.context.range

    def _bound(self, arg: Arg, now: datetime, end: bool) -> datetime:
        text = arg.text
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            text = text[1:-1]
        try:
            return parse_time(text, now, round_up=end)
        except ValueError as exc:
            raise self.error(f"argument at position {arg.position}: {exc}") from None

    def interval(self, extra: Arg | None = None) -> timedelta:
        """An explicit stride argument, else the context's interval."""
        if extra is not None:
            return self.duration(extra)
        if self.context.interval is None:
            hint = ""
            if self.name.startswith("dateBin"):
                column = self.args[0].text if self.args and self.args[0].text else "time"
                hint = f"; or pass it as an argument: $__{self.name}({column}, '10s')"
            raise MacroError(
                f"$__{self.name} at position {self.position}{self.where} needs an interval: "
                "send the interval_ms header (milliseconds, e.g. 10000), or max_data_points "
                f"together with a time range{hint}",
                macro=self.name,
                position=self.position,
            )
        return self.context.interval

    def duration(self, arg: Arg) -> timedelta:
        """A duration argument: ``'5m'``, ``1h``, ... or ``interval 'N second'``."""
        literal = _INTERVAL_LITERAL.fullmatch(arg.text)
        try:
            if literal is not None:
                return int(literal.group(1)) * _SECOND
            return parse_duration(arg.text)
        except OverflowError:
            raise self.error(f"argument at position {arg.position}: out of range") from None
        except ValueError as exc:
            raise self.error(f"argument at position {arg.position}: {exc}") from None


def range_hint(name: str, example_args: str) -> str:
    """How to send a time range, ending with a call of ``$__name`` that passes one."""
    lead = f"{example_args}, " if example_args else ""
    return (
        "send the query_range_begin and query_range_end headers (RFC 3339, e.g. "
        "2024-01-01T00:00:00Z, or Grafana forms like now-6h) or pass the bounds as arguments: "
        f"$__{name}({lead}{_EXAMPLE_FROM}, {_EXAMPLE_TO})"
    )


def _seconds(call: Call, interval: timedelta) -> int:
    n = interval // _SECOND
    if n <= 0:
        raise call.error(
            f"interval under 1 s ({interval / timedelta(milliseconds=1):g} ms): date_bin needs "
            "a stride of at least one second; use $__timeGroup(column, '500ms') for finer buckets"
        )
    return n


# -- time range ----------------------------------------------------------------------------

_COL_USAGE = "(column) or (column, from, to)"
_BOUND_USAGE = "no arguments or (from, to)"


def _column_range(call: Call) -> tuple[str, TimeRange]:
    """``(column)`` or ``(column, from, to)``: the column and the range to filter it on."""
    if call.count() not in (1, 3):
        raise call.arity_error(_COL_USAGE)
    return call.column(), call.time_range(1, _COL_USAGE)


def _time_filter(call: Call) -> str:
    col, r = _column_range(call)
    return f"{col} >= '{r.start_rfc3339}' AND {col} <= '{r.end_rfc3339}'"


def _time_range_from(call: Call) -> str:
    col, r = _column_range(call)
    return f"{col} >= '{r.start_rfc3339}'"


def _time_range_to(call: Call) -> str:
    col, r = _column_range(call)
    return f"{col} <= '{r.end_rfc3339}'"


def _bounds_only(call: Call) -> TimeRange:
    """``$__timeFrom``-like: no args, one ignored arg (Grafana), or (from, to)."""
    n = call.count()
    if n == 1:  # Grafana ignores the arguments of these macros
        return call.time_range(1, _BOUND_USAGE, example="")
    if n in (0, 2):
        return call.time_range(0, _BOUND_USAGE)
    raise call.arity_error(_BOUND_USAGE)


def _time_from(call: Call) -> str:
    return f"cast('{_bounds_only(call).start_rfc3339}' as timestamp)"


def _time_to(call: Call) -> str:
    return f"cast('{_bounds_only(call).end_rfc3339}' as timestamp)"


def _unix_epoch_filter(call: Call) -> str:
    col, r = _column_range(call)
    return f"{col} >= {r.start_s} AND {col} <= {r.end_s}"


def _unix_epoch_nano_filter(call: Call) -> str:
    col, r = _column_range(call)
    return f"{col} >= {r.start_ns} AND {col} <= {r.end_ns}"


def _unix_epoch_from(call: Call) -> str:
    return str(_bounds_only(call).start_s)


def _unix_epoch_to(call: Call) -> str:
    return str(_bounds_only(call).end_s)


def _unix_epoch_nano_from(call: Call) -> str:
    return str(_bounds_only(call).start_ns)


def _unix_epoch_nano_to(call: Call) -> str:
    return str(_bounds_only(call).end_ns)


# -- interval --------------------------------------------------------------------------------

_BIN_USAGE = "(column) or (column, stride) such as (time, '5m')"


def _date_bin_expr(call: Call) -> tuple[str, str]:
    n = call.count()
    if n not in (1, 2):
        raise call.arity_error(_BIN_USAGE)
    assert call.args is not None
    col = call.column()
    seconds = _seconds(call, call.interval(call.args[1] if n == 2 else None))
    return col, f"date_bin(interval '{seconds} second', {col}, {_EPOCH_LITERAL})"


def _date_bin(call: Call) -> str:
    return _date_bin_expr(call)[1]


def _date_bin_alias(call: Call) -> str:
    col, expr = _date_bin_expr(call)
    return f"{expr} as {col}_binned"


def _interval(call: Call) -> str:
    return f"interval '{_seconds(call, call.interval())} second'"


def _interval_ms(call: Call) -> str:
    return str(call.interval() // timedelta(milliseconds=1))


# -- grouping --------------------------------------------------------------------------------

_GROUP_USAGE = "(column, period): period is minute, hour, day, month, year or a duration like '5m'"


def _stride_literal(stride: timedelta) -> str:
    micros = stride // timedelta(microseconds=1)
    if micros % 1_000_000 == 0:
        return f"interval '{micros // 1_000_000} second'"
    if micros % 1000 == 0:
        return f"interval '{micros // 1000} millisecond'"
    return f"interval '{micros} microsecond'"


def _time_group_parts(call: Call, alias: bool) -> str:
    if call.count() != 2:
        raise call.arity_error(_GROUP_USAGE)
    assert call.args is not None
    col = call.column()
    period_arg = call.args[1]
    period = period_arg.text
    if len(period) >= 2 and period[0] == period[-1] and period[0] in "'\"":
        period = period[1:-1].strip()
    unit = period.lower()
    if unit in _TIME_GROUP_UNITS:
        units = _TIME_GROUP_UNITS[_TIME_GROUP_UNITS.index(unit) :]
        if alias:
            return ",".join(f"datepart('{u}', {col}) as {col}_{u}" for u in units)
        return ",".join(f"datepart('{u}', {col})" for u in units)
    try:
        stride = call.duration(period_arg)
    except MacroError:
        raise call.error(
            f"argument at position {period_arg.position}: period must be one of minute, hour, "
            f"day, month, year or a duration like '5m', 1h, 30s; got {period_arg.text!r}"
        ) from None
    if stride < timedelta(microseconds=1):
        raise call.error(f"period {period_arg.text} is not a positive duration")
    expr = f"date_bin({_stride_literal(stride)}, {col}, {_EPOCH_LITERAL})"
    if not alias:
        return expr
    ref = _COLUMN_REF.fullmatch(col)
    return f"{expr} as {ref.group(1) if ref else 'time'}"


def _time_group(call: Call) -> str:
    return _time_group_parts(call, False)


def _time_group_alias(call: Call) -> str:
    return _time_group_parts(call, True)


#: name (without ``$__``) → implementation.
BUILTINS: dict[str, Callable[[Call], str]] = {
    "dateBin": _date_bin,
    "dateBinAlias": _date_bin_alias,
    "interval": _interval,
    "interval_ms": _interval_ms,
    "timeFilter": _time_filter,
    "timeRange": _time_filter,
    "timeRangeFrom": _time_range_from,
    "timeRangeTo": _time_range_to,
    "timeFrom": _time_from,
    "timeTo": _time_to,
    "timeGroup": _time_group,
    "timeGroupAlias": _time_group_alias,
    "unixEpochFilter": _unix_epoch_filter,
    "unixEpochNanoFilter": _unix_epoch_nano_filter,
    "unixEpochFrom": _unix_epoch_from,
    "unixEpochTo": _unix_epoch_to,
    "unixEpochNanoFrom": _unix_epoch_nano_from,
    "unixEpochNanoTo": _unix_epoch_nano_to,
}

#: The names of the built-in macros, without ``$__``.
BUILTIN_NAMES: frozenset[str] = frozenset(BUILTINS)

#: Built-ins that never take an argument list: a ``(`` after them is left in the SQL
#: (``date_bin($__interval, ...)`` has its comma after; Grafana ignores their arguments).
NO_ARGUMENTS: frozenset[str] = frozenset({"interval", "interval_ms"})
