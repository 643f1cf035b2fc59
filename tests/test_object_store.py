"""Catalog tables on object stores: a real S3 server (SeaweedFS), signed requests, and the
tables that cannot be reached at start-up."""

from __future__ import annotations

import functools
import http.server
import io
import logging
import ssl
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafusion import SessionContext

from flightsql_srv import objectstores
from flightsql_srv.catalog import CatalogError, CatalogProblem, load_catalog
from flightsql_srv.registration import register_catalog
from tests.conftest import free_port, running_server
from tests.helpers import assert_flight_error
from tests.seaweed import Seaweed, seaweed_server
from tests.tls_certs import make_pki

BUCKET = "metrics"
KEY_VAR, SECRET_VAR = "TEST_LAKE_KEY_ID", "TEST_LAKE_SECRET"


@pytest.fixture(autouse=True)
def _no_instance_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without credentials, S3 clients ask the cloud's instance metadata service
    (169.254.169.254); tests talk to loopback only, so point it at a closed local port."""
    monkeypatch.setenv("AWS_METADATA_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _points(day: int, values: list[float]) -> pa.Table:
    start = datetime(2024, 1, day, tzinfo=UTC)
    return pa.table(
        {
            "ts": pa.array(
                [start.replace(hour=h) for h in range(len(values))], pa.timestamp("us", "UTC")
            ),
            "host": [f"h{i}" for i in range(len(values))],
            "value": pa.array(values, pa.float64()),
        }
    )


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    with seaweed_server(tmp_path_factory.mktemp("weed")) as server:
        server.create_bucket(BUCKET)
        fs = server.filesystem()
        for day, values in ((1, [1.0, 2.0]), (2, [3.0, 4.0, 5.0])):
            pq.write_table(
                _points(day, values),
                f"{BUCKET}/points/day=2024-01-0{day}/part-0.parquet",
                filesystem=fs,
            )
        yield server


@pytest.fixture
def lake_env(weed: Seaweed, monkeypatch: pytest.MonkeyPatch) -> Seaweed:
    """The credentials in the variables the catalog names, and none in the standard ones."""
    monkeypatch.setenv(KEY_VAR, weed.access_key)
    monkeypatch.setenv(SECRET_VAR, weed.secret_key)
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    return weed


def _store(endpoint: str, name: str = "lake", bucket: str = BUCKET) -> str:
    return f"""
