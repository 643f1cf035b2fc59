"""Registering a loaded catalog (see :mod:`flightsql_srv.catalog`) in DataFusion contexts.

A remote table that cannot be read at start-up (store unreachable, credentials missing,
bucket empty) does not stop the server: it is left out and reported as a
:class:`~flightsql_srv.catalog.CatalogProblem`; local tables are checked (``time_column``,
``sort_by``) and a bad one raises :class:`~flightsql_srv.catalog.CatalogError`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
from datafusion import SessionContext, col
from datafusion.catalog import Schema
from datafusion.expr import SortExpr

from flightsql_srv import delta, demo, objectstores
from flightsql_srv.catalog import CatalogError, CatalogProblem, SchemaDecl, TableDecl

__all__ = ["prepare_context", "register_catalog"]

log = logging.getLogger("flightsql_srv.catalog")
#: The file extension a directory or glob source of each format lists.
_EXTENSIONS = {
    "parquet": ".parquet",
    "csv": ".csv",
    "json": ".json",
    "ndjson": ".ndjson",
    "arrow": ".arrow",
    "ipc": ".arrow",
    "avro": ".avro",
}


def prepare_context(ctx: SessionContext, schemas: list[SchemaDecl]) -> None:
    """Make ``ctx`` able to scan the catalog's tables; call it for every context that shares
    them (the base context gets it from :func:`register_catalog`).

    - registers the object stores of the remote tables: DataFusion looks stores up in the
      *executing* context's runtime, so a context sharing the base context's schemas but
      lacking the stores fails with "No suitable object store found";
    - turns off DataFusion's list-files cache (on by default since DataFusion 51, with no
      expiry), so each query lists directories and buckets again and sees new files.
    """
    _prepare(ctx, schemas)


def _prepare(ctx: SessionContext, schemas: list[SchemaDecl]) -> dict[tuple[Any, ...], str]:
    """:func:`prepare_context`; returns why each store that cannot be built failed."""
    ctx.sql("SET datafusion.runtime.list_files_cache_limit = '0'").collect()
    bindings = [
        t.store for s in schemas for t in s.tables if t.store is not None and t.format != "delta"
    ]
    return {b.key: reason for b, reason in objectstores.register_object_stores(ctx, bindings)}


def register_catalog(
    ctx: SessionContext, catalog_name: str, schemas: list[SchemaDecl]
) -> list[CatalogProblem]:
    """Create every schema and register its tables, then its views, in ``ctx``.

    Returns:
        The tables left out because their remote source could not be read (store
        unreachable, credentials missing, nothing at the URL...), each logged as a warning.
        The server serves everything else; health details and metrics can report these.

    Raises:
        CatalogError: a local source cannot be read, a view does not plan (and reads no
            table left out), or a local table's ``time_column`` is missing or not a
            timestamp.
    """
    catalog = ctx.catalog(catalog_name)
    for schema in schemas:
        if schema.name not in catalog.schema_names():
            catalog.register_schema(schema.name, Schema.memory_schema())
    failed_stores = _prepare(ctx, schemas)
    problems: list[CatalogProblem] = []
    tables = [t for s in schemas for t in s.tables]
    for table in sorted(tables, key=lambda t: t.is_view):  # views last: they read tables
        reason = failed_stores.get(table.store.key) if table.store is not None else None
        if reason is None:
            try:
                _register(ctx, table)
            except CatalogError:
                raise
            except Exception as exc:
                reason = _reason(exc)
                if not (table.is_remote or _reads_missing(table, problems)):
                    raise CatalogError(f"{table.file}: table '{table.name}': {reason}") from None
        if reason is None:
            try:
                _check_time_column(ctx, table)
            except CatalogError as exc:
                if not table.is_remote:
                    raise
                ctx.deregister_table(table.qualified_name)  # its data changed shape
                reason = str(exc).split(f"table '{table.name}': ", 1)[-1]
        if reason is not None:
            problems.append(_problem(table, reason))
    return problems


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    text = text.removeprefix("DataFusion error: ")
    text = text.split("\nThis issue was likely caused by", 1)[0].strip()
    if text.endswith("HTTP error: builder error"):  # object_store's words for a refused http://
        text += " (a plain http:// endpoint needs allow_http = true, or AWS_ALLOW_HTTP=true)"
    return text


def _reads_missing(view: TableDecl, problems: list[CatalogProblem]) -> bool:
    """True when the view's SQL names a table that was left out."""
    if view.sql is None:
        return False
    sql = view.sql.lower()
    return any(re.search(rf"\b{re.escape(p.table.lower())}\b", sql) for p in problems)


