"""Result types every client family decodes.

DataFusion produces view types, dictionaries and microsecond timestamps; ADBC copes, but the
Grafana datasource (arrow-go v12) and older JDBC/arrow-js readers do not. Results therefore
leave as: timestamps in nanoseconds (zone kept), ``utf8``/``binary`` (not view, not large),
dictionaries decoded, recursively inside nested types. The conversion is a lazy C++ cast of
the Arrow stream, so no Python runs per batch.

The Grafana profile goes further, because the datasource decodes only utf8, integers,
floats, bool, timestamps and durations: dates become ``timestamp[ns]``, decimals ``float64``,
times and intervals text, and nested or binary values JSON/hex text. Those last few need
Python per value, so they are converted only for Grafana and only in the columns that have them.

Result schemas as FlightInfo, GetSchema and prepared statements describe them, and GetTables'
``table_schema``, also carry the Flight SQL column metadata (``ARROW:FLIGHT:SQL:TYPE_NAME``
and the rest, see :func:`with_column_metadata`): ADBC reports it as ``xdbc_type_name`` and the
like, and SQLAlchemy dialects reflect column types from it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

import pyarrow as pa

__all__ = [
    "portable_type",
    "portable_schema",
    "portable_reader",
    "grafana_schema",
    "grafana_reader",
    "with_column_metadata",
    "COLUMN_METADATA_PREFIX",
]


def portable_type(t: pa.DataType) -> pa.DataType:
    """The type ``t`` is sent as."""
    if pa.types.is_string_view(t) or pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_binary_view(t) or pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_dictionary(t):
        return portable_type(t.value_type)
    if pa.types.is_timestamp(t):
        return pa.timestamp("ns", t.tz)
    if pa.types.is_map(t):
        return pa.map_(portable_type(t.key_type), _portable_field(t.item_field), t.keys_sorted)
    if pa.types.is_fixed_size_list(t):
        return pa.list_(_portable_field(t.value_field), t.list_size)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return pa.list_(_portable_field(t.value_field))
    if pa.types.is_large_list_view(t):
        return pa.list_(_portable_field(t.value_field))
    if pa.types.is_struct(t):
        return pa.struct([_portable_field(t.field(i)) for i in range(t.num_fields)])
    return t


def _portable_field(f: pa.Field) -> pa.Field:
    return f.with_type(portable_type(f.type))


@lru_cache(maxsize=256)  # result schemas repeat; converting one walks every field
def portable_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with every field converted by :func:`portable_type`."""
    return pa.schema([_portable_field(f) for f in schema], metadata=schema.metadata)


