"""Planning and execution on DataFusion: one read-only SessionContext per catalog view.

``Engine.plan`` turns SQL (plus bound parameters) into a :class:`Plan`: planning is where bad
SQL and write attempts fail, before any data moves. ``Plan.reader`` executes it as an Arrow C
stream that pyarrow's Flight server drains in C++; Python never touches the batches.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime

import pyarrow as pa
from datafusion import (
    DataFrame,
    LogicalPlan,
    SessionContext,
    SQLOptions,
)
from datafusion.substrait import Consumer, Serde

from flightsql_srv.batches import batch_rows_for, split
from flightsql_srv.catalog import SchemaDecl
from flightsql_srv.config import Settings
from flightsql_srv.contexts import Contexts, Variant, Visibility
from flightsql_srv.errors import (
    InvalidArgument,
    PermissionDenied,
    ReadOnlyViolation,
    ResourceExhausted,
    SourceUnavailable,
    Unimplemented,
)
from flightsql_srv.parameters import plain_value
from flightsql_srv.results import (
    grafana_reader,
    grafana_schema,
    portable_reader,
    portable_schema,
    with_column_metadata,
)
from flightsql_srv.sessions import SessionOptions
from flightsql_srv.sqltext import operator_counts, placeholders

__all__ = ["Engine", "Plan", "Visibility", "MAX_SQL_BYTES", "execution_error"]

MAX_SQL_BYTES = 1024 * 1024
#: DataFusion plans chains of operators and of UNION/INTERSECT/EXCEPT recursively, and a
#: long enough chain overflows a thread's stack and kills the process (about 10,000
#: operators or 4,000 set operations with 8 MiB stacks): refuse queries well before that.
MAX_OPERATORS = 2500
MAX_SET_OPERATIONS = 500
_READ_ONLY = SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)
_REJECTED = re.compile(r"(DDL|DML|Statement) not supported: (\w+)")
#: How object_store reports a storage service it could not reach (not a bad query).
_UNREACHABLE = re.compile(
    r"error sending request|connection refused|dns error|tcp connect error|"
    r"connection reset|operation timed out|Service Unavailable|503 Service",
    re.IGNORECASE,
)
#: DataFusion's hints to change its own configuration ("Consider increasing the memory limit
#: config: 'datafusion.runtime.memory_limit', or decreasing ...").
_DATAFUSION_ADVICE = re.compile(r" *Consider (increasing|decreasing) [^\n]*'datafusion\.[^\n]*")
#: Logical plan node names that would change state; a Substrait plan must not contain them.
_WRITE_NODES = re.compile(r"^(Dml|Ddl|Copy|Create|Drop|Insert|Statement|SetVariable)")
#: Logical plan nodes of EXPLAIN and EXPLAIN ANALYZE (every FORMAT and VERBOSE).
_EXPLAIN_NODES = frozenset({"Explain", "Analyze"})
#: Storage locations in EXPLAIN output: the file lists of scans, per-file metrics, URLs and
#: paths (two or more segments with a letter, so ``0/688`` and ``a / b`` stay).
_FILE_GROUPS = re.compile(r"file_groups=\{([^:{}]*): \[.*?\]\}", re.DOTALL)
_FILENAME = re.compile(r"filename=[^,}\]\s]+")
_PATH = re.compile(
    r"(?:\b[A-Za-z][A-Za-z0-9+.-]*://[^\s,;'\"\])}]*)"
    r"|(?<![\w.])/?(?=[^\s/]*[A-Za-z])[\w.=%~+@-]+(?:/[\w.=%~+@-]+)+/?"
)
PATH_HIDDEN = "<path hidden>"


@dataclass(frozen=True)
class Plan:
    """A planned query: its result schema is known, nothing has run yet."""

    sql: str
    frame: DataFrame
    #: Shape results for the Grafana datasource (see :mod:`flightsql_srv.results`).
    grafana: bool = False
    #: (index, endpoints, partitions): produce only the output partitions ``index``,
    #: ``index + endpoints``, ... of ``partitions`` (parallel fetch).
    partition: tuple[int, int, int] | None = None
    #: Storage paths are taken out of the result (EXPLAIN without ``explain_paths``).
    redact_paths: bool = False

    @property
    def schema(self) -> pa.Schema:
        """The schema clients receive (see :mod:`flightsql_srv.results`)."""
        raw = self.frame.schema()
        return with_column_metadata(grafana_schema(raw) if self.grafana else portable_schema(raw))

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
            stream = self._stream()
            if self.redact_paths:
                stream = _redacted(stream)
            reader = grafana_reader(stream) if self.grafana else portable_reader(stream)
            first = reader.read_next_batch()
        except StopIteration:
            first = None
        except Exception as exc:
            raise execution_error(exc) from None
        return reader.schema, _batches(first, reader)

    def partitions(self) -> int:
        """Output partitions the result can be fetched in, each by its own DoGet: more than
        one only when every partition's rows are fixed by the data (file ranges, with no
        repartitioning), so that separate executions never overlap or miss rows."""
        physical = self.frame.execution_plan()
        count: int = physical.partition_count
        return 1 if count < 2 or "RepartitionExec" in physical.display_indent() else count

    def _stream(self) -> pa.RecordBatchReader:
        if self.partition is None:
            return pa.RecordBatchReader.from_stream(self.frame)
        index, endpoints, partitions = self.partition
        streams = self.frame.execute_stream_partitioned()
        if len(streams) != partitions:
            raise InvalidArgument(
                f"the result now has {len(streams)} partitions instead of {partitions} (the "
                "data changed since GetFlightInfo); call GetFlightInfo again"
            )
        # Batches of single partitions cross into Python one by one: the bindings give no
        # Arrow C stream for a partition.
        batches = (
            batch.to_pyarrow()
            for stream in streams[index::endpoints]  # lazy: only these partitions run
            for batch in stream
        )
        return pa.RecordBatchReader.from_batches(self.frame.schema(), batches)

    def reader(self) -> pa.RecordBatchReader:
        """:meth:`execute` as a record batch reader."""
        return pa.RecordBatchReader.from_batches(*self.execute())


def redact_paths(text: str) -> str:
    """``text`` (EXPLAIN output) without storage paths, URLs or file names."""
    text = _FILE_GROUPS.sub(rf"file_groups={{\1: [{PATH_HIDDEN}]}}", text)
    text = _FILENAME.sub(f"filename={PATH_HIDDEN}", text)
    return _PATH.sub(PATH_HIDDEN, text)


def _redacted(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """``reader`` with :func:`redact_paths` applied to every string column (EXPLAIN
    results are a few rows: they cross into Python)."""

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            columns = [
                pa.array([redact_paths(v) if v is not None else None for v in column.to_pylist()])
                if pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
                else column
                for column in batch.columns
            ]
            yield pa.record_batch(
                [c.cast(f.type) for c, f in zip(columns, batch.schema, strict=True)],
                schema=batch.schema,
            )

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _batches(first: pa.RecordBatch | None, rest: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """The batches, none larger than :data:`~flightsql_srv.batches.MAX_MESSAGE_BYTES`."""
    if first is None:
        return
    yield from split(first)
    while True:
        try:
            batch = rest.read_next_batch()
        except StopIteration:
            return
        except Exception as exc:
            raise execution_error(exc) from None
        yield from split(batch)


def execution_error(
    exc: BaseException,
) -> InvalidArgument | ResourceExhausted | SourceUnavailable:
    """The client-facing error for a failure while a query runs."""
    message = _clean(exc)
    if _UNREACHABLE.search(message):
        return _unreachable(message)
    if "Resources exhausted" in message:
        # DataFusion's advice names its own settings, which clients cannot change.
        message = _DATAFUSION_ADVICE.sub("", message).strip()
        return ResourceExhausted(
            f"query needs more memory than memory_limit allows: {message}; "
            "narrow it (filters, fewer columns, a LIMIT) or raise memory_limit"
        )
    return InvalidArgument(f"query failed: {message}")


class Engine:
    """Plans read-only queries over one catalog (see :mod:`flightsql_srv.contexts` for the
    DataFusion contexts they plan in)."""

    def __init__(self, settings: Settings, schemas: list[SchemaDecl]) -> None:
        self.catalog_name = settings.catalog_name
        self._settings = settings
        self.contexts = Contexts(settings, schemas)
        self.ctx = self.contexts.base
        self.schemas = schemas

    def context(
        self, options: SessionOptions, batch_rows: int = 0, visible: Visibility = None
    ) -> SessionContext:
        """See :meth:`Contexts.get`."""
        return self.contexts.get(Variant(options, batch_rows, visible))

    def tables(self) -> list[tuple[str, str]]:
        """(schema, table) of every table and view in the catalog."""
        return self.contexts.tables()

    def schema_names(self) -> set[str]:
        """Schemas of the catalog."""
        return self.contexts.schema_names()

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
        fixed_partitions: bool = False,
        explain_paths: bool = True,
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
            fixed_partitions: plan so that output partitions can be executed apart.
            explain_paths: EXPLAIN output keeps storage paths (else they are replaced
                by ``<path hidden>``).

        Raises:
            InvalidArgument: empty or oversized SQL, a write statement, or a planning error.
            PermissionDenied: an EXPLAIN of a statement that reads a view over tables the
                caller may not see.
        """
        if not sql.strip():
            raise InvalidArgument("the query is empty: send a SQL statement")
        if len(sql.encode()) > MAX_SQL_BYTES:
            raise InvalidArgument(f"the query is longer than {MAX_SQL_BYTES} bytes")
        _check_depth(sql)
        options = options or SessionOptions()
        variant = Variant(
            options, 0, visible, bounded=bounds is not None, fixed_partitions=fixed_partitions
        )
        ctx = self.contexts.get(variant)
        values = self.contexts.range_values(bounds) if bounds is not None else {}
        if params is not None:
            values = {**values, **_param_values(params)}
        frame = self._plan_sql(ctx, sql, values or None)
        explained = _is_explain(frame)
        if explained and visible is not None:
            variant = replace(variant, explain=True)
            frame = self._plan_explain(self.contexts.get(variant), sql, values or None)
        if not self._settings.batch_size:
            # Batch rows follow the row width, so large scans send few large messages and
            # wide rows still stay far below gRPC's 4 MiB limit. The batch size is a context
            # setting: move the finished logical plan to a context with the right one.
            rows = batch_rows_for(frame.schema())
            if rows != self.contexts.default_rows:
                sized = self.contexts.get(replace(variant, rows=rows))
                frame = sized.create_dataframe_from_logical_plan(frame.logical_plan())
        if limit is not None:
            frame = frame.limit(limit)
        return Plan(sql, frame, grafana, redact_paths=explained and not explain_paths)

    def _plan_explain(
        self, ctx: SessionContext, sql: str, values: dict[str, pa.Scalar] | None
    ) -> DataFrame:
        """Plan an EXPLAIN again where views are built from visible tables only (see
        :class:`Variant`): the output then names nothing hidden, and a statement that reads
        a view over hidden tables does not plan, which is refused."""
        try:
            return self._plan_sql(ctx, sql, values)
        except InvalidArgument:
            raise PermissionDenied(
                "EXPLAIN is refused: the statement reads a view over tables your roles do "
                "not grant; the query itself can still be run"
            ) from None

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
        if _is_explain(frame):  # the consumer makes none today; if it did, refuse it
            raise Unimplemented("EXPLAIN in a Substrait plan is not supported: send it as SQL")
        return Plan("<substrait plan>", frame if limit is None else frame.limit(limit), grafana)

    def probe(self) -> None:
        """Plan and run a trivial query; raises when the engine cannot answer."""
        rows = sum(b.num_rows for b in self.plan("SELECT 1 AS probe").execute()[1])
        if rows != 1:
            raise RuntimeError(f"probe query returned {rows} rows instead of 1")

    def parameter_schema(self, sql: str) -> pa.Schema:
        """One field per placeholder, named after it; types are unknown (``null``)."""
        return pa.schema([pa.field(name, pa.null()) for name in placeholders(sql)])


