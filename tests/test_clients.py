"""The client conformance suite: independent Flight SQL clients from PyPI and npm, each used
the way its own docs show, against one real server with authentication on.

Every client runs its operations once (:mod:`tests.clients.drivers` in this process; the
ones whose dependencies or protobufs clash with ours in processes of their own), and each
operation is one test checked against the same expectation for every client. An operation
that fails because of the client is a strict xfail naming the client's bug, so a fixed
client shows up as XPASS; nothing is skipped. ``docs/clients.md`` holds the table this module
prints (``python -m tests.test_clients``), and a test keeps the two equal.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from flightsql_srv.app import Service
from tests.clients import API_KEY, ITEMS, PASSWORD, USER, clients_server, reader_auth
from tests.clients.cache import npm_clients, python_client
from tests.clients.drivers import DRIVERS, quietly
from tests.conftest import ROOT, running_server
from tests.test_docs import snippets

HERE = ROOT / "tests" / "clients"
DOC = ROOT / "docs" / "clients.md"
_RUN_TIMEOUT = 180.0


@dataclass(frozen=True)
class Client:
    package: str  #: what is installed, with the version tested
    how: str  #: how the suite uses it (docs/clients.md's words)
    ops: tuple[str, ...]  #: the operations its driver performs, in the table's order


#: Installed into the test venv by the ``test`` extra (versions as pinned there).
_ADBC = "adbc-driver-flightsql 1.13.0"
#: Operations several drivers share: sign-ins and reading results.
_SIGN_IN = ("connect", "bearer", "refused")
_READ = (*_SIGN_IN, "query", "types", "large")
_LISTS = ("catalogs", "schemas", "tables", "views")
#: drivers.py's ADBC DB-API drivers; both npm clients; the SQLAlchemy 2 dialects.
_DBAPI_OPS = (
    *_READ,
    "qmark",
    "dollar",
    "named",
    "prepared",
    *_LISTS,
    "columns",
    "session",
    "error",
)
_NPM_OPS = (*_READ, *_LISTS)
_SQLALCHEMY_OPS = (
    *_SIGN_IN,
    *("bind", "core", "schemas", "tables", "views", "has_table", "columns", "types"),
    *("pandas", "error"),
)
CLIENTS = {
    "adbc-dbapi": Client(
        _ADBC,
        "`adbc_driver_flightsql.dbapi.connect` (Go driver), DB-API cursor",
        _DBAPI_OPS,
    ),
    "adbc-low-level": Client(
        _ADBC + " + adbc-driver-manager",
        "`AdbcStatement`: `prepare`, `bind(batch)`, `execute_query`",
        (
            "connect",
            "query",
            "large",
            "qmark",
            "dollar",
            "named",
            "prepared",
            "parameter_schema",
            "columns",
            "table_types",
            "session",
            "error",
        ),
    ),
    "gizmosql-adbc": Client(
        "adbc-driver-gizmosql 2.0.15",
        "GizmoSQL's ADBC fork: `adbc_driver_gizmosql.dbapi.connect('gizmosql://…?transport=tcp')`",
        _DBAPI_OPS,
    ),
    "polars": Client(
        "polars ≥ 1.0 (2.1.0 when written) over " + _ADBC,
        "`pl.read_database(sql, connection=adbc_conn, execute_options={'parameters': …})`",
        ("query", "types", "large", "qmark", "dollar", "error"),
    ),
    "pandas": Client(
        "pandas ≥ 2.2 (3.1.1 when written) over " + _ADBC,
        "`pd.read_sql(sql, adbc_conn)`",
        ("query", "types", "large", "qmark", "error"),
    ),
    "sqlalchemy-adbc": Client(
        "sqlalchemy-adbc 0.3.0 (SQLAlchemy 2)",
        "`create_engine('adbc+flightsql://host:port?tls=false', connect_args=…)`, Core, Inspector",
        _SQLALCHEMY_OPS,
    ),
    "ttr-sqlalchemy": Client(
        "ttr-sqlalchemy 0.11.0 (SQLAlchemy 2)",
        "`create_engine('tatrman://user:pw@host:port?tls=false')`, Core, Inspector",
        _SQLALCHEMY_OPS,
    ),
    "altertable": Client(
        "altertable-flightsql 0.4.1",
        "`altertable_flightsql.Client(username=…, password=…, tls=False)` (own process)",
        (
            "connect",
            "refused",
            "query",
            "large",
            "prepared",
            "named",
            "dollar",
            "catalogs",
            "schemas",
            "tables_and_views",
            "session",
            "error",
        ),
    ),
    "flightsql-dbapi": Client(
        "flightsql-dbapi 0.2.2 (SQLAlchemy 1.4, own venv)",
        "`flightsql.connect(FlightSQLClient(…))`, `datafusion+flightsql://` dialect",
        (
            "connect",
            "bearer",
            "refused",
            "query",
            "large",
            "qmark",
            "prepared",
            "catalogs",
            "schemas",
            "tables_and_views",
            "columns",
            "types",
            "error",
            "sqlalchemy_connect",
            "sqlalchemy_token",
            "sqlalchemy_bind",
            "sqlalchemy_core",
            "sqlalchemy_schemas",
            "sqlalchemy_tables_and_views",
            "sqlalchemy_columns",
        ),
    ),
    "lakehouse-rs (npm)": Client(
        "@lakehouse-rs/flight-sql-client 0.0.10",
        "Rust arrow-flight's client via napi-rs: `createFlightSqlClient({...})`",
        (
            *_NPM_OPS,
            "include_schema",
            "error",
        ),
    ),
    "gizmosql (npm)": Client(
        "@gizmodata/gizmosql-client 1.4.3",
        "TypeScript over @grpc/grpc-js: `new FlightSQLClient({plaintext: true, ...})`",
        (
            *_NPM_OPS,
            "table_types",
            "sql_info",
            "columns",
            "prepared",
            "primary_keys",
            "error",
        ),
    ),
}

#: What the subprocess-driven clients need; each builds once into .cache/clients.
_FLIGHTSQL_DBAPI = ["flightsql-dbapi==0.2.2", "pandas==3.1.1"]
_NPM = ["@lakehouse-rs/flight-sql-client@0.0.10", "@gizmodata/gizmosql-client@1.4.3"]


@dataclass(frozen=True)
class Known:
    """An operation that fails because of the client: the bug, and what to do instead."""

    bug: str
    workaround: str


KNOWN: dict[tuple[str, str], Known] = {
    ("adbc-dbapi", "named"): Known(
        "the Go driver refuses `adbc.statement.bind_by_name`, which the DB-API sets for a dict "
        "of parameters (NOT_IMPLEMENTED: Unknown statement option)",
        "pass a tuple (positional), or bind a batch whose columns are named after the "
        "placeholders with the low-level API (works, see adbc-low-level)",
    ),
    ("gizmosql-adbc", "named"): Known(
        "same Go driver core as ADBC's: `adbc.statement.bind_by_name` is refused",
        "pass a tuple (positional)",
    ),
    ("pandas", "qmark"): Known(
        "`pd.read_sql(..., params=...)` raises \"'params' is not implemented for ADBC drivers\"",
        "`pd.read_sql` on a SQLAlchemy engine (sqlalchemy-adbc) binds; or `cursor.execute(sql, "
        "params)` then `cursor.fetch_df()`",
    ),
    ("sqlalchemy-adbc", "tables"): Known(
        "reflection keeps GetObjects entries whose `table_type == 'table'` (SQLite's lower-case "
        "name), so Flight SQL's `TABLE` never matches",
        "`has_table`, `get_columns` and `Table(..., autoload_with=engine)` work; list tables "
        "with `conn.adbc_get_objects()` on the raw connection",
    ),
    ("sqlalchemy-adbc", "views"): Known(
        "same case-sensitive compare against `'view'`", "as for tables"
    ),
    ("altertable", "named"): Known(
        "`PreparedStatement.query` calls GetFlightInfo before it binds with DoPut, and then "
        "redeems the ticket planned without the values; the server refuses a query with "
        "unbound placeholders at GetFlightInfo",
        "put the values in the SQL, or use another client for bound parameters",
    ),
    ("altertable", "dollar"): Known(
        "`PreparedStatement.query` calls GetFlightInfo before it binds with DoPut (see `named`)",
        "as for `named`",
    ),
    ("altertable", "session"): Known(
        "sends no cookies, so the session options the server keeps in the "
        "`arrow_flight_session` cookie (the spec's suggestion) are lost after "
        "`set_schema`/`schema=`",
        "qualify names (`shop.items`)",
    ),
    ("flightsql-dbapi", "query"): Known(
        "results go through pandas, so a NULL string comes back as NaN; it also needs pandas "
        "without declaring it (ModuleNotFoundError until pandas is installed)",
        "install pandas beside it; read `FlightSQLClient.do_get(...).read_all()` for exact "
        "Arrow values",
    ),
    ("flightsql-dbapi", "sqlalchemy_bind"): Known(
        "the dialect's `LiteralBindCompiler` renders bound parameters as literals when the "
        "statement is compiled, before the values are known, so `text(':id')` becomes `NULL`",
        "write literals in Core expressions (`column > 1` works), or use its DB-API cursor "
        "with `?`",
    ),
    ("lakehouse-rs (npm)", "error"): Known(
        "a failed query rejects with a bare 'failed to prepare statement': the server's "
        "status message is dropped",
        "none in the client; the server's log has the query's error",
    ),
    ("lakehouse-rs (npm)", "refused"): Known(
        "a refused Handshake panics the client's tokio worker (`handshake: IpcError(... "
        "Unauthenticated ...)` at src/flight_client.rs:158), and `createFlightSqlClient` "
        "never settles",
        "bound the call with a timeout; check the credentials with another client",
    ),
    ("gizmosql (npm)", "columns"): Known(
        "`getQuerySchema` puts the raw `CommandStatementQuery` in the descriptor without the "
        "`google.protobuf.Any` wrapper that `execute` uses",
        "run the query (`execute`) and read `table.schema`",
    ),
    ("gizmosql (npm)", "prepared"): Known(
        '`prepare` sends a FlightDescriptor where DoAction needs an Action ("Request message '
        'serialization failure: Expected argument of type arrow.flight.protocol.Action")',
        "`execute` the SQL directly",
    ),
    ("gizmosql (npm)", "primary_keys"): Known(
        "`getPrimaryKeys`/`getForeignKeys` send the command without the Any wrapper",
        "none needed here: the server has no keys (both are always empty)",
    ),
}

_NO_FIELD = "No field named nope"
_NAMES = ITEMS.column_names


def _equals(expected: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda seen: "value" in seen and seen["value"] == expected


#: Operation → (what it checks, whether an observation passes). One expectation for every
#: client, so a difference is the client's or ours, never the test's.
EXPECT: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    "connect": (
        "`select 1` with username/password (Basic → Handshake → Bearer)",
        _equals([[1]]),
    ),
    "bearer": ("`select 1` with an API key as `authorization: Bearer`", _equals([[1]])),
    "refused": (
        "a wrong password: an error that says so",
        lambda seen: "invalid username or password" in seen.get("error", ""),
    ),
    "query": (
        "a table of 9 types (int, string, decimal, float, bool, date, timestamp, binary), "
        "NULLs kept",
        _equals({"columns": _NAMES, "ids": [1, 2, 3], "names": ["apple", "pear", None]}),
    ),
    "types": (
        "the client's type for each of the 9 columns, none unknown/NULL",
        lambda seen: (
            len(seen.get("value") or []) == len(_NAMES)
            and all(t and t.upper() not in ("NULL", "NULLTYPE", "NONE") for t in seen["value"])
        ),
    ),
    "large": ("300,000 rows in several batches", _equals(300000)),
    "qmark": ("`where id = ?`, one positional value", _equals([["pear"]])),
    "dollar": ("`where id = $1`, one positional value", _equals([["pear"]])),
    "named": ("`where id = $id`, a value by name", _equals([["pear"]])),
    "bind": ("`text('… where id = :id')` (sent as `?`)", _equals([["pear"]])),
    "core": (
        "Core `select().where(id > 1).limit(5)` on a reflected table (bound LIMIT)",
        _equals([[2], [3]]),
    ),
    "prepared": (
        "one prepared statement executed twice with new values (altertable: once, no values)",
        lambda seen: seen.get("value") in ([["apple"], ["pear"]], [["pear"]]),
    ),
    "parameter_schema": ("`?, ?` reported as two parameters", _equals(["1", "2"])),
    "catalogs": ("GetCatalogs", _equals(["flightsql"])),
    "schemas": ("GetDbSchemas", _equals(["public", "shop"])),
    "tables": ("tables of type TABLE in `shop`", _equals(["items"])),
    "views": ("tables of type VIEW in `shop`", _equals(["cheap"])),
    "tables_and_views": ("everything in `shop`", _equals(["cheap", "items"])),
    "table_types": ("GetTableTypes", _equals(["TABLE", "VIEW"])),
    "include_schema": ("GetTables with `include_schema`", _equals(1)),
    "has_table": ("`has_table('items', schema='shop')`", _equals(True)),
    "columns": (
        "a table's columns (GetTables `include_schema` / GetObjects)",
        _equals(_NAMES),
    ),
    "sql_info": ("GetSqlInfo", _equals({"0": "flightsql-srv"})),
    "primary_keys": ("GetPrimaryKeys (none)", _equals([])),
    "pandas": ("`pd.read_sql(text(...), engine, params=...)`", _equals([[2], [3]])),
    "session": (
        "session option `schema = shop`, then an unqualified `from items`",
        _equals([[3]]),
    ),
    "error": (
        "bad SQL: an error that carries the server's message",
        lambda seen: _NO_FIELD in seen.get("error", ""),
    ),
}
#: flightsql-dbapi's SQLAlchemy dialect runs the same operations as its DB-API.
EXPECT.update(
    {
        f"sqlalchemy_{op}": EXPECT[op]
        for op in ("connect", "bind", "core", "schemas", "tables_and_views", "columns")
    }
)
EXPECT["sqlalchemy_token"] = EXPECT["bearer"]


# -- running the clients -------------------------------------------------------------------


@pytest.fixture(scope="module")
def clients_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with clients_server(tmp_path_factory.mktemp("clients-catalog")) as service:
        yield service


def _script(argv: list[str]) -> dict[str, Any]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=_RUN_TIMEOUT, cwd=HERE)
    assert result.returncode == 0, f"{argv[:2]} exited {result.returncode}:\n{result.stderr}"
    observations: dict[str, Any] = json.loads(result.stdout)
    return observations


def _observe(client: str, port: int) -> dict[str, Any]:
    credentials = [str(port), USER, PASSWORD]
    if client in DRIVERS:
        return quietly(DRIVERS[client], port)
    if client == "altertable":
        return _script([sys.executable, str(HERE / "drive_altertable.py"), *credentials])
    if client == "flightsql-dbapi":
        python = python_client("flightsql-dbapi", _FLIGHTSQL_DBAPI)
        script = HERE / "drive_flightsql_dbapi.py"
        return _script([str(python), str(script), *credentials, API_KEY])
    home = npm_clients("npm", _NPM)
    both = _script(["node", str(HERE / "drive_npm.mjs"), str(home), *credentials, API_KEY])
    return both["lakehouse" if client.startswith("lakehouse") else "gizmosql"]


@pytest.fixture(scope="module")
def observations(clients_srv: Service) -> Callable[[str], dict[str, Any]]:
    """Each client's observations, run on first use (npm's two share one run); a run that
    fails fails every operation of that client, without running again."""
    seen: dict[str, dict[str, Any] | Exception] = {}

    def of(client: str) -> dict[str, Any]:
        if client not in seen:
            try:
                seen[client] = _observe(client, clients_srv.port)
            except Exception as exc:  # reported by each of the client's tests
                seen[client] = exc
        result = seen[client]
        if isinstance(result, Exception):
            raise result
        return result

    return of


def _cases() -> list[Any]:
    cases = []
    for name, client in CLIENTS.items():
        for op in client.ops:
            known = KNOWN.get((name, op))
            marks = [pytest.mark.xfail(strict=True, reason=known.bug)] if known else []
            cases.append(pytest.param(name, op, id=f"{name}:{op}", marks=marks))
    return cases


@pytest.mark.timeout(600)  # the first case of a subprocess client builds its cache
@pytest.mark.parametrize(("client", "op"), _cases())
def test_client_operation(
    client: str, op: str, observations: Callable[[str], dict[str, Any]]
) -> None:
    seen = observations(client)
    assert list(seen) == list(CLIENTS[client].ops), "the driver and CLIENTS disagree"
    assert EXPECT[op][1](seen[op]), f"{client} {op} ({EXPECT[op][0]}): {seen[op]}"


def test_known_problems_are_about_listed_operations() -> None:
    for client, op in KNOWN:
        assert op in CLIENTS[client].ops, (client, op)


# -- docs/clients.md -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def recipe_server() -> Iterator[Service]:
    """The demo catalog (what the recipes query), with the recipes' user and API key."""
    with running_server(auth=reader_auth("alice", "alice-password", "my-api-key")) as service:
        yield service


