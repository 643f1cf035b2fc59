"""The macro engine: parsing rules, string safety, errors, explicit bounds, request headers,
user macros (TOML), property tests for the tokenizer, and expansion speed."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import datafusion
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flightsql_srv.errors import InvalidArgument
from flightsql_srv.macros import (
    BUILTIN_NAMES,
    MacroConfigError,
    MacroContext,
    MacroError,
    TimeRange,
    UserMacro,
    auto_interval,
    context_from_headers,
    expand,
    load_user_macros,
)
from flightsql_srv.macros.lexer import tokenize
from flightsql_srv.sqltext import segments
from tests.conftest import ROOT

FROM = datetime(2023, 1, 1, tzinfo=UTC)
TO = FROM + timedelta(minutes=10)
NOW = datetime(2024, 3, 13, 15, 42, 17, tzinfo=UTC)
FULL = MacroContext(TimeRange(FROM, TO), timedelta(seconds=10), now=NOW)
EMPTY = MacroContext(now=NOW)
FILTER = "time >= '2023-01-01T00:00:00Z' AND time <= '2023-01-01T00:10:00Z'"
BIN = "date_bin(interval '10 second', {}, timestamp '1970-01-01T00:00:00Z')"


def _error(
    sql: str, context: MacroContext = FULL, user_macros: Mapping[str, UserMacro] | None = None
) -> MacroError:
    with pytest.raises(MacroError) as info:
        expand(sql, context, user_macros)
    return info.value


# -- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "select '$__timeFilter(time)'",
        "select 'it''s $__timeFilter(time)'",
        'select "$__timeFilter(time)" from x',
        "select 1 -- where $__timeFilter(time)",
        "select 1 /* $__timeFilter(time) $__nope */",
        "select 1 /* unterminated $__timeFilter(time)",
        "select 'unterminated $__timeFilter(time)",
        "select '$__unknownMacro(' || \"$__x\" -- $__y(",
    ],
)
def test_non_code_is_never_expanded(sql: str) -> None:
    assert expand(sql, FULL) == sql
    assert expand(sql, EMPTY) == sql


def test_only_code_is_expanded_and_the_rest_is_byte_for_byte() -> None:
    sql = (
        "SELECT  '$__timeFilter(time)' AS \"$__x\",\t-- ünïcödé $__y\n"
        "  $__dateBin(time)  /* $__z */ FROM x\r\nWHERE $__timeFilter(time);  "
    )
    expected = (
        "SELECT  '$__timeFilter(time)' AS \"$__x\",\t-- ünïcödé $__y\n"
        f"  {BIN.format('time')}  /* $__z */ FROM x\r\nWHERE {FILTER};  "
    )
    assert expand(sql, FULL) == expected


def test_nested_parentheses_in_arguments() -> None:
    assert expand("where $__timeFilter(coalesce(a, b))", FULL) == (
        "where coalesce(a, b) >= '2023-01-01T00:00:00Z' AND coalesce(a, b) <= "
        "'2023-01-01T00:10:00Z'"
    )


def test_arguments_split_on_depth_one_commas_only() -> None:
    assert expand("$__timeGroup(coalesce(a, b), hour)", FULL) == ",".join(
        f"datepart('{u}', coalesce(a, b))" for u in ("hour", "day", "month", "year")
    )
    # commas inside quotes, quoted identifiers and comments never split
    assert expand("$__dateBin(concat(a, ',', \"b,c\"))", FULL) == BIN.format(
        "concat(a, ',', \"b,c\")"
    )
    assert expand("$__dateBin(a /* , */)", FULL) == BIN.format("a /* , */")
    # parentheses inside quotes do not count either
    assert expand("$__dateBin(f(')'))", FULL) == BIN.format("f(')')")
    assert "got 2 arguments" in str(_error("$__timeFilter(f(a, b), c)"))
    assert "got 3 arguments" in str(_error("$__dateBin(a, b, c)"))


def test_arguments_are_trimmed() -> None:
    assert expand("$__timeFilter(  time\n )", FULL) == FILTER
    assert expand("$__timeGroup( time ,  'hour'  )", FULL).startswith("datepart('hour', time),")


def test_arguments_only_when_the_parenthesis_follows_immediately() -> None:
    assert expand("time >= $__timeFrom (1)", FULL) == (
        "time >= cast('2023-01-01T00:00:00Z' as timestamp) (1)"
    )
    assert "got no argument list" in str(_error("where $__timeFilter (time)"))


def test_interval_never_takes_arguments() -> None:
    assert expand("date_bin($__interval, time)", FULL) == "date_bin(interval '10 second', time)"
    assert expand("$__interval(x)", FULL) == "interval '10 second'(x)"
    assert expand("$__interval_ms(x)", FULL) == "10000(x)"


def test_longest_name_wins() -> None:
    assert expand("$__timeFrom", FULL) == "cast('2023-01-01T00:00:00Z' as timestamp)"
    assert expand("$__timeFilter(t)", FULL).startswith("t >= ")
    assert expand("$__interval_ms", FULL) == "10000"
    error = _error("select $__timeFilterX(time)")
    assert str(error).startswith("unknown macro $__timeFilterX at position 8;")


def test_macros_in_arguments_are_expanded_first() -> None:
    assert expand("$__dateBin(coalesce(time, $__timeFrom))", FULL) == BIN.format(
        "coalesce(time, cast('2023-01-01T00:00:00Z' as timestamp))"
    )


def test_time_from_ignores_a_single_argument_like_grafana() -> None:
    assert expand("$__timeTo(whatever)", FULL) == "cast('2023-01-01T00:10:00Z' as timestamp)"
    assert expand("$__timeFrom( )", FULL) == "cast('2023-01-01T00:00:00Z' as timestamp)"


# -- errors ----------------------------------------------------------------------------------


def test_unclosed_parenthesis_names_the_position() -> None:
    error = _error("select $__timeFilter(time")
    assert str(error) == (
        "$__timeFilter at position 8: unclosed '(' at position 21: the argument list has no "
        "matching ')'"
    )
    assert (error.macro, error.position) == ("timeFilter", 8)
    # a ')' inside a string does not close it
    assert "unclosed '('" in str(_error("select $__timeFilter(time, ')'"))
    assert "unclosed '('" in str(_error("select $__timeGroup(time, (hour)"))


def test_unknown_macro_lists_what_exists() -> None:
    error = _error("select $__foo(1)")
    message = str(error)
    assert message.startswith("unknown macro $__foo at position 8; built-ins are $__dateBin, ")
    assert "$__timeFilter" in message and message.endswith("no user macros are loaded")
    assert (error.macro, error.position) == ("foo", 8)
    macros = {"hostFilter": UserMacro("hostFilter", (), "host = 'a'")}
    assert str(_error("$__foo", user_macros=macros)).endswith("user macros are $__hostFilter")


def test_errors_are_invalid_argument_with_line_and_column() -> None:
    error = _error("select 1,\n  2,\n  $__dateBin(time")
    assert isinstance(error, InvalidArgument)
    assert isinstance(error, ValueError)
    assert str(error).startswith(
        "$__dateBin at position 18 (line 3, column 3): unclosed '(' at position 28"
    )
    assert type(error).__module__ == "builtins"  # short in gRPC status details


def test_missing_range_says_how_to_send_one() -> None:
    message = str(_error("select * from x where $__timeFilter(time)", EMPTY))
    assert message == (
        "$__timeFilter at position 23 needs a time range: send the query_range_begin and "
        "query_range_end headers (RFC 3339, e.g. 2024-01-01T00:00:00Z, or Grafana forms like "
        "now-6h) or pass the bounds as arguments: $__timeFilter(time, '2024-01-01T00:00:00Z', "
        "'2024-01-02T00:00:00Z')"
    )
    for sql in ("$__timeFrom", "$__timeTo()", "$__unixEpochFrom()", "$__timeRangeTo(ts)"):
        assert "query_range_begin" in str(_error(sql, EMPTY))
    assert "$__timeRangeTo(ts, '2024-01-01" in str(_error("$__timeRangeTo(ts)", EMPTY))
    assert "$__timeFrom('2024-01-01T00:00:00Z', " in str(_error("$__timeFrom", EMPTY))


def test_missing_interval_names_the_headers() -> None:
    only_range = MacroContext(TimeRange(FROM, TO))
    for sql in ("$__dateBin(time)", "$__interval", "$__interval_ms", "$__dateBinAlias(t)"):
        message = str(_error(sql, only_range))
        assert "needs an interval: send the interval_ms header" in message
        assert "max_data_points" in message
    assert "$__dateBin(ts, '10s')" in str(_error("$__dateBin(ts)", only_range))


def test_bad_arguments() -> None:
    assert "argument 1 is empty" in str(_error("$__timeFilter(, 'now', 'now')"))
    assert "got 0 arguments" in str(_error("$__timeFilter()"))
    assert "got 2 arguments" in str(_error("$__timeFilter(time, 'now')"))
    assert "period must be one of minute, hour" in str(_error("$__timeGroup(time, week)"))
    assert "got 1 argument" in str(_error("$__timeGroup(time)"))
    assert "not a positive duration" in str(_error("$__timeGroup(time, 0s)"))
    assert "cannot parse duration" in str(_error("$__dateBin(time, soon)"))
    assert "out of range" in str(_error("$__dateBin(t, interval '99999999999999 second')"))


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    sql = "$__dateBin(" * 100 + "time" + ")" * 100
    assert "nested more than 32 deep" in str(_error(sql))
    assert expand("$__dateBin(" * 5 + "t" + ")" * 5, FULL).count("date_bin(") == 5


# -- explicit bounds -------------------------------------------------------------------------


def test_bounds_as_arguments_need_no_headers() -> None:
    assert expand(
        "$__timeFilter(time, '2024-01-01T00:00:00Z', '2024-01-02T02:00:00+02:00')", EMPTY
    ) == ("time >= '2024-01-01T00:00:00Z' AND time <= '2024-01-02T00:00:00Z'")
    assert expand("$__timeFilter(time, 'now-6h', 'now')", EMPTY) == (
        "time >= '2024-03-13T09:42:17Z' AND time <= '2024-03-13T15:42:17Z'"
    )
    # the end of a range rounds up, like Grafana's "to"
    assert expand('$__timeRange(t, "now-1d/d", "now-1d/d")', EMPTY) == (
        "t >= '2024-03-12T00:00:00Z' AND t <= '2024-03-12T23:59:59Z'"
    )
    assert expand("$__timeFrom(now/d, now)", EMPTY) == ("cast('2024-03-13T00:00:00Z' as timestamp)")
    assert expand("$__unixEpochFilter(ts, 1704067200000, 1704067260000)", EMPTY) == (
        "ts >= 1704067200 AND ts <= 1704067260"
    )
    assert expand("$__timeRangeFrom(t, 'now-1h', 'now')", FULL) == "t >= '2024-03-13T14:42:17Z'"


def test_arguments_override_the_header_range() -> None:
    assert expand("$__timeTo('2020-01-01T00:00:00Z', '2020-01-02T00:00:00Z')", FULL) == (
        "cast('2020-01-02T00:00:00Z' as timestamp)"
    )


def test_bad_bounds() -> None:
    message = str(_error("$__timeFilter(time, 'yesterday', 'now')", EMPTY))
    assert message.startswith("$__timeFilter at position 1: argument at position 21: ")
    assert "cannot parse time 'yesterday'" in message
    assert "ends before it starts" in str(_error("$__timeFilter(t, 'now', 'now-1h')", EMPTY))


def test_now_is_the_wall_clock_without_a_fixed_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    sql = expand("$__timeFrom('now', 'now')", MacroContext())
    stamp = re.search(r"'(.*)'", sql)
    assert stamp is not None
    parsed = datetime.fromisoformat(stamp.group(1).replace("Z", "+00:00"))
    assert before <= parsed <= datetime.now(UTC)


# -- context ---------------------------------------------------------------------------------


def test_time_range_validation() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        TimeRange(datetime(2024, 1, 1), datetime(2024, 1, 2, tzinfo=UTC))
    with pytest.raises(InvalidArgument, match="after its end"):
        TimeRange(TO, FROM)
    plus2 = timezone(timedelta(hours=2))
    r = TimeRange(datetime(2024, 1, 1, 2, tzinfo=plus2), datetime(2024, 1, 1, 3, tzinfo=plus2))
    assert r.start == datetime(2024, 1, 1, tzinfo=UTC) and r.start.tzinfo is UTC
    assert (r.start_rfc3339, r.end_s - r.start_s, r.end_ms - r.start_ms) == (
        "2024-01-01T00:00:00Z",
        3600,
        3_600_000,
    )
    with pytest.raises(AttributeError):
        r.start = FROM  # type: ignore[misc]


def test_context_from_headers() -> None:
    ctx = context_from_headers(
        {
            "query_range_begin": "2024-01-01T00:00:00Z",
            "query_range_end": ["2024-01-01T02:00:00.5+02:00"],
            "interval_ms": "10000",
        },
        now=NOW,
    )
    assert ctx.range is not None
    assert ctx.range.end == datetime(2024, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)
    assert ctx.interval == timedelta(seconds=10)
    assert ctx.now == NOW
    assert expand("$__timeFilter(time)", ctx) == (
        "time >= '2024-01-01T00:00:00Z' AND time <= '2024-01-01T00:00:00Z'"
    )


def test_context_from_headers_relative_and_partial() -> None:
    ctx = context_from_headers(
        {"query_range_begin": "now-1d/d", "query_range_end": "now/d"}, now=NOW
    )
    assert ctx.range is not None
    assert ctx.range.start_rfc3339 == "2024-03-12T00:00:00Z"
    assert ctx.range.end_rfc3339 == "2024-03-13T23:59:59Z"
    assert ctx.interval is None
    for headers in (
        {},
        {"query_range_begin": "now-1h"},
        {"query_range_begin": "now-1h", "query_range_end": ""},
        {"query_range_begin": [], "query_range_end": ["now"]},
    ):
        assert context_from_headers(headers, now=NOW).range is None


def test_context_from_headers_derives_the_interval() -> None:
    headers = {"query_range_begin": "now-6h", "query_range_end": "now", "max_data_points": "1000"}
    assert context_from_headers(headers, now=NOW).interval == timedelta(seconds=20)
    # interval_ms wins; max_data_points without a range gives no interval
    assert context_from_headers({**headers, "interval_ms": "1500"}, now=NOW).interval == (
        timedelta(milliseconds=1500)
    )
    assert context_from_headers({"max_data_points": "1000"}, now=NOW).interval is None


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"query_range_begin": "yesterday", "query_range_end": "now"}, "query_range_begin"),
        ({"query_range_begin": "now", "query_range_end": "2024-01-01"}, "query_range_end"),
        ({"query_range_begin": "now", "query_range_end": "now-1h"}, "is after"),
        ({"interval_ms": "ten"}, "interval_ms"),
        ({"interval_ms": "-5"}, "interval_ms"),
        ({"interval_ms": "nan"}, "interval_ms"),
        ({"max_data_points": "0"}, "max_data_points"),
        ({"max_data_points": "many"}, "max_data_points"),
    ],
)
def test_context_from_bad_headers(headers: dict[str, str], named: str) -> None:
    with pytest.raises(InvalidArgument, match=named):
        context_from_headers(headers, now=NOW)


@pytest.mark.parametrize(
    ("span", "points", "expected"),
    [
        (timedelta(minutes=10), 1000, timedelta(milliseconds=500)),
        (timedelta(hours=6), 1000, timedelta(seconds=20)),
        (timedelta(hours=1), 1200, timedelta(seconds=2)),
        (timedelta(days=7), 1000, timedelta(minutes=10)),
        (timedelta(days=365), 100, timedelta(days=1)),
        (timedelta(days=3650), 10, timedelta(days=365)),
        (timedelta(0), 100, timedelta(milliseconds=1)),
    ],
)
def test_auto_interval(span: timedelta, points: int, expected: timedelta) -> None:
    assert auto_interval(TimeRange(FROM, FROM + span), points) == expected


# -- user macros -----------------------------------------------------------------------------

GOOD_TOML = """
[macros.hostFilter]
params = ["column"]
description = "Web hosts in the panel's range"
template = "{column} IN ('web-1','web-2') AND $__timeFilter(time)"

