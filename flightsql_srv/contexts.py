"""DataFusion session contexts: the base one that holds the catalog, and the variants that
queries plan in.

Tables are registered once, in the base context. A variant (a session's default schema and
time zone, a batch size, a principal's visible tables, a query's time range) is a new context
that shares the base context's schema or table providers, so no data or listing is copied.
Variants without a time range are cached (bounded, least recently used out); ranges rarely
repeat, so range-scoped ones are built per query.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from datafusion import RuntimeEnvBuilder, SessionConfig, SessionContext, col, lit
from datafusion.catalog import Schema

from flightsql_srv.catalog import SchemaDecl, prepare_context, register_catalog
from flightsql_srv.config import Settings
from flightsql_srv.sessions import DEFAULT_SCHEMA, SessionOptions
from flightsql_srv.sqltext import quote_name

__all__ = ["Contexts", "Visibility"]

#: The (schema, table) pairs a caller may read; None means every table.
Visibility = frozenset[tuple[str, str]] | None
_MAX_CONTEXTS = 64


class Contexts:
    """Builds and caches the session contexts of one catalog."""

    def __init__(self, settings: Settings, schemas: list[SchemaDecl]) -> None:
        self.catalog_name = settings.catalog_name
        self._settings = settings
        self._schemas = schemas
        self.base = self._new_context(SessionOptions())
        #: Tables left out because their remote source could not be read at start-up.
        self.problems = register_catalog(self.base, settings.catalog_name, schemas)
        #: (schema, table) -> time column, for tables read through a range filter.
        self._time_columns = {
            (t.schema, t.name): t.time_column
            for s in schemas
            for t in s.tables
            if t.time_column and not t.is_view
        }
        self._cache: OrderedDict[tuple[SessionOptions, int, Visibility], SessionContext]
        self._cache = OrderedDict({(SessionOptions(), self.default_rows, None): self.base})
        self._lock = threading.Lock()

    @property
    def default_rows(self) -> int:
        """Rows per batch when nothing else is asked for."""
        return self._settings.batch_size or 8192

    def _new_context(self, options: SessionOptions, batch_rows: int = 0) -> SessionContext:
        config = (
            SessionConfig()
            .with_default_catalog_and_schema(self.catalog_name, options.schema or DEFAULT_SCHEMA)
            .with_information_schema(True)
            .with_batch_size(batch_rows or self.default_rows)
            # Clients want utf8, not views: read Parquet strings as utf8 from the start
            # instead of casting every batch on the way out.
            .set("datafusion.execution.parquet.schema_force_view_types", "false")
            .set("datafusion.sql_parser.map_string_types_to_utf8view", "false")
            # Parquet pruning: row groups by statistics, pages by the page index, and filters
            # evaluated while decoding (cheapest first) so that a time range reads only its
            # rows. The file-metadata cache (datafusion.runtime.metadata_cache_limit, 50M by
            # default) is a runtime setting and stays at its default.
            .set("datafusion.execution.parquet.pruning", "true")
            .set("datafusion.execution.parquet.enable_page_index", "true")
            .set("datafusion.execution.parquet.pushdown_filters", "true")
            .set("datafusion.execution.parquet.reorder_filters", "true")
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

    def get(
        self, options: SessionOptions, batch_rows: int = 0, visible: Visibility = None
    ) -> SessionContext:
        """The session context for ``options`` producing ``batch_rows``-row batches in which
        only ``visible`` tables exist (all when None); cached, the base context for the
        defaults."""
        key = (options, batch_rows or self.default_rows, visible)
        with self._lock:
            ctx = self._cache.get(key)
            if ctx is not None:
                self._cache.move_to_end(key)
                return ctx
        ctx = self._build_context(options, key[1], visible, None)
        with self._lock:
            self._cache[key] = ctx
            while len(self._cache) > _MAX_CONTEXTS:
                oldest = next(k for k, c in self._cache.items() if c is not self.base)
                del self._cache[oldest]
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
        prepare_context(ctx, self._schemas)  # object stores live in each context's runtime
        base, view = self.base.catalog(self.catalog_name), ctx.catalog(self.catalog_name)
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
                    scoped.register_table(table, self.base.table_provider(qualified))
        return ctx

    def tables(self) -> list[tuple[str, str]]:
        """(schema, table) of every table and view in the catalog."""
        base = self.base.catalog(self.catalog_name)
        return sorted((s, t) for s in base.schema_names() for t in base.schema(s).names())

    def schema_names(self) -> set[str]:
        """Schemas of the catalog (including DataFusion's ``information_schema``)."""
        names: set[str] = self.base.catalog(self.catalog_name).schema_names()
        return names

    def scoped(
        self,
        options: SessionOptions,
        rows: int,
        bounds: tuple[datetime, datetime] | None,
        visible: Visibility,
    ) -> SessionContext:
        """The context to plan in; with ``bounds``, a fresh one whose time-series tables are
        views filtered to the range (built per query: ranges rarely repeat)."""
        if bounds is None or not self._time_columns:
            return self.get(options, rows, visible)
        return self._build_context(options, rows or self.default_rows, visible, bounds)

    def _bounded(self, qualified: str, column: str, bounds: tuple[datetime, datetime]) -> Any:
        frame = self.base.table(qualified)
        kind = frame.schema().field(column).type
        start, end = (_timestamp(t, kind) for t in bounds)
        time = col(quote_name(column))
        return frame.filter((time >= lit(start)) & (time <= lit(end))).into_view()


def _allowed(visible: Visibility, schema: str, table: str) -> bool:
    return visible is None or (schema, table) in visible


def _timestamp(value: datetime, kind: pa.DataType) -> pa.Scalar:
    """``value`` (aware, UTC) as a literal of the time column's type."""
    if kind.tz is None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return pa.scalar(value, kind)