@pytest.mark.parametrize(
    "recipe", [pytest.param(s.body, id=s.id) for s in snippets() if s.path == DOC]
)
def test_recipe_signs_in_and_runs(recipe: str, recipe_server: Service) -> None:
    body = re.sub(r"\b50051\b", str(recipe_server.port), recipe)
    result = subprocess.run(
        [sys.executable, "-c", body], capture_output=True, text=True, timeout=_RUN_TIMEOUT
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"


_COLUMNS = [
    ("connect", ("connect",)),
    ("bearer", ("bearer", "sqlalchemy_token")),
    ("wrong password", ("refused",)),
    ("query", ("query",)),
    ("types", ("types",)),
    ("large", ("large",)),
    ("`?`", ("qmark", "bind", "pandas")),
    ("`$1`", ("dollar",)),
    ("`$name`", ("named",)),
    ("prepared", ("prepared", "parameter_schema")),
    ("SQLAlchemy Core", ("core",)),
    ("catalogs / schemas", ("catalogs", "schemas")),
    (
        "tables / views",
        ("tables", "views", "tables_and_views", "has_table", "table_types", "include_schema"),
    ),
    ("columns", ("columns",)),
    ("SqlInfo / keys", ("sql_info", "primary_keys")),
    ("session", ("session",)),
    ("errors", ("error",)),
]


def _cell(name: str, ops: tuple[str, ...], notes: list[str]) -> str:
    client = CLIENTS[name]
    present = [op for op in ops if op in client.ops] + [
        f"sqlalchemy_{op}" for op in ops if f"sqlalchemy_{op}" in client.ops
    ]
    if not present:
        return "—"
    bad = [op for op in present if (name, op) in KNOWN]
    if not bad:
        return "✓"
    marks = []
    for op in bad:
        notes.append(f"{name} `{op}`")
        marks.append(f"[{len(notes)}]")
    return ("✗ " if len(bad) == len(present) else "✓/✗ ") + "".join(marks)


def table() -> str:
    """The client × operation table and its notes, as docs/clients.md holds them."""
    notes: list[str] = []
    head = "| client | tested | " + " | ".join(c for c, _ in _COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(_COLUMNS) + 2)]
    for name, client in CLIENTS.items():
        cells = [_cell(name, ops, notes) for _, ops in _COLUMNS]
        lines.append(f"| {name} | {client.package} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "✓ works · ✗ fails because of the client (notes below) · — not run: the client has "
        "no such call, or it is the code path of the row above",
        "",
    ]
    for number, note in enumerate(notes, 1):
        client, op = note.split(" `")
        known = KNOWN[(client, op.rstrip("`"))]
        lines.append(f"{number}. **{note}**: {known.bug}. *Workaround*: {known.workaround}.")
    lines += ["", "| client | how the suite uses it |", "|---|---|"]
    lines += [f"| {name} | {client.how} |" for name, client in CLIENTS.items()]
    return "\n".join(lines)


def test_docs_table_is_current() -> None:
    text = DOC.read_text()
    start, end = "<!-- clients-table:start -->\n", "\n<!-- clients-table:end -->"
    assert start in text and end in text, "docs/clients.md lost its clients-table markers"
    current = text.split(start, 1)[1].split(end, 1)[0]
    assert current == table(), "run: python -m tests.test_clients > the block in docs/clients.md"


if __name__ == "__main__":
    print(table())
