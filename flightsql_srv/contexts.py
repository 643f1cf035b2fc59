"""DataFusion session contexts: the base one that holds the catalog, and the variants that
queries plan in.

Tables are registered once, in the base context. A variant (a session's default schema and
time zone, a batch size, a principal's visible tables, whether scans are bounded by a time
range) is a new context that shares the base context's schema or table providers, so no data
or listing is copied. Variants are cached (bounded, least recently used out).

In a bounded variant, every table with a ``time_column`` is a view filtering that column
between two placeholders of its own; a query binds them to its range (see
:meth:`Contexts.range_values`). Ranges rarely repeat, so binding them as values lets every ranged
query reuse one context, its plans' providers and its Parquet metadata cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from datafusion import RuntimeEnvBuilder, SessionConfig, SessionContext
from datafusion.catalog import Schema

from flightsql_srv.catalog import SchemaDecl
from flightsql_srv.config import Settings
from flightsql_srv.registration import prepare_context, register_catalog
from flightsql_srv.sessions import DEFAULT_SCHEMA, SessionOptions
from flightsql_srv.sqltext import quote_name

__all__ = ["Contexts", "Variant", "Visibility"]

#: The (schema, table) pairs a caller may read; None means every table.
Visibility = frozenset[tuple[str, str]] | None
_MAX_CONTEXTS = 64
#: Placeholders of bounded views are named ``$__range_<i>_begin``/``_end``; user SQL cannot
#: clash with them because they are bound only in the views (unknown values are ignored).
_RANGE_PLACEHOLDER_PREFIX = "__range_"


@dataclass(frozen=True)
class Variant:
    """What a context differs from the base context in."""

    #: The session's default schema and time zone.
    options: SessionOptions = SessionOptions()
    #: Rows per batch (0: the default).
    rows: int = 0
    #: Tables that exist in it (None: all).
    visible: Visibility = None
    #: Time-series tables are range views, bound by :meth:`Contexts.range_values`.
    bounded: bool = False
    #: Each output partition reads fixed files, so that partitions can be executed apart
    #: (parallel fetch). DataFusion otherwise lets idle partitions take other partitions'
    #: files, and one partition executed alone reads everything.
    fixed_partitions: bool = False
    #: For EXPLAIN under restricted visibility: views are planned again from their SQL
    #: over the visible tables only, and a view that reads anything hidden is left out
    #: (see :meth:`Contexts._register_explainable_views`).
    explain: bool = False


class Contexts:
    """Builds and caches the session contexts of one catalog."""

    def __init__(self, settings: Settings, schemas: list[SchemaDecl]) -> None:
        self.catalog_name = settings.catalog_name
        self._settings = settings
        self._schemas = schemas
        self.base = self._new_context(Variant())
        #: Tables left out because their remote source could not be read at start-up.
        self.problems = register_catalog(self.base, settings.catalog_name, schemas)
        #: (schema, table) -> time column, for tables read through a range filter.
        self._time_columns = {
            (t.schema, t.name): t.time_column
            for s in schemas
            for t in s.tables
            if t.time_column and not t.is_view
        }
        #: (schema, table) -> SQL of every declared view.
        self._views = {
            (t.schema, t.name): t.sql for s in schemas for t in s.tables if t.sql is not None
        }
        #: (schema, table) -> (placeholder number, time column type) of bounded views.
        served = set(self.tables())  # without the tables left out
        self._range_slots = {
            key: (i, self.base.table(_qualified(*key)).schema().field(column).type)
            for i, (key, column) in enumerate(sorted(self._time_columns.items()))
            if key in served
        }
        self._cache: OrderedDict[Variant, SessionContext]
        self._cache = OrderedDict({Variant(rows=self.default_rows): self.base})
        self._lock = threading.Lock()

    @property
    def default_rows(self) -> int:
        """Rows per batch when nothing else is asked for."""
        return self._settings.batch_size or 8192

    def _new_context(self, variant: Variant) -> SessionContext:
        options = variant.options
        config = (
            SessionConfig()
            .with_default_catalog_and_schema(self.catalog_name, options.schema or DEFAULT_SCHEMA)
            .with_information_schema(True)
            .with_batch_size(variant.rows or self.default_rows)
            # Clients want utf8, not views: read Parquet strings as utf8 from the start
            # instead of casting every batch on the way out.
            .set("datafusion.execution.parquet.schema_force_view_types", "false")
            .set("datafusion.sql_parser.map_string_types_to_utf8view", "false")
            # Parquet pruning: row groups by statistics, pages by the page index, and filters
            # evaluated while decoding so that a time range reads only its rows. Filters
            # keep their order: reordering them cost a panel query ~75 % more here
            # (bench.profile). The file-metadata cache (datafusion.runtime.
            # metadata_cache_limit, 50M by default) is a runtime setting, left at its default.
            .set("datafusion.execution.parquet.pruning", "true")
            .set("datafusion.execution.parquet.enable_page_index", "true")
            .set("datafusion.execution.parquet.pushdown_filters", "true")
        )
        if self._settings.target_partitions:
            config = config.with_target_partitions(self._settings.target_partitions)
        if options.timezone:
            config = config.set("datafusion.execution.time_zone", options.timezone)
        if variant.fixed_partitions:
            config = config.set("datafusion.execution.enable_file_stream_work_stealing", "false")
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
        return runtime.with_fair_spill_pool(max(limit // self._settings.query_slots, 1))

    def get(self, variant: Variant) -> SessionContext:
        """The session context of ``variant``; cached, the base context for the defaults."""
        key = replace(
            variant,
            rows=variant.rows or self.default_rows,
            bounded=variant.bounded and bool(self._range_slots),
        )
        with self._lock:
            ctx = self._cache.get(key)
            if ctx is not None:
                self._cache.move_to_end(key)
                return ctx
        ctx = self._build_context(key)
        with self._lock:
            self._cache[key] = ctx
            while len(self._cache) > _MAX_CONTEXTS:
                oldest = next(k for k, c in self._cache.items() if c is not self.base)
                del self._cache[oldest]
        return ctx

    def _build_context(self, variant: Variant) -> SessionContext:
        """A context sharing the base context's tables: whole schemas where nothing is hidden
        or bounded, else per-table providers (time-series tables as range views).

        Under restricted visibility a schema without a visible table does not exist at all,
        so ``information_schema.schemata`` and every error treat it as one that was never
        declared (a Substrait plan naming it fails as for an unknown schema)."""
        ctx = self._new_context(variant)
        visible, bounded = variant.visible, variant.bounded
        explain = variant.explain and visible is not None
        prepare_context(ctx, self._schemas)  # object stores live in each context's runtime
        base, view = self.base.catalog(self.catalog_name), ctx.catalog(self.catalog_name)
        replanned: dict[tuple[str, str], Schema] = {}
        for name in base.schema_names():
            tables = [t for t in base.schema(name).names() if _allowed(visible, name, t)]
            ranged = bounded and any((name, t) in self._range_slots for t in tables)
            if name in view.schema_names():
                view.deregister_schema(name)
            if visible is None and not ranged:
                view.register_schema(name, base.schema(name))
                continue
            if not tables:
                continue
            scoped = Schema.memory_schema()
            view.register_schema(name, scoped)
            for table in tables:
                qualified = _qualified(name, table)
                if explain and (name, table) in self._views:
                    replanned[(name, table)] = scoped
                elif bounded and (name, table) in self._range_slots:
                    scoped.register_table(table, self._range_view(name, table))
                else:
                    scoped.register_table(table, self.base.table_provider(qualified))
        if replanned:
            self._register_explainable_views(ctx, replanned)
        return ctx

    def _register_explainable_views(
        self, ctx: SessionContext, views: dict[tuple[str, str], Schema]
    ) -> None:
        """Plan each view's SQL again in ``ctx`` (which holds only visible tables), views
        over views included; a view that does not plan there reads something hidden and is
        left out, so an EXPLAIN naming it does not plan either."""
        pending = dict(views)
        while pending:
            done = []
            for (schema, table), scoped in pending.items():
                try:
                    provider = ctx.sql(self._views[(schema, table)]).into_view()
                except Exception:  # reads a hidden table, or a view not registered yet
                    continue
                scoped.register_table(table, provider)
                done.append((schema, table))
            if not done:
                return
            for key in done:
                del pending[key]

    def tables(self) -> list[tuple[str, str]]:
        """(schema, table) of every table and view in the catalog."""
        base = self.base.catalog(self.catalog_name)
        return sorted((s, t) for s in base.schema_names() for t in base.schema(s).names())

    def schema_names(self) -> set[str]:
        """Schemas of the catalog (including DataFusion's ``information_schema``)."""
        names: set[str] = self.base.catalog(self.catalog_name).schema_names()
        return names

    def range_values(self, bounds: tuple[datetime, datetime]) -> dict[str, pa.Scalar]:
        """Values binding every range view of a bounded context to ``bounds``, each typed like
        its time column (none when no table has a time column)."""
        values = {}
        for i, kind in self._range_slots.values():
            values[f"{_RANGE_PLACEHOLDER_PREFIX}{i}_begin"] = _timestamp(bounds[0], kind)
            values[f"{_RANGE_PLACEHOLDER_PREFIX}{i}_end"] = _timestamp(bounds[1], kind)
        return values

    def _range_view(self, schema: str, table: str) -> Any:
        """``schema.table`` filtered to a range bound later (see :meth:`range_values`)."""
        slot = self._range_slots[(schema, table)][0]
        time = quote_name(self._time_columns[(schema, table)])
        placeholder = f"${_RANGE_PLACEHOLDER_PREFIX}{slot}"
        return self.base.sql(
            f"SELECT * FROM {_qualified(schema, table)} "
            f"WHERE {time} >= {placeholder}_begin AND {time} <= {placeholder}_end"
        ).into_view()


def _qualified(schema: str, table: str) -> str:
    return f"{quote_name(schema)}.{quote_name(table)}"


def _allowed(visible: Visibility, schema: str, table: str) -> bool:
    return visible is None or (schema, table) in visible


def _timestamp(value: datetime, kind: pa.DataType) -> pa.Scalar:
    """``value`` (aware, UTC) as a literal of the time column's type."""
    if kind.tz is None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return pa.scalar(value, kind)
