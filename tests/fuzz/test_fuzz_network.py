"""CI network fuzzing: mutated Flight SQL requests against one real server, bounded.

Every request must get a proper gRPC status (see :mod:`tests.fuzz.network`); afterwards the
server must still answer ``SELECT 1`` and its thread and fd counts must not have grown.
``FUZZ_NETWORK_EXAMPLES`` overrides the number of requests for a longer run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.network import NetworkFuzzer, answers_select_one, network_fuzzer, resources

CORPUS = Path(__file__).resolve().parent / "corpus" / "network"
EXAMPLES = int(os.environ.get("FUZZ_NETWORK_EXAMPLES", "1500"))
#: See tests/fuzz/__main__.py: gRPC's thread pool and connection churn, not a per-call leak.
THREAD_SLACK = 16
FD_SLACK = 32


@pytest.fixture(scope="module")
def fuzzer() -> Iterator[NetworkFuzzer]:
    with network_fuzzer() as f:
        for path in sorted(CORPUS.iterdir()):  # the corpus also warms the thread pools up
            f.run(path.read_bytes())
        yield f


def test_mutated_requests_get_proper_statuses(fuzzer: NetworkFuzzer) -> None:
    before = resources()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.binary(max_size=512))
    def run(data: bytes) -> None:
        fuzzer.run(data)

    run()
    after = resources()
    assert answers_select_one(fuzzer)
    assert after[0] <= before[0] + THREAD_SLACK, f"threads grew from {before[0]} to {after[0]}"
    assert after[1] <= before[1] + FD_SLACK, f"fds grew from {before[1]} to {after[1]}"
