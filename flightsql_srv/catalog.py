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

Loading validates everything and fails with the file, table and reason; registering the
tables in DataFusion is :mod:`flightsql_srv.registration`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from flightsql_srv import delta, demo, stores
from flightsql_srv.stores import StoreBinding, StoreConfigError, StoreDecl

__all__ = [
    "CatalogError",
    "CatalogProblem",
    "TableDecl",
    "SchemaDecl",
    "load_catalog",
]


FORMATS = {"parquet", "csv", "json", "ndjson", "arrow", "ipc", "avro", "delta"}
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
    if fmt is None:
        raise CatalogError(
            f"{where}: a table with a 'source' needs a 'format', e.g. format = \"parquet\" "
            f"(one of {sorted(FORMATS)})"
        )
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
