"""Roles: each principal sees only its tables, in discovery and in queries, and a hidden
table is indistinguishable from a missing one.

The demo catalog (demo.logs, demo.metrics) is served once for the module with API keys for
the roles ``reader`` (``*``), ``logs_only`` (``demo.logs``), ``nothing`` (no tables) and a
few combinations, plus a user whose session token carries ``logs_only``.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from datafusion import SessionConfig, SessionContext
from datafusion.substrait import Serde

from flightsql_srv.app import Service
from flightsql_srv.auth.config import parse_auth
from flightsql_srv.auth.passwords import hash_password
from flightsql_srv.protocol import flight_pb2, pack, sql_pb2
from tests.conftest import running_server
from tests.helpers import assert_flight_error, failure, statement_descriptor

#: principal name → (API key, roles)
KEYS: dict[str, tuple[str, list[str]]] = {
    "reader": ("roles-key-reader-3f9a", ["reader"]),
    "logs_only": ("roles-key-logs-71c2", ["logs_only"]),
    "nothing": ("roles-key-nothing-0b5e", ["nothing"]),
    "demo_star": ("roles-key-demo-star-9d44", ["demo_star"]),
    "no_roles": ("roles-key-no-roles-2a61", []),
    "logs_and_nothing": ("roles-key-mixed-c830", ["logs_only", "nothing"]),
}
PASSWORD = "logs are all I may read"
ALL = {("demo", "logs"), ("demo", "metrics")}
LOGS = {("demo", "logs")}
#: What each principal must see of the demo schema.
EXPECTED: dict[str, set[tuple[str, str]]] = {
    "reader": ALL,
    "logs_only": LOGS,
    "nothing": set(),
    "demo_star": ALL,
    "no_roles": set(),
    "logs_and_nothing": LOGS,
    "alice": LOGS,
}


def _bearer(token: str) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])


def _cmd(message: Any) -> flight.FlightDescriptor:
    return flight.FlightDescriptor.for_command(pack(message))


def _run(
    client: flight.FlightClient, descriptor: flight.FlightDescriptor, options: Any
) -> pa.Table:
    info = client.get_flight_info(descriptor, options)
    assert len(info.endpoints) == 1
    table: pa.Table = client.do_get(info.endpoints[0].ticket, options).read_all()
    return table


def _query(client: flight.FlightClient, sql: str, options: Any) -> pa.Table:
    return _run(client, statement_descriptor(sql), options)


def _demo_tables(rows: list[tuple[str, str]]) -> set[tuple[str, str]]:
    return {(s, t) for s, t in rows if s == "demo"}


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv() -> Iterator[Service]:
    auth = parse_auth(
        {
            "api_keys": [
                {"name": name, "sha256": hashlib.sha256(key.encode()).hexdigest(), "roles": roles}
                for name, (key, roles) in KEYS.items()
            ],
            "users": [
                {"name": "alice", "password_hash": hash_password(PASSWORD), "roles": ["logs_only"]}
            ],
            "roles": {
                "reader": {"tables": ["*"]},
                "logs_only": {"tables": ["demo.logs"]},
                "nothing": {"tables": []},
                "demo_star": {"tables": ["demo.*"]},
            },
        }
    )
    with running_server(auth=auth) as service:  # the demo catalog
        yield service


@pytest.fixture(scope="module")
def uri(srv: Service) -> str:
    return f"grpc://127.0.0.1:{srv.port}"


@pytest.fixture(scope="module")
def client(uri: str) -> Iterator[flight.FlightClient]:
    with flight.connect(uri) as c:
        yield c


@pytest.fixture(scope="module")
def options(client: flight.FlightClient) -> dict[str, flight.FlightCallOptions]:
    """Call options per principal; alice's come from the handshake (a session token)."""
    result = {name: _bearer(key) for name, (key, _) in KEYS.items()}
    result["alice"] = flight.FlightCallOptions(
        headers=[client.authenticate_basic_token("alice", PASSWORD)]
    )
    return result


def _adbc(uri: str, principal: str, **extra: str) -> Any:
    if principal == "alice":
        kwargs = {"username": "alice", "password": PASSWORD}
    else:
        kwargs = {"adbc.flight.sql.authorization_header": f"Bearer {KEYS[principal][0]}"}
    return adbc.connect(uri, db_kwargs={**kwargs, **extra}, autocommit=True)


