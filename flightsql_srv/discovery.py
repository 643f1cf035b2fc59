"""Metadata commands: catalogs, schemas, tables, table types, keys, XDBC type info.

Answers come from the live DataFusion catalog, with the exact result schemas (names, types
and nullability) of the Flight SQL specification; ADBC compares them field by field.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from google.protobuf.message import Message

from flightsql_srv.engine import Engine, Visibility
from flightsql_srv.errors import InvalidArgument
from flightsql_srv.protocol import sql_pb2
from flightsql_srv.results import portable_schema, with_column_metadata
from flightsql_srv.sessions import SessionOptions
from flightsql_srv.sqlinfo import SqlInfoValue, sql_info_table
from flightsql_srv.sqltext import quote_name
from flightsql_srv.xdbc import XDBC_SCHEMA, xdbc_type_info

__all__ = ["Discovery", "LikePattern", "MAX_PATTERN_CHARS", "METADATA_COMMANDS", "check_filters"]


def _f(name: str, type_: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


_UTF8 = pa.string()
CATALOGS_SCHEMA = pa.schema([_f("catalog_name", _UTF8, False)])
DB_SCHEMAS_SCHEMA = pa.schema([_f("catalog_name", _UTF8), _f("db_schema_name", _UTF8, False)])
TABLES_SCHEMA = pa.schema(
    [
        _f("catalog_name", _UTF8),
        _f("db_schema_name", _UTF8),
        _f("table_name", _UTF8, False),
        _f("table_type", _UTF8, False),
    ]
)
TABLES_WITH_SCHEMA = TABLES_SCHEMA.append(_f("table_schema", pa.binary(), False))
TABLE_TYPES_SCHEMA = pa.schema([_f("table_type", _UTF8, False)])
PRIMARY_KEYS_SCHEMA = pa.schema(
    [
        _f("catalog_name", _UTF8),
        _f("db_schema_name", _UTF8),
        _f("table_name", _UTF8, False),
        _f("column_name", _UTF8, False),
        _f("key_sequence", pa.int32(), False),
        _f("key_name", _UTF8),
    ]
)
FOREIGN_KEYS_SCHEMA = pa.schema(
    [
        _f("pk_catalog_name", _UTF8),
        _f("pk_db_schema_name", _UTF8),
        _f("pk_table_name", _UTF8, False),
        _f("pk_column_name", _UTF8, False),
        _f("fk_catalog_name", _UTF8),
        _f("fk_db_schema_name", _UTF8),
        _f("fk_table_name", _UTF8, False),
        _f("fk_column_name", _UTF8, False),
        _f("key_sequence", pa.int32(), False),
        _f("fk_key_name", _UTF8),
        _f("pk_key_name", _UTF8),
        _f("update_rule", pa.uint8(), False),
        _f("delete_rule", pa.uint8(), False),
    ]
)
#: Table types as the Flight SQL spec lists them (JDBC/ODBC names); clients filter on these.
_TABLE_TYPES = ["TABLE", "VIEW"]
#: DataFusion's information_schema type → the type reported.
_REPORTED_TYPE = {"BASE TABLE": "TABLE"}
#: Filter values read as other types: the SQL standard's name, and the Grafana datasource's
#: generic "table" (it sends ["BASE TABLE", "table"]) meaning anything queryable.
_TYPE_ALIASES = {"BASE TABLE": {"TABLE"}, "table": set(_TABLE_TYPES)}
_INFORMATION_SCHEMA = "information_schema"

#: Metadata commands answered by :class:`Discovery` (GetFlightInfo → DoGet).
METADATA_COMMANDS: tuple[type[Message], ...] = (
    sql_pb2.CommandGetCatalogs,
    sql_pb2.CommandGetDbSchemas,
    sql_pb2.CommandGetTables,
    sql_pb2.CommandGetTableTypes,
    sql_pb2.CommandGetSqlInfo,
    sql_pb2.CommandGetXdbcTypeInfo,
    sql_pb2.CommandGetPrimaryKeys,
    sql_pb2.CommandGetExportedKeys,
    sql_pb2.CommandGetImportedKeys,
    sql_pb2.CommandGetCrossReference,
)


class LikePattern:
    """A SQL LIKE pattern (``%``, ``_``, ``\\`` escapes), matched without backtracking.

    A regex built from the pattern backtracks: ``'%' * 200 + 'x'`` held the GIL for ~20 s.
    This matcher is the greedy wildcard algorithm, O(len(pattern) * len(value)) at worst and
    linear on the usual shapes (``abc%``, ``%abc``, exact names).

    Args:
        pattern: the pattern as the client sent it; a trailing lone ``\\`` is literal.
    """

    __slots__ = ("_items",)

    def __init__(self, pattern: str) -> None:
        #: one entry per pattern position: a literal character, _ANY_ONE or _ANY_RUN
        items: list[str | None | bool] = []
        escaped = False
        for ch in pattern:
            if escaped:
                items.append(ch)
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == "%":
                if not items or items[-1] is not _ANY_RUN:  # "%%" is "%"
                    items.append(_ANY_RUN)
            elif ch == "_":
                items.append(_ANY_ONE)
            else:
                items.append(ch)
        if escaped:
            items.append("\\")
        self._items = tuple(items)

    def matches(self, value: str) -> bool:
        """Whether the whole of ``value`` matches the pattern."""
        p = self._items
        n, m = len(value), len(p)
        i = j = 0
        star = -1  # index in p of the last % seen, and where its run ends in value
        mark = 0
        while i < n:
            if j < m and p[j] is not _ANY_RUN and (p[j] is _ANY_ONE or p[j] == value[i]):
                i += 1
                j += 1
            elif j < m and p[j] is _ANY_RUN:
                star, mark = j, i
                j += 1
            elif star >= 0:
                # Let the last % swallow one more character and retry what follows it;
                # earlier %s never need revisiting, so this never goes exponential.
                mark += 1
                i, j = mark, star + 1
            else:
                return False
        while j < m and p[j] is _ANY_RUN:
            j += 1
        return j == m


_ANY_ONE = None
_ANY_RUN = True
#: Longest filter pattern or catalog name accepted; longer ones are refused before matching.
MAX_PATTERN_CHARS = 1024
_FILTER_FIELDS = ("catalog", "db_schema_filter_pattern", "table_name_filter_pattern")


def _matcher(pattern: str | None) -> LikePattern | None:
    return None if pattern is None else LikePattern(pattern)


def _matches(pattern: LikePattern | None, value: str) -> bool:
    return pattern is None or pattern.matches(value)


def check_filters(command: Message) -> None:
    """Refuse a GetDbSchemas/GetTables command whose filters are longer than the limit.

    Raises:
        InvalidArgument: naming the field and the limit.
    """
    for name in _FILTER_FIELDS:
        if name in command.DESCRIPTOR.fields_by_name and command.HasField(name):
            length = len(getattr(command, name))
            if length > MAX_PATTERN_CHARS:
                raise InvalidArgument(
                    f"{name} is {length} characters long; at most {MAX_PATTERN_CHARS} "
                    "are accepted: send a shorter pattern"
                )


def _opt(command: Message, name: str) -> Any:
    """An ``optional`` proto field's value, or None when it was not sent."""
    return getattr(command, name) if command.HasField(name) else None


