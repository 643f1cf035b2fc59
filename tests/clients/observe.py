"""Run a client's operations and record what each one saw, as JSON.

Standalone on purpose (standard library only): the drivers that run inside a client's own
venv import it from beside their script, without this project installed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["QUERIES", "WRONG_PASSWORD", "items", "observe", "plain"]

#: The SQL every client runs, by operation; each driver sends it the client's own way.
QUERIES = {
    "connect": "select 1 as x",
    "query": "select * from shop.items order by id",
    "large": "select value from generate_series(1, 300000)",
    "qmark": "select name from shop.items where id = ?",
    "dollar": "select name from shop.items where id = $1",
    "named": "select name from shop.items where id = $id",
    "session": "select count(*) as n from items",
    "error": "select nope from shop.items",
}
#: The password every driver's "refused" operation signs in with.
WRONG_PASSWORD = "not-the-password"


def plain(value: Any) -> Any:
    """``value`` as JSON would give it back: tuples become lists, other objects strings."""
    return json.loads(json.dumps(value, default=str))


def observe(operations: dict[str, Callable[[], Any]]) -> dict[str, dict[str, Any]]:
    """Each operation's ``{"value": ...}``, or ``{"error": "<Class>: <message>"}``."""
    seen: dict[str, dict[str, Any]] = {}
    for name, operation in operations.items():
        try:
            seen[name] = {"value": plain(operation())}
        except Exception as exc:  # the client's failure is the observation
            seen[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return seen


def items(table: Any) -> dict[str, Any]:
    """The part of ``shop.items`` (a pyarrow Table) every client's "query" is checked on."""
    return {
        "columns": table.column_names,
        "ids": table.column("id").to_pylist(),
        "names": table.column("name").to_pylist(),
    }