PRINCIPALS = list(EXPECTED)
RESTRICTED = [p for p in PRINCIPALS if EXPECTED[p] != ALL]


# -- discovery -----------------------------------------------------------------------------


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_get_tables_lists_only_allowed_tables(
    client: flight.FlightClient, options: Any, principal: str
) -> None:
    table = _run(client, _cmd(sql_pb2.CommandGetTables()), options[principal]).to_pydict()
    rows = list(zip(table["db_schema_name"], table["table_name"], strict=True))
    assert _demo_tables(rows) == EXPECTED[principal]
    if EXPECTED[principal] != ALL:
        assert set(rows) == EXPECTED[principal]  # nothing else either
    # With schemas, filtered to the hidden name, for Grafana's column lookup.
    command = sql_pb2.CommandGetTables(table_name_filter_pattern="metrics", include_schema=True)
    found = _run(client, _cmd(command), options[principal])
    assert found.num_rows == (1 if ("demo", "metrics") in EXPECTED[principal] else 0)


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_get_db_schemas_lists_only_schemas_with_allowed_tables(
    client: flight.FlightClient, options: Any, principal: str
) -> None:
    table = _run(client, _cmd(sql_pb2.CommandGetDbSchemas()), options[principal]).to_pydict()
    schemas = set(table["db_schema_name"])
    if EXPECTED[principal]:
        assert "demo" in schemas
    else:
        assert schemas == set()
    if EXPECTED[principal] == LOGS:
        assert schemas == {"demo"}


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_list_flights_lists_only_allowed_tables(
    client: flight.FlightClient, options: Any, principal: str
) -> None:
    flights = list(client.list_flights(options=options[principal]))
    paths = {tuple(p.decode() for p in f.descriptor.path) for f in flights}
    assert paths == EXPECTED[principal]
    for info in flights:  # and each endpoint is redeemable by that principal
        reader = client.do_get(info.endpoints[0].ticket, options[principal])
        assert reader.schema.equals(info.schema)
        reader.read_chunk()
        reader.cancel()


@pytest.mark.parametrize("principal", ["reader", "logs_only", "nothing", "alice"])
def test_adbc_get_objects_shows_only_allowed_tables(uri: str, principal: str) -> None:
    with _adbc(uri, principal) as conn:
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    seen = set()
    for catalog in objects:
        for schema in catalog["catalog_db_schemas"] or []:
            for table in schema["db_schema_tables"] or []:
                seen.add((schema["db_schema_name"], table["table_name"]))
                assert table["table_columns"], table  # columns of what is visible
    assert _demo_tables(list(seen)) == EXPECTED[principal]
    if EXPECTED[principal] != ALL:
        assert seen == EXPECTED[principal]


@pytest.mark.parametrize("principal", RESTRICTED)
def test_adbc_get_table_schema_of_a_hidden_table_is_not_found(uri: str, principal: str) -> None:
    with _adbc(uri, principal) as conn:
        with pytest.raises(adbc.ProgrammingError) as hidden:
            conn.adbc_get_table_schema("metrics", db_schema_filter="demo")
        with pytest.raises(adbc.ProgrammingError) as missing:
            conn.adbc_get_table_schema("no_such_table", db_schema_filter="demo")
        if ("demo", "logs") in EXPECTED[principal]:
            assert conn.adbc_get_table_schema("logs", db_schema_filter="demo").names
    assert_flight_error(hidden, adbc.ProgrammingError, "NOT_FOUND")
    assert str(hidden.value) == str(missing.value)


def test_adbc_get_table_schema_for_the_reader(uri: str) -> None:
    with _adbc(uri, "reader") as conn:
        assert "value" in conn.adbc_get_table_schema("metrics", db_schema_filter="demo").names


# -- queries --------------------------------------------------------------------------------

