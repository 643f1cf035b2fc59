"""Roles hold on every surface (issue 15, outcome 1): EXPLAIN in every form,
``information_schema``, error texts for SQL and Substrait, discovery and metrics.

One module server over a small catalog in a temporary directory:

- ``pub.logs`` (Parquet) and ``pub.summary``, a view over it;
- ``secret.people`` (Parquet, with a ``salary`` column) and ``secret.rich``, a view over it.

Principals (API keys): ``admin`` (``*``), ``auditor`` (``*`` with ``explain_paths = true``),
``logs`` (``pub.*``) and ``viewer`` (``pub.*`` and the view ``secret.rich`` only: the table
under it stays hidden). docs/security.md lists each surface with the test here that holds it.
"""

from __future__ import annotations

import hashlib
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest
from datafusion import SessionConfig, SessionContext
from datafusion.substrait import Serde

from flightsql_srv.app import Service
from flightsql_srv.auth.config import parse_auth
from flightsql_srv.engine import PATH_HIDDEN
from flightsql_srv.protocol import pack, sql_pb2
from tests.conftest import running_server
from tests.helpers import assert_flight_error, failure, statement_descriptor

KEYS = {
    "admin": ("surfaces-admin-5e1f", ["admin"]),
    "auditor": ("surfaces-auditor-93b0", ["auditor"]),
    "logs": ("surfaces-logs-0c7d", ["logs"]),
    "viewer": ("surfaces-viewer-a412", ["viewer"]),
}
#: Names that must never reach ``logs`` or ``viewer`` (besides the catalog directory).
HIDDEN_NAMES = ("people", "salary", "secret-only-row")

EXPLAIN_FORMS = [
    pytest.param("explain {q}", id="explain"),
    pytest.param("explain verbose {q}", id="verbose"),
    pytest.param("explain analyze {q}", id="analyze"),
    pytest.param("explain analyze verbose {q}", id="analyze-verbose"),
    pytest.param("explain format indent {q}", id="format-indent"),
    pytest.param("explain format tree {q}", id="format-tree"),
    pytest.param("explain format pgjson {q}", id="format-pgjson"),
    pytest.param("explain format graphviz {q}", id="format-graphviz"),
    pytest.param("EXPLAIN  Verbose\n{q}", id="spelling"),
]


def _options(principal: str) -> flight.FlightCallOptions:
    key = KEYS[principal][0]
    return flight.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {key}".encode())], timeout=30
    )


@pytest.fixture(scope="module")
def catalog() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="surfaces-") as directory:
        root = Path(directory)
        pq.write_table(pa.table({"host": ["a", "b"], "v": [1.0, 2.0]}), root / "logs.parquet")
        pq.write_table(
            pa.table({"name": ["secret-only-row"], "salary": [9.0]}), root / "people.parquet"
        )
        (root / "pub.toml").write_text(
            '[tables.logs]\nsource = "logs.parquet"\nformat = "parquet"\n'
            '[tables.summary]\nsql = "select host, max(v) as top from pub.logs group by host"\n'
        )
        (root / "secret.toml").write_text(
            '[tables.people]\nsource = "people.parquet"\nformat = "parquet"\n'
            '[tables.rich]\nsql = "select name from secret.people where salary > 1"\n'
        )
        yield root


@pytest.fixture(scope="module")
def srv(catalog: Path) -> Iterator[Service]:
    auth = parse_auth(
        {
            "api_keys": [
                {"name": name, "sha256": hashlib.sha256(key.encode()).hexdigest(), "roles": roles}
                for name, (key, roles) in KEYS.items()
            ],
            "roles": {
                "admin": {"tables": ["*"]},
                "auditor": {"tables": ["*"], "explain_paths": True},
                "logs": {"tables": ["pub.*"]},
                "viewer": {"tables": ["pub.*", "secret.rich"]},
            },
        }
    )
    with running_server(catalog=catalog, auth=auth, metrics_port=0) as service:
        yield service