[stores.{name}]
type = "s3"
bucket = "{bucket}"
endpoint = "{endpoint}"
region = "us-east-1"
allow_http = true
path_style = true
access_key_id_env = "{KEY_VAR}"
secret_access_key_env = "{SECRET_VAR}"
"""


POINTS = f"""
[tables.points]
source = "s3://{BUCKET}/points/"
format = "parquet"
partition_columns = {{ day = "string" }}
time_column = "ts"
description = "points on S3"
"""


def _query(conn: Any, sql: str) -> dict[str, list[Any]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        result: dict[str, list[Any]] = cur.fetch_arrow_table().to_pydict()
    return result


def _register(catalog: Path) -> tuple[SessionContext, list[CatalogProblem]]:
    ctx = SessionContext()
    return ctx, register_catalog(ctx, "datafusion", load_catalog(catalog))


@pytest.fixture
def lake_catalog(tmp_path: Path, lake_env: Seaweed) -> Path:
    (tmp_path / "lake.toml").write_text(_store(lake_env.endpoint) + POINTS)
    return tmp_path


def test_s3_table_through_adbc(lake_catalog: Path) -> None:
    with (
        running_server(catalog=lake_catalog) as srv,
        adbc.connect(f"grpc://127.0.0.1:{srv.port}", autocommit=True) as conn,
    ):
        rows = _query(
            conn,
            "select day, count(*) as n, sum(value) as total from lake.points "
            "group by day order by day",
        )
        assert rows == {"day": ["2024-01-01", "2024-01-02"], "n": [2, 3], "total": [3.0, 12.0]}
        pruned = _query(conn, "select host from lake.points where day = '2024-01-02' order by host")
        assert pruned == {"host": ["h0", "h1", "h2"]}


def test_new_file_is_seen_by_the_next_query(lake_catalog: Path, weed: Seaweed) -> None:
    """DataFusion 55 caches directory listings forever by default; the catalog turns the
    cache off so each query lists the bucket again."""
    day = f"2030-01-{uuid.uuid4().int % 28 + 1:02d}"
    with (
        running_server(catalog=lake_catalog) as srv,
        adbc.connect(f"grpc://127.0.0.1:{srv.port}", autocommit=True) as conn,
    ):
        sql = f"select count(*) as n from lake.points where day = '{day}'"
        assert _query(conn, sql) == {"n": [0]}
        before = _query(conn, "select count(*) as n from lake.points")["n"][0]
        pq.write_table(
            _points(3, [7.0]),
            f"{BUCKET}/points/day={day}/part-0.parquet",
            filesystem=weed.filesystem(),
        )
        try:
            assert _query(conn, sql) == {"n": [1]}
            assert _query(conn, "select count(*) as n from lake.points")["n"][0] == before + 1
        finally:
            weed.filesystem().delete_dir(f"{BUCKET}/points/day={day}")


def test_other_contexts_read_object_stores(lake_catalog: Path) -> None:
    with (
        running_server(catalog=lake_catalog) as srv,
        adbc.connect(f"grpc://127.0.0.1:{srv.port}", autocommit=True) as conn,
    ):
        assert _query(conn, "select count(*) as n from lake.points") == {"n": [5]}


def test_standard_environment_without_a_store_section(
    tmp_path: Path, weed: Seaweed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No [stores] at all: the bucket is reached with the AWS_* variables alone."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", weed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", weed.secret_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", weed.endpoint)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    (tmp_path / "env.toml").write_text(POINTS)
    ctx, problems = _register(tmp_path)
    assert problems == []
    assert ctx.sql("select count(*) as n from env.points").to_pydict() == {"n": [5]}


def test_plain_http_endpoint_without_allow_http_says_so(
    tmp_path: Path, weed: Seaweed, monkeypatch: pytest.MonkeyPatch
) -> None:
    # credentials present: without any, object_store would ask the instance metadata service
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", weed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", weed.secret_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", weed.endpoint)
    monkeypatch.delenv("AWS_ALLOW_HTTP", raising=False)
    (tmp_path / "env.toml").write_text(POINTS)
    _, problems = _register(tmp_path)
    assert [(p.table, p.store) for p in problems] == [("points", "(environment)")]
    assert "AWS_ALLOW_HTTP=true" in problems[0].reason


def test_wrong_secret_is_a_problem_not_a_crash(
    tmp_path: Path, lake_env: Seaweed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_VAR, "not-the-secret")
    (tmp_path / "lake.toml").write_text(_store(lake_env.endpoint) + POINTS)
    _, problems = _register(tmp_path)
    assert [(p.table, p.store) for p in problems] == [("points", "lake")]
    assert "signature" in problems[0].reason.lower() or "403" in problems[0].reason


def test_missing_credential_variable_is_a_problem(
    tmp_path: Path, lake_env: Seaweed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_VAR)
    (tmp_path / "lake.toml").write_text(_store(lake_env.endpoint) + POINTS)
    _, problems = _register(tmp_path)
    assert len(problems) == 1
    assert f"environment variable {KEY_VAR} (access_key_id_env) is not set" in problems[0].reason


def test_anonymous_store_does_not_sign(
    tmp_path: Path, weed: Seaweed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """anonymous = true sends unsigned requests even with valid AWS_* credentials around:
    the private bucket refuses them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", weed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", weed.secret_key)
    (tmp_path / "lake.toml").write_text(
        f'[stores.public]\ntype = "s3"\nbucket = "{BUCKET}"\nendpoint = "{weed.endpoint}"\n'
        "allow_http = true\nanonymous = true\n" + POINTS
    )
    _, problems = _register(tmp_path)
    assert [(p.table, p.store) for p in problems] == [("points", "public")]
    assert "403" in problems[0].reason or "denied" in problems[0].reason.lower()


