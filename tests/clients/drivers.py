"""The clients that install into the test venv, each used the way its own docs show.

Every driver takes the server's port and returns :func:`tests.clients.observe.observe`'s
record of its operations; ``tests/test_clients.py`` holds what each should have seen."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pyarrow as pa

from tests.clients import API_KEY, PASSWORD, USER
from tests.clients.observe import QUERIES, WRONG_PASSWORD, items, observe

__all__ = ["DRIVERS", "quietly"]

Observations = dict[str, dict[str, Any]]
_CREDENTIALS = {"username": USER, "password": PASSWORD}
_BEARER = {"adbc.flight.sql.authorization_header": f"Bearer {API_KEY}"}
#: Session options live in a cookie; ADBC's Go drivers send cookies only when asked to.
_COOKIES = {"adbc.flight.sql.rpc.with_cookie_middleware": "true"}


def _tree_names(tree: list[dict[str, Any]], kind: str) -> list[str]:
    """Table names of type ``kind`` in ``shop`` from an ADBC GetObjects tree."""
    return sorted(
        table["table_name"]
        for catalog in tree
        for schema in catalog["catalog_db_schemas"] or []
        if schema["db_schema_name"] == "shop"
        for table in schema["db_schema_tables"] or []
        if table["table_type"] == kind
    )


def _dbapi_operations(
    conn: Any, bearer: Any, session: Callable[[], Any], refused: Callable[[], Any]
) -> dict[str, Any]:
    """What ADBC's DB-API and the drivers built on it (GizmoSQL's) do the same way;
    ``refused`` connects with a wrong password and runs a query."""
    cur = conn.cursor()

    def rows(sql: str, params: Any = None, on: Any = cur) -> Any:
        on.execute(sql, params)
        return on.fetchall()

    def prepared() -> Any:
        # The DB-API prepares once and re-binds while the SQL stays the same.
        return [rows(QUERIES["qmark"], (value,))[0] for value in (1, 2)]

    def objects(depth: str) -> Any:
        return conn.adbc_get_objects(depth=depth).read_all().to_pylist()

    schema = lambda: conn.adbc_get_table_schema("items", db_schema_filter="shop")  # noqa: E731
    return {
        "connect": lambda: rows(QUERIES["connect"]),
        "bearer": lambda: rows(QUERIES["connect"], on=bearer.cursor()),
        "refused": refused,
        "query": lambda: (cur.execute(QUERIES["query"]), items(cur.fetch_arrow_table()))[1],
        "types": lambda: [
            f.metadata[b"ARROW:FLIGHT:SQL:TYPE_NAME"].decode() if f.metadata else None
            for f in schema()
        ],
        "large": lambda: (cur.execute(QUERIES["large"]), cur.fetch_arrow_table().num_rows)[1],
        "qmark": lambda: rows(QUERIES["qmark"], (2,)),
        "dollar": lambda: rows(QUERIES["dollar"], (2,)),
        "named": lambda: rows(QUERIES["named"], {"id": 2}),
        "prepared": prepared,
        "catalogs": lambda: [c["catalog_name"] for c in objects("catalogs")],
        "schemas": lambda: sorted(
            s["db_schema_name"] for c in objects("db_schemas") for s in c["catalog_db_schemas"]
        ),
        "tables": lambda: _tree_names(objects("tables"), "TABLE"),
        "views": lambda: _tree_names(objects("tables"), "VIEW"),
        "columns": lambda: schema().names,
        "session": session,
        "error": lambda: rows(QUERIES["error"]),
    }


@contextmanager
def _closing(*connections: Any) -> Iterator[None]:
    with ExitStack() as stack:
        for conn in connections:
            stack.callback(conn.close)
        yield


def adbc_dbapi(port: int) -> Observations:
    import adbc_driver_flightsql.dbapi as flightsql

    uri = f"grpc://127.0.0.1:{port}"
    conn = flightsql.connect(uri, db_kwargs={**_CREDENTIALS, **_COOKIES}, autocommit=True)
    bearer = flightsql.connect(uri, db_kwargs=_BEARER, autocommit=True)

    def session() -> Any:
        conn.adbc_current_db_schema = "shop"
        try:
            with conn.cursor() as cur:
                cur.execute(QUERIES["session"])
                return cur.fetchall()
        finally:
            conn.adbc_current_db_schema = "public"

    def refused() -> Any:
        login = {"username": USER, "password": WRONG_PASSWORD}
        with flightsql.connect(uri, db_kwargs=login, autocommit=True) as wrong:
            with wrong.cursor() as cur:
                cur.execute(QUERIES["connect"])
                return cur.fetchall()

    with _closing(conn, bearer):
        return observe(_dbapi_operations(conn, bearer, session, refused))


def gizmosql(port: int) -> Observations:
    from adbc_driver_gizmosql import dbapi as gizmosql

    uri = f"gizmosql://127.0.0.1:{port}?transport=tcp"
    conn = gizmosql.connect(uri, username=USER, password=PASSWORD, db_kwargs=_COOKIES)
    bearer = gizmosql.connect(uri, db_kwargs=_BEARER)
    scoped = gizmosql.connect(
        uri, username=USER, password=PASSWORD, db_schema="shop", db_kwargs=_COOKIES
    )

    def session() -> Any:
        with scoped.cursor() as cur:
            cur.execute(QUERIES["session"])
            return cur.fetchall()

    def refused() -> Any:
        with gizmosql.connect(uri, username=USER, password=WRONG_PASSWORD) as wrong:
            with wrong.cursor() as cur:
                cur.execute(QUERIES["connect"])
                return cur.fetchall()

    with _closing(conn, bearer, scoped):
        return observe(_dbapi_operations(conn, bearer, session, refused))


def adbc_low_level(port: int) -> Observations:
    import adbc_driver_flightsql
    import adbc_driver_manager

    db = adbc_driver_flightsql.connect(
        f"grpc://127.0.0.1:{port}", db_kwargs={**_CREDENTIALS, **_COOKIES}
    )
    conn = adbc_driver_manager.AdbcConnection(db)

    def run(sql: str, *bindings: pa.RecordBatch) -> Any:
        statement = adbc_driver_manager.AdbcStatement(conn)
        try:
            statement.set_sql_query(sql)
            statement.prepare()
            results = []
            for batch in bindings or (None,):
                if batch is not None:
                    statement.bind(batch)
                stream, _ = statement.execute_query()
                results.append(pa.RecordBatchReader.from_stream(stream).read_all())
            return results
        finally:
            statement.close()

    def rows(sql: str, *bindings: pa.RecordBatch) -> Any:
        return [[list(r.values()) for r in t.to_pylist()] for t in run(sql, *bindings)]

    def param_names() -> Any:
        statement = adbc_driver_manager.AdbcStatement(conn)
        try:
            statement.set_sql_query("select name from shop.items where id = ? or qty = ?")
            statement.prepare()
            return pa.schema(statement.get_parameter_schema()).names
        finally:
            statement.close()

    def session() -> Any:
        conn.set_options(**{"adbc.connection.db_schema": "shop"})
        try:
            return rows(QUERIES["session"])[0]
        finally:
            conn.set_options(**{"adbc.connection.db_schema": "public"})

    def table_schema() -> pa.Schema:
        return pa.schema(conn.get_table_schema(None, "shop", "items"))

    operations = {
        "connect": lambda: rows(QUERIES["connect"])[0],
        "query": lambda: items(run(QUERIES["query"])[0]),
        "large": lambda: run(QUERIES["large"])[0].num_rows,
        # Column names are the client's choice: ADBC's own examples use anything.
        "qmark": lambda: rows(QUERIES["qmark"], pa.record_batch({"param_0": [2]}))[0],
        "dollar": lambda: rows(QUERIES["dollar"], pa.record_batch({"p": [2]}))[0],
        "named": lambda: rows(QUERIES["named"], pa.record_batch({"id": [2]}))[0],
        "prepared": lambda: [
            r[0] for r in rows(QUERIES["qmark"], *(pa.record_batch({"v": [i]}) for i in (1, 2)))
        ],
        "parameter_schema": param_names,
        "columns": lambda: table_schema().names,
        "table_types": lambda: (
            pa.RecordBatchReader.from_stream(conn.get_table_types())
            .read_all()
            .column(0)
            .to_pylist()
        ),
        "session": session,
        "error": lambda: run(QUERIES["error"]),
    }
    with _closing(db, conn):  # closed in reverse: the connection, then the database
        return observe(operations)


def polars(port: int) -> Observations:
    import adbc_driver_flightsql.dbapi as flightsql
    import polars as pl

    conn = flightsql.connect(f"grpc://127.0.0.1:{port}", db_kwargs=_CREDENTIALS, autocommit=True)

    def frame(sql: str, params: Any = None) -> pl.DataFrame:
        options = {"parameters": params} if params is not None else None
        return pl.read_database(sql, connection=conn, execute_options=options)

    with _closing(conn):
        return observe(
            {
                "query": lambda: items(frame(QUERIES["query"]).to_arrow()),
                "types": lambda: [str(t) for t in frame(QUERIES["query"]).dtypes],
                "large": lambda: frame(QUERIES["large"]).height,
                "qmark": lambda: frame(QUERIES["qmark"], (2,)).rows(),
                "dollar": lambda: frame(QUERIES["dollar"], (2,)).rows(),
                "error": lambda: frame(QUERIES["error"]),
            }
        )


def pandas(port: int) -> Observations:
    import adbc_driver_flightsql.dbapi as flightsql
    import pandas as pd

    conn = flightsql.connect(f"grpc://127.0.0.1:{port}", db_kwargs=_CREDENTIALS, autocommit=True)

    def frame(sql: str, **kwargs: Any) -> pd.DataFrame:
        return pd.read_sql(sql, conn, **kwargs)

    with _closing(conn):
        return observe(
            {
                "query": lambda: items(pa.Table.from_pandas(frame(QUERIES["query"]))),
                "types": lambda: [str(t) for t in frame(QUERIES["query"]).dtypes],
                "large": lambda: len(frame(QUERIES["large"])),
                "qmark": lambda: frame(QUERIES["qmark"], params=(2,)).values.tolist(),
                "error": lambda: frame(QUERIES["error"]),
            }
        )


def _sqlalchemy_operations(engine: Any, token_engine: Any, wrong_engine: Any) -> dict[str, Any]:
    """SQLAlchemy 2 Core and Inspector, the same for every 2.x dialect; ``wrong_engine``
    signs in with a wrong password."""
    import sqlalchemy as sa

    def rows(statement: Any, params: Any = None, on: Any = engine) -> Any:
        with on.connect() as c:
            return [list(r) for r in c.execute(statement, params or {}).fetchall()]

    def inspect(method: str, *args: Any, **kwargs: Any) -> Any:
        with engine.connect() as c:
            return getattr(sa.inspect(c), method)(*args, **kwargs)

    def core() -> Any:
        items = sa.Table("items", sa.MetaData(), schema="shop", autoload_with=engine)
        # .limit() and the comparison are bound parameters in SQLAlchemy Core.
        return rows(sa.select(items.c.id).where(items.c.id > 1).order_by(items.c.id).limit(5))

    return {
        "connect": lambda: rows(sa.text(QUERIES["connect"])),
        "bearer": lambda: rows(sa.text(QUERIES["connect"]), on=token_engine),
        "refused": lambda: rows(sa.text(QUERIES["connect"]), on=wrong_engine),
        "bind": lambda: rows(sa.text("select name from shop.items where id = :id"), {"id": 2}),
        "core": core,
        "schemas": lambda: sorted(inspect("get_schema_names")),
        "tables": lambda: sorted(inspect("get_table_names", schema="shop")),
        "views": lambda: sorted(inspect("get_view_names", schema="shop")),
        "has_table": lambda: inspect("has_table", "items", schema="shop"),
        "columns": lambda: [c["name"] for c in inspect("get_columns", "items", schema="shop")],
        "types": lambda: [
            type(c["type"]).__name__ for c in inspect("get_columns", "items", schema="shop")
        ],
        "pandas": lambda: (
            __import__("pandas")
            .read_sql(
                sa.text("select id from shop.items where id > :n order by id"),
                engine,
                params={"n": 1},
            )
            .values.tolist()
        ),
        "error": lambda: rows(sa.text(QUERIES["error"])),
    }


def sqlalchemy_adbc(port: int) -> Observations:
    import sqlalchemy as sa

    # ?tls=false: the dialect defaults to TLS. autocommit=True: ADBC's DB-API otherwise warns
    # that it cannot turn autocommit off (the server has no transactions).
    url = f"adbc+flightsql://127.0.0.1:{port}?tls=false"
    engines = [
        sa.create_engine(url, connect_args={"autocommit": True, "db_kwargs": login})
        for login in (_CREDENTIALS, {**_CREDENTIALS, "password": WRONG_PASSWORD})
    ]
    token_engine = sa.create_engine(
        f"adbc+flightsql://token:{API_KEY}@127.0.0.1:{port}?tls=false",
        connect_args={"autocommit": True},
    )
    return _observe_engines(engines[0], token_engine, engines[1])


def _observe_engines(engine: Any, token_engine: Any, wrong_engine: Any) -> Observations:
    try:
        return observe(_sqlalchemy_operations(engine, token_engine, wrong_engine))
    finally:
        for each in (engine, token_engine, wrong_engine):
            each.dispose()


def ttr_sqlalchemy(port: int) -> Observations:
    import sqlalchemy as sa

    engine, wrong_engine = (
        sa.create_engine(f"tatrman://{USER}:{password}@127.0.0.1:{port}?tls=false")
        for password in (PASSWORD, WRONG_PASSWORD)
    )
    token_engine = sa.create_engine(
        f"tatrman://127.0.0.1:{port}?tls=false", connect_args={"token": API_KEY}
    )
    return _observe_engines(engine, token_engine, wrong_engine)


#: Client name → driver; the order of docs/clients.md.
DRIVERS: dict[str, Callable[[int], Observations]] = {
    "adbc-dbapi": adbc_dbapi,
    "adbc-low-level": adbc_low_level,
    "gizmosql-adbc": gizmosql,
    "polars": polars,
    "pandas": pandas,
    "sqlalchemy-adbc": sqlalchemy_adbc,
    "ttr-sqlalchemy": ttr_sqlalchemy,
}


def quietly(driver: Callable[[int], Observations], port: int) -> Observations:
    """Run a driver with warnings off: clients warn about their own affairs (deprecations,
    autocommit), which is not what the suite measures."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return driver(port)