class Discovery:
    """Builds the result of each metadata command from the engine's catalog.

    Args:
        engine: the engine whose catalog is described.
        sql_info: SqlInfo values (see :mod:`flightsql_srv.sqlinfo`).
        show_information_schema: list DataFusion's ``information_schema`` as a schema.
    """

    def __init__(
        self,
        engine: Engine,
        sql_info: dict[int, SqlInfoValue],
        show_information_schema: bool = False,
    ) -> None:
        self.engine = engine
        self.sql_info = sql_info
        self.show_information_schema = show_information_schema

    def schema(self, command: Message) -> pa.Schema:
        """The result schema of ``command``, known without running it.

        Raises:
            InvalidArgument: a filter pattern is too long (see :func:`check_filters`).
        """
        check_filters(command)
        if isinstance(command, sql_pb2.CommandGetTables):
            return TABLES_WITH_SCHEMA if command.include_schema else TABLES_SCHEMA
        if isinstance(command, sql_pb2.CommandGetSqlInfo):
            return sql_info_table(self.sql_info, command.info).schema
        return {
            sql_pb2.CommandGetCatalogs: CATALOGS_SCHEMA,
            sql_pb2.CommandGetDbSchemas: DB_SCHEMAS_SCHEMA,
            sql_pb2.CommandGetTableTypes: TABLE_TYPES_SCHEMA,
            sql_pb2.CommandGetXdbcTypeInfo: XDBC_SCHEMA,
            sql_pb2.CommandGetPrimaryKeys: PRIMARY_KEYS_SCHEMA,
            sql_pb2.CommandGetExportedKeys: FOREIGN_KEYS_SCHEMA,
            sql_pb2.CommandGetImportedKeys: FOREIGN_KEYS_SCHEMA,
            sql_pb2.CommandGetCrossReference: FOREIGN_KEYS_SCHEMA,
        }[type(command)]

    def table(self, command: Message, visible: Visibility = None) -> pa.Table:
        """The full result of ``command`` for a caller who may read ``visible`` tables."""
        check_filters(command)
        c = sql_pb2
        if isinstance(command, c.CommandGetCatalogs):
            return pa.table({"catalog_name": [self.engine.catalog_name]}, CATALOGS_SCHEMA)
        if isinstance(command, c.CommandGetDbSchemas):
            return self._db_schemas(command, visible)
        if isinstance(command, c.CommandGetTables):
            return self._tables(command, visible)
        if isinstance(command, c.CommandGetTableTypes):
            return pa.table({"table_type": _TABLE_TYPES}, TABLE_TYPES_SCHEMA)
        if isinstance(command, c.CommandGetSqlInfo):
            return sql_info_table(self.sql_info, command.info)
        if isinstance(command, c.CommandGetXdbcTypeInfo):
            return xdbc_type_info(_opt(command, "data_type"))
        # No declared keys: DataFusion tables carry no constraints.
        return self.schema(command).empty_table()

    def _catalog_matches(self, catalog: str | None) -> bool:
        return catalog is None or catalog == self.engine.catalog_name

    def _schema_names(self, visible: Visibility) -> list[str]:
        if visible is not None:  # only schemas where the caller can read something
            return sorted({schema for schema, _ in visible})
        names = self.engine.schema_names()
        if not self.show_information_schema:
            names.discard(_INFORMATION_SCHEMA)
        elif _INFORMATION_SCHEMA not in names:
            names.add(_INFORMATION_SCHEMA)
        return sorted(names)

    def _db_schemas(self, command: Message, visible: Visibility) -> pa.Table:
        names: list[str] = []
        if self._catalog_matches(_opt(command, "catalog")):
            pattern = _matcher(_opt(command, "db_schema_filter_pattern"))
            names = [s for s in self._schema_names(visible) if _matches(pattern, s)]
        return pa.table(
            {"catalog_name": [self.engine.catalog_name] * len(names), "db_schema_name": names},
            DB_SCHEMAS_SCHEMA,
        )

    def table_rows(
        self,
        schema_pattern: str | None = None,
        table_pattern: str | None = None,
        visible: Visibility = None,
    ) -> list[tuple[str, str, str]]:
        """(schema, table, type) of every visible table, ordered by schema then name."""
        listing = (
            self.engine.context(SessionOptions(), 0, visible)
            .sql(
                "SELECT table_schema, table_name, table_type FROM information_schema.tables "
                "WHERE table_catalog = $1",
                param_values={"1": self.engine.catalog_name},
            )
            .to_pydict()
        )
        schemas = set(self._schema_names(visible))
        schema_like, table_like = _matcher(schema_pattern), _matcher(table_pattern)
        rows = [
            (s, t, _REPORTED_TYPE.get(kind, kind))
            for s, t, kind in zip(
                listing["table_schema"], listing["table_name"], listing["table_type"], strict=True
            )
            if s in schemas and _matches(schema_like, s) and _matches(table_like, t)
        ]
        return sorted(rows)

    def _tables(self, command: sql_pb2.CommandGetTables, visible: Visibility) -> pa.Table:
        rows: list[tuple[str, str, str]] = []
        if self._catalog_matches(_opt(command, "catalog")):
            rows = self.table_rows(
                _opt(command, "db_schema_filter_pattern"),
                _opt(command, "table_name_filter_pattern"),
                visible,
            )
        if command.table_types:
            wanted = set(command.table_types)
            for name in command.table_types:
                wanted |= _TYPE_ALIASES.get(name, set())
            rows = [r for r in rows if r[2] in wanted]
        name = _opt(command, "table_name_filter_pattern")
        if name is not None:
            # Exact matches first: a LIKE pattern's "_" also matches other names, and the
            # Grafana datasource's column lookup reads only row 0.
            rows.sort(key=lambda r: r[1] != name)
        columns: dict[str, list[Any]] = {
            "catalog_name": [self.engine.catalog_name] * len(rows),
            "db_schema_name": [r[0] for r in rows],
            "table_name": [r[1] for r in rows],
            "table_type": [r[2] for r in rows],
        }
        if not command.include_schema:
            return pa.table(columns, TABLES_SCHEMA)
        columns["table_schema"] = [
            self.table_schema(s, t).serialize().to_pybytes() for s, t, _ in rows
        ]
        return pa.table(columns, TABLES_WITH_SCHEMA)

    def table_schema(self, schema: str, table: str) -> pa.Schema:
        """The Arrow schema clients get when they select every column of a table."""
        name = f"{quote_name(schema)}.{quote_name(table)}"
        raw = portable_schema(self.engine.ctx.table(name).schema())
        return with_column_metadata(raw, self.engine.catalog_name, schema, table)
