"""Declarative catalogs: every source format, views, partitions, and bad declarations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flightsql_srv.catalog import CatalogError, load_catalog
from tests.conftest import running_server
from tests.helpers import assert_flight_error

PEOPLE = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "name": ["ann", "bob", "cy"]})

CATALOG = """
schema = "other"
description = "files of every format"

[tables.single]
source = "data/single.parquet"
format = "parquet"
description = "one parquet file"

[tables.globbed]
source = "data/glob/*.parquet"
format = "parquet"

[tables.hive]
source = "data/hive"
format = "parquet"
partition_columns = { year = "int32" }

[tables.semi]
source = "data/semi.csv"
format = "csv"
options = { has_header = true, delimiter = ";" }

[tables.events]
source = "data/events.json"
format = "ndjson"

[tables.ipc]
source = "data/people.arrow"
format = "arrow"

[tables.big_people]
sql = "select id * 10 as id10, upper(name) as name from other.single where id > 1"
"""


def _write_data(root: Path) -> None:
    data = root / "data"
    (data / "glob").mkdir(parents=True)
    pq.write_table(PEOPLE, data / "single.parquet")
    pq.write_table(PEOPLE.slice(0, 2), data / "glob" / "part-1.parquet")
    pq.write_table(PEOPLE.slice(2), data / "glob" / "part-2.parquet")
    for year in (2023, 2024):
        part = data / "hive" / f"year={year}"
        part.mkdir(parents=True)
        pq.write_table(pa.table({"v": [year * 10, year * 10 + 1]}), part / "part-0.parquet")
    (data / "semi.csv").write_text("id;name\n1;x\n2;y\n")
    (data / "events.json").write_text('{"id": 1, "kind": "a"}\n{"id": 2, "kind": "b"}\n')
    with pa.ipc.new_file(data / "people.arrow", PEOPLE.schema) as writer:
        writer.write_table(PEOPLE)


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root: Path = tmp_path_factory.mktemp("catalog")
    _write_data(root)
    (root / "files.toml").write_text(CATALOG)
    return root


@pytest.fixture(scope="module")
def cat_conn(catalog_dir: Path) -> Iterator[Any]:
    with (
        running_server(catalog=catalog_dir) as srv,
        adbc.connect(f"grpc://127.0.0.1:{srv.port}", autocommit=True) as conn,
    ):
        yield conn


def _start(catalog: Path) -> None:
    """Start and stop a server on ``catalog`` (raises what start-up raises)."""
    with running_server(catalog=catalog):
        pass


def _query(conn: Any, sql: str) -> pa.Table:
    with conn.cursor() as cur:
        cur.execute(sql)
        table: pa.Table = cur.fetch_arrow_table()
    return table


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        pytest.param(
            "select * from other.single order by id",
            {"id": [1, 2, 3], "name": ["ann", "bob", "cy"]},
            id="parquet-file",
        ),
        pytest.param(
            "select * from other.globbed order by id",
            {"id": [1, 2, 3], "name": ["ann", "bob", "cy"]},
            id="parquet-glob",
        ),
        pytest.param(
            "select v, year from other.hive order by v",
            {"v": [20230, 20231, 20240, 20241], "year": [2023, 2023, 2024, 2024]},
            id="parquet-hive",
        ),
        pytest.param(
            "select * from other.semi order by id",
            {"id": [1, 2], "name": ["x", "y"]},
            id="csv-options",
        ),
        pytest.param(
            "select * from other.events order by id",
            {"id": [1, 2], "kind": ["a", "b"]},
            id="ndjson",
        ),
        pytest.param(
            "select * from other.ipc order by id",
            {"id": [1, 2, 3], "name": ["ann", "bob", "cy"]},
            id="arrow-ipc",
        ),
        pytest.param(
            "select * from other.big_people order by id10",
            {"id10": [20, 30], "name": ["BOB", "CY"]},
            id="sql-view",
        ),
    ],
)
def test_table_formats(cat_conn: Any, sql: str, expected: dict[str, list[Any]]) -> None:
    table = _query(cat_conn, sql)
    assert table.to_pydict() == expected
    for field in table.schema:
        if not pa.types.is_integer(field.type):
            assert field.type == pa.string(), f"{field.name} is {field.type}, expected utf8"


def test_partition_column_type_and_filter(cat_conn: Any) -> None:
    table = _query(cat_conn, "select v, year from other.hive where year = 2024 order by v")
    assert table.to_pydict() == {"v": [20240, 20241], "year": [2024, 2024]}
    assert table.schema.field("year").type == pa.int32()


def test_partition_pruning_skips_other_directories(cat_conn: Any) -> None:
    plan = _query(cat_conn, "explain select v from other.hive where year = 2024")
    physical = "\n".join(
        p for t, p in zip(*plan.to_pydict().values(), strict=True) if t == "physical_plan"
    )
    assert "year=2024" in physical
    assert "year=2023" not in physical, physical


def test_schema_key_renames_the_schema(cat_conn: Any) -> None:
    with cat_conn.cursor() as cur:
        assert_flight_error(
            lambda: cur.execute("select * from files.single"),
            adbc.ProgrammingError,
            r"files\.single' not found",
        )


def test_ndjson_file_extension(tmp_path: Path) -> None:
    """format = "ndjson" reads a ``.ndjson`` file without extra options."""
    (tmp_path / "events.ndjson").write_text('{"id": 1}\n{"id": 2}\n')
    (tmp_path / "logs.toml").write_text(
        '[tables.events]\nsource = "events.ndjson"\nformat = "ndjson"\n'
    )
    with (
        running_server(catalog=tmp_path) as srv,
        adbc.connect(f"grpc://127.0.0.1:{srv.port}", autocommit=True) as conn,
    ):
        assert _query(conn, "select id from logs.events order by id").to_pydict() == {"id": [1, 2]}


# -- bad declarations ----------------------------------------------------------------


def test_duplicate_schema_names_fail(tmp_path: Path) -> None:
    pq.write_table(PEOPLE, tmp_path / "p.parquet")
    (tmp_path / "a.toml").write_text(
        'schema = "sales"\n[tables.t]\nsource = "p.parquet"\nformat = "parquet"\n'
    )
    (tmp_path / "sales.toml").write_text('[tables.u]\nsource = "p.parquet"\nformat = "parquet"\n')
    for call in (lambda: load_catalog(tmp_path), lambda: _start(tmp_path)):
        error = assert_flight_error(call, CatalogError, r"schema 'sales'")
        assert str(tmp_path / "a.toml") in str(error) and str(tmp_path / "sales.toml") in str(error)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        pytest.param('source = "p.parquet"\nformat = "parquet"\ncolour = "red"', "colour"),
        pytest.param(
            'source = "p.parquet"\nformat = "parquet"\noptions = { delimiter = ";" }',
            "delimiter",
        ),
        pytest.param('sql = "select 1"\nformat = "parquet"', "format"),
    ],
)
def test_unknown_keys_name_file_and_table(tmp_path: Path, table: str, key: str) -> None:
    pq.write_table(PEOPLE, tmp_path / "p.parquet")
    (tmp_path / "sales.toml").write_text(f"[tables.orders]\n{table}\n")
    error = assert_flight_error(lambda: _start(tmp_path), CatalogError, r"table 'orders'")
    assert str(tmp_path / "sales.toml") in str(error) and key in str(error)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    (tmp_path / "sales.toml").write_text('owner = "me"\n')
    error = assert_flight_error(lambda: load_catalog(tmp_path), CatalogError, "owner")
    assert str(tmp_path / "sales.toml") in str(error)


@pytest.mark.parametrize("name", ["1abc", "a-b", "a b"])
def test_bad_schema_name(tmp_path: Path, name: str) -> None:
    (tmp_path / "x.toml").write_text(f'schema = "{name}"\n')
    assert_flight_error(lambda: load_catalog(tmp_path), CatalogError, "identifier")


def test_remote_source_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(
        '[tables.t]\nsource = "ftp://example.com/x.parquet"\nformat = "parquet"\n'
    )
    assert_flight_error(lambda: load_catalog(tmp_path), CatalogError, r"table 't'.*ftp://")
