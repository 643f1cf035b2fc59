"""The engines measured side by side, behind one small interface.

A :class:`Contender` opens :class:`Session` objects (one per client thread, like a client's own
connection) that run SQL either to a whole table (``query``) or as a stream of record batches
(``batches``). Our server and roapi are reached through ADBC, the real client; in-process
DataFusion is a ``SessionContext`` over the same Parquet files, shared by its sessions as an
application would share it. roapi takes part twice: :data:`ROAPI` in its default mode (tables
held in memory) and :data:`ROAPI_FILE` with ``use_memory_table=false``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
from datafusion import SessionContext

from bench.queries import render

__all__ = [
    "OURS",
    "INPROCESS",
    "ROAPI",
    "ROAPI_FILE",
    "RPC_TIMEOUT",
    "Session",
    "Contender",
    "connect_adbc",
    "AdbcSession",
    "InProcessSession",
    "flight_contender",
    "inprocess_contender",
]

OURS, INPROCESS = "flightsql-srv", "in-process"
#: roapi as users run it (tables loaded into memory), and reading Parquet on every query.
ROAPI, ROAPI_FILE = "roapi", "roapi-file"
#: Per-RPC timeouts (seconds): a stuck server fails the run instead of hanging it.
RPC_TIMEOUT = 120.0


class Session(Protocol):
    """One client connection."""

    def query(self, sql: str) -> pa.Table: ...

    def batches(self, sql: str) -> Iterator[pa.RecordBatch]: ...

    def close(self) -> None: ...


def connect_adbc(uri: str, headers: Mapping[str, str] | None = None) -> Any:
    """An ADBC DB-API connection with autocommit, bounded RPCs and ``headers`` on every call."""
    opts = adbc_driver_flightsql.DatabaseOptions
    timeout = str(RPC_TIMEOUT)
    db_kwargs = {
        opts.TIMEOUT_FETCH.value: timeout,
        opts.TIMEOUT_QUERY.value: timeout,
        opts.TIMEOUT_UPDATE.value: timeout,
    }
    for name, value in (headers or {}).items():
        db_kwargs[opts.RPC_CALL_HEADER_PREFIX.value + name] = value
    return adbc.connect(uri, db_kwargs=db_kwargs, autocommit=True)


class AdbcSession:
    """A Flight SQL server through ADBC, one connection and one reused cursor."""

    def __init__(self, uri: str, headers: Mapping[str, str] | None = None) -> None:
        self._conn = connect_adbc(uri, headers)
        self._cur = self._conn.cursor()

    def query(self, sql: str) -> pa.Table:
        self._cur.execute(sql)
        table: pa.Table = self._cur.fetch_arrow_table()
        return table

    def batches(self, sql: str) -> Iterator[pa.RecordBatch]:
        self._cur.execute(sql)
        yield from self._cur.fetch_record_batch()

    def close(self) -> None:
        self._cur.close()
        self._conn.close()


class InProcessSession:
    """DataFusion in this process: no network, no serialization."""

    def __init__(self, ctx: SessionContext) -> None:
        self._ctx = ctx

    def query(self, sql: str) -> pa.Table:
        return self._ctx.sql(sql).to_arrow_table()

    def batches(self, sql: str) -> Iterator[pa.RecordBatch]:
        # The DataFrame's C stream executes lazily, batch by batch, like a server's DoGet.
        yield from pa.RecordBatchReader.from_stream(self._ctx.sql(sql))

    def close(self) -> None:
        pass


@dataclass
class Contender:
    """A named engine: how to open sessions on it, its table names and, for a server, its pid."""

    name: str
    tables: dict[str, str]
    uri: str | None = None
    pid: int | None = None
    version: str = ""
    _ctx: SessionContext | None = field(default=None, repr=False)

    def session(self, headers: Mapping[str, str] | None = None) -> Session:
        """A new connection (``headers`` only make sense for a Flight SQL server)."""
        if self._ctx is not None:
            return InProcessSession(self._ctx)
        assert self.uri is not None
        return AdbcSession(self.uri, headers)

    def sql(self, template: str) -> str:
        """``template`` with this contender's table names."""
        return render(template, self.tables)


def flight_contender(
    name: str, uri: str, pid: int, tables: dict[str, str], version: str
) -> Contender:
    """A Flight SQL server reached at ``uri``."""
    return Contender(name, tables, uri=uri, pid=pid, version=version)


def inprocess_contender(points: Path, days: Path, version: str) -> Contender:
    """A ``SessionContext`` with the file as ``points`` and the directory as ``points_days``."""
    ctx = SessionContext()
    ctx.register_parquet("points", str(points))
    ctx.register_parquet("points_days", str(days))
    return Contender(
        INPROCESS, {"points": "points", "days": "points_days"}, version=version, _ctx=ctx
    )
