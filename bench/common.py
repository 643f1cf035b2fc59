"""What every scenario runner shares: result rows, sessions kept for the run, logging."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from bench.contenders import Contender, Session

__all__ = ["log", "row", "Sessions", "query_call"]


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def row(contender: str, variant: str, **measures: Any) -> dict[str, Any]:
    """One result row: who, which variant, and the measures."""
    return {"contender": contender, "variant": variant, **measures}


class Sessions:
    """Sessions opened once per (contender, headers) and closed at the end of the run."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._open: dict[tuple[str, str], Session] = {}

    def get(self, contender: Contender, headers: dict[str, str] | None = None) -> Session:
        key = (contender.name, repr(sorted((headers or {}).items())))
        if key not in self._open:
            session = contender.session(headers)
            self._stack.callback(session.close)
            self._open[key] = session
        return self._open[key]


def query_call(session: Session, sql: str) -> Callable[[], object]:
    """A zero-argument call running ``sql`` on ``session``."""
    return lambda: session.query(sql)
