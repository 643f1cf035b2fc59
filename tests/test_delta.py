"""Delta Lake tables in the catalog: latest and pinned versions, locally and on S3."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pytest
from datafusion import SessionContext
from deltalake import DeltaTable, write_deltalake

from flightsql_srv.catalog import CatalogError, load_catalog
from flightsql_srv.registration import register_catalog
from tests.conftest import free_port, running_server
from tests.helpers import assert_flight_error
from tests.seaweed import Seaweed, seaweed_server

FIRST = pa.table(
    {
        "id": pa.array([1, 2], pa.int64()),
        "ts": pa.array(
            [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)],
            pa.timestamp("us", "UTC"),
        ),
    }
)
SECOND = pa.table(
    {
        "id": pa.array([3], pa.int64()),
        "ts": pa.array([datetime(2024, 1, 3, tzinfo=UTC)], pa.timestamp("us", "UTC")),
    }
)


@pytest.fixture(autouse=True)
def _no_instance_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without credentials, S3 clients ask the cloud's instance metadata service
    (169.254.169.254); tests talk to loopback only, so point it at a closed local port."""
    monkeypatch.setenv("AWS_METADATA_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _write_two_versions(uri: str, storage_options: dict[str, str] | None = None) -> str:
    """Version 0 has ids 1 and 2, version 1 adds 3; returns version 0's commit time."""
    write_deltalake(uri, FIRST, storage_options=storage_options)
    write_deltalake(uri, SECOND, mode="append", storage_options=storage_options)
    history = DeltaTable(uri, storage_options=storage_options).history()
    (first,) = [h for h in history if h["version"] == 0]
    stamp = datetime.fromtimestamp(first["timestamp"] / 1000, UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture(scope="module")
def delta_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root: Path = tmp_path_factory.mktemp("delta")
    committed = _write_two_versions(str(root / "data" / "events"))
    (root / "catalog").mkdir()
    (root / "catalog" / "lake.toml").write_text(
        f"""
[tables.events]
source = "../data/events"
format = "delta"
time_column = "ts"

[tables.events_v0]
source = "../data/events"
format = "delta"
options = {{ version = 0 }}

[tables.events_at]
source = "{(root / "data" / "events").as_uri()}"
format = "delta"
options = {{ timestamp = "{committed}" }}
"""
    )
    return root / "catalog"


def _query(conn: Any, sql: str) -> dict[str, list[Any]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        result: dict[str, list[Any]] = cur.fetch_arrow_table().to_pydict()
    return result


@pytest.fixture(scope="module")
def delta_conn(delta_catalog: Path) -> Iterator[Any]:
    with (
        running_server(catalog=delta_catalog) as srv,
        adbc.connect(f"grpc://127.0.0.1:{srv.port}", autocommit=True) as conn,
    ):
        yield conn


@pytest.mark.parametrize(
    ("table", "ids"),
    [
        pytest.param("events", [1, 2, 3], id="latest"),
        pytest.param("events_v0", [1, 2], id="version"),
        pytest.param("events_at", [1, 2], id="timestamp"),
    ],
)
def test_delta_versions(delta_conn: Any, table: str, ids: list[int]) -> None:
    assert _query(delta_conn, f"select id from lake.{table} order by id") == {"id": ids}


def test_delta_filter_and_types(delta_conn: Any) -> None:
    rows = _query(delta_conn, "select id, ts from lake.events where id >= 2 order by id")
    assert rows["id"] == [2, 3]
    assert rows["ts"][0] == datetime(2024, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param("{ version = 99 }", r"table 'events'.*99", id="missing-version"),
        pytest.param(
            '{ timestamp = "2001-01-01T00:00:00Z" }',
            r"table 'events'.*no version at 2001-01-01",
            id="before-first-commit",
        ),
    ],
)
def test_bad_pin_stops_start_up(tmp_path: Path, options: str, message: str) -> None:
    _write_two_versions(str(tmp_path / "events"))
    (tmp_path / "lake.toml").write_text(
        f'[tables.events]\nsource = "events"\nformat = "delta"\noptions = {options}\n'
    )
    with pytest.raises(CatalogError) as info:
        with running_server(catalog=tmp_path):
            pass
    assert_flight_error(info, CatalogError, message)
    assert str(tmp_path / "lake.toml") in str(info.value)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        pytest.param(
            'source = "events"\nformat = "delta"\noptions = { version = 0, timestamp = "x" }',
            "'version' and 'timestamp' exclude each other",
            id="both-pins",
        ),
        pytest.param(
            'source = "events"\nformat = "delta"\noptions = { timestamp = "yesterday" }',
            "RFC 3339",
            id="bad-timestamp",
        ),
        pytest.param(
            'source = "events"\nformat = "delta"\noptions = { timestamp = "2024-01-01T00:00:00" }',
            "with an offset",
            id="naive-timestamp",
        ),
        pytest.param(
            'source = "events"\nformat = "delta"\noptions = { version = -1 }',
            "'version' must be an int >= 0",
            id="negative-version",
        ),
        pytest.param('source = "plain"\nformat = "delta"', "is not a Delta table", id="not-delta"),
        pytest.param(
            'source = "events"\nformat = "delta"\npartition_columns = { a = "int32" }',
            "partition_columns are not used with delta",
            id="partition-columns",
        ),
    ],
)
def test_bad_delta_declarations(tmp_path: Path, table: str, message: str) -> None:
    (tmp_path / "events" / "_delta_log").mkdir(parents=True)
    (tmp_path / "plain").mkdir()
    (tmp_path / "lake.toml").write_text(f"[tables.events]\n{table}\n")
    error = assert_flight_error(lambda: load_catalog(tmp_path), CatalogError, message)
    assert str(tmp_path / "lake.toml") in str(error) and "table 'events'" in str(error)


