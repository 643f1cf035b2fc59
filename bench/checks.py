"""Do the contenders give the same answers? A comparison is only honest if they do.

A result is reduced to a :func:`fingerprint` (row count, and per column: a sum for numbers,
first/last for timestamps, distinct count for strings) that does not depend on the Arrow
types an engine picked (string views, ``timestamp[us]`` vs ``[ns]``). Sums are compared with
a relative tolerance because parallel aggregation adds floats in different orders.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["fingerprint", "same", "REL_TOL"]

REL_TOL = 1e-9


def _column(values: pa.ChunkedArray) -> Any:
    kind = values.type
    if pa.types.is_timestamp(kind):
        micros = values.cast(pa.timestamp("us", tz=kind.tz)).cast(pa.int64())
        return [pc.min(micros).as_py(), pc.max(micros).as_py()]
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return float(pc.sum(values.cast(pa.float64())).as_py() or 0.0)
    return pc.count_distinct(values.cast(pa.string())).as_py()


def fingerprint(table: pa.Table) -> dict[str, Any]:
    """A small, type-independent summary of ``table``."""
    return {
        "rows": table.num_rows,
        "columns": {name: _column(table.column(name)) for name in table.column_names},
    }


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two fingerprints describe the same result (floats within :data:`REL_TOL`)."""
    if a["rows"] != b["rows"] or list(a["columns"]) != list(b["columns"]):
        return False
    for x, y in zip(a["columns"].values(), b["columns"].values(), strict=True):
        if isinstance(x, float) and isinstance(y, float):
            if not math.isclose(x, y, rel_tol=REL_TOL, abs_tol=1e-6):
                return False
        elif x != y:
            return False
    return True