[macros.window]
template = "time BETWEEN {from_sql} AND {to_sql}"

[macros.everything]
params = ["a", "b"]
""" + (
    'template = "{a}|{b}|{from}|{to}|{from_ms}|{to_ms}|{from_s}|{to_s}|'
    '{from_ns}|{to_ns}|{interval_s}|{interval_ms}|{{a}}"\n'
)

OTHER_TOML = """
[macros.webOnly]
params = ["col"]
template = "$__hostFilter({col}) AND $__window"
"""


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_load_and_expand_user_macros(tmp_path: Path) -> None:
    _write(tmp_path, "a.toml", GOOD_TOML)
    _write(tmp_path, "b.toml", OTHER_TOML)
    _write(tmp_path, "README.md", "not a macro file")
    macros = load_user_macros(tmp_path)
    assert sorted(macros) == ["everything", "hostFilter", "webOnly", "window"]
    host = macros["hostFilter"]
    assert (host.params, host.description, host.file) == (
        ("column",),
        "Web hosts in the panel's range",
        tmp_path / "a.toml",
    )
    assert expand("select * from x where $__hostFilter(host)", FULL, macros) == (
        f"select * from x where host IN ('web-1','web-2') AND {FILTER}"
    )
    assert expand("$__window and $__window()", FULL, macros) == (
        "time BETWEEN TIMESTAMP '2023-01-01T00:00:00Z' AND TIMESTAMP '2023-01-01T00:10:00Z' and "
        "time BETWEEN TIMESTAMP '2023-01-01T00:00:00Z' AND TIMESTAMP '2023-01-01T00:10:00Z'"
    )
    assert expand("$__everything(x, f(y, z))", FULL, macros) == (
        "x|f(y, z)|2023-01-01T00:00:00Z|2023-01-01T00:10:00Z|1672531200000|1672531800000|"
        "1672531200|1672531800|1672531200000000000|1672531800000000000|10|10000|{a}"
    )
    # user macros calling user macros calling built-ins
    assert expand("$__webOnly(h)", FULL, macros) == (
        f"h IN ('web-1','web-2') AND {FILTER} AND time BETWEEN TIMESTAMP "
        "'2023-01-01T00:00:00Z' AND TIMESTAMP '2023-01-01T00:10:00Z'"
    )
    # arguments may use macros; string literals in them are left alone
    assert expand("$__hostFilter(coalesce(host, '$__x', $__timeFrom))", FULL, macros).startswith(
        "coalesce(host, '$__x', cast('2023-01-01T00:00:00Z' as timestamp)) IN"
    )


def test_user_macro_call_errors(tmp_path: Path) -> None:
    _write(tmp_path, "a.toml", GOOD_TOML)
    macros = load_user_macros(tmp_path)
    assert "$__hostFilter at position 1: expects (column), got 2 argument(s)" in str(
        _error("$__hostFilter(a, b)", user_macros=macros)
    )
    assert "expects (column), got no argument list" in str(
        _error("$__hostFilter", user_macros=macros)
    )
    assert "expects no arguments, got 1 argument(s)" in str(
        _error("$__window(x)", user_macros=macros)
    )
    assert "got 0 argument(s)" in str(_error("$__hostFilter( )x", user_macros=macros))
    assert "argument 2 is empty" in str(_error("$__everything(a, )", user_macros=macros))
    message = str(_error("select $__window", EMPTY, user_macros=macros))
    assert message.startswith("$__window at position 8 needs a time range (its template uses")
    assert "query_range_begin" in message
    message = str(_error("x $__hostFilter(h)", EMPTY, user_macros=macros))
    assert message.startswith(
        "$__hostFilter at position 3: in its expansion (template from a.toml): "
        "$__timeFilter at position"
    )
    assert "query_range_begin" in message
    assert "needs an interval" in str(
        _error("$__everything(a, b)", MacroContext(TimeRange(FROM, TO)), user_macros=macros)
    )


def test_recursion_limit_and_cycles_at_expansion() -> None:
    chain = {f"m{i}": UserMacro(f"m{i}", (), f"$__m{i + 1}") for i in range(12)}
    chain["m12"] = UserMacro("m12", (), "1")
    assert "nested more than 10 deep" in str(_error("$__m0", user_macros=chain))
    assert expand("$__m5", FULL, chain) == "1"
    cycle = {
        "a": UserMacro("a", (), "x + $__b"),
        "b": UserMacro("b", (), "$__a"),
    }
    message = str(_error("select $__a", user_macros=cycle))
    assert message.startswith("$__a at position 8: in its expansion")
    assert "user macros call each other: $__a → $__b → $__a" in message


def test_user_macro_direct_construction_validates() -> None:
    with pytest.raises(ValueError, match="cannot shadow built-in"):
        UserMacro("timeFilter", (), "x")
    with pytest.raises(ValueError, match="unknown placeholder"):
        UserMacro("ok", (), "{nope}")
    assert UserMacro("ok", ["a"], "{a}").params == ("a",)  # type: ignore[arg-type]
    assert UserMacro("json", (), "'{\"a\": 1}' || '{ a }' || '{{x}}'").render([], str) == (
        "'{\"a\": 1}' || '{ a }' || '{x}'"
    )


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"bad.toml": "[macros.x\ntemplate = 1"}, r"bad\.toml: invalid TOML"),
        (
            {"bad.toml": '[macros.x]\ntemplate = "1"\nparam = ["a"]'},
            r"bad\.toml: \$__x: unknown key\(s\) param \(allowed: description, params, template\)",
        ),
        ({"bad.toml": 'title = "x"\n'}, r"bad\.toml: unknown top-level key\(s\) title"),
        ({"bad.toml": 'macros = "x"\n'}, r"bad\.toml: 'macros' must be a table"),
        ({"bad.toml": 'macros.x = "y"\n'}, r"bad\.toml: \$__x: must be a table"),
        ({"bad.toml": '[macros.x]\nparams = ["a"]\n'}, r"bad\.toml: \$__x: needs a non-empty"),
        (
            {"bad.toml": '[macros.x]\nparams = "a"\ntemplate = "{a}"'},
            r"bad\.toml: \$__x: 'params' must be a list of strings",
        ),
        (
            {"bad.toml": '[macros.x]\ndescription = 1\ntemplate = "1"'},
            r"bad\.toml: \$__x: 'description' must be a string",
        ),
        (
            {"bad.toml": '[macros."host-filter"]\ntemplate = "1"'},
            r"bad\.toml: \$__host-filter: name 'host-filter' is not an identifier",
        ),
        (
            {"bad.toml": '[macros.9lives]\ntemplate = "1"'},
            r"bad\.toml: \$__9lives: name '9lives' is not an identifier",
        ),
        (
            {"bad.toml": '[macros.timeFilter]\ntemplate = "1"'},
            r"bad\.toml: \$__timeFilter: cannot shadow built-in \$__timeFilter; rename it",
        ),
        (
            {"bad.toml": '[macros.TIMEFILTER]\ntemplate = "1"'},
            r"bad\.toml: \$__TIMEFILTER: cannot shadow built-in \$__timeFilter \(the names "
            r"differ only in case\); rename it",
        ),
        (
            {"bad.toml": '[macros.x]\nparams = ["col"]\ntemplate = "{column} = 1"'},
            r"bad\.toml: \$__x: unknown placeholder \{column\} in template; known: \{col\}, "
            r"\{from\}",
        ),
        (
            {"bad.toml": '[macros.x]\nparams = ["from"]\ntemplate = "{from}"'},
            r"bad\.toml: \$__x: parameter 'from' clashes with the placeholder \{from\}",
        ),
        (
            {"bad.toml": '[macros.x]\nparams = ["a", "a"]\ntemplate = "{a}"'},
            r"bad\.toml: \$__x: parameter 'a' is listed twice",
        ),
        (
            {"bad.toml": '[macros.x]\nparams = ["a b"]\ntemplate = "1"'},
            r"bad\.toml: \$__x: parameter 'a b' is not an identifier",
        ),
        (
            {
                "a.toml": '[macros.dup]\ntemplate = "1"',
                "b.toml": '[macros.dup]\ntemplate = "2"',
            },
            r"b\.toml: \$__dup: is already defined in .*a\.toml",
        ),
        (
            {"bad.toml": '[macros.x]\ntemplate = "$__timeFiltr(time)"'},
            r"bad\.toml: \$__x: template uses unknown macro \$__timeFiltr \(built-ins: ",
        ),
        (
            {
                "a.toml": '[macros.a]\ntemplate = "$__b"',
                "b.toml": '[macros.b]\ntemplate = "$__c()"\n[macros.c]\ntemplate = "$__a(\'x\')"',
            },
            r"a\.toml: \$__a: templates call each other: \$__a → \$__b → \$__c → \$__a",
        ),
        (
            {"bad.toml": '[macros.me]\ntemplate = "1 + $__me"'},
            r"bad\.toml: \$__me: templates call each other: \$__me → \$__me",
        ),
    ],
)
def test_bad_macro_files(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    for name, text in files.items():
        _write(tmp_path, name, text)
    with pytest.raises(MacroConfigError, match=expected):
        load_user_macros(tmp_path)


def test_macro_references_in_template_strings_are_not_calls(tmp_path: Path) -> None:
    _write(tmp_path, "a.toml", "[macros.x]\ntemplate = \"'$__nothing' -- $__none\"")
    assert expand("$__x", FULL, load_user_macros(tmp_path)) == "'$__nothing' -- $__none"


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MacroConfigError, match="not a directory"):
        load_user_macros(tmp_path / "nope")
    assert load_user_macros(tmp_path) == {}


def test_shipped_examples_load_expand_and_run() -> None:
    macros = load_user_macros(ROOT / "macros")
    assert {"hostSeries", "errorRatio", "rangeSeconds"} <= set(macros)
    assert all(m.description for m in macros.values())
    series = expand("$__hostSeries('cpu')", FULL, macros)
    assert "WHERE metric = 'cpu' AND time >= '2023-01-01T00:00:00Z'" in series
    assert BIN.format("time") in series
    logs = expand(
        "SELECT $__timeGroupAlias(time, '1m'), service, $__errorRatio(level) AS errors, "
        "count(*) / $__rangeSeconds() AS per_second FROM demo.logs "
        "WHERE $__timeFilter(time) GROUP BY 1, 2 ORDER BY 1, 2",
        FULL,
        macros,
    )
    assert "avg(CASE WHEN level = 'error' THEN 1.0 ELSE 0.0 END) AS errors" in logs
    assert "CAST(1672531800 - 1672531200 AS DOUBLE)" in logs

    ctx = datafusion.SessionContext()
    ctx.sql("CREATE SCHEMA demo").collect()
    times = pa.array(
        [FROM + timedelta(seconds=30 * i) for i in range(20)], pa.timestamp("ns", "UTC")
    )
    n = len(times)
    ctx.register_record_batches(
        "demo.metrics",
        [
            pa.table(
                {
                    "time": times,
                    "host": pa.array(["host-00", "host-01"] * (n // 2)),
                    "region": pa.array(["eu-west"] * n),
                    "metric": pa.array(["cpu", "memory"] * (n // 2)),
                    "value": pa.array([float(i) for i in range(n)]),
                }
            ).to_batches()
        ],
    )
    ctx.register_record_batches(
        "demo.logs",
        [
            pa.table(
                {
                    "time": times,
                    "host": pa.array(["host-00"] * n),
                    "service": pa.array(["api", "auth"] * (n // 2)),
                    "level": pa.array(["info", "info", "error", "warn"] * (n // 4)),
                    "message": pa.array(["request served"] * n),
                }
            ).to_batches()
        ],
    )
    assert ctx.sql(series).to_arrow_table().num_rows > 0
    result = ctx.sql(logs).to_pydict()
    assert set(result) == {"time", "service", "errors", "per_second"}
    assert max(result["errors"]) > 0


# -- properties ------------------------------------------------------------------------------

_CODE = st.text(st.characters(exclude_characters="'\"-/*$", exclude_categories=["Cs"]), max_size=12)
_ANY = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
_MACROS = [
    ("$__timeFilter(time)", FILTER),
    ("$__timeFrom ", "cast('2023-01-01T00:00:00Z' as timestamp) "),
    ("$__interval ", "interval '10 second' "),
    ("$__interval_ms ", "10000 "),
    ("$__dateBin(coalesce(a, 'x,)y'))", BIN.format("coalesce(a, 'x,)y')")),
    (
        "$__timeGroup( t , hour )",
        "datepart('hour', t),datepart('day', t),datepart('month', t),datepart('year', t)",
    ),
    (
        "$__timeGroup(t, '5m')",
        "date_bin(interval '300 second', t, timestamp '1970-01-01T00:00:00Z')",
    ),
]


def _piece() -> st.SearchStrategy[tuple[str, str]]:
    same: Callable[[str], tuple[str, str]] = lambda s: (s, s)  # noqa: E731
    return st.one_of(
        _CODE.map(same),
        _ANY.map(lambda t: "'" + t.replace("'", "''") + "'").map(same),
        _ANY.map(lambda t: '"' + t.replace('"', '""') + '"').map(same),
        _ANY.filter(lambda t: "\n" not in t).map(lambda t: f"--{t}\n").map(same),
        _ANY.filter(lambda t: "*/" not in t).map(lambda t: f"/*{t}*/").map(same),
        st.sampled_from(_MACROS),
    )


@given(st.text(max_size=200).filter(lambda s: "$__" not in s))
def test_sql_without_macros_is_unchanged(sql: str) -> None:
    assert expand(sql, FULL) is sql
    assert expand(sql, EMPTY) is sql


@given(st.lists(_piece(), max_size=12))
def test_literals_and_comments_are_never_changed(pieces: list[tuple[str, str]]) -> None:
    sql = "".join(p[0] for p in pieces)
    assert expand(sql, FULL) == "".join(p[1] for p in pieces)


@given(
    st.lists(
        st.one_of(
            st.text(max_size=8),
            st.sampled_from(
                [
                    "$__",
                    "$__timeFilter",
                    "$__timeFrom",
                    "$__interval",
                    "$__dateBin",
                    "$__timeGroup",
                    "$__hostSeries",
                    "$__errorRatio",
                    "$__rangeSeconds",
                    "$__unixEpochNanoFilter",
                    "(",
                    ")",
                    ",",
                    "'",
                    '"',
                    "--",
                    "/*",
                    "*/",
                    "\n",
                    "time",
                    "'now-1d/d'",
                    "'5m'",
                    "hour",
                    "1704067200000",
                    "'2024-01-01T00:00:00Z'",
                ]
            ),
        ),
        max_size=30,
    ),
    st.sampled_from([FULL, EMPTY, MacroContext(interval=timedelta(milliseconds=1))]),
)
def test_expansion_raises_only_macro_errors(parts: list[str], context: MacroContext) -> None:
    sql = "".join(parts)
    try:
        out = expand(sql, context, _SHIPPED)
    except MacroError:
        return
    assert isinstance(out, str)


@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_macro_errors(sql: str) -> None:
    try:
        expand(sql, FULL, _SHIPPED)
    except MacroError:
        pass


_SHIPPED = load_user_macros(ROOT / "macros")
_LEXER_ALPHABET = st.sampled_from(
    list("'\"-/*\n$_a(), ") + ["$__", "--", "/*", "*/", "''", '""', "$__x", "é"]
)
_CODE_TOKEN = re.compile(r"\$__[A-Za-z0-9_]+|[(),]")


@given(st.lists(_LEXER_ALPHABET, max_size=40).map("".join))
def test_lexer_agrees_with_sqltext_segments(sql: str) -> None:
    expected = [
        (sql[m.start()], m.start(), m.end())
        for seg in segments(sql)
        if seg.code
        for m in _CODE_TOKEN.finditer(sql, seg.start, seg.end)
    ]
    assert tokenize(sql) == expected


def test_builtin_names() -> None:
    assert {
        "timeFilter",
        "timeRange",
        "timeRangeFrom",
        "timeRangeTo",
        "timeFrom",
        "timeTo",
        "dateBin",
        "dateBinAlias",
        "interval",
        "interval_ms",
        "timeGroup",
        "timeGroupAlias",
        "unixEpochFilter",
        "unixEpochNanoFilter",
        "unixEpochFrom",
        "unixEpochTo",
    } <= BUILTIN_NAMES
    assert isinstance(BUILTIN_NAMES, frozenset)


# -- speed -----------------------------------------------------------------------------------

DASHBOARD_QUERY = """SELECT $__dateBin(time) AS time, host, avg(value) AS value
FROM demo.metrics
WHERE $__timeFilter(time) AND metric = 'cpu' AND host IN ('web-1','web-2','web-3') -- panel A
  AND region = 'eu-west' /* grafana */ AND time < $__timeTo
GROUP BY 1, host
ORDER BY 1 LIMIT 1000"""


def test_expansion_is_fast() -> None:
    macros = load_user_macros(ROOT / "macros")
    samples = []
    for _ in range(3000):
        start = time.perf_counter()
        # a fresh context per run, as the server builds one per request
        context = MacroContext(TimeRange(FROM, TO), timedelta(seconds=10), now=NOW)
        expand(DASHBOARD_QUERY, context, macros)
        samples.append(time.perf_counter() - start)
    median_us = statistics.median(samples) * 1e6
    print(f"\nmacro expansion of a {len(DASHBOARD_QUERY)}-char query: {median_us:.1f} µs median")
    assert median_us < 200
