"""GetSqlInfo: what this server is and which SQL it speaks, as the spec's dense union.

Function lists (ids 509-512) come from the running DataFusion session's
``information_schema.routines``, so they always match the engine that answers queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import datafusion
import pyarrow as pa
from datafusion import SessionContext

from flightsql_srv import __version__
from flightsql_srv.engine import MAX_SQL_BYTES
from flightsql_srv.protocol import sql_pb2

__all__ = ["SqlInfoValue", "sql_info_values", "sql_info_table", "SQL_INFO_SCHEMA"]

# Union children, in the order and with the type codes the spec fixes.
_STRING, _BOOL, _BIGINT, _INT32, _STRING_LIST, _MAP = range(6)
_CHILD_TYPES = [
    pa.field("string_value", pa.string()),
    pa.field("bool_value", pa.bool_()),
    pa.field("bigint_value", pa.int64()),
    pa.field("int32_bitmask", pa.int32()),
    pa.field("string_list", pa.list_(pa.field("item", pa.string()))),
    pa.field(
        "int32_to_int32_list_map",
        pa.map_(pa.int32(), pa.list_(pa.field("item", pa.int32()))),
    ),
]
SQL_INFO_SCHEMA = pa.schema(
    [
        pa.field("info_name", pa.uint32(), nullable=False),
        pa.field("value", pa.dense_union(_CHILD_TYPES), nullable=False),
    ]
)

#: (union child, python value)
SqlInfoValue = tuple[int, Any]

# SQL keywords DataFusion's parser accepts beyond SQL-92's reserved words (for autocomplete).
_KEYWORDS = sorted(
    """ANALYZE ARRAY ASC BETWEEN BY CASE CAST COPY CREATE CROSS CUBE DATE_BIN DESC DESCRIBE
    DISTINCT EXCEPT EXCLUDE EXISTS EXPLAIN EXTERNAL FILTER FOLLOWING FULL GROUPING HAVING
    ILIKE INTERSECT INTERVAL JOIN LATERAL LEFT LIMIT NATURAL NULLS OFFSET OVER PARTITION
    PRECEDING QUALIFY RANGE RECURSIVE REPLACE RIGHT ROLLUP ROWS SEMI ANTI SHOW SIMILAR STRUCT
    TABLESAMPLE UNBOUNDED UNION UNNEST USING VALUES WINDOW WITH""".split()
)
_DATETIME_WORDS = {"date", "time", "timestamp", "now", "epoch", "unixtime", "datepart", "datetrunc"}
_NUMERIC_TYPES = ("Int", "UInt", "Float", "Decimal")
_STRING_TYPES = {"String", "LargeString", "StringView", "Utf8", "LargeUtf8", "Utf8View"}


def _bits(*flags: int) -> int:
    """An int32 bitmask with the given enum values' bits set."""
    return sum(1 << f for f in flags)


def _classify(name: str, data_types: set[str], params: set[str]) -> int:
    """509 numeric, 510 string, 511 system, 512 datetime, by name and signature."""
    temporal = ("Timestamp", "Date", "Time", "Interval", "Duration")
    if set(name.split("_")) & _DATETIME_WORDS or any(t.startswith(temporal) for t in data_types):
        return sql_pb2.SQL_DATETIME_FUNCTIONS
    if data_types & _STRING_TYPES or params & _STRING_TYPES:
        return sql_pb2.SQL_STRING_FUNCTIONS
    if data_types and all(t.startswith(_NUMERIC_TYPES) for t in data_types):
        return sql_pb2.SQL_NUMERIC_FUNCTIONS
    return sql_pb2.SQL_SYSTEM_FUNCTIONS


def _function_lists(ctx: SessionContext) -> dict[int, list[str]]:
    rows = ctx.sql(
        "SELECT r.routine_name AS name, r.data_type AS out, p.data_type AS arg "
        "FROM information_schema.routines r LEFT JOIN information_schema.parameters p "
        "ON p.specific_name = r.specific_name AND p.parameter_mode = 'IN' "
        "WHERE r.function_type = 'SCALAR'"
    ).to_pydict()
    outs: dict[str, set[str]] = {}
    args: dict[str, set[str]] = {}
    for name, out, arg in zip(rows["name"], rows["out"], rows["arg"], strict=True):
        outs.setdefault(name, set()).update([out] if out else [])
        args.setdefault(name, set()).update([arg] if arg else [])
    lists: dict[int, list[str]] = {
        info: []
        for info in (
            sql_pb2.SQL_NUMERIC_FUNCTIONS,
            sql_pb2.SQL_STRING_FUNCTIONS,
            sql_pb2.SQL_SYSTEM_FUNCTIONS,
            sql_pb2.SQL_DATETIME_FUNCTIONS,
        )
    }
    for name in sorted(outs):
        lists[_classify(name, outs[name], args[name])].append(name)
    return lists


