"""altertable-flightsql, used as its README shows, in a process of its own.

    python drive_altertable.py PORT USER PASSWORD   # prints the observations

Its generated protobufs register ``arrow.flight.protocol`` in protobuf's default pool, as
flightsql_srv.protocol does, so the two cannot be imported into one process ("duplicate
symbol 'arrow.flight.protocol.CancelStatus'"); the test runs it with the test venv's python.
"""

from __future__ import annotations

import json
import sys
from contextlib import closing
from typing import Any

from altertable_flightsql import Client
from observe import QUERIES, WRONG_PASSWORD, items, observe


def main(port: int, user: str, password: str) -> None:
    client = Client(username=user, password=password, host="127.0.0.1", port=port, tls=False)

    def prepared(sql: str, parameters: Any) -> Any:
        with client.prepare(sql) as statement:
            return [
                list(r.values())
                for r in statement.query(parameters=parameters).read_all().to_pylist()
            ]

    def session() -> Any:
        client.set_schema("shop")
        return [list(r.values()) for r in client.query(QUERIES["session"]).read_all().to_pylist()]

    def reader_rows(sql: str) -> Any:
        return [list(r.values()) for r in client.query(sql).read_all().to_pylist()]

    with closing(client):
        observations = observe(
            {
                "connect": lambda: reader_rows(QUERIES["connect"]),
                "refused": lambda: Client(
                    username=user, password=WRONG_PASSWORD, host="127.0.0.1", port=port, tls=False
                ),
                "query": lambda: items(client.query(QUERIES["query"]).read_all()),
                "large": lambda: client.query(QUERIES["large"]).read_all().num_rows,
                "prepared": lambda: prepared("select name from shop.items where id = 2", None),
                "named": lambda: prepared(QUERIES["named"], {"id": 2}),
                "dollar": lambda: prepared(QUERIES["dollar"], [2]),
                "catalogs": lambda: client.get_catalogs().read_all().column(0).to_pylist(),
                "schemas": lambda: sorted(
                    client.get_schemas().read_all().column("db_schema_name").to_pylist()
                ),
                "tables_and_views": lambda: sorted(
                    client.get_tables(schema_pattern="shop")
                    .read_all()
                    .column("table_name")
                    .to_pylist()
                ),
                "session": session,
                "error": lambda: reader_rows(QUERIES["error"]),
            }
        )
    print(json.dumps(observations))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