#: Ways to reach a table ({t}: its name in schema demo); each must fail for a hidden table
#: exactly as it fails for a table that does not exist.
HIDDEN_FORMS = [
    pytest.param("select * from demo.{t} limit 1", id="direct"),
    pytest.param("select count(*) from flightsql.demo.{t}", id="catalog-qualified"),
    pytest.param('select * from "demo"."{t}" limit 1', id="quoted"),
    pytest.param("select * from DEMO.{t} limit 1", id="upper-schema"),
    pytest.param(
        "select l.host from (select * from demo.logs limit 5) l "
        "join (select * from demo.{t} limit 5) m on l.host = m.host",
        id="join",
    ),
    pytest.param(
        "select count(*) from demo.logs where host in (select host from demo.{t} limit 3)",
        id="in-subquery",
    ),
    pytest.param("select (select max(time) from demo.{t}) as latest", id="scalar-subquery"),
    pytest.param(
        "select count(*) from demo.logs l where exists (select 1 from demo.{t} m "
        "where m.host = l.host and m.time > now() - interval '1 minute')",
        id="exists",
    ),
    pytest.param("with x as (select * from demo.{t}) select count(*) from x", id="cte"),
    pytest.param(
        "select count(*) from (select host from demo.logs union all select host from demo.{t})",
        id="union",
    ),
    pytest.param("describe demo.{t}", id="describe"),
    pytest.param("explain select * from demo.{t}", id="explain"),
]


@pytest.mark.parametrize("form", HIDDEN_FORMS)
def test_hidden_table_fails_like_a_missing_table(
    client: flight.FlightClient, options: Any, form: str
) -> None:
    # The reader can run the statement: it is valid.
    _query(client, form.format(t="metrics"), options["reader"])
    for principal in ("logs_only", "alice", "nothing"):
        opts = options[principal]
        hidden = failure(lambda o=opts: _query(client, form.format(t="metrics"), o))
        missing = failure(lambda o=opts: _query(client, form.format(t="no_such"), o))
        assert_flight_error(hidden, pa.ArrowInvalid, "not found")
        assert type(hidden) is type(missing)
        assert str(hidden).replace("metrics", "no_such") == str(missing), (hidden, missing)


@pytest.mark.parametrize("principal", ["nothing", "no_roles"])
def test_role_without_tables_sees_no_table_at_all(
    client: flight.FlightClient, options: Any, principal: str
) -> None:
    assert _query(client, "select 1 as one", options[principal]).to_pydict() == {"one": [1]}
    for table in ("logs", "metrics"):
        hidden = failure(
            lambda t=table: _query(client, f"select * from demo.{t}", options[principal])
        )
        assert_flight_error(hidden, pa.ArrowInvalid, f"demo.{table}' not found")


@pytest.mark.parametrize("principal", ["logs_only", "alice"])
def test_allowed_table_is_queryable(
    client: flight.FlightClient, options: Any, principal: str
) -> None:
    got = _query(client, "select count(*) as n from demo.logs", options[principal])
    expected = _query(client, "select count(*) as n from demo.logs", options["reader"])
    assert got.equals(expected) and got.column("n")[0].as_py() > 0


def test_reader_sees_both_tables(client: flight.FlightClient, options: Any) -> None:
    for principal in ("reader", "demo_star"):
        sql = (
            "select (select count(*) from demo.logs) as logs, "
            "(select count(*) from demo.metrics) as metrics"
        )
        row = _query(client, sql, options[principal]).to_pylist()[0]
        assert row["logs"] > 0 and row["metrics"] > 0


@pytest.mark.parametrize("principal", ["logs_only", "nothing", "alice"])
def test_prepared_statement_on_a_hidden_table_fails_like_a_missing_one(
    client: flight.FlightClient, options: Any, principal: str
) -> None:
    def prepare(table: str) -> None:
        body = pack(
            sql_pb2.ActionCreatePreparedStatementRequest(query=f"select * from demo.{table}")
        )
        list(client.do_action(flight.Action("CreatePreparedStatement", body), options[principal]))

    hidden, missing = failure(lambda: prepare("metrics")), failure(lambda: prepare("no_such"))
    assert_flight_error(hidden, pa.ArrowInvalid, "not found")
    assert str(hidden).replace("metrics", "no_such") == str(missing)


