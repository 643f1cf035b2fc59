"""Generated tables (the embedded demo) as Parquet files.

The front writes them once; every engine worker then reads the same files, shared through
the page cache, instead of each holding a copy of the rows in memory.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from flightsql_srv.catalog import SchemaDecl, TableDecl
from flightsql_srv.demo import GENERATORS

__all__ = ["materialize"]


#: Row groups small enough that a panel's time range prunes most of a file.
_ROW_GROUP_ROWS = 256 * 1024
#: Files written by this process, by (generator, minute): reused within the minute, so
#: several services in one process (tests) and quick reloads do not generate again.
_written: dict[tuple[str, int], Path] = {}
_lock = threading.Lock()
_root: Path | None = None


def _directory() -> Path:
    global _root
    if _root is None:
        _root = Path(tempfile.mkdtemp(prefix=f"flightsql-srv-demo-{os.getpid()}-"))
        atexit.register(shutil.rmtree, _root, True)
    return _root


def _write(generator: str) -> Path:
    """Parquet files (one per time partition) of ``generator``'s rows as of this minute."""
    minute = int(time.time()) // 60 * 60
    with _lock:
        path = _written.get((generator, minute))
        if path is not None and path.exists():
            return path
        path = _directory() / f"{generator}-{minute}"
        path.mkdir()
        for i, batches in enumerate(GENERATORS[generator](minute)):
            table = pa.Table.from_batches(batches)
            pq.write_table(table, path / f"part-{i}.parquet", row_group_size=_ROW_GROUP_ROWS)
        for key in [k for k in _written if k[0] == generator]:
            del _written[key]  # older minutes: workers may still read them, left until exit
        _written[(generator, minute)] = path
        return path


def materialize(schemas: list[SchemaDecl]) -> list[SchemaDecl]:
    """The catalog with every generated table written to Parquet files and declared as them."""
    result = []
    for schema in schemas:
        tables = tuple(_as_parquet(t) if t.generator else t for t in schema.tables)
        result.append(replace(schema, tables=tables))
    return result


def _as_parquet(table: TableDecl) -> TableDecl:
    assert table.generator is not None
    path = _write(table.generator)
    sort = ((table.time_column, True),) if table.time_column else ()
    return replace(
        table, generator=None, source=f"{path}/", format="parquet", sort_by=sort, options={}
    )