def _problem(table: TableDecl, reason: str) -> CatalogProblem:
    store = table.store.store.label if table.store is not None else ""
    if table.is_view:
        reason = f"{reason} (the view reads a table that is not available)"
    problem = CatalogProblem(table.file, table.name, reason, table.schema, store)
    log.warning(
        "catalog table unavailable: %s",
        problem,
        extra={
            "fields": {
                "file": str(table.file),
                "schema": table.schema,
                "table": table.name,
                "store": store,
                "source": table.source or "",
                "reason": reason,
            }
        },
    )
    return problem


def _register(ctx: SessionContext, table: TableDecl) -> None:
    name = table.qualified_name
    if table.generator is not None:
        ctx.register_record_batches(name, demo.GENERATORS[table.generator](None))
    elif table.sql is not None:
        ctx.register_view(name, ctx.sql(table.sql))
    elif table.format == "delta":
        assert table.source is not None
        delta.register_delta(
            ctx,
            name,
            table.source,
            version=table.options.get("version"),
            timestamp=table.options.get("timestamp"),
            storage_options=objectstores.storage_options(table.store) if table.store else None,
        )
    else:
        assert table.source is not None and table.format is not None
        extension = _EXTENSIONS[table.format]
        if not table.source.endswith("/") and not any(c in table.source for c in "*?["):
            # a single file is read whatever its name
            extension = Path(table.source.rsplit("/", 1)[-1]).suffix
        kwargs: dict[str, Any] = {"file_extension": extension, **table.options}
        if table.partition_columns:
            kwargs["table_partition_cols"] = list(table.partition_columns)
        if table.sort_by:
            kwargs["file_sort_order"] = [_sort_exprs(table.sort_by)]
        register: Any = {
            "parquet": ctx.register_parquet,
            "csv": ctx.register_csv,
            "json": ctx.register_json,
            "ndjson": ctx.register_json,
            "arrow": ctx.register_arrow,
            "ipc": ctx.register_arrow,
            "avro": ctx.register_avro,
        }[table.format]
        register(name, table.source, **kwargs)


def _sort_exprs(keys: tuple[tuple[str, bool], ...]) -> list[SortExpr]:
    """Nulls sort as DataFusion and Parquet writers put them by default: last ascending,
    first descending."""
    return [col(f'"{c}"').sort(ascending=asc, nulls_first=not asc) for c, asc in keys]


def _check_sort_by(ctx: SessionContext, table: TableDecl) -> None:
    if not table.sort_by:
        return
    names = ctx.table(table.qualified_name).schema().names
    missing = [c for c, _ in table.sort_by if c not in names]
    if missing:
        raise CatalogError(
            f"{table.file}: table '{table.name}': sort_by column '{missing[0]}' is not a column "
            f"(columns: {', '.join(names)})"
        )


def _check_time_column(ctx: SessionContext, table: TableDecl) -> None:
    _check_sort_by(ctx, table)
    if table.time_column is None:
        return
    schema = ctx.table(table.qualified_name).schema()
    where = f"{table.file}: table '{table.name}'"
    if table.time_column not in schema.names:
        raise CatalogError(
            f"{where}: time_column '{table.time_column}' is not a column "
            f"(columns: {', '.join(schema.names)})"
        )
    if not pa.types.is_timestamp(schema.field(table.time_column).type):
        raise CatalogError(
            f"{where}: time_column '{table.time_column}' must be a timestamp, "
            f"it is {schema.field(table.time_column).type}"
        )
