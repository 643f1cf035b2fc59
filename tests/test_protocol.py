"""Tests for flightsql_srv.protocol: freshness of the generated modules, wire
compatibility with the Apache Arrow Flight SQL spec, and the Any helpers."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import any_pb2, descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from flightsql_srv.protocol import (
    InvalidCommand,
    flight_pb2,
    pack,
    sql_pb2,
    unpack_command,
)
from flightsql_srv.protocol.generate import PROTO_DIR, compiled_files, descriptor_set

F = FieldDescriptor

# ---------------------------------------------------------------------------
# (a) The committed *_pb2 modules match the committed .proto files.
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    work_dir: Path = tmp_path_factory.mktemp("protoc")
    return compiled_files(descriptor_set(PROTO_DIR, work_dir=work_dir))


@pytest.mark.parametrize("module", [sql_pb2, flight_pb2], ids=lambda m: m.__name__)
def test_generated_module_is_fresh(
    module: ModuleType, compiled: dict[str, descriptor_pb2.FileDescriptorProto]
) -> None:
    embedded = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
    assert embedded.name in compiled, (
        f"{embedded.name} has no .proto source; run python -m flightsql_srv.protocol.generate"
    )
    assert compiled[embedded.name] == embedded, (
        f"{module.__name__} is stale against {embedded.name}: "
        "run python -m flightsql_srv.protocol.generate"
    )


def test_every_proto_file_has_a_generated_module(
    compiled: dict[str, descriptor_pb2.FileDescriptorProto],
) -> None:
    generated = {sql_pb2.DESCRIPTOR.name, flight_pb2.DESCRIPTOR.name}
    assert set(compiled) == generated, "run python -m flightsql_srv.protocol.generate"


# ---------------------------------------------------------------------------
# (b) Wire compatibility with apache/arrow format/FlightSql.proto and Flight.proto.
# ---------------------------------------------------------------------------

# (field name, number, type, label) where label is "" (implicit presence),
# "optional" (proto3 optional) or "repeated".
Spec = list[tuple[str, int, int, str]]

SQL_FIELDS: dict[str, Spec] = {
    "CommandGetSqlInfo": [("info", 1, F.TYPE_UINT32, "repeated")],
    "CommandGetXdbcTypeInfo": [("data_type", 1, F.TYPE_INT32, "optional")],
    "CommandGetCatalogs": [],
    "CommandGetDbSchemas": [
        ("catalog", 1, F.TYPE_STRING, "optional"),
        ("db_schema_filter_pattern", 2, F.TYPE_STRING, "optional"),
    ],
    "CommandGetTables": [
        ("catalog", 1, F.TYPE_STRING, "optional"),
        ("db_schema_filter_pattern", 2, F.TYPE_STRING, "optional"),
        ("table_name_filter_pattern", 3, F.TYPE_STRING, "optional"),
        ("table_types", 4, F.TYPE_STRING, "repeated"),
        ("include_schema", 5, F.TYPE_BOOL, ""),
    ],
    "CommandGetTableTypes": [],
    "CommandGetPrimaryKeys": [
        ("catalog", 1, F.TYPE_STRING, "optional"),
        ("db_schema", 2, F.TYPE_STRING, "optional"),
        ("table", 3, F.TYPE_STRING, ""),
    ],
    "CommandGetCrossReference": [
        ("pk_catalog", 1, F.TYPE_STRING, "optional"),
        ("pk_db_schema", 2, F.TYPE_STRING, "optional"),
        ("pk_table", 3, F.TYPE_STRING, ""),
        ("fk_catalog", 4, F.TYPE_STRING, "optional"),
        ("fk_db_schema", 5, F.TYPE_STRING, "optional"),
        ("fk_table", 6, F.TYPE_STRING, ""),
    ],
    "ActionCreatePreparedStatementRequest": [
        ("query", 1, F.TYPE_STRING, ""),
        ("transaction_id", 2, F.TYPE_BYTES, "optional"),
    ],
    "ActionCreatePreparedStatementResult": [
        ("prepared_statement_handle", 1, F.TYPE_BYTES, ""),
        ("dataset_schema", 2, F.TYPE_BYTES, ""),
        ("parameter_schema", 3, F.TYPE_BYTES, ""),
        ("is_update", 4, F.TYPE_BOOL, "optional"),
    ],
    "ActionEndTransactionRequest": [
        ("transaction_id", 1, F.TYPE_BYTES, ""),
        ("action", 2, F.TYPE_ENUM, ""),
    ],
    "CommandStatementQuery": [
        ("query", 1, F.TYPE_STRING, ""),
        ("transaction_id", 2, F.TYPE_BYTES, "optional"),
    ],
    "TicketStatementQuery": [("statement_handle", 1, F.TYPE_BYTES, "")],
    "CommandPreparedStatementQuery": [("prepared_statement_handle", 1, F.TYPE_BYTES, "")],
    "CommandStatementIngest": [
        ("table_definition_options", 1, F.TYPE_MESSAGE, ""),
        ("table", 2, F.TYPE_STRING, ""),
        ("schema", 3, F.TYPE_STRING, "optional"),
        ("catalog", 4, F.TYPE_STRING, "optional"),
        ("temporary", 5, F.TYPE_BOOL, ""),
        ("transaction_id", 6, F.TYPE_BYTES, "optional"),
        ("options", 1000, F.TYPE_MESSAGE, "repeated"),
    ],
    "DoPutUpdateResult": [("record_count", 1, F.TYPE_INT64, "")],
    "DoPutPreparedStatementResult": [("prepared_statement_handle", 1, F.TYPE_BYTES, "optional")],
    "ActionCancelQueryRequest": [("info", 1, F.TYPE_BYTES, "")],
    "ActionCancelQueryResult": [("result", 1, F.TYPE_ENUM, "")],
}

FLIGHT_FIELDS: dict[str, Spec] = {
    "FlightDescriptor": [
        ("type", 1, F.TYPE_ENUM, ""),
        ("cmd", 2, F.TYPE_BYTES, ""),
        ("path", 3, F.TYPE_STRING, "repeated"),
    ],
    "FlightInfo": [
        ("schema", 1, F.TYPE_BYTES, ""),
        ("flight_descriptor", 2, F.TYPE_MESSAGE, ""),
        ("endpoint", 3, F.TYPE_MESSAGE, "repeated"),
        ("total_records", 4, F.TYPE_INT64, ""),
        ("total_bytes", 5, F.TYPE_INT64, ""),
        ("ordered", 6, F.TYPE_BOOL, ""),
        ("app_metadata", 7, F.TYPE_BYTES, ""),
    ],
    "FlightEndpoint": [
        ("ticket", 1, F.TYPE_MESSAGE, ""),
        ("location", 2, F.TYPE_MESSAGE, "repeated"),
        ("expiration_time", 3, F.TYPE_MESSAGE, ""),
        ("app_metadata", 4, F.TYPE_BYTES, ""),
    ],
    "PollInfo": [
        ("info", 1, F.TYPE_MESSAGE, ""),
        ("flight_descriptor", 2, F.TYPE_MESSAGE, ""),
        ("progress", 3, F.TYPE_DOUBLE, "optional"),
        ("expiration_time", 4, F.TYPE_MESSAGE, ""),
    ],
    "Ticket": [("ticket", 1, F.TYPE_BYTES, "")],
    "Location": [("uri", 1, F.TYPE_STRING, "")],
    "CancelFlightInfoRequest": [("info", 1, F.TYPE_MESSAGE, "")],
    "CancelFlightInfoResult": [("status", 1, F.TYPE_ENUM, "")],
    "RenewFlightEndpointRequest": [("endpoint", 1, F.TYPE_MESSAGE, "")],
    "SessionOptionValue": [
        ("string_value", 1, F.TYPE_STRING, ""),
        ("bool_value", 2, F.TYPE_BOOL, ""),
        ("int64_value", 3, F.TYPE_SFIXED64, ""),
        ("double_value", 4, F.TYPE_DOUBLE, ""),
        ("string_list_value", 5, F.TYPE_MESSAGE, ""),
    ],
    "SetSessionOptionsRequest": [("session_options", 1, F.TYPE_MESSAGE, "repeated")],
    "SetSessionOptionsResult": [("errors", 1, F.TYPE_MESSAGE, "repeated")],
    "GetSessionOptionsRequest": [],
    "GetSessionOptionsResult": [("session_options", 1, F.TYPE_MESSAGE, "repeated")],
    "CloseSessionRequest": [],
    "CloseSessionResult": [("status", 1, F.TYPE_ENUM, "")],
}

# Every top-level message and enum of the Flight SQL spec.
SQL_MESSAGES = {
    "CommandGetSqlInfo", "CommandGetXdbcTypeInfo", "CommandGetCatalogs",
    "CommandGetDbSchemas", "CommandGetTables", "CommandGetTableTypes",
    "CommandGetPrimaryKeys", "CommandGetExportedKeys", "CommandGetImportedKeys",
    "CommandGetCrossReference", "ActionCreatePreparedStatementRequest", "SubstraitPlan",
    "ActionCreatePreparedSubstraitPlanRequest", "ActionCreatePreparedStatementResult",
    "ActionClosePreparedStatementRequest", "ActionBeginTransactionRequest",
    "ActionBeginSavepointRequest", "ActionBeginTransactionResult", "ActionBeginSavepointResult",
    "ActionEndTransactionRequest", "ActionEndSavepointRequest", "CommandStatementQuery",
    "CommandStatementSubstraitPlan", "TicketStatementQuery", "CommandPreparedStatementQuery",
    "CommandStatementUpdate", "CommandPreparedStatementUpdate", "CommandStatementIngest",
    "DoPutUpdateResult", "DoPutPreparedStatementResult", "ActionCancelQueryRequest",
    "ActionCancelQueryResult",
}  # fmt: skip
SQL_ENUMS = {
    "SqlInfo", "SqlSupportedTransaction", "SqlSupportedCaseSensitivity", "SqlNullOrdering",
    "SupportedSqlGrammar", "SupportedAnsi92SqlGrammarLevel", "SqlOuterJoinsSupportLevel",
    "SqlSupportedGroupBy", "SqlSupportedElementActions", "SqlSupportedPositionedCommands",
    "SqlSupportedSubqueries", "SqlSupportedUnions", "SqlTransactionIsolationLevel",
    "SqlSupportedTransactions", "SqlSupportedResultSetType", "SqlSupportedResultSetConcurrency",
    "SqlSupportsConvert", "XdbcDataType", "XdbcDatetimeSubcode", "Nullable", "Searchable",
    "UpdateDeleteRules",
}  # fmt: skip


def _label(field: FieldDescriptor) -> str:
    if field.is_repeated:
        return "repeated"
    oneof = field.containing_oneof
    # proto3 `optional` is a synthetic one-field oneof named "_<field>".
    if oneof is not None and oneof.name == f"_{field.name}" and len(oneof.fields) == 1:
        return "optional"
    return ""


def _message(module: ModuleType, name: str) -> Descriptor:
    descriptor: Descriptor = getattr(module, name).DESCRIPTOR
    return descriptor


def _fields(message: Descriptor | Any) -> Spec:
    # Any: the stubs type nested-class DESCRIPTORs as a union with the upb Descriptor.
    return [(f.name, f.number, f.type, _label(f)) for f in message.fields]


def _enum(enum: EnumDescriptor) -> dict[str, int]:
    return {value.name: value.number for value in enum.values}


def test_flight_sql_defines_every_spec_message_and_enum() -> None:
    assert sql_pb2.DESCRIPTOR.package == "arrow.flight.protocol.sql"
    assert set(sql_pb2.DESCRIPTOR.message_types_by_name) == SQL_MESSAGES
    assert set(sql_pb2.DESCRIPTOR.enum_types_by_name) == SQL_ENUMS


@pytest.mark.parametrize("name", sorted(SQL_FIELDS))
def test_flight_sql_fields(name: str) -> None:
    assert _fields(_message(sql_pb2, name)) == SQL_FIELDS[name]


@pytest.mark.parametrize("name", sorted(FLIGHT_FIELDS))
def test_flight_fields(name: str) -> None:
    assert flight_pb2.DESCRIPTOR.package == "arrow.flight.protocol"
    assert _fields(_message(flight_pb2, name)) == FLIGHT_FIELDS[name]


def test_sql_info_values() -> None:
    values = _enum(sql_pb2.SqlInfo.DESCRIPTOR)
    expected = {
        "FLIGHT_SQL_SERVER_NAME": 0,
        "FLIGHT_SQL_SERVER_VERSION": 1,
        "FLIGHT_SQL_SERVER_ARROW_VERSION": 2,
        "FLIGHT_SQL_SERVER_READ_ONLY": 3,
        "FLIGHT_SQL_SERVER_SQL": 4,
        "FLIGHT_SQL_SERVER_SUBSTRAIT": 5,
        "FLIGHT_SQL_SERVER_TRANSACTION": 8,
        "FLIGHT_SQL_SERVER_CANCEL": 9,
        "FLIGHT_SQL_SERVER_BULK_INGESTION": 10,
        "FLIGHT_SQL_SERVER_INGEST_TRANSACTIONS_SUPPORTED": 11,
        "FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT": 100,
        "FLIGHT_SQL_SERVER_TRANSACTION_TIMEOUT": 101,
        "SQL_DDL_CATALOG": 500,
        "SQL_IDENTIFIER_QUOTE_CHAR": 504,
        "SQL_KEYWORDS": 508,
        "SQL_DATETIME_FUNCTIONS": 512,
        "SQL_SUPPORTS_CONVERT": 517,
        "SQL_DB_SCHEMA_NAME_LENGTH": 552,
        "SQL_STORED_FUNCTIONS_USING_CALL_SYNTAX_SUPPORTED": 576,
    }
    assert {name: values[name] for name in expected} == expected
    # Server info is 0-11 and 100-101; syntax info is the contiguous block 500-576.
    assert sorted(values.values()) == [*range(12), 100, 101, *range(500, 577)]


def test_enum_values() -> None:
    assert _enum(sql_pb2.SqlSupportedTransaction.DESCRIPTOR) == {
        "SQL_SUPPORTED_TRANSACTION_NONE": 0,
        "SQL_SUPPORTED_TRANSACTION_TRANSACTION": 1,
        "SQL_SUPPORTED_TRANSACTION_SAVEPOINT": 2,
    }
    assert _enum(sql_pb2.UpdateDeleteRules.DESCRIPTOR) == {
        "CASCADE": 0,
        "RESTRICT": 1,
        "SET_NULL": 2,
        "NO_ACTION": 3,
        "SET_DEFAULT": 4,
    }
    assert _enum(sql_pb2.Nullable.DESCRIPTOR) == {
        "NULLABILITY_NO_NULLS": 0,
        "NULLABILITY_NULLABLE": 1,
        "NULLABILITY_UNKNOWN": 2,
    }
    xdbc = _enum(sql_pb2.XdbcDataType.DESCRIPTOR)
    assert (xdbc["XDBC_VARCHAR"], xdbc["XDBC_TIMESTAMP"], xdbc["XDBC_WVARCHAR"]) == (12, 93, -9)
    subcode = sql_pb2.XdbcDatetimeSubcode
    assert subcode.XDBC_SUBCODE_YEAR == subcode.XDBC_SUBCODE_DATE == 1  # aliases
    assert subcode.XDBC_SUBCODE_INTERVAL_MINUTE_TO_SECOND == 113
    assert len(sql_pb2.SqlSupportsConvert.DESCRIPTOR.values) == 20

    end = sql_pb2.ActionEndTransactionRequest.EndTransaction
    assert (end.END_TRANSACTION_COMMIT, end.END_TRANSACTION_ROLLBACK) == (1, 2)
    options = sql_pb2.CommandStatementIngest.TableDefinitionOptions
    assert _fields(options.DESCRIPTOR) == [
        ("if_not_exist", 1, F.TYPE_ENUM, ""),
        ("if_exists", 2, F.TYPE_ENUM, ""),
    ]
    assert _enum(options.TableExistsOption.DESCRIPTOR) == {
        "TABLE_EXISTS_OPTION_UNSPECIFIED": 0,
        "TABLE_EXISTS_OPTION_FAIL": 1,
        "TABLE_EXISTS_OPTION_APPEND": 2,
        "TABLE_EXISTS_OPTION_REPLACE": 3,
    }
    assert _enum(options.TableNotExistOption.DESCRIPTOR) == {
        "TABLE_NOT_EXIST_OPTION_UNSPECIFIED": 0,
        "TABLE_NOT_EXIST_OPTION_CREATE": 1,
        "TABLE_NOT_EXIST_OPTION_FAIL": 2,
    }
    assert _enum(flight_pb2.CancelStatus.DESCRIPTOR) == {
        "CANCEL_STATUS_UNSPECIFIED": 0,
        "CANCEL_STATUS_CANCELLED": 1,
        "CANCEL_STATUS_CANCELLING": 2,
        "CANCEL_STATUS_NOT_CANCELLABLE": 3,
    }
    assert _enum(flight_pb2.FlightDescriptor.DescriptorType.DESCRIPTOR) == {
        "UNKNOWN": 0,
        "PATH": 1,
        "CMD": 2,
    }
    assert _enum(flight_pb2.SetSessionOptionsResult.ErrorValue.DESCRIPTOR) == {
        "UNSPECIFIED": 0,
        "INVALID_NAME": 1,
        "INVALID_VALUE": 2,
        "ERROR": 3,
    }
    assert _enum(flight_pb2.CloseSessionResult.Status.DESCRIPTOR) == {
        "UNSPECIFIED": 0,
        "CLOSED": 1,
        "CLOSING": 2,
        "NOT_CLOSEABLE": 3,
    }


def test_session_option_value_oneof() -> None:
    descriptor = flight_pb2.SessionOptionValue.DESCRIPTOR
    oneof = descriptor.oneofs_by_name["option_value"]
    assert [(f.name, f.number) for f in oneof.fields] == [
        ("string_value", 1),
        ("bool_value", 2),
        ("int64_value", 3),
        ("double_value", 4),
        ("string_list_value", 5),
    ]
    nested = flight_pb2.SessionOptionValue.StringListValue.DESCRIPTOR
    assert _fields(nested) == [("values", 1, F.TYPE_STRING, "repeated")]


def test_experimental_extension() -> None:
    extension = sql_pb2.DESCRIPTOR.extensions_by_name["experimental"]
    assert (extension.number, extension.type) == (1000, F.TYPE_BOOL)
    assert extension.containing_type is not None
    assert extension.containing_type.full_name == "google.protobuf.MessageOptions"


def test_wire_bytes() -> None:
    # Hand-encoded: field 1 (query) length-delimited, field 2 (transaction_id).
    query = sql_pb2.CommandStatementQuery(query="SELECT 1", transaction_id=b"\x01")
    assert query.SerializeToString() == b"\x0a\x08SELECT 1\x12\x01\x01"
    # sfixed64 is 8 little-endian bytes under tag (3 << 3) | 1.
    value = flight_pb2.SessionOptionValue(int64_value=-2)
    assert value.SerializeToString() == b"\x19" + (-2).to_bytes(8, "little", signed=True)
    result = flight_pb2.CancelFlightInfoResult(status=flight_pb2.CANCEL_STATUS_CANCELLED)
    assert result.SerializeToString() == b"\x08\x01"


# ---------------------------------------------------------------------------
# (c) pack / unpack_command.
# ---------------------------------------------------------------------------

ROUND_TRIP: list[Message] = [
    sql_pb2.CommandStatementQuery(query="SELECT 1", transaction_id=b"tx"),
    sql_pb2.CommandGetTables(catalog="", table_types=["TABLE", "VIEW"], include_schema=True),
    sql_pb2.CommandGetSqlInfo(info=[0, 8, 508]),
    sql_pb2.CommandStatementIngest(
        table_definition_options=sql_pb2.CommandStatementIngest.TableDefinitionOptions(
            if_not_exist=sql_pb2.CommandStatementIngest.TableDefinitionOptions.TABLE_NOT_EXIST_OPTION_CREATE,
            if_exists=sql_pb2.CommandStatementIngest.TableDefinitionOptions.TABLE_EXISTS_OPTION_APPEND,
        ),
        table="t",
        options={"k": "v"},
    ),
    sql_pb2.ActionCreatePreparedStatementResult(prepared_statement_handle=b"h", is_update=False),
    sql_pb2.ActionCancelQueryRequest(info=b"info"),
    sql_pb2.CommandGetCatalogs(),
]


@pytest.mark.parametrize("message", ROUND_TRIP, ids=lambda m: type(m).__name__)
def test_pack_unpack_round_trip(message: Message) -> None:
    data = pack(message)
    wrapper = any_pb2.Any.FromString(data)
    name = message.DESCRIPTOR.name
    assert wrapper.type_url == f"type.googleapis.com/arrow.flight.protocol.sql.{name}"
    assert wrapper.value == message.SerializeToString()
    unpacked = unpack_command(data)
    assert type(unpacked) is type(message)
    assert unpacked == message


def test_unpack_keeps_optional_presence() -> None:
    unpacked = unpack_command(pack(sql_pb2.CommandGetTables(catalog="")))
    assert isinstance(unpacked, sql_pb2.CommandGetTables)
    assert unpacked.HasField("catalog")
    assert not unpacked.HasField("db_schema_filter_pattern")


def test_unpack_accepts_any_type_url_prefix() -> None:
    data = any_pb2.Any(
        type_url="example.com/x/arrow.flight.protocol.sql.CommandStatementUpdate",
        value=sql_pb2.CommandStatementUpdate(query="DELETE FROM t").SerializeToString(),
    ).SerializeToString()
    assert unpack_command(data) == sql_pb2.CommandStatementUpdate(query="DELETE FROM t")


def test_pack_rejects_non_flight_sql_messages() -> None:
    with pytest.raises(TypeError, match="arrow.flight.protocol.Ticket"):
        pack(flight_pb2.Ticket(ticket=b"x"))


@pytest.mark.parametrize("data", [b"\xff\xff", b"not an any", b"\x0a\xff"], ids=repr)
def test_unpack_rejects_bytes_that_are_not_an_any(data: bytes) -> None:
    with pytest.raises(
        InvalidCommand, match=r"^request is not a serialized google\.protobuf\.Any: "
    ):
        unpack_command(data)


def test_unpack_rejects_an_any_without_type_url() -> None:
    with pytest.raises(InvalidCommand, match="request is not a serialized google.protobuf.Any"):
        unpack_command(b"")


@pytest.mark.parametrize(
    "type_url",
    [
        "type.googleapis.com/arrow.flight.protocol.sql.CommandNoSuchThing",
        "type.googleapis.com/arrow.flight.protocol.Ticket",
        "type.googleapis.com/google.protobuf.Empty",
        # Nested types are not commands.
        "type.googleapis.com/arrow.flight.protocol.sql.CommandStatementIngest.TableDefinitionOptions",
    ],
)
def test_unpack_rejects_unknown_type_urls(type_url: str) -> None:
    data = any_pb2.Any(type_url=type_url, value=b"").SerializeToString()
    expected = (
        f"unknown Flight SQL command '{type_url}': this server speaks arrow.flight.protocol.sql"
    )
    with pytest.raises(InvalidCommand, match=f"^{re.escape(expected)}$"):
        unpack_command(data)


@pytest.mark.parametrize(
    "value",
    [b"\x0a\x02\xff\xfe", b"\x0a\x7f", b"\xff"],
    ids=["bad-utf8", "truncated", "bad-tag"],
)
def test_unpack_rejects_values_that_do_not_parse(value: bytes) -> None:
    data = any_pb2.Any(
        type_url="type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery",
        value=value,
    ).SerializeToString()
    with pytest.raises(InvalidCommand, match=r"^malformed CommandStatementQuery in Flight SQL"):
        unpack_command(data)


def test_invalid_command_is_a_value_error() -> None:
    assert issubclass(InvalidCommand, ValueError)