def _is_explain(frame: DataFrame) -> bool:
    return type(frame.logical_plan().to_variant()).__name__ in _EXPLAIN_NODES


def _check_depth(sql: str) -> None:
    operators, set_operations = operator_counts(sql)
    if set_operations > MAX_SET_OPERATIONS:
        raise InvalidArgument(
            f"the query has {set_operations} UNION/INTERSECT/EXCEPT; at most "
            f"{MAX_SET_OPERATIONS} are allowed: split it into several queries"
        )
    if operators > MAX_OPERATORS:
        raise InvalidArgument(
            f"the query has {operators} operators; at most {MAX_OPERATORS} are allowed: "
            "use IN (...) lists instead of long OR chains, or split the query"
        )


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

    Binding names the columns after the placeholders they bind (see
    :func:`flightsql_srv.parameters.parameter_row`); columns named "0", "1", ... (ADBC's
    names, in handles bound before that) bind ``$1``, ``$2``, .... Union values bind as the
    value they hold.
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
        values[key] = plain_value(params.column(i)[0])
    return values


def _clean(exc: BaseException) -> str:
    """DataFusion's message without the Rust error-chain noise."""
    return str(exc).strip()


def _unreachable(message: str) -> SourceUnavailable:
    return SourceUnavailable(
        f"a table's storage could not be reached: {message}; retry once it is back"
    )


def _planning_error(exc: BaseException) -> InvalidArgument | SourceUnavailable:
    message = _clean(exc)
    if _UNREACHABLE.search(message):
        return _unreachable(message)
    rejected = _REJECTED.search(message)
    if rejected:
        return ReadOnlyViolation(
            f"flightsql-srv is read-only: {rejected.group(2)} ({rejected.group(1)}) statements "
            "are not allowed; send a query such as SELECT"
        )
    return InvalidArgument(message)
