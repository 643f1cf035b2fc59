"""Planning and execution on DataFusion: one read-only SessionContext per catalog view.

``Engine.plan`` turns SQL (plus bound parameters) into a :class:`Plan`: planning is where bad
SQL and write attempts fail, before any data moves. ``Plan.reader`` executes it as an Arrow C
stream that pyarrow's Flight server drains in C++; Python never touches the batches.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from datafusion import (
    DataFrame,
    LogicalPlan,
    RuntimeEnvBuilder,
    SessionConfig,
    SessionContext,
    SQLOptions,
    col,
    lit,
)
from datafusion.catalog import Schema
from datafusion.substrait import Consumer, Serde

from flightsql_srv.catalog import SchemaDecl, register_catalog
from flightsql_srv.config import Settings
from flightsql_srv.errors import InvalidArgument, ReadOnlyViolation, ResourceExhausted
from flightsql_srv.results import (
    grafana_reader,
    grafana_schema,
    portable_reader,
    portable_schema,
)
from flightsql_srv.sessions import DEFAULT_SCHEMA, SessionOptions
from flightsql_srv.sqltext import placeholders, quote_name

__all__ = ["Engine", "Plan", "Visibility", "MAX_SQL_BYTES", "MAX_MESSAGE_BYTES", "batch_rows_for"]

MAX_SQL_BYTES = 1024 * 1024
#: Largest record batch sent as one FlightData message (sliced above this).
MAX_MESSAGE_BYTES = 3 << 20
_READ_ONLY = SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)
_REJECTED = re.compile(r"(DDL|DML|Statement) not supported: (\w+)")
_MAX_CONTEXTS = 64
#: The (schema, table) pairs a caller may read; None means every table.
Visibility = frozenset[tuple[str, str]] | None
_TARGET_BATCH_BYTES = 2 << 20
_BATCH_ROWS = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
_VARIABLE_WIDTH_BYTES = 32  # assumed average size of one string/binary value
#: Logical plan node names that would change state; a Substrait plan must not contain them.
_WRITE_NODES = re.compile(r"^(Dml|Ddl|Copy|Create|Drop|Insert|Statement|SetVariable)")


@dataclass(frozen=True)
class Plan:
    """A planned query: its result schema is known, nothing has run yet."""

    sql: str
    frame: DataFrame
    #: Shape results for the Grafana datasource (see :mod:`flightsql_srv.results`).
    grafana: bool = False

    @property
    def schema(self) -> pa.Schema:
        """The schema clients receive (see :mod:`flightsql_srv.results`)."""
        raw = self.frame.schema()
        return grafana_schema(raw) if self.grafana else portable_schema(raw)

    def execute(self) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """Start executing; returns the result schema and its batches.

        The first batch is fetched here, so an execution error (a failed cast, a file that
        vanished, the memory limit) is raised before anything is sent: the Grafana
        datasource hides errors that arrive after the schema.

        Raises:
            ResourceExhausted: the memory pool could not satisfy the query.
            InvalidArgument: any other execution error.
        """
        try:  # optimising and physical planning happen here, then the first batch
            stream = pa.RecordBatchReader.from_stream(self.frame)
            reader = grafana_reader(stream) if self.grafana else portable_reader(stream)
            first = reader.read_next_batch()
        except StopIteration:
            first = None
        except Exception as exc:
            raise execution_error(exc) from None
        return reader.schema, _batches(first, reader)

    def reader(self) -> pa.RecordBatchReader:
        """:meth:`execute` as a record batch reader."""
        return pa.RecordBatchReader.from_batches(*self.execute())


def execution_error(exc: BaseException) -> InvalidArgument | ResourceExhausted:
    """The client-facing error for a failure while a query runs."""
    message = _clean(exc)
    if "Resources exhausted" in message:
        return ResourceExhausted(
            f"query needs more memory than memory_limit allows: {message}; "
            "narrow it (filters, fewer columns, a LIMIT) or raise memory_limit"
        )
    return InvalidArgument(f"query failed: {message}")


def _batches(first: pa.RecordBatch | None, rest: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """The batches, each at most :data:`MAX_MESSAGE_BYTES`.

    Batch sizes follow an estimate of the row width; a batch that still comes out larger
    (long strings) is cut into zero-copy slices, so no FlightData message exceeds what the
    Grafana datasource (4 MiB) and ADBC accept.
    """
    if first is None:
        return
    yield from _split(first)
    while True:
        try:
            batch = rest.read_next_batch()
        except StopIteration:
            return
        except Exception as exc:
            raise execution_error(exc) from None
        yield from _split(batch)


def _split(batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
    size = batch.nbytes
    if size <= MAX_MESSAGE_BYTES or batch.num_rows <= 1:
        yield batch
        return
    step = max(1, batch.num_rows * MAX_MESSAGE_BYTES // size)
    for offset in range(0, batch.num_rows, step):
        yield batch.slice(offset, step)


class Engine:
    """Owns the DataFusion sessions for one catalog and plans read-only queries.

    Tables are registered once, in the base context. Session options (default schema, time
    zone) get their own context that shares the base context's schema providers, so no data
    or listing is copied; those contexts are cached (bounded, least recently used first out).
    """

    def __init__(self, settings: Settings, schemas: list[SchemaDecl]) -> None:
        self.catalog_name = settings.catalog_name
        self._settings = settings
        self.ctx = self._new_context(SessionOptions())
        register_catalog(self.ctx, settings.catalog_name, schemas)
        self.schemas = schemas
        #: (schema, table) -> time column, for tables read through a range filter.
        self._time_columns = {
            (t.schema, t.name): t.time_column
            for s in schemas
            for t in s.tables
            if t.time_column and not t.is_view
        }
        self._contexts: OrderedDict[tuple[SessionOptions, int, Visibility], SessionContext]
        self._contexts = OrderedDict({(SessionOptions(), self._default_rows, None): self.ctx})
        self._lock = threading.Lock()

    @property
    def _default_rows(self) -> int:
        return self._settings.batch_size or 8192

    def _new_context(self, options: SessionOptions, batch_rows: int = 0) -> SessionContext:
        config = (
            SessionConfig()
            .with_default_catalog_and_schema(self.catalog_name, options.schema or DEFAULT_SCHEMA)
            .with_information_schema(True)
            .with_batch_size(batch_rows or self._default_rows)
            # Clients want utf8, not views: read Parquet strings as utf8 from the start
            # instead of casting every batch on the way out.
            .set("datafusion.execution.parquet.schema_force_view_types", "false")
            .set("datafusion.sql_parser.map_string_types_to_utf8view", "false")
        )
        if self._settings.target_partitions:
            config = config.with_target_partitions(self._settings.target_partitions)
        if options.timezone:
            config = config.set("datafusion.execution.time_zone", options.timezone)
        return SessionContext(config, self._runtime())

    def _runtime(self) -> RuntimeEnvBuilder:
        """A spilling memory pool per context. Contexts cannot share one pool, so the limit is
        split: at most ``max_concurrent_queries`` run, each within its share."""
        runtime = RuntimeEnvBuilder()
        spill = self._settings.spill_dir
        runtime = (
            runtime.with_disk_manager_specified(spill) if spill else runtime.with_disk_manager_os()
        )
        limit = self._settings.memory_limit_bytes
        if limit is None:
            return runtime.with_unbounded_memory_pool()
        return runtime.with_fair_spill_pool(max(limit // self._settings.max_concurrent_queries, 1))

    def context(
        self, options: SessionOptions, batch_rows: int = 0, visible: Visibility = None
    ) -> SessionContext:
        """The session context for ``options`` producing ``batch_rows``-row batches in which
        only ``visible`` tables exist (all when None); cached, the base context for the
        defaults."""
        key = (options, batch_rows or self._default_rows, visible)
        with self._lock:
            ctx = self._contexts.get(key)
            if ctx is not None:
                self._contexts.move_to_end(key)
                return ctx
        ctx = self._build_context(options, key[1], visible, None)
        with self._lock:
            self._contexts[key] = ctx
            while len(self._contexts) > _MAX_CONTEXTS:
                oldest = next(k for k, c in self._contexts.items() if c is not self.ctx)
                del self._contexts[oldest]
        return ctx

    def _build_context(
        self,
        options: SessionOptions,
        rows: int,
        visible: Visibility,
        bounds: tuple[datetime, datetime] | None,
    ) -> SessionContext:
        """A context sharing the base context's tables: whole schemas where nothing is hidden
        or bounded, else per-table providers (time-series tables as range-filtered views)."""
        ctx = self._new_context(options, rows)
        base, view = self.ctx.catalog(self.catalog_name), ctx.catalog(self.catalog_name)
        for name in base.schema_names():
            tables = [t for t in base.schema(name).names() if _allowed(visible, name, t)]
            bounded = bounds is not None and any((name, t) in self._time_columns for t in tables)
            if name in view.schema_names():
                view.deregister_schema(name)
            if visible is None and not bounded:
                view.register_schema(name, base.schema(name))
                continue
            scoped = Schema.memory_schema()
            view.register_schema(name, scoped)
            for table in tables:
                qualified = f"{quote_name(name)}.{quote_name(table)}"
                column = self._time_columns.get((name, table))
                if bounds is not None and column is not None:
                    scoped.register_table(table, self._bounded(qualified, column, bounds))
                else:
                    scoped.register_table(table, self.ctx.table_provider(qualified))
        return ctx

    def tables(self) -> list[tuple[str, str]]:
        """(schema, table) of every table and view in the catalog."""
        base = self.ctx.catalog(self.catalog_name)
        return sorted((s, t) for s in base.schema_names() for t in base.schema(s).names())

    def schema_names(self) -> set[str]:
        """Schemas of the catalog (including DataFusion's ``information_schema``)."""
        names: set[str] = self.ctx.catalog(self.catalog_name).schema_names()
        return names

    def plan(
        self,
        sql: str,
        params: pa.RecordBatch | None = None,
        options: SessionOptions | None = None,
        *,
        bounds: tuple[datetime, datetime] | None = None,
        limit: int | None = None,
        grafana: bool = False,
        visible: Visibility = None,
    ) -> Plan:
        """Plan ``sql`` read-only, with ``params`` (one row) bound to its placeholders.

        Args:
            sql: the statement (macros already expanded).
            params: one row of placeholder values.
            options: the session's schema and time zone.
            bounds: a time range; tables that declare a ``time_column`` are read through a
                filter on it, so files and row groups outside it are pruned.
            limit: at most this many rows.
            grafana: shape results for the Grafana datasource.
            visible: the (schema, table) pairs the caller may read; None for all.

        Raises:
            InvalidArgument: empty or oversized SQL, a write statement, or a planning error.
        """
        if not sql.strip():
            raise InvalidArgument("the query is empty: send a SQL statement")
        if len(sql.encode()) > MAX_SQL_BYTES:
            raise InvalidArgument(f"the query is longer than {MAX_SQL_BYTES} bytes")
        values = _param_values(params) if params is not None else None
        options = options or SessionOptions()
        frame = self._plan_sql(self._scoped(options, 0, bounds, visible), sql, values)
        if not self._settings.batch_size:
            # Batch rows follow the row width, so large scans send few large messages and
            # wide rows still stay far below gRPC's 4 MiB limit: re-plan when they differ.
            rows = batch_rows_for(frame.schema())
            if rows != self._default_rows:
                frame = self._plan_sql(self._scoped(options, rows, bounds, visible), sql, values)
        if limit is not None:
            frame = frame.limit(limit)
        return Plan(sql, frame, grafana)

    def _scoped(
        self,
        options: SessionOptions,
        rows: int,
        bounds: tuple[datetime, datetime] | None,
        visible: Visibility,
    ) -> SessionContext:
        """The context to plan in; with ``bounds``, a fresh one whose time-series tables are
        views filtered to the range (built per query: ranges rarely repeat)."""
        if bounds is None or not self._time_columns:
            return self.context(options, rows, visible)
        return self._build_context(options, rows or self._default_rows, visible, bounds)

    def _bounded(self, qualified: str, column: str, bounds: tuple[datetime, datetime]) -> Any:
        frame = self.ctx.table(qualified)
        kind = frame.schema().field(column).type
        start, end = (_timestamp(t, kind) for t in bounds)
        time = col(quote_name(column))
        return frame.filter((time >= lit(start)) & (time <= lit(end))).into_view()

    @staticmethod
    def _plan_sql(ctx: SessionContext, sql: str, values: dict[str, pa.Scalar] | None) -> DataFrame:
        try:
            return ctx.sql_with_options(sql, _READ_ONLY, param_values=values)
        except Exception as exc:
            raise _planning_error(exc) from None

    def plan_substrait(
        self,
        plan: bytes,
        options: SessionOptions | None = None,
        *,
        limit: int | None = None,
        grafana: bool = False,
        visible: Visibility = None,
    ) -> Plan:
        """Plan a serialized Substrait plan, refusing anything that writes.

        Raises:
            InvalidArgument: the bytes are not a Substrait plan, it does not resolve against
                the catalog, or it contains a write.
        """
        ctx = self.context(options or SessionOptions(), 0, visible)
        try:
            logical = Consumer.from_substrait_plan(ctx, Serde.deserialize_bytes(plan))
        except Exception as exc:
            raise InvalidArgument(f"invalid Substrait plan: {_clean(exc)}") from None
        _refuse_writes(logical)
        frame = ctx.create_dataframe_from_logical_plan(logical)
        return Plan("<substrait plan>", frame if limit is None else frame.limit(limit), grafana)

    def probe(self) -> None:
        """Plan and run a trivial query; raises when the engine cannot answer."""
        rows = sum(b.num_rows for b in self.plan("SELECT 1 AS probe").execute()[1])
        if rows != 1:
            raise RuntimeError(f"probe query returned {rows} rows instead of 1")

    def parameter_schema(self, sql: str) -> pa.Schema:
        """One field per placeholder, named after it; types are unknown (``null``)."""
        return pa.schema([pa.field(name, pa.null()) for name in placeholders(sql)])


def _allowed(visible: Visibility, schema: str, table: str) -> bool:
    return visible is None or (schema, table) in visible


def _timestamp(value: datetime, kind: pa.DataType) -> pa.Scalar:
    """``value`` (aware, UTC) as a literal of the time column's type."""
    if kind.tz is None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return pa.scalar(value, kind)


def batch_rows_for(schema: pa.Schema) -> int:
    """Rows per batch so that one batch of ``schema`` is about 2 MiB (by estimate)."""
    width = sum(_value_bytes(f.type) for f in schema) or 1
    fitting = _TARGET_BATCH_BYTES // width
    return max([r for r in _BATCH_ROWS if r <= fitting], default=_BATCH_ROWS[0])


def _value_bytes(t: pa.DataType) -> int:
    if pa.types.is_dictionary(t):
        return _value_bytes(t.value_type)
    if pa.types.is_nested(t):
        return 4 * _VARIABLE_WIDTH_BYTES
    try:
        width: int = t.bit_width
    except ValueError:  # variable width: strings, binary
        return _VARIABLE_WIDTH_BYTES + 4
    return max(width // 8, 1)


def _refuse_writes(plan: LogicalPlan) -> None:
    node = type(plan.to_variant()).__name__
    if _WRITE_NODES.match(node):
        raise ReadOnlyViolation(
            f"flightsql-srv is read-only: a Substrait plan with {node} is not allowed"
        )
    for child in plan.inputs():
        _refuse_writes(child)


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
        return ReadOnlyViolation(
            f"flightsql-srv is read-only: {rejected.group(2)} ({rejected.group(1)}) statements "
            "are not allowed; send a query such as SELECT"
        )
    return InvalidArgument(message)