# -- Delta on S3 ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    with seaweed_server(tmp_path_factory.mktemp("weed")) as server:
        server.create_bucket("lake")
        yield server


def test_delta_on_s3(tmp_path: Path, weed: Seaweed, monkeypatch: pytest.MonkeyPatch) -> None:
    options = {
        "AWS_ENDPOINT_URL": weed.endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": weed.region,
        "AWS_ACCESS_KEY_ID": weed.access_key,
        "AWS_SECRET_ACCESS_KEY": weed.secret_key,
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",  # a single writer: no locking provider needed
    }
    _write_two_versions("s3://lake/events", options)
    monkeypatch.setenv("TEST_DELTA_KEY", weed.access_key)
    monkeypatch.setenv("TEST_DELTA_SECRET", weed.secret_key)
    (tmp_path / "lake.toml").write_text(
        f"""
[stores.lake]
type = "s3"
bucket = "lake"
endpoint = "{weed.endpoint}"
region = "{weed.region}"
allow_http = true
access_key_id_env = "TEST_DELTA_KEY"
secret_access_key_env = "TEST_DELTA_SECRET"

[tables.events]
source = "s3://lake/events"
format = "delta"
time_column = "ts"

[tables.events_v0]
source = "s3://lake/events/"
format = "delta"
options = {{ version = 0 }}

[tables.missing]
source = "s3://lake/nothing-here"
format = "delta"
"""
    )
    ctx = SessionContext()
    problems = register_catalog(ctx, "datafusion", load_catalog(tmp_path))
    assert [(p.table, p.store) for p in problems] == [("missing", "lake")]
    for table, ids in (("events", [1, 2, 3]), ("events_v0", [1, 2])):
        got = ctx.sql(f"select id from lake.{table} order by id").to_pydict()
        assert got == {"id": ids}, table
    with (
        running_server(catalog=tmp_path) as srv,
        adbc.connect(f"grpc://127.0.0.1:{srv.port}", autocommit=True) as conn,
    ):
        assert _query(conn, "select count(*) as n from lake.events") == {"n": [3]}
