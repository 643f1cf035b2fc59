"""Parallel fetch: ``parallel_endpoints: N`` splits a result by its partitions into endpoints
that clients fetch concurrently; together they hold every row exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from flightsql_srv.app import Service
from flightsql_srv.tickets import TICKET, Signer
from tests.conftest import TEST_SECRET, running_server
from tests.helpers import assert_flight_error, statement_descriptor

FILES = 4
ROWS_PER_FILE = 50_000
SQL = "SELECT id, part, label FROM data.rows"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four Parquet files declared as ``data.rows``."""
    root = tmp_path_factory.mktemp("parallel")
    data = root / "rows"
    data.mkdir()
    for part in range(FILES):
        start = part * ROWS_PER_FILE
        ids = pa.array(range(start, start + ROWS_PER_FILE), pa.int64())
        table = pa.table(
            {
                "id": ids,
                "part": pa.array([part] * ROWS_PER_FILE, pa.int32()),
                "label": pa.array([f"row {i}" for i in ids.to_pylist()]),
            }
        )
        pq.write_table(table, data / f"part-{part}.parquet")
    catalog = root / "catalog"
    catalog.mkdir()
    (catalog / "data.toml").write_text(
        f'[tables.rows]\nsource = "{data.as_posix()}"\nformat = "parquet"\n'
    )
    return catalog


@pytest.fixture(scope="module")
def service(catalog: Path) -> Iterator[Service]:
    """The catalog served with four partitions."""
    with running_server(catalog=catalog, target_partitions=FILES) as srv:
        yield srv


def _uri(service: Service) -> str:
    return f"grpc://127.0.0.1:{service.port}"


def _info(
    client: flight.FlightClient, sql: str, *headers: tuple[bytes, bytes]
) -> flight.FlightInfo:
    options = flight.FlightCallOptions(headers=list(headers))
    return client.get_flight_info(statement_descriptor(sql), options)


def _parallel(n: int) -> tuple[bytes, bytes]:
    return (b"parallel_endpoints", str(n).encode())


def test_endpoints_hold_every_row_exactly_once(service: Service) -> None:
    with flight.connect(_uri(service)) as client:
        info = _info(client, SQL, _parallel(8))
        assert len(info.endpoints) == FILES  # capped by the partitions there are
        parts = [client.do_get(e.ticket).read_all() for e in info.endpoints]
    assert all(p.schema.equals(info.schema) for p in parts)
    ids = [i for p in parts for i in p.column("id").to_pylist()]
    assert len(ids) == FILES * ROWS_PER_FILE
    assert sorted(ids) == list(range(FILES * ROWS_PER_FILE))
    # Partitions are byte ranges of the files, so their sizes follow the row groups.
    assert sum(p.num_rows > 0 for p in parts) >= 2


def test_fewer_endpoints_than_partitions_share_them_out(service: Service) -> None:
    """Two endpoints over four partitions: each reads two, and the rows still add up."""
    with flight.connect(_uri(service)) as client:
        info = _info(client, SQL, _parallel(2))
        assert len(info.endpoints) == 2
        ids = sorted(
            i for e in info.endpoints for i in client.do_get(e.ticket).read_all()["id"].to_pylist()
        )
    assert ids == list(range(FILES * ROWS_PER_FILE))


def test_default_is_one_endpoint(service: Service) -> None:
    with flight.connect(_uri(service)) as client:
        assert len(_info(client, SQL).endpoints) == 1
        assert len(_info(client, SQL, _parallel(1)).endpoints) == 1


@pytest.mark.parametrize(
    "sql",
    [
        f"{SQL} ORDER BY id",  # one sorted partition
        "SELECT part, count(*) FROM data.rows GROUP BY part",  # repartitioned
        f"{SQL} LIMIT 10",
    ],
)
def test_results_without_fixed_partitions_get_one_endpoint(service: Service, sql: str) -> None:
    with flight.connect(_uri(service)) as client:
        info = _info(client, sql, _parallel(4))
        assert len(info.endpoints) == 1
        assert client.do_get(info.endpoints[0].ticket).read_all().num_rows > 0


def test_grafana_always_gets_one_endpoint(service: Service) -> None:
    with flight.connect(_uri(service)) as client:
        info = _info(client, SQL, _parallel(4), (b"x-client-type", b"grafana"))
        assert len(info.endpoints) == 1
        assert client.do_get(info.endpoints[0].ticket).read_all().num_rows == FILES * ROWS_PER_FILE


def test_adbc_fetches_all_endpoints(service: Service) -> None:
    header = "adbc.flight.sql.rpc.call_header.parallel_endpoints"
    with adbc.connect(_uri(service), db_kwargs={header: "4"}, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute(SQL)
            table = cur.fetch_arrow_table()
            partitions, _ = cur.adbc_execute_partitions(SQL)
    assert len(partitions) == FILES
    assert sorted(table["id"].to_pylist()) == list(range(FILES * ROWS_PER_FILE))


@pytest.mark.parametrize("value", [b"0", b"-1", b"65", b"many"])
def test_bad_endpoint_counts_are_refused(service: Service, value: bytes) -> None:
    with flight.connect(_uri(service)) as client:
        assert_flight_error(
            lambda: _info(client, SQL, (b"parallel_endpoints", value)),
            pa.ArrowInvalid,
            "header parallel_endpoints: expected an endpoint count \\(1 to 64\\)",
        )


def test_a_partition_ticket_works_on_another_replica(service: Service, catalog: Path) -> None:
    """Partition tickets are self-contained like any other: a second server sharing the
    secret and catalog serves them."""
    with running_server(catalog=catalog, target_partitions=FILES) as other:
        with flight.connect(_uri(service)) as a, flight.connect(_uri(other)) as b:
            info = _info(a, SQL, _parallel(4))
            ids = sorted(
                i for e in info.endpoints for i in b.do_get(e.ticket).read_all()["id"].to_pylist()
            )
    assert ids == list(range(FILES * ROWS_PER_FILE))


@pytest.mark.parametrize("partition", [[0], [2, 2, 4], [0, 5, 4], ["0", 1, 1], [-1, 1, 1], "x"])
def test_a_malformed_partition_is_refused(service: Service, partition: object) -> None:
    """Even a validly signed ticket with a nonsense partition gets INVALID_ARGUMENT."""
    with flight.connect(_uri(service)) as client:
        info = _info(client, SQL, _parallel(4))
        body = service.flight.statements.signer.verify(
            TICKET, info.endpoints[0].ticket.ticket, "ticket"
        )
        forged = Signer([TEST_SECRET.encode()]).sign(TICKET, {**body, "partition": partition})
        assert_flight_error(
            lambda: client.do_get(flight.Ticket(forged)).read_all(),
            pa.ArrowInvalid,
            "the ticket's partition is malformed",
        )
