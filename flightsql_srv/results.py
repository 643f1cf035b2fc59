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
