"""PNG plots of a run: the scaling curve, latency bars and scan-throughput bars.

matplotlib comes with the ``bench`` extra; without it the run still writes its tables and the
report says no plots were drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_plots"]

_COLORS = {
    "flightsql-srv": "#1f77b4",
    "in-process": "#7f7f7f",
    "roapi": "#d62728",
    "roapi-file": "#ff9896",
}


def _contenders(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(row["contender"] for row in rows))


def _scaling(plt: Any, r: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    rows = r["scaling"]["rows"]
    for name in _contenders(rows):
        points = [(row["clients"], row["qps"]) for row in rows if row["contender"] == name]
        ax.plot(*zip(*points, strict=True), marker="o", label=name, color=_COLORS.get(name))
    ax.set_xscale("log", base=2)
    ax.set_xticks([row["clients"] for row in rows], labels=[str(row["clients"]) for row in rows])
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("queries/s (dashboard panels)")
    ax.set_title("Concurrency scaling")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _latency(plt: Any, r: dict[str, Any], path: Path) -> None:
    groups = [
        ("SELECT 1", "select1", "ADBC"),
        ("panel (file)", "panel", "file, SQL"),
        ("panel (days)", "panel", "day directory, SQL"),
        ("dashboard, 8 at once", "dashboard", None),
    ]
    names = _contenders(r["select1"]["rows"])
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        values = []
        for _, scenario, variant in groups:
            rows = [row for row in r[scenario]["rows"] if row["contender"] == name]
            match = [row for row in rows if variant is None or row["variant"] == variant]
            values.append((match or rows)[0]["p50_ms"] if rows else 0.0)
        xs = [g + i * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=name, color=_COLORS.get(name))
    ax.set_xticks([g + width * (len(names) - 1) / 2 for g in range(len(groups))])
    ax.set_xticklabels([label for label, _, _ in groups])
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency, ms (log)")
    ax.set_title("Latency (lower is better)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _scan(plt: Any, r: dict[str, Any], path: Path) -> None:
    rows = r["scan"]["rows"]
    labels = [f"{row['contender']}\n{row['variant']}" for row in rows]
    values = [row["rows_per_s"] / 1e6 for row in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(labels, values, color=[_COLORS.get(row["contender"], "#999999") for row in rows])
    ax.set_ylabel("M rows/s")
    ax.set_title(f"Full scan of {r['data']['rows']:,} rows (higher is better)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(r: dict[str, Any], out_dir: Path) -> list[str]:
    """Draw the plots into ``out_dir``; their paths (empty without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: files only
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("scaling", _scaling), ("latency", _latency), ("scan", _scan)):
        path = out_dir / f"{name}.png"
        draw(plt, r, path)
        written.append(str(path))
    return written
