"""Time-range pruning of a day-partitioned, time-sorted Parquet table, and ``sort_by``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from bench.pruning import (
    QUERY,
    START,
    day_bounds,
    make_engine,
    parse_scan_metrics,
    scan_metrics,
    write_catalog,
    write_days,
)
from flightsql_srv.app import Service
from flightsql_srv.catalog import CatalogError, load_catalog
from tests.conftest import running_server
from tests.helpers import statement_descriptor

DAYS, FILES_PER_DAY, ROWS = 10, 2, 20_000
PER_DAY = ROWS // DAYS


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("days")
    write_days(root, DAYS, ROWS, files_per_day=FILES_PER_DAY)
    return root


@pytest.fixture(scope="module")
def catalog(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("catalog")
    write_catalog(directory, dataset)
    return directory


@pytest.fixture(scope="module")
def service(catalog: Path) -> Iterator[Service]:
    with running_server(catalog=catalog) as srv:
        yield srv


def _query(port: int, sql: str, headers: list[tuple[bytes, bytes]]) -> pa.Table:
    options = flight.FlightCallOptions(headers=headers, timeout=10)
    with flight.connect(f"grpc://127.0.0.1:{port}") as client:
        info = client.get_flight_info(statement_descriptor(sql), options)
        return pa.Table.from_batches(
            [
                b
                for e in info.endpoints
                for b in client.do_get(e.ticket, options).read_all().to_batches()
            ]
        )


def test_catalog_declares_sort_order(catalog: Path) -> None:
    (table,) = load_catalog(catalog)[0].tables
    assert table.sort_by == (("time", True),)
    assert table.time_column == "time"


def test_range_headers_return_only_that_day(service: Service) -> None:
    begin, end = day_bounds(3)
    headers = [
        (b"query_range_begin", begin.isoformat().encode()),
        (b"query_range_end", end.isoformat().encode()),
    ]
    table = _query(
        service.port,
        "select day, count(*) as n, min(time) as lo, max(time) as hi from bench.t group by day",
        headers,
    )
    assert table.column("day").to_pylist() == [f"{begin:%Y-%m-%d}"]
    assert table.column("n").to_pylist() == [PER_DAY]
    assert table.column("lo")[0].as_py() >= begin
    assert table.column("hi")[0].as_py() <= end
    everything = _query(service.port, "select count(*) as n from bench.t", [])
    assert everything.column("n").to_pylist() == [ROWS]


def test_range_prunes_files_and_bytes(catalog: Path) -> None:
    engine = make_engine(catalog)
    bounded = scan_metrics(engine, QUERY, day_bounds(3))
    full = scan_metrics(engine, QUERY, None)
    assert full.file_ranges >= DAYS * FILES_PER_DAY
    assert full.file_ranges_pruned == 0
    assert bounded.file_ranges_pruned >= (DAYS - 1) * FILES_PER_DAY
    assert 0 < bounded.bytes_scanned < full.bytes_scanned / 4
    assert engine.plan(QUERY, bounds=day_bounds(3)).frame.to_pylist()[0]["count(*)"] == PER_DAY


def test_pushdown_filters_apply_a_short_range_inside_the_scan(catalog: Path) -> None:
    """Ten minutes of one file: the scan itself emits only those rows (filter pushdown),
    not the whole row group for a later filter."""
    begin = START + timedelta(days=2, hours=1)
    engine = make_engine(catalog)
    bounded = scan_metrics(engine, QUERY, (begin, begin + timedelta(minutes=10)))
    assert bounded.file_ranges_pruned >= DAYS * FILES_PER_DAY - 1
    assert 0 < bounded.rows_scanned < 50


def test_parse_scan_metrics_reads_datasource_lines() -> None:
    line = (
        "DataSourceExec: file_groups={1 group: [[a.parquet]]}, file_type=parquet, metrics=["
        "output_rows=20.00 K, files_ranges_pruned_statistics=10 total → 1 matched, "
        "row_groups_pruned_statistics=4 total → 1 matched -> 1 fully matched, "
        "page_index_rows_pruned=100 total → 40 matched, bytes_scanned=340.4 K]"
    )
    metrics = parse_scan_metrics(f"ProjectionExec\n  {line}")
    assert (metrics.file_ranges, metrics.file_ranges_pruned) == (10, 9)
    assert (metrics.row_groups, metrics.row_groups_pruned) == (4, 3)
    assert metrics.page_rows_pruned == 60
    assert (metrics.rows_scanned, metrics.bytes_scanned) == (20_000, 340_400)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"time"', r"sort_by must be a non-empty list"),
        ("[]", r"sort_by must be a non-empty list"),
        ("[1]", r"sort_by must be a non-empty list"),
        ('["time sideways"]', r"sort_by entry 'time sideways'"),
        ('["1time"]', r"sort_by entry '1time'"),
        ('["time", "time desc"]', r"column 'time' twice"),
    ],
)
def test_bad_sort_by_names_file_and_table(
    dataset: Path, tmp_path: Path, value: str, reason: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        f'[tables.events]\nsource = "{dataset}/"\nformat = "parquet"\nsort_by = {value}\n'
    )
    with pytest.raises(CatalogError) as error:
        load_catalog(tmp_path)
    assert re.search(rf"{re.escape(str(path))}: table 'events': .*{reason}", str(error.value))


def test_sort_by_needs_parquet_and_a_source(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("time,v\n2024-01-01T00:00:00Z,1\n")
    path = tmp_path / "s.toml"
    path.write_text('[tables.c]\nsource = "a.csv"\nformat = "csv"\nsort_by = ["time"]\n')
    with pytest.raises(CatalogError, match=r"s\.toml: table 'c': sort_by is only supported"):
        load_catalog(tmp_path)
    path.write_text('[tables.v]\nsql = "select 1"\nsort_by = ["time"]\n')
    with pytest.raises(CatalogError, match=r"s\.toml: table 'v': .*sort_by need a 'source'"):
        load_catalog(tmp_path)


def test_sort_by_unknown_column_fails_at_start(dataset: Path, tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        f'[tables.t]\nsource = "{dataset}/"\nformat = "parquet"\n'
        'partition_columns = { day = "string" }\nsort_by = ["nope desc"]\n'
    )
    with pytest.raises(CatalogError, match=r"s\.toml: table 't': sort_by column 'nope'"):
        make_engine(tmp_path)
