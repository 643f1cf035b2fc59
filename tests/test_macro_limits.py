"""Macro expansion is bounded: the query size is checked before any macro work, and argument
lists (arguments, punctuation, calls, nesting) have limits, so no input keeps Python busy.

Before these limits, ``select $__timeFilter(`` + 16 MiB of commas + ``)`` took 37 s and
6.5 GB before being refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flightsql_srv.engine import MAX_SQL_BYTES as ENGINE_MAX_SQL_BYTES
from flightsql_srv.macros import MacroContext, MacroError, TimeRange, expand
from flightsql_srv.macros.engine import (
    MAX_ARGUMENT_TOKENS,
    MAX_ARGUMENTS,
    MAX_MACRO_CALLS,
    MAX_SQL_BYTES,
)
from flightsql_srv.macros.lexer import NAME, SKIP_TO_MACRO, SKIP_TO_TOKEN, Token, tokenize
from flightsql_srv.protocol import pack, sql_pb2
from tests.conftest import server_process
from tests.helpers import assert_flight_error

_START = datetime(2024, 1, 1, tzinfo=UTC)
CONTEXT = MacroContext(TimeRange(_START, _START + timedelta(hours=1)), timedelta(seconds=10))
M = MAX_SQL_BYTES - 64  # room for the text around the payload


def _fastest(run: Callable[[], object], times: int = 3) -> float:
    """Best of a few runs, in seconds (the machine is shared: the best run is the cost)."""
    best = float("inf")
    for _ in range(times):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _error(sql: str) -> MacroError:
    with pytest.raises(MacroError) as info:
        expand(sql, CONTEXT)
    return info.value


def test_the_limit_is_the_engines() -> None:
    assert MAX_SQL_BYTES == ENGINE_MAX_SQL_BYTES


@pytest.mark.parametrize(
    "sql",
    [
        "select $__timeFilter(" + "," * MAX_SQL_BYTES + ")",
        "select 1 -- " + "x" * MAX_SQL_BYTES,
        # fewer characters than the limit, more bytes
        "select $__timeFrom, '" + "é" * (MAX_SQL_BYTES // 2) + "'",
    ],
)
def test_oversized_queries_are_refused_before_any_macro_work(sql: str) -> None:
    message = f"the query is longer than {MAX_SQL_BYTES} bytes"
    assert str(_error(sql)) == message
    assert _fastest(lambda: pytest.raises(MacroError, expand, sql, CONTEXT)) < 0.05


def test_a_query_of_exactly_the_limit_is_expanded() -> None:
    head = "select $__timeFrom -- "
    sql = head + "x" * (MAX_SQL_BYTES - len(head))
    assert len(sql.encode()) == MAX_SQL_BYTES
    assert expand(sql, CONTEXT).startswith("select cast('2024-01-01T00:00:00Z' as timestamp) -- ")


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (
            "select $__timeFilter(" + "," * M + ")",
            f"$__timeFilter at position 8: more than {MAX_ARGUMENTS} arguments; "
            "check the commas and parentheses",
        ),
        (
            "select $__timeFilter(" + "," * M,
            f"$__timeFilter at position 8: more than {MAX_ARGUMENTS} arguments; "
            "check the commas and parentheses",
        ),
        (
            "select $__timeFilter(f(" + "," * M + "))",
            f"$__timeFilter at position 8: macro arguments hold more than {MAX_ARGUMENT_TOKENS} "
            "parentheses, commas and macros; simplify the query",
        ),
        (
            "select $__timeFilter(" + "(" * (M // 2) + ")" * (M // 2) + ")",
            f"$__timeFilter at position 8: macro arguments hold more than {MAX_ARGUMENT_TOKENS} "
            "parentheses, commas and macros; simplify the query",
        ),
        (
            "select $__timeFilter(" + "()" * (M // 2) + ")",
            f"$__timeFilter at position 8: macro arguments hold more than {MAX_ARGUMENT_TOKENS} "
            "parentheses, commas and macros; simplify the query",
        ),
        (
            "select " + "$__interval_ms+" * (M // 15),
            f"$__interval_ms at position {7 + 15 * MAX_MACRO_CALLS + 1}: more than "
            f"{MAX_MACRO_CALLS} macro calls in one query; simplify the query",
        ),
        (
            "select " + "$__timeFilter(t) and " * (M // 21),
            f"$__timeFilter at position {7 + 21 * MAX_MACRO_CALLS + 1}: more than "
            f"{MAX_MACRO_CALLS} macro calls in one query; simplify the query",
        ),
        (
            "select " + "$__timeFilter(" * 40 + "t" + ")" * 40,
            "macro calls nested more than 32 deep",
        ),
    ],
    ids=[
        "commas",
        "commas-unclosed",
        "commas-at-depth-2",
        "nested-parentheses",
        "sibling-parentheses",
        "many-calls",
        "many-calls-with-arguments",
        "deep-calls",
    ],
)
def test_hostile_macro_input_fails_fast(sql: str, message: str) -> None:
    assert message in str(_error(sql))
    assert _fastest(lambda: pytest.raises(MacroError, expand, sql, CONTEXT)) < 0.05


def _prefix(body: str, unit: int) -> Callable[[int], str]:
    """A query of about ``n`` bytes: ``$__timeFrom`` and then ``body`` repeated."""
    return lambda n: "select $__timeFrom, " + body * (n // unit) + "1"


@pytest.mark.parametrize(
    "make_sql",
    [
        _prefix("1,", 2),
        lambda n: "select $__timeFrom, '" + "x" * n + "'",
        lambda n: "select $__timeFrom /*" + "*" * n,
        _prefix("'', ", 4),
        _prefix("$1,", 3),
        lambda n: "select $__timeFrom, " + "-- $__nope\n" * (n // 11),
    ],
    ids=["commas", "string", "comment", "many-strings", "many-dollars", "many-comments"],
)
def test_large_queries_with_few_macros_expand_in_linear_time(
    make_sql: Callable[[int], str],
) -> None:
    """Expanding the largest query allowed costs about 8x what one an eighth its size does
    (16x allowed for noise; quadratic work would be 64x). A ratio, not a time: the machine
    is shared and slow, and a dollar-heavy query takes ~50 ms in Python on it."""
    large, small = make_sql(M), make_sql(M // 8)
    assert expand(large, CONTEXT).startswith("select cast('2024-01-01T00:00:00Z' as timestamp)")
    ratio = _fastest(lambda: expand(large, CONTEXT)) / _fastest(lambda: expand(small, CONTEXT))
    assert ratio < 16


def _scan(sql: str) -> list[Token]:
    """The tokens the expander's skipping regexes stop at, walked like a token list."""
    out: list[Token] = []
    pos = 0
    while True:
        pos = SKIP_TO_TOKEN.match(sql, pos).end()  # type: ignore[union-attr]
        if pos >= len(sql):
            return out
        if sql[pos] == "$":
            end = NAME.match(sql, pos).end()  # type: ignore[union-attr]
            out.append(("$", pos, end))
            pos = end
        else:
            out.append((sql[pos], pos, pos + 1))
            pos += 1


