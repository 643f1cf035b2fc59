"""How big result batches are: sized from the row width, sliced when still too large.

Large batches make fewer, cheaper FlightData messages; gRPC clients refuse messages over
their limit (the Grafana datasource 4 MiB, ADBC 16 MiB). Rows per batch are estimated from
the schema so a batch is about 2 MiB; a batch that still comes out larger (long strings) is
cut into zero-copy slices.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

__all__ = ["MAX_MESSAGE_BYTES", "batch_rows_for", "byte_size", "split"]

#: Largest record batch sent as one FlightData message (sliced above this).
MAX_MESSAGE_BYTES = 3 << 20
_TARGET_BATCH_BYTES = 2 << 20
_BATCH_ROWS = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
_VARIABLE_WIDTH_BYTES = 32  # assumed average size of one string/binary value


def batch_rows_for(schema: pa.Schema) -> int:
    """Rows per batch so that one batch of ``schema`` is about 2 MiB (by estimate)."""
    width = sum(_value_bytes(f.type) for f in schema) or 1
    fitting = _TARGET_BATCH_BYTES // width
    return max([r for r in _BATCH_ROWS if r <= fitting], default=_BATCH_ROWS[0])


def _value_bytes(t: pa.DataType) -> int:
    if pa.types.is_dictionary(t):
        return _value_bytes(t.value_type)
    if pa.types.is_nested(t):
        return 4 * _VARIABLE_WIDTH_BYTES
    try:
        width: int = t.bit_width
    except ValueError:  # variable width: strings, binary
        return _VARIABLE_WIDTH_BYTES + 4
    return max(width // 8, 1)


def byte_size(batch: pa.RecordBatch) -> int:
    """The Arrow bytes of ``batch``, cheaply.

    The buffers' total costs nothing but counts whole buffers, so a slice of a large batch
    would count its parent; the exact size of the referenced ranges (``nbytes``) walks every
    buffer, so it is only taken when the total is large.
    """
    total: int = batch.get_total_buffer_size()
    if total <= MAX_MESSAGE_BYTES:
        return total
    exact: int = batch.nbytes
    return exact


def split(batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
    """``batch``, or zero-copy slices of it each at most :data:`MAX_MESSAGE_BYTES`."""
    size = byte_size(batch)
    if size <= MAX_MESSAGE_BYTES or batch.num_rows <= 1:
        yield batch
        return
    step = max(1, batch.num_rows * MAX_MESSAGE_BYTES // size)
    for offset in range(0, batch.num_rows, step):
        yield batch.slice(offset, step)
