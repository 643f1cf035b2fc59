"""LIKE filters of GetDbSchemas/GetTables: the matcher's semantics (against a reference
regex), and hostile patterns against a real server (fast answers, health unaffected)."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st

from flightsql_srv.app import Service
from flightsql_srv.discovery import MAX_PATTERN_CHARS, LikePattern
from flightsql_srv.protocol import pack, sql_pb2
from tests.helpers import assert_flight_error


def _reference(pattern: str) -> re.Pattern[str]:
    """The old regex translation: right, but exponential on hostile patterns."""
    out, escaped = [], False
    for ch in pattern:
        if escaped:
            out.append(re.escape(ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    if escaped:
        out.append(re.escape("\\"))
    return re.compile("".join(out), re.DOTALL)


_ALPHABET = st.sampled_from("ab%_\\\n")


@given(st.text(_ALPHABET, max_size=10), st.text(st.sampled_from("ab%_\\\n"), max_size=10))
def test_matches_like_the_reference_regex(pattern: str, value: str) -> None:
    expected = _reference(pattern).fullmatch(value) is not None
    assert LikePattern(pattern).matches(value) is expected, (pattern, value)


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("", "", True),
        ("", "a", False),
        ("%", "", True),
        ("%", "anything", True),
        ("_", "", False),
        ("_", "é", True),
        ("order_x", "orderyx", True),
        ("order\\_x", "orderyx", False),
        ("order\\_x", "order_x", True),
        ("100\\%", "100%", True),
        ("100\\%", "1000", False),
        ("a\\\\b", "a\\b", True),
        ("abc\\", "abc\\", True),  # a trailing lone backslash is literal
        ("%s", "orders", True),
        ("%s", "orders_", False),
        ("a%b%c", "aXbYc", True),
        ("a%b%c", "aXcYb", False),
        ("%%a%%", "bab", True),
        ("ORDERS", "orders", False),  # case-sensitive, like the names
        ("a.b", "aXb", False),  # regex characters are literal
        ("(x|y)*", "(x|y)*", True),
    ],
)
def test_like_semantics(pattern: str, value: str, expected: bool) -> None:
    assert LikePattern(pattern).matches(value) is expected


@pytest.mark.parametrize(
    "pattern",
    ["%" * 200 + "x", "%_" * 500 + "x", "_%" * 511 + "x", "%a" * 500 + "b"],
)
def test_hostile_patterns_are_fast(pattern: str) -> None:
    like = LikePattern(pattern)
    start = time.perf_counter()
    assert not like.matches("a" * 256)
    assert time.perf_counter() - start < 0.1


def _tables(client: flight.FlightClient, **kwargs: Any) -> pa.Table:
    descriptor = flight.FlightDescriptor.for_command(pack(sql_pb2.CommandGetTables(**kwargs)))
    info = client.get_flight_info(descriptor)
    return client.do_get(info.endpoints[0].ticket).read_all()


_HOSTILE = "%" * 200 + "x"


def test_hostile_pattern_against_the_server(server: Service, client: flight.FlightClient) -> None:
    """Before the fix, this pattern held the GIL for ~20 s per table name."""
    for field in ("db_schema_filter_pattern", "table_name_filter_pattern"):
        start = time.perf_counter()
        assert _tables(client, **{field: _HOSTILE}).num_rows == 0
        assert time.perf_counter() - start < 0.5, field
    start = time.perf_counter()
    descriptor = flight.FlightDescriptor.for_command(
        pack(sql_pb2.CommandGetDbSchemas(db_schema_filter_pattern=_HOSTILE))
    )
    info = client.get_flight_info(descriptor)
    assert client.do_get(info.endpoints[0].ticket).read_all().num_rows == 0
    assert time.perf_counter() - start < 0.5
    # the matcher still matches: a hostile-looking pattern that fits the demo tables
    names = _tables(client, table_name_filter_pattern="%" * 200 + "s").column("table_name")
    assert "logs" in names.to_pylist() and "metrics" in names.to_pylist()


def test_health_stays_fast_during_hostile_patterns(
    server: Service, client: flight.FlightClient
) -> None:
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{server.health_port}"))
    request = health_pb2.HealthCheckRequest(service="")
    stub.Check(request, timeout=5)  # connect first
    done = threading.Event()

    def hostile() -> None:
        try:
            for _ in range(20):
                _tables(client, table_name_filter_pattern="%_" * 500 + "x")
        finally:
            done.set()

    worker = threading.Thread(target=hostile)
    worker.start()
    slowest = 0.0
    checks = 0
    while not done.is_set() or checks < 5:
        start = time.perf_counter()
        assert stub.Check(request, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        slowest = max(slowest, time.perf_counter() - start)
        checks += 1
        time.sleep(0.01)
    worker.join()
    assert slowest < 0.25, f"a health Check took {slowest:.3f} s"


@pytest.mark.parametrize(
    "field", ["catalog", "db_schema_filter_pattern", "table_name_filter_pattern"]
)
def test_overlong_patterns_are_refused(client: flight.FlightClient, field: str) -> None:
    long = "%" * (MAX_PATTERN_CHARS + 1)
    for command in (sql_pb2.CommandGetTables, sql_pb2.CommandGetDbSchemas):
        if field not in command.DESCRIPTOR.fields_by_name:
            continue
        descriptor = flight.FlightDescriptor.for_command(pack(command(**{field: long})))
        start = time.perf_counter()
        assert_flight_error(
            lambda d=descriptor: client.get_flight_info(d),
            pa.ArrowInvalid,
            re.escape(
                f"{field} is {MAX_PATTERN_CHARS + 1} characters long; at most "
                f"{MAX_PATTERN_CHARS} are accepted: send a shorter pattern"
            ),
        )
        assert time.perf_counter() - start < 0.5
    # exactly at the limit is fine
    ok = "%" * MAX_PATTERN_CHARS
    assert _tables(client, **{field: ok}).num_rows >= (0 if field == "catalog" else 1)
