"""GetXdbcTypeInfo: the SQL types DataFusion accepts, described the ODBC/JDBC way."""

from __future__ import annotations

from typing import Any, NamedTuple

import pyarrow as pa

from flightsql_srv.protocol import sql_pb2

__all__ = ["XDBC_SCHEMA", "xdbc_type_info"]

XDBC_SCHEMA = pa.schema(
    [
        pa.field("type_name", pa.string(), nullable=False),
        pa.field("data_type", pa.int32(), nullable=False),
        pa.field("column_size", pa.int32()),
        pa.field("literal_prefix", pa.string()),
        pa.field("literal_suffix", pa.string()),
        pa.field("create_params", pa.list_(pa.field("item", pa.string(), nullable=False))),
        pa.field("nullable", pa.int32(), nullable=False),
        pa.field("case_sensitive", pa.bool_(), nullable=False),
        pa.field("searchable", pa.int32(), nullable=False),
        pa.field("unsigned_attribute", pa.bool_()),
        pa.field("fixed_prec_scale", pa.bool_(), nullable=False),
        pa.field("auto_increment", pa.bool_()),
        pa.field("local_type_name", pa.string()),
        pa.field("minimum_scale", pa.int32()),
        pa.field("maximum_scale", pa.int32()),
        pa.field("sql_data_type", pa.int32(), nullable=False),
        pa.field("datetime_subcode", pa.int32()),
        pa.field("num_prec_radix", pa.int32()),
        pa.field("interval_precision", pa.int32()),
    ]
)


class _Type(NamedTuple):
    name: str
    data_type: int
    column_size: int | None = None
    prefix: str | None = None
    suffix: str | None = None
    create_params: list[str] | None = None
    case_sensitive: bool = False
    unsigned: bool | None = None
    fixed_prec_scale: bool = False
    min_scale: int | None = None
    max_scale: int | None = None
    sql_data_type: int | None = None
    subcode: int | None = None
    radix: int | None = None


_S = sql_pb2
_TYPES = [
    _Type("BOOLEAN", _S.XDBC_BIT, 1),
    _Type("TINYINT", _S.XDBC_TINYINT, 3, unsigned=False, radix=10),
    _Type("SMALLINT", _S.XDBC_SMALLINT, 5, unsigned=False, radix=10),
    _Type("INTEGER", _S.XDBC_INTEGER, 10, unsigned=False, radix=10),
    _Type("BIGINT", _S.XDBC_BIGINT, 19, unsigned=False, radix=10),
    _Type("REAL", _S.XDBC_REAL, 24, unsigned=False, radix=2),
    _Type("DOUBLE", _S.XDBC_DOUBLE, 53, unsigned=False, radix=2),
    _Type(
        "DECIMAL",
        _S.XDBC_DECIMAL,
        38,
        create_params=["precision", "scale"],
        unsigned=False,
        fixed_prec_scale=True,
        min_scale=0,
        max_scale=38,
        radix=10,
    ),
    _Type("VARCHAR", _S.XDBC_VARCHAR, None, "'", "'", ["length"], case_sensitive=True),
    _Type("CHAR", _S.XDBC_CHAR, None, "'", "'", ["length"], case_sensitive=True),
    _Type("BYTEA", _S.XDBC_VARBINARY, None, "X'", "'"),
    _Type(
        "DATE",
        _S.XDBC_DATE,
        10,
        "DATE '",
        "'",
        sql_data_type=_S.XDBC_DATETIME,
        subcode=_S.XDBC_SUBCODE_DATE,
    ),
    _Type(
        "TIME",
        _S.XDBC_TIME,
        18,
        "TIME '",
        "'",
        sql_data_type=_S.XDBC_DATETIME,
        subcode=_S.XDBC_SUBCODE_TIME,
    ),
    _Type(
        "TIMESTAMP",
        _S.XDBC_TIMESTAMP,
        29,
        "TIMESTAMP '",
        "'",
        sql_data_type=_S.XDBC_DATETIME,
        subcode=_S.XDBC_SUBCODE_TIMESTAMP,
    ),
    _Type("INTERVAL", _S.XDBC_INTERVAL, None, "INTERVAL '", "'", sql_data_type=_S.XDBC_INTERVAL),
]


def xdbc_type_info(data_type: int | None = None) -> pa.Table:
    """One row per type, ordered by data type then name; only ``data_type`` when given."""
    types = sorted(
        (t for t in _TYPES if data_type is None or t.data_type == data_type),
        key=lambda t: (t.data_type, t.name),
    )
    rows: list[dict[str, Any]] = [
        {
            "type_name": t.name,
            "data_type": t.data_type,
            "column_size": t.column_size,
            "literal_prefix": t.prefix,
            "literal_suffix": t.suffix,
            "create_params": t.create_params,
            "nullable": _S.NULLABILITY_NULLABLE,
            "case_sensitive": t.case_sensitive,
            "searchable": _S.SEARCHABLE_FULL,
            "unsigned_attribute": t.unsigned,
            "fixed_prec_scale": t.fixed_prec_scale,
            "auto_increment": False,
            "local_type_name": t.name,
            "minimum_scale": t.min_scale,
            "maximum_scale": t.max_scale,
            "sql_data_type": t.sql_data_type if t.sql_data_type is not None else t.data_type,
            "datetime_subcode": t.subcode,
            "num_prec_radix": t.radix,
            "interval_precision": None,
        }
        for t in types
    ]
    return pa.Table.from_pylist(rows, schema=XDBC_SCHEMA)