def sql_info_values(ctx: SessionContext) -> dict[int, SqlInfoValue]:
    """Every SqlInfo id this server answers, with its union child and value."""
    s = sql_pb2
    # Exactly 17 ids sort below 508: the influxdata Grafana datasource reads the keyword and
    # function lists (508-512) from rows 17-21 by position. Ids left out here (bulk
    # ingestion, transaction timeout) default to "unsupported" for clients.
    values: dict[int, SqlInfoValue] = {
        s.FLIGHT_SQL_SERVER_NAME: (_STRING, "flightsql-srv"),
        s.FLIGHT_SQL_SERVER_VERSION: (_STRING, __version__),
        s.FLIGHT_SQL_SERVER_ARROW_VERSION: (_STRING, pa.__version__),
        s.FLIGHT_SQL_SERVER_READ_ONLY: (_BOOL, True),
        s.FLIGHT_SQL_SERVER_SQL: (_BOOL, True),
        s.FLIGHT_SQL_SERVER_SUBSTRAIT: (_BOOL, True),
        s.FLIGHT_SQL_SERVER_TRANSACTION: (_INT32, s.SQL_SUPPORTED_TRANSACTION_NONE),
        s.FLIGHT_SQL_SERVER_CANCEL: (_BOOL, True),
        s.FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT: (_INT32, 0),
        s.SQL_DDL_CATALOG: (_BOOL, False),
        s.SQL_DDL_SCHEMA: (_BOOL, False),
        s.SQL_DDL_TABLE: (_BOOL, False),
        s.SQL_IDENTIFIER_CASE: (_INT32, s.SQL_CASE_SENSITIVITY_LOWERCASE),
        s.SQL_IDENTIFIER_QUOTE_CHAR: (_STRING, '"'),
        s.SQL_QUOTED_IDENTIFIER_CASE: (_INT32, s.SQL_CASE_SENSITIVITY_CASE_INSENSITIVE),
        s.SQL_ALL_TABLES_ARE_SELECTABLE: (_BOOL, True),
        s.SQL_NULL_ORDERING: (_INT32, s.SQL_NULLS_SORTED_HIGH),
        s.SQL_KEYWORDS: (_STRING_LIST, _KEYWORDS),
        s.SQL_SEARCH_STRING_ESCAPE: (_STRING, "\\"),
        s.SQL_EXTRA_NAME_CHARACTERS: (_STRING, ""),
        s.SQL_SUPPORTS_COLUMN_ALIASING: (_BOOL, True),
        s.SQL_NULL_PLUS_NULL_IS_NULL: (_BOOL, True),
        s.SQL_SCHEMA_TERM: (_STRING, "schema"),
        s.SQL_CATALOG_TERM: (_STRING, "catalog"),
        s.SQL_PROCEDURE_TERM: (_STRING, "procedure"),
        s.SQL_SUPPORTS_LIKE_ESCAPE_CLAUSE: (_BOOL, True),
        s.SQL_SUPPORTS_NON_NULLABLE_COLUMNS: (_BOOL, True),
        s.SQL_SUPPORTS_TABLE_CORRELATION_NAMES: (_BOOL, True),
        s.SQL_SUPPORTS_EXPRESSIONS_IN_ORDER_BY: (_BOOL, True),
        s.SQL_SUPPORTS_ORDER_BY_UNRELATED: (_BOOL, True),
        s.SQL_SUPPORTED_GROUP_BY: (
            _INT32,
            _bits(s.SQL_GROUP_BY_UNRELATED, s.SQL_GROUP_BY_BEYOND_SELECT),
        ),
        s.SQL_SELECT_FOR_UPDATE_SUPPORTED: (_BOOL, False),
        s.SQL_STORED_PROCEDURES_SUPPORTED: (_BOOL, False),
        s.SQL_CORRELATED_SUBQUERIES_SUPPORTED: (_BOOL, True),
        s.SQL_SUPPORTED_UNIONS: (_INT32, _bits(s.SQL_UNION, s.SQL_UNION_ALL)),
        s.SQL_TRANSACTIONS_SUPPORTED: (_BOOL, False),
        s.SQL_BATCH_UPDATES_SUPPORTED: (_BOOL, False),
        s.SQL_SAVEPOINTS_SUPPORTED: (_BOOL, False),
        s.SQL_NAMED_PARAMETERS_SUPPORTED: (_BOOL, True),
        s.SQL_LOCATORS_UPDATE_COPY: (_BOOL, False),
        s.SQL_STORED_FUNCTIONS_USING_CALL_SYNTAX_SUPPORTED: (_BOOL, False),
        s.SQL_SUPPORTS_DIFFERENT_TABLE_CORRELATION_NAMES: (_BOOL, False),
        s.SQL_SUPPORTED_GRAMMAR: (_INT32, _bits(s.SQL_MINIMUM_GRAMMAR, s.SQL_CORE_GRAMMAR)),
        s.SQL_ANSI92_SUPPORTED_LEVEL: (_INT32, _bits(s.ANSI92_ENTRY_SQL)),
        s.SQL_SUPPORTS_INTEGRITY_ENHANCEMENT_FACILITY: (_BOOL, False),
        s.SQL_OUTER_JOINS_SUPPORT_LEVEL: (_INT32, s.SQL_FULL_OUTER_JOINS),
        s.SQL_CATALOG_AT_START: (_BOOL, True),
        s.SQL_SCHEMAS_SUPPORTED_ACTIONS: (_INT32, 0),
        s.SQL_CATALOGS_SUPPORTED_ACTIONS: (_INT32, 0),
        s.SQL_SUPPORTED_POSITIONED_COMMANDS: (_INT32, 0),
        s.SQL_SUPPORTED_SUBQUERIES: (
            _INT32,
            _bits(
                s.SQL_SUBQUERIES_IN_COMPARISONS,
                s.SQL_SUBQUERIES_IN_EXISTS,
                s.SQL_SUBQUERIES_IN_INS,
            ),
        ),
        s.SQL_MAX_STATEMENT_LENGTH: (_BIGINT, MAX_SQL_BYTES),
        s.SQL_MAX_ROW_SIZE_INCLUDES_BLOBS: (_BOOL, True),
        s.SQL_DEFAULT_TRANSACTION_ISOLATION: (_INT32, 0),
        s.SQL_SUPPORTED_TRANSACTIONS_ISOLATION_LEVELS: (_INT32, 0),
        s.SQL_DATA_DEFINITION_CAUSES_TRANSACTION_COMMIT: (_BOOL, False),
        s.SQL_DATA_DEFINITIONS_IN_TRANSACTIONS_IGNORED: (_BOOL, False),
        s.SQL_SUPPORTED_RESULT_SET_TYPES: (_INT32, _bits(s.SQL_RESULT_SET_TYPE_FORWARD_ONLY)),
    }
    # Limits DataFusion does not have are reported as 0, the spec's "no limit / unknown".
    for info in range(s.SQL_MAX_BINARY_LITERAL_LENGTH, s.SQL_MAX_USERNAME_LENGTH + 1):
        if info != s.SQL_MAX_ROW_SIZE_INCLUDES_BLOBS:
            values.setdefault(info, (_BIGINT, 0))
    for info, names in _function_lists(ctx).items():
        values[info] = (_STRING_LIST, names)
    return values


def sql_info_table(values: Mapping[int, SqlInfoValue], ids: Iterable[int]) -> pa.Table:
    """The GetSqlInfo result for ``ids`` (all known ids when empty), sorted by id."""
    wanted = sorted(set(ids)) or sorted(values)
    rows = [(i, values[i]) for i in wanted if i in values]
    children: list[list[Any]] = [[] for _ in _CHILD_TYPES]
    type_ids, offsets = [], []
    for _, (child, value) in rows:
        type_ids.append(child)
        offsets.append(len(children[child]))
        children[child].append(value)
    arrays = [pa.array(children[i], f.type) for i, f in enumerate(_CHILD_TYPES)]
    union = pa.UnionArray.from_dense(
        pa.array(type_ids, pa.int8()),
        pa.array(offsets, pa.int32()),
        arrays,
        [f.name for f in _CHILD_TYPES],
        list(range(len(_CHILD_TYPES))),
    )
    names = pa.array([i for i, _ in rows], pa.uint32())
    return pa.Table.from_arrays([names, union], schema=SQL_INFO_SCHEMA)


# DataFusion's version is part of what clients may want to see in server logs.
ENGINE_VERSION = datafusion.__version__