def test_remote_time_column_mismatch_is_a_problem(tmp_path: Path, lake_env: Seaweed) -> None:
    """Remote data decides the columns: a wrong time_column leaves the table out instead of
    stopping the server."""
    (tmp_path / "lake.toml").write_text(
        _store(lake_env.endpoint) + POINTS.replace('time_column = "ts"', 'time_column = "host"')
    )
    ctx, problems = _register(tmp_path)
    assert [p.table for p in problems] == ["points"]
    assert "time_column 'host' must be a timestamp" in problems[0].reason
    assert "points" not in ctx.catalog("datafusion").schema("lake").names()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_unreachable_store_leaves_the_rest_served(tmp_path: Path, lake_env: Seaweed) -> None:
    """A store nothing listens on: start-up goes on, the other tables answer, and the
    problem list and the log name file, table, store and reason."""
    pq.write_table(pa.table({"id": [1, 2]}), tmp_path / "local.parquet")
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "lake.toml").write_text(
        _store(f"http://127.0.0.1:{free_port()}", name="gone", bucket="nowhere")
        + '[tables.lost]\nsource = "s3://nowhere/points/"\nformat = "parquet"\n'
        + '[tables.lost_view]\nsql = "select count(*) from lake.lost"\n'
        + f'[tables.local]\nsource = "{tmp_path / "local.parquet"}"\nformat = "parquet"\n'
        + _store(lake_env.endpoint)
        + POINTS
    )
    handler = _Records()
    logger = logging.getLogger("flightsql_srv.catalog")
    logger.addHandler(handler)
    try:
        _, problems = _register(catalog)
    finally:
        logger.removeHandler(handler)
    assert [(p.schema, p.table, p.store) for p in problems] == [
        ("lake", "lost", "gone"),
        ("lake", "lost_view", ""),
    ]
    assert all(p.file == catalog / "lake.toml" for p in problems)
    assert "error sending request" in problems[0].reason or "connect" in problems[0].reason.lower()
    logged = [r.getMessage() for r in handler.records]
    assert len(logged) == 2 and "table 'lost' (store 'gone')" in logged[0]
    assert str(catalog / "lake.toml") in logged[0]
    fields = handler.records[0].__dict__["fields"]
    assert fields["table"] == "lost" and fields["store"] == "gone" and fields["reason"]

    with (
        running_server(catalog=catalog) as srv,
        adbc.connect(f"grpc://127.0.0.1:{srv.port}", autocommit=True) as conn,
    ):
        assert _query(conn, "select count(*) as n from lake.local") == {"n": [2]}
        assert _query(conn, "select count(*) as n from lake.points") == {"n": [5]}
        with conn.cursor() as cur:
            assert_flight_error(
                lambda: cur.execute("select * from lake.lost"), adbc.ProgrammingError, "lost"
            )


