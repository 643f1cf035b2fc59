"""One audit record per query: who ran what, from where, how long it took, what came back.

Written as a JSON log line on the ``flightsql_srv.audit`` logger (the SQL is kept with its
literals; no credentials are ever part of it) and counted in the Prometheus metrics.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["QueryRecord", "Auditor", "fingerprint"]

log = logging.getLogger("flightsql_srv.audit")

_LITERALS = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")
_SPACE = re.compile(r"\s+")


def fingerprint(sql: str) -> str:
    """A stable id for the statement's shape: literals and spacing do not change it."""
    shape = _SPACE.sub(" ", _LITERALS.sub("?", sql)).strip().lower()
    return hashlib.sha256(shape.encode()).hexdigest()[:16]


@dataclass
class QueryRecord:
    """What happened to one query; filled in as it runs."""

    query_id: str
    principal: str
    sql: str
    kind: str
    peer: str = ""
    client: Mapping[str, str] = field(default_factory=dict)
    time_range: tuple[str, str] | None = None
    limit: int | None = None
    started: float = field(default_factory=time.monotonic)
    plan_s: float | None = None
    first_batch_s: float | None = None
    total_s: float | None = None
    rows: int = 0
    bytes: int = 0
    outcome: str = "running"
    error_class: str | None = None


class QueryMetrics(Protocol):
    def query_finished(self, record: QueryRecord) -> None: ...


class Auditor:
    """Logs and counts finished queries.

    Args:
        metrics: counts each finished query.
        sql_limit: characters of the SQL a record keeps (0: all). SQL may be up to 1 MiB;
            log pipelines split or drop long lines (Docker's at 16 KiB), and the
            fingerprint already tells statements apart.
    """

    def __init__(self, metrics: QueryMetrics | None = None, sql_limit: int = 0) -> None:
        self._metrics = metrics
        self._sql_limit = sql_limit

    def finish(self, record: QueryRecord) -> None:
        record.total_s = time.monotonic() - record.started
        # A shallow copy: dataclasses.asdict deep-copies every field (~6 % of the front's
        # Python time per SELECT 1).
        fields: dict[str, Any] = dict(vars(record))
        del fields["started"]
        fields["client"] = dict(record.client)
        fields["fingerprint"] = fingerprint(record.sql)
        fields["sql_length"] = len(record.sql)
        if self._sql_limit:
            fields["sql"] = record.sql[: self._sql_limit]
        for key in ("plan_s", "first_batch_s", "total_s"):
            if fields[key] is not None:
                fields[key] = round(fields[key], 6)
        log.info("query", extra={"fields": fields})
        if self._metrics is not None:
            self._metrics.query_finished(record)
