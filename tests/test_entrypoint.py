"""The entry point sets the allocator defaults before Arrow and DataFusion load."""

from __future__ import annotations

import os
import subprocess
import sys

from flightsql_srv.entrypoint import ALLOCATOR_DEFAULTS, apply_allocator_defaults


def test_defaults_fill_in_but_never_override_the_operator() -> None:
    environ: dict[str, str] = {}
    apply_allocator_defaults(environ)
    assert environ == ALLOCATOR_DEFAULTS
    chosen = {"MIMALLOC_PURGE_DELAY": "0"}
    apply_allocator_defaults(chosen)
    assert chosen == {"MIMALLOC_PURGE_DELAY": "0"}


def test_importing_the_entry_point_loads_neither_allocator() -> None:
    """Anything that imported pyarrow or datafusion first would make the defaults moot."""
    code = (
        "import sys, flightsql_srv.entrypoint; "
        "print(sorted({'pyarrow', 'datafusion'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _purge_delays(extra_env: dict[str, str]) -> list[str]:
    """The purge delay each mimalloc copy in the server process reports at load."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMALLOC_")}
    env.update(MIMALLOC_VERBOSE="1", **extra_env)
    out = subprocess.run(
        [sys.executable, "-m", "flightsql_srv", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    marker = "option 'purge_delay': "
    return [line.split(marker, 1)[1].strip() for line in out.stderr.splitlines() if marker in line]


def test_both_mimalloc_copies_in_the_server_use_the_default() -> None:
    # one line from Arrow's memory pool, one from DataFusion's global allocator
    assert _purge_delays({}) == [ALLOCATOR_DEFAULTS["MIMALLOC_PURGE_DELAY"]] * 2


def test_an_operator_setting_reaches_both_copies() -> None:
    assert _purge_delays({"MIMALLOC_PURGE_DELAY": "25"}) == ["25", "25"]
