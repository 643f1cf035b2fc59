"""Result types every client family decodes.

DataFusion produces view types, dictionaries and microsecond timestamps; ADBC copes, but the
Grafana datasource (arrow-go v12) and older JDBC/arrow-js readers do not. Results therefore
leave as: timestamps in nanoseconds (zone kept), ``utf8``/``binary`` (not view, not large),
dictionaries decoded, recursively inside nested types. The conversion is a lazy C++ cast of
the Arrow stream, so no Python runs per batch.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["portable_type", "portable_schema", "portable_reader"]


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


def portable_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with every field converted by :func:`portable_type`."""
    return pa.schema([_portable_field(f) for f in schema], metadata=schema.metadata)


def portable_reader(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """Wrap ``reader`` so it yields :func:`portable_schema` batches (no-op when already so)."""
    target = portable_schema(reader.schema)
    return reader if target.equals(reader.schema) else reader.cast(target)