def portable_reader(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """Wrap ``reader`` so it yields :func:`portable_schema` batches (no-op when already so)."""
    target = portable_schema(reader.schema)
    return reader if target.equals(reader.schema) else reader.cast(target)


# -- Grafana ------------------------------------------------------------------------------

_Convert = Callable[[pa.Array], pa.Array]


def _json_text(array: pa.Array) -> pa.Array:
    return pa.array(
        [None if v is None else json.dumps(v, default=str) for v in array.to_pylist()],
        pa.string(),
    )


def _hex_text(array: pa.Array) -> pa.Array:
    return pa.array([None if v is None else v.hex() for v in array.to_pylist()], pa.string())


def _interval(value: Any) -> str:
    """A month-day-nano interval as text, e.g. ``1 mons 2 days 3.5 secs``."""
    months, days, nanos = value
    parts = [f"{months} mons" if months else "", f"{days} days" if days else ""]
    parts.append(f"{nanos / 1e9:g} secs" if nanos or not (months or days) else "")
    return " ".join(p for p in parts if p)


def _interval_text(array: pa.Array) -> pa.Array:
    return pa.array([None if v is None else _interval(v) for v in array.to_pylist()], pa.string())


def _grafana_rule(t: pa.DataType) -> tuple[pa.DataType, _Convert | None]:
    """(type sent to Grafana, Python converter or None when a C++ cast does it)."""
    if pa.types.is_dictionary(t):
        return _grafana_rule(t.value_type)
    if pa.types.is_date(t):
        return pa.timestamp("ns"), None
    if pa.types.is_decimal(t):
        return pa.float64(), None
    if pa.types.is_float16(t):
        return pa.float32(), None
    if pa.types.is_time(t) or pa.types.is_null(t):
        return pa.string(), None
    if pa.types.is_interval(t):
        return pa.string(), _interval_text
    if pa.types.is_nested(t):
        return pa.string(), _json_text
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.string(), _hex_text
    if pa.types.is_fixed_size_binary(t):
        return pa.string(), _hex_text
    return portable_type(t), None


@lru_cache(maxsize=256)
def grafana_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` as the Grafana datasource receives it."""
    return pa.schema(
        [f.with_type(_grafana_rule(f.type)[0]) for f in schema], metadata=schema.metadata
    )


def grafana_reader(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """Wrap ``reader`` so it yields :func:`grafana_schema` batches."""
    target = grafana_schema(reader.schema)
    converters = {i: _grafana_rule(f.type)[1] for i, f in enumerate(reader.schema)}
    python = {i: c for i, c in converters.items() if c is not None}
    if not python:
        return reader if target.equals(reader.schema) else reader.cast(target)
    return pa.RecordBatchReader.from_batches(target, _convert(reader, target, python))


def _convert(
    reader: pa.RecordBatchReader, target: pa.Schema, python: dict[int, _Convert]
) -> Iterator[pa.RecordBatch]:
    for batch in reader:
        columns: list[Any] = []
        for i, column in enumerate(batch.columns):
            converter = python.get(i)
            converted = converter(column) if converter else column.cast(target.field(i).type)
            columns.append(converted)
        yield pa.RecordBatch.from_arrays(columns, schema=target)


# -- Flight SQL column metadata -----------------------------------------------------------

COLUMN_METADATA_PREFIX = "ARROW:FLIGHT:SQL:"

_INTEGERS = {
    pa.int8(): ("TINYINT", 3),
    pa.int16(): ("SMALLINT", 5),
    pa.int32(): ("INTEGER", 10),
    pa.int64(): ("BIGINT", 19),
    pa.uint8(): ("TINYINT UNSIGNED", 3),
    pa.uint16(): ("SMALLINT UNSIGNED", 5),
    pa.uint32(): ("INT UNSIGNED", 10),
    pa.uint64(): ("BIGINT UNSIGNED", 20),
}
_FRACTION_DIGITS = {"s": 0, "ms": 3, "us": 6, "ns": 9}


def _sql_type(t: pa.DataType) -> tuple[str, int | None, int | None] | None:
    """(type name as :mod:`flightsql_srv.xdbc` lists it, precision, scale) of a result
    column type, or None when there is no SQL name for it."""
    if t in _INTEGERS:
        name, digits = _INTEGERS[t]
        return name, digits, 0
    if pa.types.is_boolean(t):
        return "BOOLEAN", 1, None
    if pa.types.is_float32(t):
        return "REAL", 24, None
    if pa.types.is_float64(t):
        return "DOUBLE", 53, None
    if pa.types.is_decimal(t):
        return "DECIMAL", t.precision, t.scale
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "VARCHAR", None, None
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "BYTEA", None, None
    if pa.types.is_fixed_size_binary(t):
        return "BYTEA", t.byte_width, None
    if pa.types.is_date(t):
        return "DATE", 10, None
    if pa.types.is_time(t):
        digits = _FRACTION_DIGITS[t.unit]
        return "TIME", 8 + (digits and digits + 1), digits
    if pa.types.is_timestamp(t):
        digits = _FRACTION_DIGITS[t.unit]
        return "TIMESTAMP", 19 + (digits and digits + 1), digits
    if pa.types.is_interval(t):
        return "INTERVAL", None, None
    if pa.types.is_dictionary(t):
        return _sql_type(t.value_type)
    if pa.types.is_null(t):
        return "NULL", None, None
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return "ARRAY", None, None
    if pa.types.is_struct(t):
        return "STRUCT", None, None
    if pa.types.is_map(t):
        return "MAP", None, None
    return None


def _column_metadata(field: pa.Field, known: tuple[tuple[str, str], ...]) -> pa.Field:
    values = dict(known)
    sql = _sql_type(field.type)
    if sql is not None:
        name, precision, scale = sql
        values["TYPE_NAME"] = name
        if precision is not None:
            values["PRECISION"] = str(precision)
        if scale is not None:
            values["SCALE"] = str(scale)
        values["IS_CASE_SENSITIVE"] = "1" if name == "VARCHAR" else "0"
    values |= {"IS_AUTO_INCREMENT": "0", "IS_READ_ONLY": "1", "IS_SEARCHABLE": "1"}
    metadata = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
    metadata |= {COLUMN_METADATA_PREFIX + k: v for k, v in values.items()}
    return field.with_metadata(metadata)


@lru_cache(maxsize=256)
def with_column_metadata(
    schema: pa.Schema,
    catalog: str | None = None,
    db_schema: str | None = None,
    table: str | None = None,
) -> pa.Schema:
    """``schema`` with the Flight SQL column metadata on each top-level field: type name,
    precision and scale where the type has them, case sensitivity, and "0"/"1" for
    auto-increment, read-only (every column: the server is read-only) and searchable.
    Catalog, schema and table names only when given (a result column's origin is not
    tracked). Metadata the field already has is kept."""
    known = tuple(
        (key, value)
        for key, value in (
            ("CATALOG_NAME", catalog),
            ("SCHEMA_NAME", db_schema),
            ("TABLE_NAME", table),
        )
        if value is not None
    )
    return pa.schema([_column_metadata(f, known) for f in schema], metadata=schema.metadata)
