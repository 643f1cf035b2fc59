"""Planning and execution on DataFusion: one read-only SessionContext per catalog view.

``Engine.plan`` turns SQL (plus bound parameters) into a :class:`Plan`: planning is where bad
SQL and write attempts fail, before any data moves. ``Plan.reader`` executes it as an Arrow C
stream that pyarrow's Flight server drains in C++; Python never touches the batches.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import pyarrow as pa
from datafusion import DataFrame, SessionConfig, SessionContext, SQLOptions

from flightsql_srv.catalog import SchemaDecl, register_catalog
from flightsql_srv.config import Settings
from flightsql_srv.errors import InvalidArgument
from flightsql_srv.results import portable_reader, portable_schema
from flightsql_srv.sqltext import placeholders

__all__ = ["Engine", "Plan", "MAX_SQL_BYTES"]

MAX_SQL_BYTES = 1024 * 1024
_READ_ONLY = SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)
_REJECTED = re.compile(r"(DDL|DML|Statement) not supported: (\w+)")


@dataclass(frozen=True)
class Plan:
    """A planned query: its result schema is known, nothing has run yet."""

    sql: str
    frame: DataFrame

    @property
    def schema(self) -> pa.Schema:
        """The schema clients receive (see :mod:`flightsql_srv.results`)."""
        return portable_schema(self.frame.schema())

    def reader(self) -> pa.RecordBatchReader:
        """Start executing and return the result stream.

        The first batch is fetched here, so an execution error (a failed cast, a file that
        vanished) is raised before anything is sent: the Grafana datasource hides errors that
        arrive after the schema.
        """
        reader = portable_reader(pa.RecordBatchReader.from_stream(self.frame))
        try:
            first = reader.read_next_batch()
        except StopIteration:
            return pa.RecordBatchReader.from_batches(reader.schema, [])
        except Exception as exc:
            raise InvalidArgument(f"query failed: {_clean(exc)}") from None
        return pa.RecordBatchReader.from_batches(reader.schema, itertools.chain((first,), reader))


class Engine:
    """Owns the DataFusion session for one catalog and plans read-only queries."""

    def __init__(self, settings: Settings, schemas: list[SchemaDecl]) -> None:
        config = (
            SessionConfig()
            .with_default_catalog_and_schema(settings.catalog_name, "public")
            .with_information_schema(True)
            .with_batch_size(settings.batch_size)
        )
        if settings.target_partitions:
            config = config.with_target_partitions(settings.target_partitions)
        self.catalog_name = settings.catalog_name
        self.ctx = SessionContext(config)
        register_catalog(self.ctx, settings.catalog_name, schemas)
        self.schemas = schemas

    def plan(self, sql: str, params: pa.RecordBatch | None = None) -> Plan:
        """Plan ``sql`` read-only, with ``params`` (one row) bound to its placeholders.

        Raises:
            InvalidArgument: empty or oversized SQL, a write statement, or a planning error.
        """
        if not sql.strip():
            raise InvalidArgument("the query is empty: send a SQL statement")
        if len(sql.encode()) > MAX_SQL_BYTES:
            raise InvalidArgument(f"the query is longer than {MAX_SQL_BYTES} bytes")
        values = _param_values(params) if params is not None else None
        try:
            frame = self.ctx.sql_with_options(sql, _READ_ONLY, param_values=values)
        except Exception as exc:
            raise _planning_error(exc) from None
        return Plan(sql, frame)

    def probe(self) -> None:
        """Plan and run a trivial query; raises when the engine cannot answer."""
        rows = self.plan("SELECT 1 AS probe").reader().read_all().num_rows
        if rows != 1:
            raise RuntimeError(f"probe query returned {rows} rows instead of 1")

    def parameter_schema(self, sql: str) -> pa.Schema:
        """One field per placeholder, named after it; types are unknown (``null``)."""
        return pa.schema([pa.field(name, pa.null()) for name in placeholders(sql)])


def _param_values(params: pa.RecordBatch) -> dict[str, pa.Scalar]:
    """Map a one-row parameter batch to DataFusion placeholder values.

    ADBC names positional parameters "0", "1", ... for ``$1``, ``$2``, ...; other column
    names bind ``$name`` placeholders.
    """
    if params.num_rows != 1:
        raise InvalidArgument(
            f"a query binds exactly one row of parameters, got {params.num_rows} rows"
        )
    names = params.schema.names
    positional = names == [str(i) for i in range(len(names))]
    values = {}
    for i, name in enumerate(names):
        key = str(i + 1) if positional else name.lstrip("$")
        values[key] = params.column(i)[0]
    return values


def _clean(exc: BaseException) -> str:
    """DataFusion's message without the Rust error-chain noise."""
    return str(exc).strip()


def _planning_error(exc: BaseException) -> InvalidArgument:
    message = _clean(exc)
    rejected = _REJECTED.search(message)
    if rejected:
        return InvalidArgument(
            f"flightsql-srv is read-only: {rejected.group(2)} ({rejected.group(1)}) statements "
            "are not allowed; send a query such as SELECT"
        )
    return InvalidArgument(message)
