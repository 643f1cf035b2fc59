"""The declarative table catalog: ``catalog/*.toml``, one file per schema.

A file ``sales.toml`` declares schema ``sales`` (or the name given by a top-level ``schema``
key) and its tables under ``[tables.<name>]``. Each table has exactly one of:

- ``source`` + ``format``: files on disk (a file, a glob, or a directory, optionally
  hive-partitioned with typed ``partition_columns``); relative paths are relative to the file;
  or an object-store URL (``s3://``, ``gs://``, ``az://``, ``abfss://``, ``https://``) read
  through the file's ``[stores.<name>]`` settings (see :mod:`flightsql_srv.stores`);
  ``format = "delta"`` reads a Delta Lake table (see :mod:`flightsql_srv.delta`);
- ``sql``: a view over other tables;
- ``generator``: a built-in generated dataset (the embedded demo).

A parquet table may declare ``sort_by = ["time", "host desc"]``: the order every file's rows
are already in (DataFusion trusts it to skip sorts and to prune, so it must be true).

Loading validates everything and fails with the file, table and reason. Registering puts the
tables into a DataFusion catalog; a remote table that cannot be read at start-up (store
unreachable, credentials missing, bucket empty) does not stop the server: it is left out and
reported as a :class:`CatalogProblem`.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from datafusion import SessionContext, col
from datafusion.catalog import Schema
from datafusion.expr import SortExpr

from flightsql_srv import delta, demo, stores
from flightsql_srv.stores import StoreBinding, StoreConfigError, StoreDecl

__all__ = [
    "CatalogError",
    "CatalogProblem",
    "TableDecl",
    "SchemaDecl",
    "load_catalog",
    "register_catalog",
    "prepare_context",
]

log = logging.getLogger("flightsql_srv.catalog")

FORMATS = {"parquet", "csv", "json", "ndjson", "arrow", "ipc", "avro", "delta"}
_EXTENSIONS = {
    "parquet": ".parquet",
    "csv": ".csv",
    "json": ".json",
    "ndjson": ".ndjson",
    "arrow": ".arrow",
    "ipc": ".arrow",
    "avro": ".avro",
}
#: Format options each format accepts, with their expected Python type.
_FORMAT_OPTIONS: dict[str, dict[str, type]] = {
    "parquet": {"file_extension": str, "parquet_pruning": bool, "skip_metadata": bool},
    "csv": {
        "file_extension": str,
        "has_header": bool,
        "delimiter": str,
        "schema_infer_max_records": int,
        "file_compression_type": str,
    },
    "json": {"file_extension": str, "schema_infer_max_records": int, "file_compression_type": str},
    "arrow": {"file_extension": str},
    "avro": {"file_extension": str},
}
_FORMAT_OPTIONS["ndjson"] = _FORMAT_OPTIONS["json"]
_FORMAT_OPTIONS["ipc"] = _FORMAT_OPTIONS["arrow"]
_TABLE_KEYS = {
    "source",
    "format",
    "sql",
    "generator",
    "time_column",
    "description",
    "partition_columns",
    "options",
    "store",
    "sort_by",
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: One ``sort_by`` entry: a column name, optionally followed by ``asc`` or ``desc``.
_SORT_KEY = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)(?:\s+(asc|desc))?\s*$", re.IGNORECASE)
#: Formats whose register call takes a ``file_sort_order``.
_SORTABLE_FORMATS = {"parquet"}


class CatalogError(Exception):
    """A catalog declaration is invalid; the message names the file and table."""


@dataclass(frozen=True)
class CatalogProblem:
    """A declared table that could not be registered at start-up (it is not served).

    Only remote sources (object stores, remote Delta tables) and the views that read them
    end up here; local declaration errors raise :class:`CatalogError` instead.
    """

    file: Path
    table: str
    reason: str
    schema: str = ""
    store: str = ""

    def __str__(self) -> str:
        store = f" (store '{self.store}')" if self.store else ""
        return f"{self.file}: table '{self.table}'{store}: {self.reason}"


@dataclass(frozen=True)
class TableDecl:
    """One declared table (or view)."""

    schema: str
    name: str
    file: Path
    source: str | None = None
    format: str | None = None
    sql: str | None = None
    generator: str | None = None
    time_column: str | None = None
    description: str = ""
    partition_columns: tuple[tuple[str, pa.DataType], ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    #: The object store of a remote ``source``; None for local files.
    store: StoreBinding | None = None
    #: The declared order of each file's rows: (column, ascending) pairs.
    sort_by: tuple[tuple[str, bool], ...] = ()

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def is_remote(self) -> bool:
        return self.store is not None

    @property
    def is_view(self) -> bool:
        return self.sql is not None


@dataclass(frozen=True)
class SchemaDecl:
    """One catalog file: a schema and its tables."""

    name: str
    file: Path
    description: str = ""
    tables: tuple[TableDecl, ...] = ()
    #: The file's ``[stores.<name>]`` sections.
    stores: Mapping[str, StoreDecl] = field(default_factory=dict)


def load_catalog(directory: Path) -> list[SchemaDecl]:
    """Read and validate every ``*.toml`` in ``directory``, sorted by file name."""
    if not directory.is_dir():
        raise CatalogError(f"catalog directory {directory} does not exist")
    schemas: dict[str, SchemaDecl] = {}
    for path in sorted(directory.glob("*.toml")):
        decl = _load_schema_file(path)
        if decl.name in schemas:
            raise CatalogError(
                f"{path}: schema '{decl.name}' is already declared by {schemas[decl.name].file}"
            )
        schemas[decl.name] = decl
    _check_store_conflicts(list(schemas.values()))
    return list(schemas.values())


def _check_store_conflicts(schemas: list[SchemaDecl]) -> None:
    """DataFusion keeps one store per ``scheme://bucket``: two tables reading one bucket
    through different settings cannot both work."""
    seen: dict[str, TableDecl] = {}
    for table in (t for s in schemas for t in s.tables if t.store is not None):
        assert table.store is not None
        if table.format == "delta":
            continue  # deltalake builds its own store per table
        first = seen.setdefault(table.store.url, table)
        assert first.store is not None
        if (first.store.store.type, first.store.store.settings) != (
            table.store.store.type,
            table.store.store.settings,
        ):
            raise CatalogError(
                f"{table.file}: table '{table.name}': {table.store.url} is read through store "
                f"'{table.store.store.label}' here and store '{first.store.store.label}' with "
                f"other settings by table '{first.name}' in {first.file}; one bucket needs one "
                "set of store settings"
            )


def _load_schema_file(path: Path) -> SchemaDecl:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"schema", "description", "tables", "stores"}
    if unknown:
        raise CatalogError(
            f"{path}: unknown top-level key(s) {sorted(unknown)}; "
            "expected schema, description, [stores.<name>] and [tables.<name>] sections"
        )
    name = data.get("schema", path.stem)
    if not isinstance(name, str) or not _NAME.match(name):
        raise CatalogError(f"{path}: schema name {name!r} must be a plain SQL identifier")
    tables_raw = data.get("tables", {})
    if not isinstance(tables_raw, dict):
        raise CatalogError(f"{path}: 'tables' must be a table of [tables.<name>] sections")
    try:
        file_stores = stores.parse_stores(path, data.get("stores", {}))
        tables = tuple(_table(path, name, t, raw, file_stores) for t, raw in tables_raw.items())
    except StoreConfigError as exc:
        raise CatalogError(str(exc)) from None
    return SchemaDecl(name, path, str(data.get("description", "")), tables, file_stores)


def _table(
    path: Path, schema: str, name: str, raw: Any, file_stores: Mapping[str, StoreDecl]
) -> TableDecl:
    where = f"{path}: table '{name}'"
    if not _NAME.match(name):
        raise CatalogError(f"{where}: the name must be a plain SQL identifier")
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: expected a [tables.{name}] section")
    unknown = set(raw) - _TABLE_KEYS
    if unknown:
        raise CatalogError(f"{where}: unknown key(s) {sorted(unknown)}")
    for key in ("source", "format", "sql", "generator", "time_column", "description", "store"):
        if key in raw and not isinstance(raw[key], str):
            raise CatalogError(f"{where}: '{key}' must be a string")
    kinds = [k for k in ("source", "sql", "generator") if k in raw]
    if len(kinds) != 1:
        raise CatalogError(f"{where}: give exactly one of 'source', 'sql' or 'generator'")
    decl = TableDecl(
        schema=schema,
        name=name,
        file=path,
        sql=raw.get("sql"),
        generator=raw.get("generator"),
        time_column=raw.get("time_column"),
        description=raw.get("description", ""),
    )
    if decl.generator is not None and decl.generator not in demo.GENERATORS:
        known = ", ".join(sorted(demo.GENERATORS))
        raise CatalogError(f"{where}: unknown generator {decl.generator!r} (known: {known})")
    if "source" not in raw:
        if set(raw) & {"format", "partition_columns", "options", "store", "sort_by"}:
            raise CatalogError(
                f"{where}: format, partition_columns, options, store and sort_by need a 'source'"
            )
        return decl
    fmt = raw.get("format")
    if fmt not in FORMATS:
        raise CatalogError(f"{where}: 'format' must be one of {sorted(FORMATS)}, got {fmt!r}")
    return _with_source(decl, path, where, fmt, raw, file_stores)


def _with_source(
    decl: TableDecl,
    path: Path,
    where: str,
    fmt: str,
    raw: dict[str, Any],
    file_stores: Mapping[str, StoreDecl],
) -> TableDecl:
    source = raw["source"]
    binding = None
    if stores.is_remote(source):
        binding = stores.bind_source(where, source, raw.get("store"), file_stores, path)
        source = _remote_source(source, fmt)
    elif "store" in raw:
        raise CatalogError(f"{where}: 'store' is for object-store URLs; {source!r} is local")
    else:
        source = _source(path, where, source, fmt)
    if fmt == "delta":
        if "partition_columns" in raw:
            raise CatalogError(
                f"{where}: partition_columns are not used with delta (the table log has them)"
            )
        if not delta.available():
            raise CatalogError(
                f"{where}: format 'delta' needs the deltalake package "
                "(pip install 'flightsql-srv[delta]')"
            )
    fields = dict(decl.__dict__)
    fields.update(
        format=fmt,
        source=source,
        partition_columns=_partition_columns(where, fmt, raw.get("partition_columns", {})),
        options=_options(where, fmt, raw.get("options", {})),
        store=binding,
        sort_by=_sort_by(where, fmt, raw.get("sort_by")),
    )
    return TableDecl(**fields)


def _sort_by(where: str, fmt: str, raw: Any) -> tuple[tuple[str, bool], ...]:
    """``sort_by = ["time", "host desc"]`` as (column, ascending) pairs."""
    if raw is None:
        return ()
    if fmt not in _SORTABLE_FORMATS:
        raise CatalogError(
            f"{where}: sort_by is only supported for {', '.join(sorted(_SORTABLE_FORMATS))} "
            f"sources, not {fmt}"
        )
    if not isinstance(raw, list) or not raw or not all(isinstance(k, str) for k in raw):
        raise CatalogError(
            f'{where}: sort_by must be a non-empty list of column names like ["time", "host desc"]'
        )
    keys: list[tuple[str, bool]] = []
    for entry in raw:
        match = _SORT_KEY.match(entry)
        if match is None:
            raise CatalogError(
                f"{where}: sort_by entry {entry!r} must be a column name, optionally followed "
                "by asc or desc"
            )
        column = match.group(1)
        if any(column == seen for seen, _ in keys):
            raise CatalogError(f"{where}: sort_by names column '{column}' twice")
        keys.append((column, (match.group(2) or "asc").lower() == "asc"))
    return tuple(keys)


def _remote_source(source: str, fmt: str) -> str:
    """A URL as DataFusion reads it: a last segment without an extension (and no glob) is
    a directory, so it gets its trailing ``/``."""
    if fmt == "delta":
        return source.rstrip("/")
    last = source.rstrip("/").rsplit("/", 1)[-1]
    if source.endswith("/") or any(ch in source for ch in "*?[") or "." in last:
        return source
    return source + "/"


def _source(path: Path, where: str, source: str, fmt: str) -> str:
    if source.startswith("file://"):
        source = source[len("file://") :]
    resolved = Path(source) if Path(source).is_absolute() else path.parent / source
    if fmt == "delta":
        if not (resolved / "_delta_log").is_dir():
            raise CatalogError(
                f"{where}: {resolved} is not a Delta table (it has no _delta_log directory)"
            )
        return str(resolved)
    text = str(resolved)
    if any(ch in source for ch in "*?["):
        if not resolved.parent.is_dir():
            raise CatalogError(f"{where}: the directory of glob {text} does not exist")
        return text
    if not resolved.exists():
        raise CatalogError(f"{where}: source {text} does not exist")
    return text + "/" if resolved.is_dir() else text


def _partition_columns(where: str, fmt: str, raw: Any) -> tuple[tuple[str, pa.DataType], ...]:
    if not isinstance(raw, dict):
        raise CatalogError(f'{where}: partition_columns must be a table like {{ year = "int32" }}')
    if raw and fmt == "csv":
        raise CatalogError(f"{where}: partition_columns are not supported for csv sources")
    columns = []
    for column, type_name in raw.items():
        try:
            columns.append((column, pa.type_for_alias(str(type_name))))
        except ValueError:
            raise CatalogError(
                f"{where}: partition column '{column}' has unknown type {type_name!r} "
                "(use an Arrow type name such as string, int32, date32)"
            ) from None
    return tuple(columns)


def _options(where: str, fmt: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: options must be a table")
    if fmt == "delta":
        return _delta_options(where, raw)
    allowed = _FORMAT_OPTIONS[fmt]
    for key, value in raw.items():
        if key not in allowed:
            raise CatalogError(
                f"{where}: option '{key}' is not valid for {fmt} (valid: {sorted(allowed)})"
            )
        if not isinstance(value, allowed[key]) or (allowed[key] is int and isinstance(value, bool)):
            raise CatalogError(f"{where}: option '{key}' must be {allowed[key].__name__}")
    if "delimiter" in raw and len(raw["delimiter"]) != 1:
        raise CatalogError(f"{where}: option 'delimiter' must be one character")
    return dict(raw)


def _delta_options(where: str, raw: dict[str, Any]) -> dict[str, Any]:
    """``version = N`` or ``timestamp = "RFC 3339"`` (a TOML date-time works too)."""
    unknown = set(raw) - {"version", "timestamp"}
    if unknown:
        raise CatalogError(
            f"{where}: option '{sorted(unknown)[0]}' is not valid for delta "
            "(valid: ['timestamp', 'version'])"
        )
    if "version" in raw and "timestamp" in raw:
        raise CatalogError(f"{where}: options 'version' and 'timestamp' exclude each other")
    options: dict[str, Any] = {}
    if "version" in raw:
        version = raw["version"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise CatalogError(f"{where}: option 'version' must be an int >= 0")
        options["version"] = version
    if "timestamp" in raw:
        value = raw["timestamp"]
        try:
            stamp = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        except (TypeError, ValueError):
            stamp = None
        if stamp is None or stamp.tzinfo is None:
            raise CatalogError(
                f"{where}: option 'timestamp' must be an RFC 3339 date-time with an offset, "
                f'like "2024-05-01T12:00:00Z"; got {value!r}'
            )
        options["timestamp"] = stamp
    return options


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
    return {b.key: reason for b, reason in stores.register_object_stores(ctx, bindings)}


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
        ctx.register_record_batches(name, demo.GENERATORS[table.generator]())
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
            storage_options=stores.storage_options(table.store) if table.store else None,
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
