"""Delta Lake tables (``format = "delta"``) through the ``deltalake`` package.

A local table is registered as deltalake's DataFusion table provider (the FFI capsule that
``DeltaTable`` implements), so DataFusion plans it natively with filter and projection
pushdown. A table on an object store is registered as ``DeltaTable.to_pyarrow_dataset()``
instead: with datafusion 55 and deltalake 1.6 a foreign (FFI) provider cannot reach the
object store at execution time -- DataFusion rebuilds a default runtime environment on the
provider's side of the boundary, so every scan fails with "No suitable object store found"
(delta-io/delta-rs#4623, apache/datafusion PR 24733). The dataset reads through the store
settings given as deltalake ``storage_options``.

Either way the table is read at the version current when it is registered (start-up), or the
version pinned with ``version = N`` / ``timestamp = "RFC 3339"``.
"""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from typing import Any

from datafusion import SessionContext

__all__ = ["available", "register_delta"]


def available() -> bool:
    """True when the ``deltalake`` package is installed."""
    return importlib.util.find_spec("deltalake") is not None


def register_delta(
    ctx: SessionContext,
    name: str,
    source: str,
    *,
    version: int | None = None,
    timestamp: datetime | None = None,
    storage_options: dict[str, str] | None = None,
) -> None:
    """Register the Delta table at ``source`` (a local directory or an object-store URL)
    as ``name``; ``storage_options`` given means the table is remote.

    Raises:
        Exception: whatever deltalake raises for a missing table, version or timestamp.
    """
    from deltalake import DeltaTable

    table = DeltaTable(source, version=version, storage_options=storage_options)
    if timestamp is not None:
        table.load_as_version(timestamp)
        _check_existed(source, table.version(), timestamp, storage_options)
    provider: Any = table
    if storage_options is not None:
        ctx.register_dataset(name, table.to_pyarrow_dataset())
    else:
        ctx.register_table(name, provider)


def _check_existed(
    source: str, version: int, timestamp: datetime, storage_options: dict[str, str] | None
) -> None:
    """deltalake answers a timestamp before the first commit with the first version; a pin
    to a time when the table did not exist yet is an error instead."""
    from deltalake import DeltaTable

    history = DeltaTable(source, storage_options=storage_options).history()
    committed = {h["version"]: h["timestamp"] for h in history if "timestamp" in h}
    millis = committed.get(version)
    if millis is not None and millis > timestamp.timestamp() * 1000:
        first = datetime.fromtimestamp(millis / 1000, UTC).isoformat(timespec="milliseconds")
        raise ValueError(
            f"the table has no version at {timestamp.isoformat()}: "
            f"its oldest version ({version}) was committed at {first}"
        )