@pytest.fixture(scope="module")
def client(srv: Service) -> Iterator[flight.FlightClient]:
    with flight.connect(f"grpc://127.0.0.1:{srv.port}") as c:
        yield c


def _run(client: flight.FlightClient, descriptor: flight.FlightDescriptor, who: str) -> pa.Table:
    info = client.get_flight_info(descriptor, _options(who))
    table: pa.Table = client.do_get(info.endpoints[0].ticket, _options(who)).read_all()
    return table


def _query(client: flight.FlightClient, sql: str, who: str) -> pa.Table:
    return _run(client, statement_descriptor(sql), who)


def _text(table: pa.Table) -> str:
    return "\n".join(str(v) for row in table.to_pylist() for v in row.values())


def _assert_reveals_nothing(text: str, catalog: Path) -> None:
    for name in HIDDEN_NAMES:
        assert name not in text, f"{name!r} leaks: {text}"
    assert str(catalog).strip("/") not in text, f"the catalog path leaks: {text}"
    assert "logs.parquet" not in text, text


# -- EXPLAIN ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", EXPLAIN_FORMS)
def test_explain_of_a_view_over_hidden_tables_is_permission_denied(
    client: flight.FlightClient, form: str
) -> None:
    sql = form.format(q="select * from secret.rich")
    assert _query(client, sql, "admin").num_rows > 0  # valid SQL
    assert _query(client, "select * from secret.rich", "viewer").num_rows == 1  # granted
    raised = failure(lambda: _query(client, sql, "viewer"))
    assert_flight_error(raised, flight.FlightUnauthorizedError, "^EXPLAIN is refused: .*view")
    _assert_reveals_nothing(str(raised), Path("/nonexistent"))
    # A join, a subquery: anything that reads the view.
    joined = form.format(
        q="select l.host from pub.logs l where l.host in (select name from secret.rich)"
    )
    assert_flight_error(
        lambda: _query(client, joined, "viewer"), flight.FlightUnauthorizedError, "EXPLAIN"
    )


@pytest.mark.parametrize("form", EXPLAIN_FORMS)
def test_explain_of_visible_objects_is_served_without_paths(
    client: flight.FlightClient, catalog: Path, form: str
) -> None:
    for who in ("viewer", "logs", "admin"):
        for q in ("select * from pub.logs where v > 1", "select * from pub.summary"):
            text = _text(_query(client, form.format(q=q), who))
            assert "logs" in text or "DataSourceExec" in text, text
            _assert_reveals_nothing(text, catalog)


def test_explain_shows_paths_to_a_role_with_explain_paths(
    client: flight.FlightClient, catalog: Path
) -> None:
    sql = "explain select * from pub.logs"
    shown = _text(_query(client, sql, "auditor"))
    assert "logs.parquet" in shown and str(catalog).strip("/") in shown
    hidden = _text(_query(client, sql, "admin"))
    assert "logs.parquet" not in hidden and f"file_groups={{1 group: [{PATH_HIDDEN}]}}" in hidden
    # ANALYZE names files in its metrics too.
    analyzed = _text(_query(client, "explain analyze verbose select * from pub.logs", "admin"))
    assert PATH_HIDDEN in analyzed and "logs.parquet" not in analyzed


def test_explain_as_a_prepared_statement_and_through_adbc(srv: Service) -> None:
    key = KEYS["viewer"][0]
    uri = f"grpc://127.0.0.1:{srv.port}"
    kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {key}"}
    with adbc.connect(uri, db_kwargs=kwargs, autocommit=True) as conn, conn.cursor() as cur:
        with pytest.raises(adbc.Error) as raised:
            cur.execute("explain select * from secret.rich where name = $1", ("x",))
        assert_flight_error(raised, adbc.Error, "EXPLAIN is refused")
        cur.execute("explain select * from pub.logs where host = $1", ("a",))
        text = "\n".join(str(v) for row in cur.fetchall() for v in row)
        assert PATH_HIDDEN in text and ".parquet" not in text


