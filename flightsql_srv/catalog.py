"""The declarative table catalog: ``catalog/*.toml``, one file per schema.

A file ``sales.toml`` declares schema ``sales`` (or the name given by a top-level ``schema``
key) and its tables under ``[tables.<name>]``. Each table has exactly one of:

- ``source`` + ``format``: files on disk (a file, a glob, or a directory, optionally
  hive-partitioned with typed ``partition_columns``); relative paths are relative to the file;
- ``sql``: a view over other tables;
- ``generator``: a built-in generated dataset (the embedded demo).

Loading validates everything and fails with the file, table and reason; registering puts
the tables into a DataFusion catalog.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from datafusion import SessionContext
from datafusion.catalog import Schema

from flightsql_srv import demo

__all__ = ["CatalogError", "TableDecl", "SchemaDecl", "load_catalog", "register_catalog"]

FORMATS = {"parquet", "csv", "json", "ndjson", "arrow", "ipc", "avro"}
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
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


class CatalogError(Exception):
    """A catalog declaration is invalid; the message names the file and table."""


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

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

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
    return list(schemas.values())


def _load_schema_file(path: Path) -> SchemaDecl:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"schema", "description", "tables"}
    if unknown:
        raise CatalogError(
            f"{path}: unknown top-level key(s) {sorted(unknown)}; "
            "expected schema, description and [tables.<name>] sections"
        )
    name = data.get("schema", path.stem)
    if not isinstance(name, str) or not _NAME.match(name):
        raise CatalogError(f"{path}: schema name {name!r} must be a plain SQL identifier")
    tables_raw = data.get("tables", {})
    if not isinstance(tables_raw, dict):
        raise CatalogError(f"{path}: 'tables' must be a table of [tables.<name>] sections")
    tables = tuple(_table(path, name, t, raw) for t, raw in tables_raw.items())
    return SchemaDecl(name, path, str(data.get("description", "")), tables)


def _table(path: Path, schema: str, name: str, raw: Any) -> TableDecl:
    where = f"{path}: table '{name}'"
    if not _NAME.match(name):
        raise CatalogError(f"{where}: the name must be a plain SQL identifier")
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: expected a [tables.{name}] section")
    unknown = set(raw) - _TABLE_KEYS
    if unknown:
        raise CatalogError(f"{where}: unknown key(s) {sorted(unknown)}")
    for key in ("source", "format", "sql", "generator", "time_column", "description"):
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
        if set(raw) & {"format", "partition_columns", "options"}:
            raise CatalogError(f"{where}: format, partition_columns and options need a 'source'")
        return decl
    fmt = raw.get("format")
    if fmt not in FORMATS:
        raise CatalogError(f"{where}: 'format' must be one of {sorted(FORMATS)}, got {fmt!r}")
    return _with_source(decl, path, where, fmt, raw)


def _with_source(
    decl: TableDecl, path: Path, where: str, fmt: str, raw: dict[str, Any]
) -> TableDecl:
    fields = dict(decl.__dict__)
    fields.update(
        format=fmt,
        source=_source(path, where, raw["source"]),
        partition_columns=_partition_columns(where, fmt, raw.get("partition_columns", {})),
        options=_options(where, fmt, raw.get("options", {})),
    )
    return TableDecl(**fields)


def _source(path: Path, where: str, source: str) -> str:
    if source.startswith("file://"):
        source = source[len("file://") :]
    elif _REMOTE.match(source):
        scheme = source.split("://", 1)[0]
        raise CatalogError(
            f"{where}: source scheme '{scheme}://' is not supported by this version; "
            "use a local file, glob or directory"
        )
    resolved = Path(source) if Path(source).is_absolute() else path.parent / source
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


def register_catalog(ctx: SessionContext, catalog_name: str, schemas: list[SchemaDecl]) -> None:
    """Create every schema and register its tables, then its views, in ``ctx``.

    Raises:
        CatalogError: a source cannot be read, a view does not plan, or a ``time_column``
            is missing or not a timestamp.
    """
    catalog = ctx.catalog(catalog_name)
    for schema in schemas:
        if schema.name not in catalog.schema_names():
            catalog.register_schema(schema.name, Schema.memory_schema())
    tables = [t for s in schemas for t in s.tables]
    for table in sorted(tables, key=lambda t: t.is_view):  # views last: they read tables
        try:
            _register(ctx, table)
        except CatalogError:
            raise
        except Exception as exc:
            raise CatalogError(f"{table.file}: table '{table.name}': {exc}") from None
        _check_time_column(ctx, table)


def _register(ctx: SessionContext, table: TableDecl) -> None:
    name = table.qualified_name
    if table.generator is not None:
        ctx.register_record_batches(name, demo.GENERATORS[table.generator]())
    elif table.sql is not None:
        ctx.register_view(name, ctx.sql(table.sql))
    else:
        assert table.source is not None and table.format is not None
        extension = _EXTENSIONS[table.format]
        if not table.source.endswith("/") and not any(c in table.source for c in "*?["):
            extension = Path(table.source).suffix  # a single file is read whatever its name
        kwargs: dict[str, Any] = {"file_extension": extension, **table.options}
        if table.partition_columns:
            kwargs["table_partition_cols"] = list(table.partition_columns)
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


def _check_time_column(ctx: SessionContext, table: TableDecl) -> None:
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
