"""Plain Flight: ListFlights, path descriptors ([schema, table]) and ListActions."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightsql_srv.protocol import pack, sql_pb2
from tests.helpers import assert_flight_error, drain, statement_descriptor


def _query(client: flight.FlightClient, sql: str) -> pa.Table:
    info = client.get_flight_info(statement_descriptor(sql))
    return client.do_get(info.endpoints[0].ticket).read_all()


def _query_schema(client: flight.FlightClient, sql: str) -> pa.Schema:
    schema: pa.Schema = client.get_flight_info(statement_descriptor(sql)).schema
    return schema


def test_list_flights_lists_every_table_with_its_schema(client: flight.FlightClient) -> None:
    flights = list(client.list_flights())
    paths = [tuple(f.descriptor.path) for f in flights]
    assert (b"demo", b"logs") in paths
    assert (b"demo", b"metrics") in paths
    assert len(paths) == len(set(paths))
    for info in flights:
        assert info.descriptor.descriptor_type == flight.DescriptorType.PATH
        assert len(info.descriptor.path) == 2
        schema, table = (p.decode() for p in info.descriptor.path)
        assert info.schema.equals(_query_schema(client, f"select * from {schema}.{table}"))
        assert len(info.endpoints) == 1

    # The same tables GetTables lists.
    command = sql_pb2.CommandGetTables()
    tables_info = client.get_flight_info(flight.FlightDescriptor.for_command(pack(command)))
    tables = client.do_get(tables_info.endpoints[0].ticket).read_all()
    listed = zip(
        tables.column("db_schema_name").to_pylist(),
        tables.column("table_name").to_pylist(),
        strict=True,
    )
    assert sorted(paths) == sorted((s.encode(), t.encode()) for s, t in listed)


def test_list_flights_endpoint_streams_the_table(client: flight.FlightClient) -> None:
    (logs,) = [f for f in client.list_flights() if tuple(f.descriptor.path) == (b"demo", b"logs")]
    rows, _ = drain(client.do_get(logs.endpoints[0].ticket))
    expected = _query(client, "select count(*) as n from demo.logs").column("n")[0].as_py()
    assert rows == expected > 0


def test_path_descriptor_streams_the_whole_table(client: flight.FlightClient) -> None:
    descriptor = flight.FlightDescriptor.for_path(b"demo", b"logs")
    info = client.get_flight_info(descriptor)
    assert info.schema.equals(_query_schema(client, "select * from demo.logs"))
    assert client.get_schema(descriptor).schema.equals(info.schema)
    assert len(info.endpoints) == 1
    reader = client.do_get(info.endpoints[0].ticket)
    assert reader.schema.equals(info.schema)
    rows, sizes = drain(reader)
    expected = _query(client, "select count(*) as n from demo.logs").column("n")[0].as_py()
    assert rows == expected > 0
    assert len(sizes) >= 1


def test_path_descriptor_of_a_missing_table_is_not_found(client: flight.FlightClient) -> None:
    for path in [(b"demo", b"no_such_table"), (b"no_such_schema", b"logs")]:
        with pytest.raises(KeyError) as raised:
            client.get_flight_info(flight.FlightDescriptor.for_path(*path))
        assert_flight_error(raised, pa.ArrowKeyError, "no_such")
    with pytest.raises(KeyError) as raised:
        client.get_schema(flight.FlightDescriptor.for_path(b"demo", b"no_such_table"))
    assert_flight_error(raised, pa.ArrowKeyError, "no_such_table")


@pytest.mark.parametrize(
    "path", [(b"flightsql", b"demo", b"logs"), (b"logs",)], ids=["three", "one"]
)
def test_path_descriptor_with_wrong_length_is_invalid(
    client: flight.FlightClient, path: tuple[bytes, ...]
) -> None:
    with pytest.raises(pa.ArrowInvalid) as raised:
        client.get_flight_info(flight.FlightDescriptor.for_path(*path))
    assert_flight_error(raised, pa.ArrowInvalid, r"\[schema, table\]")


def test_list_actions(client: flight.FlightClient) -> None:
    actions = {a.type: a.description for a in client.list_actions()}
    for name in [
        "CreatePreparedStatement",
        "ClosePreparedStatement",
        "CreatePreparedSubstraitPlan",
        "CancelFlightInfo",
        "SetSessionOptions",
        "GetSessionOptions",
        "CloseSession",
    ]:
        assert name in actions, f"{name} missing from ListActions: {sorted(actions)}"
        assert actions[name], f"{name} has no description"
    # Actions that write are not advertised by this read-only server.
    assert "BeginTransaction" not in actions