# -- information_schema ----------------------------------------------------------------------


def test_information_schema_is_scoped_to_what_the_caller_sees(
    client: flight.FlightClient, catalog: Path
) -> None:
    def rows(sql: str, who: str) -> set[tuple[Any, ...]]:
        return {tuple(r.values()) for r in _query(client, sql, who).to_pylist()}

    schemata = "select schema_name from information_schema.schemata"
    assert {"pub", "secret"} <= {s for (s,) in rows(schemata, "admin")}
    assert rows(schemata, "logs") == {("pub",)}
    assert rows(schemata, "viewer") == {("pub",), ("secret",)}
    tables = (
        "select table_schema, table_name from information_schema.tables "
        "where table_schema <> 'information_schema'"
    )
    assert rows(tables, "logs") == {("pub", "logs"), ("pub", "summary")}
    assert rows(tables, "viewer") == {("pub", "logs"), ("pub", "summary"), ("secret", "rich")}
    views = "select table_schema, table_name, definition from information_schema.views"
    assert {(s, t) for s, t, _ in rows(views, "viewer")} == {
        ("pub", "logs"),
        ("pub", "summary"),
        ("secret", "rich"),
    }
    columns = (
        "select table_schema, table_name, column_name from information_schema.columns "
        "where table_schema <> 'information_schema'"
    )
    assert ("secret", "rich", "name") in rows(columns, "viewer")
    assert not {r for r in rows(columns, "viewer") if r[1] == "people"}
    assert not {r for r in rows(columns, "logs") if r[0] == "secret"}
    # Settings, functions and their parameters hold nothing per table: the same for all.
    for table in ("df_settings", "routines", "parameters"):
        sql = f"select * from information_schema.{table}"
        assert rows(sql, "logs") == rows(sql, "admin")
        _assert_reveals_nothing(_text(_query(client, sql, "logs")), catalog)
    for sql in ("show tables", "show all", "show columns from secret.rich"):
        _assert_reveals_nothing(_text(_query(client, sql, "viewer")), catalog)


# -- errors: hidden and missing look the same ------------------------------------------------

HIDDEN_SQL = [
    pytest.param("select * from {s}.people", id="table-of-hidden-schema"),
    pytest.param("select * from {s}.rich", id="view-of-hidden-schema"),
    pytest.param("describe {s}.people", id="describe"),
    pytest.param("explain select * from {s}.people", id="explain"),
    pytest.param("show columns from {s}.people", id="show-columns"),
]


@pytest.mark.parametrize("form", HIDDEN_SQL)
def test_sql_on_a_hidden_schema_fails_like_a_missing_schema(
    client: flight.FlightClient, form: str
) -> None:
    _query(client, form.format(s="secret"), "admin")
    hidden = failure(lambda: _query(client, form.format(s="secret"), "logs"))
    missing = failure(lambda: _query(client, form.format(s="nosuch"), "logs"))
    assert type(hidden) is type(missing)
    assert str(hidden).replace("secret", "nosuch") == str(missing), (hidden, missing)


def _substrait(plan: bytes) -> flight.FlightDescriptor:
    command = sql_pb2.CommandStatementSubstraitPlan(plan=sql_pb2.SubstraitPlan(plan=plan))
    return flight.FlightDescriptor.for_command(pack(command))


def _plan_for(schema: str, table: str = "people") -> bytes:
    """A Substrait plan reading ``schema.table``, built where that table exists."""
    ctx = SessionContext(SessionConfig().with_default_catalog_and_schema("flightsql", schema))
    ctx.register_record_batches(table, [[pa.record_batch({"name": pa.array(["x"])})]])
    plan: bytes = Serde.serialize_bytes(f"select name from {schema}.{table}", ctx)
    return plan