# -- declarations --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("store", "key"),
    [
        pytest.param('type = "s3"\nsecret_access_key = "abc"', "secret_access_key", id="s3-secret"),
        pytest.param('type = "s3"\naccess_key_id = "AKIA"', "access_key_id", id="s3-key-id"),
        pytest.param('type = "s3"\nsession_token = "t"', "session_token", id="s3-token"),
        pytest.param('type = "azure"\naccount_key = "k"', "account_key", id="azure-key"),
        pytest.param('type = "azure"\naccess_key = "k"', "access_key", id="azure-access-key"),
        pytest.param('type = "azure"\nsas_token = "sv=1"', "sas_token", id="azure-sas"),
    ],
)
def test_inline_secret_is_refused(tmp_path: Path, store: str, key: str) -> None:
    (tmp_path / "lake.toml").write_text(f"[stores.lake]\n{store}\n")
    error = assert_flight_error(
        lambda: load_catalog(tmp_path), CatalogError, rf"store 'lake'.*'{key}'"
    )
    assert str(tmp_path / "lake.toml") in str(error)
    instead = "account_key_env" if key == "access_key" else f"{key}_env"
    assert f'{instead} = "MY_VARIABLE"' in str(error) and "environment variable" in str(error)
    assert "abc" not in str(error) and "AKIA" not in str(error)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            '[tables.t]\nsource = "s3://b/x/"\nformat = "parquet"\nstore = "nope"\n',
            r"table 't': store 'nope' is not declared",
            id="unknown-store",
        ),
        pytest.param(
            '[stores.g]\ntype = "gcs"\n'
            '[tables.t]\nsource = "s3://b/x/"\nformat = "parquet"\nstore = "g"\n',
            r"table 't': store 'g' is of type 'gcs'",
            id="type-mismatch",
        ),
        pytest.param(
            '[stores.s]\ntype = "s3"\nbucket = "a"\n'
            '[tables.t]\nsource = "s3://b/x/"\nformat = "parquet"\nstore = "s"\n',
            r"store 's' is for bucket 'a'",
            id="bucket-mismatch",
        ),
        pytest.param(
            '[stores.s]\ntype = "s3"\nendpoint = "http://127.0.0.1:9"\n',
            r"store 's': endpoint .* is plain http; set allow_http = true",
            id="http-needs-allow-http",
        ),
        pytest.param(
            '[stores.s]\ntype = "ftp"\n', r"store 's': 'type' must be one of", id="bad-type"
        ),
        pytest.param(
            '[stores.s]\ntype = "s3"\nbucket = "a"\ncolour = "red"\n',
            r"store 's': unknown key\(s\) \['colour'\]",
            id="unknown-key",
        ),
        pytest.param(
            '[stores.s]\ntype = "s3"\naccess_key_id_env = "A"\n',
            r"give both 'access_key_id_env' and 'secret_access_key_env'",
            id="half-credentials",
        ),
        pytest.param(
            '[tables.t]\nsource = "http://example.com/x.parquet"\nformat = "parquet"\n',
            r"table 't': plain http:// URLs cannot be read",
            id="plain-http-source",
        ),
        pytest.param(
            '[tables.t]\nsource = "ftp://example.com/x.parquet"\nformat = "parquet"\n',
            r"table 't': source scheme 'ftp://' is not supported",
            id="unknown-scheme",
        ),
        pytest.param(
            '[stores.s]\ntype = "s3"\n'
            '[tables.t]\nsource = "x.parquet"\nformat = "parquet"\nstore = "s"\n',
            r"table 't': 'store' is for object-store URLs",
            id="store-on-local-source",
        ),
    ],
)
def test_bad_store_declarations(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "x.parquet").write_bytes(b"")
    (tmp_path / "lake.toml").write_text(text)
    error = assert_flight_error(lambda: load_catalog(tmp_path), CatalogError, message)
    assert str(tmp_path / "lake.toml") in str(error)


def test_one_bucket_one_set_of_settings(tmp_path: Path) -> None:
    table = '[tables.t]\nsource = "s3://b/x/"\nformat = "parquet"\n'
    (tmp_path / "a.toml").write_text(
        '[stores.s]\ntype = "s3"\nbucket = "b"\nregion = "eu-west-1"\n' + table
    )
    (tmp_path / "b.toml").write_text(
        '[stores.s]\ntype = "s3"\nbucket = "b"\nregion = "us-east-1"\n' + table
    )
    error = assert_flight_error(
        lambda: load_catalog(tmp_path), CatalogError, r"s3://b is read through"
    )
    assert str(tmp_path / "a.toml") in str(error) and str(tmp_path / "b.toml") in str(error)


