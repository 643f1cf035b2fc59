"""Parameter rows as clients bind them, and the parameters last bound to each handle.

Clients name parameter columns every which way: ADBC's DB-API ``"0"``, ``"1"``, ...; ADBC's
low-level bind, JDBC and others ``p``, ``param_0`` or a column's name. :func:`parameter_row`
turns the bound row into one whose columns are named after the statement's placeholders (the
engine binds by those names): ``$1``, ``$2``, ... bind by column order whatever the names
(the i-th column binds the i-th field of the parameter schema); ``$name`` placeholders bind by
name when every one of them names a column, by column order otherwise. Dense (or sparse)
union columns, the spec's parameter schema form that flightsql-dbapi sends, become the
value's own child type.

:class:`LastBound` serves clients that ignore the handle DoPut returns (flightsql-dbapi
0.2.2, altertable) and execute the handle they bound: the server remembers, per principal,
the row last bound to a handle. Only the replica that received the DoPut knows it; behind a
load balancer the returned handle, which carries the row, is the way that works.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import pyarrow as pa

from flightsql_srv.errors import InvalidArgument

__all__ = ["parameter_row", "plain_value", "LastBound"]


def parameter_row(params: pa.RecordBatch, placeholders: list[str]) -> pa.RecordBatch:
    """The one-row ``params`` with one column per placeholder, named after it (without
    ``$``), in the order of ``placeholders`` (see :func:`flightsql_srv.sqltext.placeholders`).

    Raises:
        InvalidArgument: the batch does not have one row, or one column per placeholder.
    """
    if params.num_rows != 1:
        raise InvalidArgument(
            f"a prepared query binds exactly one row of parameters, got {params.num_rows}"
        )
    if len(params.schema) != len(placeholders):
        raise InvalidArgument(
            f"the query has {len(placeholders)} parameter(s) but {len(params.schema)} "
            "value(s) were bound"
        )
    columns = [name.lstrip("$") for name in params.schema.names]
    named = [p for p in placeholders if not p.isdigit()]
    by_name = bool(named) and len(set(columns)) == len(columns) and all(p in columns for p in named)
    if by_name:
        # Names take their columns; numbered placeholders take the rest, in order.
        rest = iter(i for i, c in enumerate(columns) if c not in named)
        order = [columns.index(p) if p in named else next(rest) for p in placeholders]
    else:
        order = list(range(len(placeholders)))
    if not order:
        return params.select([])  # keeps its one row
    arrays = [_plain_column(params.column(i)) for i in order]
    return pa.RecordBatch.from_arrays(arrays, names=placeholders)


def plain_value(value: pa.Scalar) -> pa.Scalar:
    """A union scalar's own value (null when it holds none); any other scalar as it is."""
    if isinstance(value, pa.UnionScalar):
        inner = value.value
        return pa.scalar(None) if inner is None else plain_value(inner)
    return value


def _plain_column(column: pa.Array) -> pa.Array:
    """A one-row column without union types: the row's value in its child's type."""
    if not pa.types.is_union(column.type):
        return column
    value = plain_value(column[0])
    if not value.is_valid:
        return pa.nulls(1, value.type)
    try:
        return pa.array([value], value.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.array([value.as_py()], value.type)


class LastBound:
    """The parameter row last bound to each prepared-statement handle, per principal.

    Entries expire ``ttl`` seconds after they were bound; binding again replaces the entry.
    Least recently bound entries go first when a principal has more than
    ``per_principal`` entries, or when all of them together exceed ``max_entries`` or
    ``max_bytes`` (a handle holds its SQL, so it counts too).
    """

    def __init__(
        self,
        ttl: float = 3600.0,
        max_entries: int = 4096,
        max_bytes: int = 64 * 1024 * 1024,
        per_principal: int = 256,
    ) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._per_principal = per_principal
        #: (principal, handle) -> (expires, row, size), oldest first.
        self._entries: OrderedDict[tuple[str, bytes], tuple[float, pa.RecordBatch, int]] = (
            OrderedDict()
        )
        self._counts: dict[str, int] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def remember(self, principal: str, handle: bytes, row: pa.RecordBatch) -> None:
        """Keep ``row`` as the parameters last bound to ``handle`` by ``principal``."""
        size = len(handle) + row.get_total_buffer_size()
        if size > self._max_bytes:
            return
        key = (principal, handle)
        now = time.monotonic()
        with self._lock:
            self._drop(key)
            self._entries[key] = (now + self._ttl, row, size)
            self._counts[principal] = self._counts.get(principal, 0) + 1
            self._bytes += size
            while self._entries and next(iter(self._entries.values()))[0] < now:
                self._drop(next(iter(self._entries)))
            if self._counts[principal] > self._per_principal:
                self._drop(next(k for k in self._entries if k[0] == principal))
            while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
                self._drop(next(iter(self._entries)))

    def recall(self, principal: str, handle: bytes) -> pa.RecordBatch | None:
        """The row last bound to ``handle`` by ``principal``, if still kept."""
        with self._lock:
            entry = self._entries.get((principal, handle))
            if entry is None:
                return None
            if entry[0] < time.monotonic():
                self._drop((principal, handle))
                return None
            return entry[1]

    def forget(self, principal: str, handle: bytes) -> None:
        """Drop what was bound to ``handle`` (the statement was closed)."""
        with self._lock:
            self._drop((principal, handle))

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _drop(self, key: tuple[str, bytes]) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._bytes -= entry[2]
        remaining = self._counts[key[0]] - 1
        if remaining:
            self._counts[key[0]] = remaining
        else:
            del self._counts[key[0]]