def test_substrait_on_a_hidden_schema_fails_like_a_missing_schema(
    client: flight.FlightClient,
) -> None:
    assert _run(client, _substrait(_plan_for("secret")), "admin").num_rows == 1
    hidden = failure(lambda: _run(client, _substrait(_plan_for("secret")), "logs"))
    missing = failure(lambda: _run(client, _substrait(_plan_for("nosuch")), "logs"))
    assert_flight_error(hidden, pa.ArrowInvalid, "invalid Substrait plan")
    assert str(hidden).replace("secret", "nosuch") == str(missing), (hidden, missing)
    # A schema the caller sees part of: a hidden table there is a missing table.
    hidden = failure(lambda: _run(client, _substrait(_plan_for("secret")), "viewer"))
    missing = failure(lambda: _run(client, _substrait(_plan_for("secret", "ghost")), "viewer"))
    assert_flight_error(hidden, pa.ArrowInvalid, "(?i)no table named 'secret.people'")
    assert str(hidden).replace("people", "ghost") == str(missing), (hidden, missing)


# -- discovery and metrics -------------------------------------------------------------------


def _command(message: Any) -> flight.FlightDescriptor:
    return flight.FlightDescriptor.for_command(pack(message))


def test_discovery_is_scoped(client: flight.FlightClient) -> None:
    schemas = _run(client, _command(sql_pb2.CommandGetDbSchemas()), "logs")
    assert set(schemas.column("db_schema_name").to_pylist()) == {"pub"}
    schemas = _run(client, _command(sql_pb2.CommandGetDbSchemas()), "viewer")
    assert set(schemas.column("db_schema_name").to_pylist()) == {"pub", "secret"}
    tables = _run(client, _command(sql_pb2.CommandGetTables(include_schema=True)), "viewer")
    listed = set(
        zip(tables["db_schema_name"].to_pylist(), tables["table_name"].to_pylist(), strict=True)
    )
    assert listed == {("pub", "logs"), ("pub", "summary"), ("secret", "rich")}
    rich = tables.filter(pa.compute.equal(tables["table_name"], "rich"))
    schema = pa.ipc.read_schema(pa.py_buffer(rich["table_schema"][0].as_py()))
    assert schema.names == ["name"]  # the view's columns, not the hidden table's
    catalogs = _run(client, _command(sql_pb2.CommandGetCatalogs()), "logs")
    assert catalogs.column("catalog_name").to_pylist() == ["flightsql"]
    for keys in (
        sql_pb2.CommandGetPrimaryKeys(db_schema="secret", table="people"),
        sql_pb2.CommandGetExportedKeys(db_schema="secret", table="people"),
        sql_pb2.CommandGetImportedKeys(db_schema="secret", table="people"),
    ):
        assert _run(client, _command(keys), "logs").num_rows == 0
    flights = list(client.list_flights(options=_options("logs")))
    assert {tuple(p.decode() for p in f.descriptor.path) for f in flights} == {
        ("pub", "logs"),
        ("pub", "summary"),
    }


def test_metrics_name_no_table_path_or_principal(
    srv: Service, client: flight.FlightClient, catalog: Path
) -> None:
    _query(client, "select * from secret.rich", "viewer")
    failure(lambda: _query(client, "select * from secret.people", "viewer"))
    _query(client, "explain select * from pub.logs", "auditor")
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics") as response:
        text = response.read().decode()
    assert "flightsql_rpcs_total" in text or "flightsql_" in text
    _assert_reveals_nothing(text, catalog)
    for name in ("rich", "viewer", "auditor", "secret"):
        assert name not in text, f"metrics name {name!r}"


def test_explain_paths_must_be_a_boolean() -> None:
    with pytest.raises(
        ValueError, match=r"\[auth.roles.r\]: 'explain_paths' must be true or false"
    ):
        parse_auth({"roles": {"r": {"tables": ["*"], "explain_paths": "yes"}}})
    role = parse_auth({"roles": {"r": {"tables": ["*"], "explain_paths": True}}}).roles["r"]
    assert role.explain_paths