def test_store_resolution(tmp_path: Path) -> None:
    """Named store, else the file's store for the bucket, else its only bucket-less store of
    the type, else the environment."""
    (tmp_path / "r.toml").write_text(
        '[stores.exact]\ntype = "s3"\nbucket = "a"\n'
        '[stores.any]\ntype = "s3"\nendpoint = "https://s3.example.com"\n'
        '[tables.named]\nsource = "s3://c/x/"\nformat = "parquet"\nstore = "any"\n'
        '[tables.by_bucket]\nsource = "s3://a/x/"\nformat = "parquet"\n'
        '[tables.general]\nsource = "s3://b/x"\nformat = "parquet"\n'
        '[tables.env]\nsource = "gs://g/x/*.parquet"\nformat = "parquet"\n'
        '[tables.file]\nsource = "gs://g/y/data.parquet"\nformat = "parquet"\n'
    )
    (schema,) = load_catalog(tmp_path)
    found = {t.name: (t.store.store.label if t.store else None, t.source) for t in schema.tables}
    assert found == {
        "named": ("any", "s3://c/x/"),
        "by_bucket": ("exact", "s3://a/x/"),
        "general": ("any", "s3://b/x/"),
        "env": ("(environment)", "gs://g/x/*.parquet"),
        "file": ("(environment)", "gs://g/y/data.parquet"),
    }


# -- HTTPS ---------------------------------------------------------------------------


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single ``Range`` requests, as object_store's HTTP client reads."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_head(self) -> Any:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return None
        data = path.read_bytes()
        wanted = self.headers.get("Range")
        if wanted:
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start, end = int(first), int(last) if last else len(data) - 1
            body = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return io.BytesIO(body)


@pytest.fixture
def https_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An HTTPS server on 127.0.0.1 over ``tmp_path/www``, its CA trusted via SSL_CERT_FILE."""
    pki = make_pki(tmp_path / "pki")
    www = tmp_path / "www"
    www.mkdir()
    pq.write_table(pa.table({"id": [1, 2, 3]}), www / "ids.parquet")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_RangeHandler, directory=str(www))
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(pki.server_cert, pki.server_key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_cert))  # read when the store is built
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_https_file(tmp_path: Path, https_files: str) -> None:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "web.toml").write_text(
        f'[tables.implicit]\nsource = "{https_files}/ids.parquet"\nformat = "parquet"\n'
        f'[stores.site]\ntype = "http"\nurl = "{https_files}"\n'
        f'[tables.named]\nsource = "{https_files}/ids.parquet"\nformat = "parquet"\n'
        'store = "site"\n'
    )
    ctx, problems = _register(catalog)
    assert problems == []
    for table in ("implicit", "named"):
        assert ctx.sql(f"select sum(id) as s from web.{table}").to_pydict() == {"s": [6]}


def test_gcs_and_azure_stores_build_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building a store reads settings only (no request); an Azure store without an account
    is a problem that says how to give one. (No GCS or Azure service runs in these tests.)"""
    for name in ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEST_AZURE_KEY", "a2V5")
    (tmp_path / "cloud.toml").write_text(
        '[stores.azure]\ntype = "azure"\naccount = "acct"\naccount_key_env = "TEST_AZURE_KEY"\n'
        '[tables.gcs]\nsource = "gs://bucket/x/"\nformat = "parquet"\n'
        '[tables.blob]\nsource = "az://box/x/"\nformat = "parquet"\nstore = "azure"\n'
        '[tables.adls]\nsource = "abfss://box@acct.dfs.core.windows.net/x/"\nformat = "csv"\n'
    )
    (tmp_path / "env.toml").write_text(
        '[tables.nameless]\nsource = "az://other/x/"\nformat = "parquet"\n'
    )
    bindings = {
        t.name: t.store for s in load_catalog(tmp_path) for t in s.tables if t.store is not None
    }
    assert {n: b.url for n, b in bindings.items()} == {
        "gcs": "gs://bucket",
        "blob": "az://box",
        "adls": "abfss://acct.dfs.core.windows.net",
        "nameless": "az://other",
    }
    failed = objectstores.register_object_stores(SessionContext(), bindings.values())
    assert [(b.url, reason) for b, reason in failed] == [
        (
            "az://other",
            'no storage account: set account = "..." in the store or AZURE_STORAGE_ACCOUNT_NAME',
        )
    ]
    assert objectstores.storage_options(bindings["blob"]) == {
        "AZURE_STORAGE_ACCOUNT_NAME": "acct",
        "AZURE_STORAGE_ACCOUNT_KEY": "a2V5",
    }