@pytest.mark.parametrize("principal", ["logs_only", "alice"])
def test_adbc_prepared_query_on_a_hidden_table(uri: str, principal: str) -> None:
    with _adbc(uri, principal) as conn, conn.cursor() as cur:
        cur.execute("select count(*) from demo.logs where level = $1", ("ERROR",))
        assert cur.fetchone()[0] >= 0
        with pytest.raises(adbc.ProgrammingError) as raised:
            cur.execute("select count(*) from demo.metrics where host = $1", ("host-01",))
        assert_flight_error(raised, adbc.ProgrammingError, "demo.metrics' not found")
        with pytest.raises(adbc.ProgrammingError) as raised:
            cur.adbc_execute_schema("select * from demo.metrics")
        assert_flight_error(raised, adbc.ProgrammingError, "not found")


@pytest.mark.parametrize("principal", ["logs_only", "nothing"])
def test_path_descriptor_of_a_hidden_table_is_not_found(
    client: flight.FlightClient, options: Any, principal: str
) -> None:
    def info(table: str) -> Any:
        return client.get_flight_info(
            flight.FlightDescriptor.for_path("demo", table), options[principal]
        )

    hidden, missing = failure(lambda: info("metrics")), failure(lambda: info("no_such"))
    assert_flight_error(hidden, pa.ArrowKeyError, "no table demo.metrics")
    assert str(hidden).replace("metrics", "no_such") == str(missing)
    assert client.get_flight_info(
        flight.FlightDescriptor.for_path("demo", "metrics"), options["reader"]
    ).endpoints


def _substrait(plan: bytes) -> flight.FlightDescriptor:
    command = sql_pb2.CommandStatementSubstraitPlan(plan=sql_pb2.SubstraitPlan(plan=plan))
    return _cmd(command)


@pytest.fixture(scope="module")
def ghost_plan() -> bytes:
    """A plan over demo.ghost, a table the server does not have at all."""
    ctx = SessionContext(SessionConfig().with_default_catalog_and_schema("flightsql", "demo"))
    ctx.register_record_batches("ghost", [[pa.record_batch({"host": pa.array(["a"])})]])
    plan: bytes = Serde.serialize_bytes("select host from demo.ghost", ctx)
    return plan


@pytest.mark.parametrize("principal", ["logs_only", "nothing", "alice"])
def test_substrait_plan_on_a_hidden_table_fails_like_a_missing_one(
    srv: Service, client: flight.FlightClient, options: Any, ghost_plan: bytes, principal: str
) -> None:
    # Built against the full catalog, as a client that knows the table would build it.
    plan = Serde.serialize_bytes("select host from demo.metrics", srv.engine.ctx)
    assert _run(client, _substrait(plan), options["reader"]).num_rows > 0
    hidden = failure(lambda: _run(client, _substrait(plan), options[principal]))
    missing = failure(lambda: _run(client, _substrait(ghost_plan), options[principal]))
    # A role that sees no table of demo does not see the schema either (docs/security.md).
    expected = "(?i)no table named 'demo.metrics'" if EXPECTED[principal] else "schema: demo"
    assert_flight_error(hidden, pa.ArrowInvalid, expected)
    assert str(hidden).replace("metrics", "ghost") == str(missing)
    # The prepared form too.
    request = sql_pb2.ActionCreatePreparedSubstraitPlanRequest(
        plan=sql_pb2.SubstraitPlan(plan=plan)
    )
    action = flight.Action("CreatePreparedSubstraitPlan", pack(request))
    prepared = failure(lambda: list(client.do_action(action, options[principal])))
    assert_flight_error(prepared, pa.ArrowInvalid, expected)


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_information_schema_shows_only_allowed_tables(
    client: flight.FlightClient, options: Any, principal: str
) -> None:
    tables = _query(
        client,
        "select table_schema, table_name from information_schema.tables "
        "where table_schema <> 'information_schema'",
        options[principal],
    ).to_pydict()
    rows = set(zip(tables["table_schema"], tables["table_name"], strict=True))
    assert rows == EXPECTED[principal]
    columns = _query(
        client,
        "select distinct table_name from information_schema.columns where table_schema = 'demo'",
        options[principal],
    ).to_pydict()
    assert {("demo", t) for t in columns["table_name"]} == EXPECTED[principal]
    shown = _query(client, "show tables", options[principal]).to_pydict()
    listed = set(zip(shown["table_schema"], shown["table_name"], strict=True))
    assert _demo_tables(list(listed)) == EXPECTED[principal]


