"""Parsing times (RFC 3339, epoch ms, Grafana relative forms) and durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flightsql_srv.macros import parse_duration, parse_time

# A Wednesday afternoon, with microseconds to see rounding.
NOW = datetime(2024, 3, 13, 15, 42, 17, 123456, tzinfo=UTC)
JAN1 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00z",
        "2024-01-01t00:00:00Z",
        "2024-01-01 00:00:00Z",
        "2024-01-01T02:00:00+02:00",
        "2023-12-31T19:30:00-04:30",
        "2024-01-01T00:00:00.000Z",
        "2024-01-01T00:00:00+00:00",
        "2024-01-01T00:00:00-00:00",
        "  2024-01-01T00:00:00Z  ",
        "1704067200000",
    ],
)
def test_same_instant(text: str) -> None:
    parsed = parse_time(text, NOW)
    assert parsed == JAN1
    assert parsed.tzinfo is UTC


def test_fractional_seconds() -> None:
    assert parse_time("2024-01-01T00:00:00.5Z", NOW) == JAN1 + timedelta(milliseconds=500)
    assert parse_time("2024-01-01T02:00:00.25+02:00", NOW) == JAN1 + timedelta(milliseconds=250)
    # nanoseconds are truncated to the microseconds a datetime holds
    assert parse_time("2024-01-01T00:00:00.123456789Z", NOW) == JAN1 + timedelta(
        microseconds=123456
    )


def test_epoch_milliseconds() -> None:
    assert parse_time("0", NOW) == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_time("1704067200500", NOW) == JAN1 + timedelta(milliseconds=500)
    assert parse_time("-1000", NOW) == datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("now-6h", NOW - timedelta(hours=6)),
        ("now+5m", NOW + timedelta(minutes=5)),
        ("now-30s", NOW - timedelta(seconds=30)),
        ("now-2d", NOW - timedelta(days=2)),
        ("now-1w", NOW - timedelta(weeks=1)),
        ("now-h", NOW - timedelta(hours=1)),
        ("now-1M", datetime(2024, 2, 13, 15, 42, 17, 123456, tzinfo=UTC)),
        ("now+1y", datetime(2025, 3, 13, 15, 42, 17, 123456, tzinfo=UTC)),
        ("now-1d-2h", NOW - timedelta(days=1, hours=2)),
        ("now/s", datetime(2024, 3, 13, 15, 42, 17, tzinfo=UTC)),
        ("now/m", datetime(2024, 3, 13, 15, 42, tzinfo=UTC)),
        ("now/h", datetime(2024, 3, 13, 15, tzinfo=UTC)),
        ("now/d", datetime(2024, 3, 13, tzinfo=UTC)),
        ("now-1d/d", datetime(2024, 3, 12, tzinfo=UTC)),
        ("now/w", datetime(2024, 3, 11, tzinfo=UTC)),  # Monday (ISO week)
        ("now-1w/w", datetime(2024, 3, 4, tzinfo=UTC)),
        ("now/M", datetime(2024, 3, 1, tzinfo=UTC)),
        ("now/y", datetime(2024, 1, 1, tzinfo=UTC)),
        ("now-1d/d+6h", datetime(2024, 3, 12, 6, tzinfo=UTC)),
    ],
)
def test_relative(text: str, expected: datetime) -> None:
    assert parse_time(text, NOW) == expected


def test_relative_in_another_zone_is_utc() -> None:
    berlin_now = NOW.astimezone(timezone(timedelta(hours=1)))
    assert parse_time("now/d", berlin_now) == datetime(2024, 3, 13, tzinfo=UTC)
    assert parse_time("now/d", berlin_now).tzinfo is UTC


def test_round_up_is_the_end_of_the_unit() -> None:
    ms = timedelta(milliseconds=1)
    assert parse_time("now/d", NOW, round_up=True) == datetime(2024, 3, 14, tzinfo=UTC) - ms
    assert parse_time("now-1d/d", NOW, round_up=True) == datetime(2024, 3, 13, tzinfo=UTC) - ms
    assert parse_time("now/w", NOW, round_up=True) == datetime(2024, 3, 18, tzinfo=UTC) - ms
    assert parse_time("now/M", NOW, round_up=True) == datetime(2024, 4, 1, tzinfo=UTC) - ms
    assert parse_time("now/y", NOW, round_up=True) == datetime(2025, 1, 1, tzinfo=UTC) - ms
    assert parse_time("now-6h", NOW, round_up=True) == NOW - timedelta(hours=6)


def test_week_rounding_on_a_monday_and_a_sunday() -> None:
    monday = datetime(2024, 3, 11, 0, 0, 1, tzinfo=UTC)
    sunday = datetime(2024, 3, 17, 23, 59, tzinfo=UTC)
    assert parse_time("now/w", monday) == datetime(2024, 3, 11, tzinfo=UTC)
    assert parse_time("now/w", sunday) == datetime(2024, 3, 11, tzinfo=UTC)


def test_month_arithmetic_clamps_the_day() -> None:
    end_of_march = datetime(2024, 3, 31, tzinfo=UTC)
    assert parse_time("now-1M", end_of_march) == datetime(2024, 2, 29, tzinfo=UTC)
    assert parse_time("now-1y", datetime(2024, 2, 29, tzinfo=UTC)) == datetime(
        2023, 2, 28, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "cannot parse time"),
        ("yesterday", "cannot parse time"),
        ("2024-01-01", "cannot parse time"),
        ("2024-01-01T00:00:00", "has no zone: add Z"),
        ("2024-13-01T00:00:00Z", "not a valid date"),
        ("2024-02-30T00:00:00Z", "not a valid date"),
        ("2024-01-01T24:00:00Z", "not a valid date"),
        ("2024-01-01T00:00:00+25:00", "not a valid date"),
        ("2024-01-01T00:00:00+0200", "cannot parse time"),
        ("2024-01-01T00:00Z", "cannot parse time"),
        ("1.5", "cannot parse time"),
        ("now-", "cannot parse relative"),
        ("now-6", "cannot parse relative"),
        ("now-6x", "cannot parse relative"),
        ("now/q", "cannot parse relative"),
        ("now - 6h", "cannot parse relative"),
        ("Now", "cannot parse time"),
        ("now-99999999y", "out of range"),
        ("now+9999999999999d", "out of range"),
        ("9999999999999999999", "out of range"),
        ("'2024-01-01T00:00:00Z'", "cannot parse time"),
        ("２０２４-01-01T00:00:00Z", "cannot parse time"),  # full-width digits
    ],
)
def test_invalid_times(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_time(text, NOW)


@given(st.text(max_size=40))
def test_parse_time_raises_only_value_error(text: str) -> None:
    try:
        parsed = parse_time(text, NOW)
    except ValueError:
        return
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5m", timedelta(minutes=5)),
        ("'5m'", timedelta(minutes=5)),
        ('"5m"', timedelta(minutes=5)),
        (" ' 5m ' ", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("30s", timedelta(seconds=30)),
        ("1d", timedelta(days=1)),
        ("500ms", timedelta(milliseconds=500)),
        ("2w", timedelta(weeks=2)),
        ("1y", timedelta(days=365)),
        ("1.5h", timedelta(minutes=90)),
        ("0s", timedelta(0)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "5", "m", "5 m", "-5m", "5M", "5min", "'5m", "5m'", "hour", "1e3s", "5mss"]
)
def test_invalid_durations(text: str) -> None:
    with pytest.raises(ValueError, match="cannot parse duration"):
        parse_duration(text)


def test_huge_duration_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_duration("99999999999999w")
