"""A query as tickets and handles carry it, and as the front sends it to an engine worker."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from flightsql_srv.contexts import Visibility
from flightsql_srv.sessions import SessionOptions
from flightsql_srv.tickets import decode_batch, encode_batch

__all__ = ["Query"]


@dataclass(frozen=True)
class Query:
    """What a ticket or handle carries: everything needed to plan the query again."""

    sql: str
    params: pa.RecordBatch | None = None
    principal: str = ""
    options: SessionOptions = field(default_factory=SessionOptions)
    #: A serialized Substrait plan; when set, ``sql`` is ignored.
    substrait: bytes | None = None
    #: Time range that time-series tables are read through.
    bounds: tuple[datetime, datetime] | None = None
    #: At most this many rows.
    limit: int | None = None
    #: Results shaped for the Grafana datasource.
    grafana: bool = False
    #: Tables the caller may read (None: all); from the caller, never from a token.
    visible: Visibility = None
    #: EXPLAIN may show storage paths (a role's ``explain_paths``); from the caller too.
    explain_paths: bool = False

    def body(self) -> dict[str, Any]:
        """The JSON-able form signed into tickets and handles."""
        return {
            "sql": self.sql,
            "params": encode_batch(self.params),
            "principal": self.principal,
            "session": {k: v for k, v in vars(self.options).items() if v is not None},
            "substrait": (
                base64.b64encode(self.substrait).decode() if self.substrait is not None else None
            ),
            "bounds": [t.isoformat() for t in self.bounds] if self.bounds else None,
            "limit": self.limit,
            "grafana": self.grafana,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Query:
        substrait = body.get("substrait")
        bounds = body.get("bounds")
        return cls(
            sql=str(body.get("sql", "")),
            params=decode_batch(body.get("params")),
            principal=str(body.get("principal", "")),
            options=SessionOptions(**body.get("session", {})),
            substrait=base64.b64decode(substrait) if substrait is not None else None,
            bounds=(datetime.fromisoformat(bounds[0]), datetime.fromisoformat(bounds[1]))
            if bounds
            else None,
            limit=body.get("limit"),
            grafana=bool(body.get("grafana", False)),
        )
