"""influxdata's flightsql-dbapi (DB-API and its SQLAlchemy 1.4 dialect), run in its own venv.

    python drive_flightsql_dbapi.py PORT USER PASSWORD TOKEN   # prints the observations

Used as its README shows: ``FlightSQLClient`` + ``connect``, and
``create_engine("datafusion+flightsql://user:password@host:port?insecure=true")``.
"""

from __future__ import annotations

import json
import sys
import warnings
from typing import Any

import flightsql.sqlalchemy  # noqa: F401 - registers the dialect, as its README does
import pyarrow as pa
import sqlalchemy as sa
from flightsql import FlightSQLClient, connect
from observe import QUERIES, WRONG_PASSWORD, observe

warnings.simplefilter("ignore")  # SQLAlchemy 1.4's 2.0 deprecation banner


def main(port: int, user: str, password: str, token: str) -> None:
    basic = FlightSQLClient(
        host="127.0.0.1", port=port, insecure=True, user=user, password=password
    )
    bearer = FlightSQLClient(host="127.0.0.1", port=port, insecure=True, token=token)
    conn = connect(basic)
    cur = conn.cursor()

    def refused() -> Any:
        wrong = FlightSQLClient(
            host="127.0.0.1", port=port, insecure=True, user=user, password=WRONG_PASSWORD
        )
        return wrong.execute(QUERIES["connect"])

    def rows(sql: str, params: Any = None) -> Any:
        cur.execute(sql, params)
        return cur.fetchall()

    def query() -> Any:
        cur.execute(QUERIES["query"])
        got = cur.fetchall()
        return {
            "columns": [d[0] for d in cur.description],
            "ids": [r[0] for r in got],
            "names": [r[1] for r in got],
        }

    def prepared() -> Any:
        with bearer.prepare("select name from shop.items where id = $1") as statement:
            out = []
            for value in (1, 2):
                info = statement.execute(pa.record_batch({"p": [value]}))
                out.append(bearer.do_get(info.endpoints[0].ticket).read_all().to_pylist())
            return [[row["name"] for row in rows] for rows in out]

    engine = sa.create_engine(
        f"datafusion+flightsql://{user}:{password}@127.0.0.1:{port}?insecure=true"
    )
    token_engine = sa.create_engine(
        f"datafusion+flightsql://127.0.0.1:{port}?insecure=true&token={token}"
    )

    def sa_rows(statement: Any, params: Any = None, on: Any = engine) -> Any:
        with on.connect() as c:
            return [list(r) for r in c.execute(statement, params or {}).fetchall()]

    def sa_core() -> Any:
        items = sa.Table("items", sa.MetaData(), schema="shop", autoload_with=engine)
        statement = sa.select([items.c.id]).where(items.c.id > 1).order_by(items.c.id).limit(5)
        return sa_rows(statement)

    inspector = sa.inspect(engine)
    observations = observe(
        {
            "connect": lambda: rows(QUERIES["connect"]),
            "bearer": lambda: [
                list(r.values())
                for r in bearer.do_get(bearer.execute(QUERIES["connect"]).endpoints[0].ticket)
                .read_all()
                .to_pylist()
            ],
            "refused": refused,
            "query": query,
            "large": lambda: len(rows(QUERIES["large"])),
            "qmark": lambda: rows(QUERIES["qmark"], [2]),
            "prepared": prepared,
            "catalogs": lambda: [
                r["catalog_name"]
                for r in bearer.do_get(bearer.get_catalogs().endpoints[0].ticket)
                .read_all()
                .to_pylist()
            ],
            "schemas": lambda: sorted(conn.flightsql_get_schema_names()),
            "tables_and_views": lambda: sorted(conn.flightsql_get_table_names("shop")),
            "columns": lambda: [c["name"] for c in conn.flightsql_get_columns("items", "shop")],
            "types": lambda: [
                str(c["type"].__name__) for c in conn.flightsql_get_columns("items", "shop")
            ],
            "error": lambda: rows(QUERIES["error"]),
            "sqlalchemy_connect": lambda: sa_rows(sa.text(QUERIES["connect"])),
            "sqlalchemy_token": lambda: sa_rows(sa.text(QUERIES["connect"]), on=token_engine),
            "sqlalchemy_bind": lambda: sa_rows(
                sa.text("select name from shop.items where id = :id"), {"id": 2}
            ),
            "sqlalchemy_core": sa_core,
            "sqlalchemy_schemas": lambda: sorted(inspector.get_schema_names()),
            "sqlalchemy_tables_and_views": lambda: sorted(inspector.get_table_names(schema="shop")),
            "sqlalchemy_columns": lambda: [
                c["name"] for c in inspector.get_columns("items", schema="shop")
            ],
        }
    )
    print(json.dumps(observations))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
