"""Batch sizing, slicing and byte counting."""

from __future__ import annotations

import pyarrow as pa

from flightsql_srv.batches import MAX_MESSAGE_BYTES, batch_rows_for, byte_size, split


def _batch(rows: int, text: int = 100) -> pa.RecordBatch:
    return pa.record_batch(
        {"id": pa.array(range(rows), pa.int64()), "s": pa.array(["x" * text] * rows)}
    )


def test_byte_size_counts_a_small_batch_by_its_buffers() -> None:
    batch = _batch(1000)
    assert batch.nbytes <= byte_size(batch) <= batch.nbytes + 64  # whole buffers


def test_byte_size_counts_a_slice_of_a_large_batch_by_its_own_range() -> None:
    big = _batch(100_000)  # ~10 MB of strings
    part = big.slice(0, 1000)
    assert part.get_total_buffer_size() > MAX_MESSAGE_BYTES  # its parent's buffers
    assert byte_size(part) == part.nbytes < MAX_MESSAGE_BYTES


def test_split_keeps_small_batches_and_slices_large_ones() -> None:
    small = _batch(100)
    assert list(split(small)) == [small]
    big = _batch(100_000)
    parts = list(split(big))
    assert len(parts) > 1
    assert sum(p.num_rows for p in parts) == big.num_rows
    assert all(p.nbytes <= MAX_MESSAGE_BYTES for p in parts)
    assert pa.Table.from_batches(parts).equals(pa.Table.from_batches([big]))


def test_batch_rows_follow_the_row_width() -> None:
    narrow = pa.schema([("a", pa.int64())])
    wide = pa.schema([(f"s{i}", pa.string()) for i in range(50)])
    assert batch_rows_for(narrow) == 65536
    assert batch_rows_for(wide) < batch_rows_for(narrow)
    assert batch_rows_for(wide) * 50 * 36 <= 2 << 20