_PIECES = ["$__a", "$__", "$", "_b", "(", ")", ",", "'", '"', "-", "/", "*", "\n", " ", "x"]
_SQL = st.lists(st.sampled_from(_PIECES), max_size=30).map("".join)


@given(_SQL)
def test_skipping_finds_the_tokens_the_tokenizer_finds(sql: str) -> None:
    assert _scan(sql) == tokenize(sql)
    macros = [t for t in tokenize(sql) if t[0] == "$"]
    first = SKIP_TO_MACRO.match(sql).end()  # type: ignore[union-attr]
    assert first == (macros[0][1] if macros else len(sql))


def _hwm_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM")


def test_a_huge_macro_query_is_refused_quickly_by_a_server() -> None:
    """gRPC lets a 16 MiB statement (and far larger) through; the server refuses it with
    little time and memory spent beyond receiving it."""
    with server_process() as (proc, port), flight.connect(f"grpc://127.0.0.1:{port}") as client:
        small = flight.FlightDescriptor.for_command(
            pack(sql_pb2.CommandStatementQuery(query="select $__timeFilter(" + ",,," + ")"))
        )
        with pytest.raises(pa.ArrowInvalid):
            client.get_flight_info(small)  # warm up: connection, first expansion
        before = _hwm_mb(proc.pid)
        sql = "select $__timeFilter(" + "," * (16 * 1024 * 1024) + ")"
        descriptor = flight.FlightDescriptor.for_command(
            pack(sql_pb2.CommandStatementQuery(query=sql))
        )
        start = time.perf_counter()
        assert_flight_error(
            lambda: client.get_flight_info(descriptor),
            pa.ArrowInvalid,
            # the request bound (4 MiB) comes first, and names the SQL bound too
            rf"the command is \d+ bytes; at most \d+ are accepted \(SQL texts: {MAX_SQL_BYTES}\)",
        )
        elapsed = time.perf_counter() - start
        grown = _hwm_mb(proc.pid) - before
        assert elapsed < 2.0, f"{elapsed:.2f} s to refuse"
        assert grown < 200, f"peak RSS grew by {grown} MB"
        # the server is still fine
        ok = flight.FlightDescriptor.for_command(
            pack(sql_pb2.CommandStatementQuery(query="select 1"))
        )
        info = client.get_flight_info(ok)
        assert client.do_get(info.endpoints[0].ticket).read_all().num_rows == 1
