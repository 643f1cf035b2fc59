"""CI fuzzing of the in-process targets with hypothesis, bounded in examples and time.

Each target gets :data:`EXAMPLES` byte strings (``FUZZ_EXAMPLES`` overrides it for a longer
run) and every file of its corpus directory is replayed, so a saved crash stays fixed.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flightsql_srv.engine import MAX_SQL_BYTES
from flightsql_srv.macros import MacroContext, MacroError, TimeRange, expand
from flightsql_srv.protocol import flight_pb2
from flightsql_srv.sessions import SessionOptions, apply_options
from tests.fuzz.targets import TARGETS

CORPUS = Path(__file__).resolve().parent / "corpus"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a shared 2-core machine: timing is checked by the targets themselves
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_fuzzed(name: str) -> None:
    """Only documented errors escape, for any input bytes."""

    @FUZZ
    @given(st.binary(max_size=512))
    def run(data: bytes) -> None:
        TARGETS[name](data)

    run()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_corpus_replays(name: str) -> None:
    """Seeds and saved crash reproducers of every target still pass."""
    files = sorted((CORPUS / name).iterdir())
    assert files, f"no corpus for {name}"
    for path in files:
        TARGETS[name](path.read_bytes())


def test_overlong_timezone_is_an_invalid_value() -> None:
    """Reproduces corpus/session_options/crash-overlong-timezone without the fuzz wrapper."""
    request = flight_pb2.SetSessionOptionsRequest()
    request.session_options["timezone"].string_value = "Europe/" + "x" * 300
    _, errors = apply_options(SessionOptions(), request, "flightsql", {"demo"})
    assert errors == {"timezone": flight_pb2.SetSessionOptionsResult.INVALID_VALUE}


def test_macro_expansion_beyond_the_query_size_limit_is_refused() -> None:
    """16 levels would expand to ~3 MB; the expander stops at its budget with MacroError."""
    sql = "select " + "$__timeFilter(" * 16 + "time" + ")" * 16
    now = datetime(2024, 5, 1, tzinfo=UTC)
    context = MacroContext(range=TimeRange(now - timedelta(hours=1), now), now=now)
    with pytest.raises(MacroError):
        expanded = expand(sql, context)
        assert len(expanded.encode()) <= MAX_SQL_BYTES, len(expanded)
