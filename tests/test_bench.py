"""The benchmark harness works end to end (``python -m bench --quick``).

Only the shape and consistency of the results are checked: absolute times and ratios depend
on the machine and are reported, never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCAN_CLIENTS = ("server_adbc", "server_flight", "inprocess")
RESULT_KEYS = (
    "schema_version",
    "date",
    "quick",
    "config",
    "machine",
    "data",
    "select1",
    "full_scan",
    "server_rss",
    "runtime_s",
)


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench-out")
    data_dir = tmp_path_factory.mktemp("bench-data")
    cmd = [sys.executable, "-m", "bench", "--quick", "--out", str(out)]
    proc = subprocess.run(
        [*cmd, "--data-dir", str(data_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    results = json.loads((out / "latest.json").read_text(encoding="utf-8"))
    return results, out


def test_results_have_the_expected_keys(quick_results: tuple[dict[str, Any], Path]) -> None:
    results, out = quick_results
    assert set(RESULT_KEYS) <= set(results)
    assert results["quick"] is True
    assert {"p50_ms", "p95_ms"} <= set(results["select1"]["server"])
    assert {"p50_ms", "p95_ms"} <= set(results["select1"]["inprocess"])
    assert {"ratio_adbc", "ratio_flight", "rows_match"} <= set(results["full_scan"])
    assert {"baseline_mb", "peak_mb", "growth_mb"} <= set(results["server_rss"])
    for key in ("cpu_model", "python", "pyarrow", "datafusion", "adbc_driver_flightsql"):
        assert results["machine"][key]
    markdown = (out / "latest.md").read_text(encoding="utf-8")
    assert "| measure | value | target |" in markdown


def test_measurements_are_positive(quick_results: tuple[dict[str, Any], Path]) -> None:
    results, _ = quick_results
    scan = results["full_scan"]
    assert scan["repeat"] >= 2
    for client in SCAN_CLIENTS:
        assert scan[client]["rows_per_s"] > 0
        assert scan[client]["mb_per_s"] > 0
        assert len(scan[client]["runs"]) == scan["repeat"]
        assert 0 < scan[client]["ttfb_share"] <= 1
    assert scan["ratio_adbc"] > 0 and scan["ratio_flight"] > 0
    for side in ("server", "inprocess"):
        stats = results["select1"][side]
        assert 0 < stats["p50_ms"] <= stats["p95_ms"]
        assert stats["n"] == results["config"]["select1_n"]
    rss = results["server_rss"]
    assert rss["baseline_mb"] > 0 and rss["peak_mb"] >= rss["baseline_mb"]


def test_row_counts_match_exactly(quick_results: tuple[dict[str, Any], Path]) -> None:
    results, _ = quick_results
    generated = results["data"]["rows"]
    assert generated == results["config"]["rows"] == 1_000_000
    for client in SCAN_CLIENTS:
        assert [run["rows"] for run in results["full_scan"][client]["runs"]] == [generated] * len(
            results["full_scan"][client]["runs"]
        )
    assert results["full_scan"]["rows_match"] is True
