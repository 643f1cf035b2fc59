"""Substrait plans: CommandStatementSubstraitPlan and CreatePreparedSubstraitPlan.

Plans are produced by DataFusion's own Substrait producer over a context holding the same
tables as the server (the served engine's base context).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from datafusion.substrait import Serde

from flightsql_srv.protocol import pack, sql_pb2, unpack_command
from tests.helpers import assert_flight_error, prepared_descriptor, statement_descriptor

QUERIES = [
    "select host, count(*) as n from demo.logs group by host order by host",
    "select level, max(time) as last_seen from demo.logs "
    "where length(message) > 12 group by level order by level",
    "select time, host, value * 2 as v from demo.metrics where value > 50 "
    "order by time, host, v limit 25",
]


def _plan(server: Any, sql: str) -> sql_pb2.SubstraitPlan:
    plan: bytes = Serde.serialize_bytes(sql, server.engine.ctx)
    return sql_pb2.SubstraitPlan(plan=plan, version="0.1")


def _substrait_descriptor(plan: sql_pb2.SubstraitPlan) -> flight.FlightDescriptor:
    command = sql_pb2.CommandStatementSubstraitPlan(plan=plan)
    return flight.FlightDescriptor.for_command(pack(command))


def _run(client: flight.FlightClient, descriptor: flight.FlightDescriptor) -> pa.Table:
    info = client.get_flight_info(descriptor)
    assert len(info.endpoints) == 1
    table = client.do_get(info.endpoints[0].ticket).read_all()
    assert table.schema.equals(info.schema)
    return table


@pytest.mark.parametrize("sql", QUERIES, ids=["group-by", "function-filter", "order-limit"])
def test_substrait_plan_gives_the_sql_result(
    server: Any, client: flight.FlightClient, sql: str
) -> None:
    expected = _run(client, statement_descriptor(sql))
    assert expected.num_rows > 0
    got = _run(client, _substrait_descriptor(_plan(server, sql)))
    assert got.schema.equals(expected.schema)
    assert got.equals(expected)


def test_get_schema_of_a_substrait_plan(server: Any, client: flight.FlightClient) -> None:
    sql = QUERIES[0]
    schema = client.get_schema(_substrait_descriptor(_plan(server, sql))).schema
    assert schema.equals(client.get_schema(statement_descriptor(sql)).schema)
    assert schema.equals(
        pa.schema([pa.field("host", pa.utf8()), pa.field("n", pa.int64(), nullable=False)])
    )


def _prepare(
    client: flight.FlightClient, plan: sql_pb2.SubstraitPlan
) -> sql_pb2.ActionCreatePreparedStatementResult:
    body = pack(sql_pb2.ActionCreatePreparedSubstraitPlanRequest(plan=plan))
    results = list(client.do_action(flight.Action("CreatePreparedSubstraitPlan", body)))
    assert len(results) == 1
    result = unpack_command(results[0].body.to_pybytes())
    assert isinstance(result, sql_pb2.ActionCreatePreparedStatementResult)
    return result


def test_prepared_substrait_plan(server: Any, client: flight.FlightClient) -> None:
    sql = QUERIES[0]
    expected = _run(client, statement_descriptor(sql))
    prepared = _prepare(client, _plan(server, sql))
    assert prepared.prepared_statement_handle
    dataset = pa.ipc.read_schema(pa.py_buffer(prepared.dataset_schema))
    assert dataset.equals(expected.schema)
    # No placeholders: no parameter schema (or an empty one).
    if prepared.parameter_schema:
        assert len(pa.ipc.read_schema(pa.py_buffer(prepared.parameter_schema))) == 0
    descriptor = prepared_descriptor(prepared.prepared_statement_handle)
    assert client.get_schema(descriptor).schema.equals(expected.schema)
    assert _run(client, descriptor).equals(expected)
    assert _run(client, descriptor).equals(expected), "the handle must be reusable"


@pytest.mark.parametrize(
    "plan_bytes", [b"garbage\x00\xff\x07", b"\x0a\x02zz", b""], ids=["garbage", "junk", "empty"]
)
def test_garbage_plan_is_invalid_argument(client: flight.FlightClient, plan_bytes: bytes) -> None:
    plan = sql_pb2.SubstraitPlan(plan=plan_bytes, version="0.1")
    descriptor = _substrait_descriptor(plan)
    with pytest.raises(pa.ArrowInvalid) as raised:
        client.get_flight_info(descriptor)
    assert_flight_error(raised, pa.ArrowInvalid, "(?i)substrait")
    with pytest.raises(pa.ArrowInvalid) as raised:
        client.get_schema(descriptor)
    assert_flight_error(raised, pa.ArrowInvalid, "(?i)substrait")
    body = pack(sql_pb2.ActionCreatePreparedSubstraitPlanRequest(plan=plan))
    with pytest.raises(pa.ArrowInvalid) as raised:
        list(client.do_action(flight.Action("CreatePreparedSubstraitPlan", body)))
    assert_flight_error(raised, pa.ArrowInvalid, "(?i)substrait")