def _set_schema(client: flight.FlightClient, schema: str, options: Any) -> dict[str, int]:
    request = flight_pb2.SetSessionOptionsRequest()
    request.session_options["schema"].string_value = schema
    action = flight.Action("SetSessionOptions", request.SerializeToString())
    (result,) = client.do_action(action, options)
    errors = flight_pb2.SetSessionOptionsResult.FromString(result.body.to_pybytes()).errors
    return {name: error.value for name, error in errors.items()}


def test_session_schema_follows_visibility(client: flight.FlightClient, options: Any) -> None:
    """A schema with no visible table is refused like one that does not exist."""
    missing = _set_schema(client, "no_such_schema", options["nothing"])
    assert missing == {"schema": flight_pb2.SetSessionOptionsResult.INVALID_VALUE}
    assert _set_schema(client, "demo", options["nothing"]) == missing
    assert _set_schema(client, "demo", options["logs_only"]) == {}


def test_adbc_session_schema_does_not_reveal_hidden_tables(uri: str) -> None:
    cookies = {"adbc.flight.sql.rpc.with_cookie_middleware": "true"}
    with _adbc(uri, "logs_only", **cookies) as conn:
        conn.adbc_current_db_schema = "demo"
        with conn.cursor() as cur:
            cur.execute("select count(*) from logs")
            assert cur.fetchone()[0] > 0
            with pytest.raises(adbc.ProgrammingError) as raised:
                cur.execute("select count(*) from metrics")
            assert_flight_error(raised, adbc.ProgrammingError, "metrics' not found")


# -- no bleed between roles ------------------------------------------------------------------

SAME_SQL = [
    "select table_name from information_schema.tables where table_schema = 'demo' "
    "order by table_name",
    "select count(*) as n from demo.metrics",
    "select count(*) as n from demo.logs l where l.host in "
    "(select host from demo.metrics where time > now() - interval '1 minute')",
]


def _outcome(client: flight.FlightClient, sql: str, options: Any) -> Any:
    try:
        return ("ok", _query(client, sql, options).to_pydict())
    except pa.ArrowInvalid as exc:
        assert "not found" in str(exc), exc
        return ("not found", None)


def test_same_sql_sequentially_in_both_orders(client: flight.FlightClient, options: Any) -> None:
    """Whoever plans a statement first, the next principal gets its own result."""
    for sql in SAME_SQL:
        for first, second in (("reader", "logs_only"), ("logs_only", "reader")):
            results = {p: _outcome(client, sql, options[p]) for p in (first, second, first)}
            if sql.startswith("select table_name"):
                assert results["reader"] == ("ok", {"table_name": ["logs", "metrics"]})
                assert results["logs_only"] == ("ok", {"table_name": ["logs"]})
            else:
                assert results["reader"][0] == "ok"
                assert results["logs_only"] == ("not found", None)


def test_same_sql_concurrently_gives_per_role_results(uri: str, options: Any) -> None:
    with flight.connect(uri) as c:
        expected = {
            (sql, p): _outcome(c, sql, options[p])
            for sql in SAME_SQL
            for p in ("reader", "logs_only", "nothing", "alice")
        }
    assert expected[(SAME_SQL[0], "nothing")] == ("ok", {"table_name": []})
    tasks = list(itertools.product(SAME_SQL, ["reader", "logs_only", "nothing", "alice"])) * 8

    def run(task: tuple[str, str]) -> tuple[tuple[str, str], Any]:
        sql, principal = task
        with flight.connect(uri) as c:
            return task, _outcome(c, sql, options[principal])

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, tasks))
    wrong = [(task, got) for task, got in results if got != expected[task]]
    assert not wrong, wrong[:5]
    # And discovery interleaved the same way.

    def tables(principal: str) -> tuple[str, set[tuple[str, str]]]:
        with flight.connect(uri) as c:
            table = _run(c, _cmd(sql_pb2.CommandGetTables()), options[principal]).to_pydict()
        rows = zip(table["db_schema_name"], table["table_name"], strict=True)
        return principal, _demo_tables(list(rows))

    with ThreadPoolExecutor(max_workers=8) as pool:
        listed = list(pool.map(tables, ["reader", "logs_only", "nothing", "alice"] * 6))
    assert all(got == EXPECTED[p] for p, got in listed), listed
