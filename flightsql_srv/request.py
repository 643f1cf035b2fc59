"""What a request's metadata asks for: time range, interval, row limit, result profile.

Headers may arrive on GetFlightInfo, on DoGet or on both (the Grafana datasource sends the
same metadata on each). What GetFlightInfo resolved travels in the ticket; DoGet's headers
only fill in what the ticket lacks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow.flight as flight

from flightsql_srv.auth.identity import Identity
from flightsql_srv.engine import Visibility
from flightsql_srv.errors import InvalidArgument
from flightsql_srv.macros import MacroContext, context_from_headers
from flightsql_srv.query import Query
from flightsql_srv.sessions import SessionOptions

__all__ = [
    "Call",
    "RequestInfo",
    "HeadersMiddlewareFactory",
    "LIMIT_HEADER",
    "CLIENT_TYPE_HEADER",
    "BOUND_SCANS_HEADER",
    "PARALLEL_ENDPOINTS_HEADER",
    "MAX_PARALLEL_ENDPOINTS",
    "MAX_LIMIT",
]

LIMIT_HEADER = "limit"
CLIENT_TYPE_HEADER = "x-client-type"
#: ``false`` turns off reading time-series tables through the range filter.
BOUND_SCANS_HEADER = "bound_scans"
#: Asks GetFlightInfo for up to N endpoints, one per result partition, to fetch in parallel.
PARALLEL_ENDPOINTS_HEADER = "parallel_endpoints"
MAX_PARALLEL_ENDPOINTS = 64
#: The largest ``limit`` (DataFusion takes a 64-bit count).
MAX_LIMIT = 2**63 - 1
_KEPT = ("user-agent", CLIENT_TYPE_HEADER, "x-user-id", "x-org-id")
_FALSE = {"0", "false", "no", "off"}
_TRUE = {"1", "true", "yes", "on"}


def _first(headers: Mapping[str, Sequence[Any]], name: str) -> str:
    values = headers.get(name) or []
    value = values[0] if values else ""
    return (value.decode(errors="replace") if isinstance(value, bytes) else str(value)).strip()


@dataclass(frozen=True)
class RequestInfo:
    """The query-shaping metadata of one call."""

    macros: MacroContext = field(default_factory=MacroContext)
    limit: int | None = None
    grafana: bool = False
    bound_scans: bool = True
    #: Endpoints the client would fetch in parallel (1: one endpoint, the default).
    parallel_endpoints: int = 1
    #: Client identification for logs: user agent, client type, Grafana user and org.
    client: Mapping[str, str] = field(default_factory=dict)

    @property
    def bounds(self) -> tuple[datetime, datetime] | None:
        """The range that time-series tables are read through, if any."""
        r = self.macros.range
        return (r.start, r.end) if r is not None and self.bound_scans else None

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, Sequence[Any]], grafana_default: bool = False
    ) -> RequestInfo:
        """Parse the headers; a malformed one raises INVALID_ARGUMENT naming it."""
        limit = _count(headers, LIMIT_HEADER, "a row count", 0, MAX_LIMIT)
        parallel = _count(
            headers, PARALLEL_ENDPOINTS_HEADER, "an endpoint count", 1, MAX_PARALLEL_ENDPOINTS
        )
        bound = _first(headers, BOUND_SCANS_HEADER).lower()
        if bound and bound not in _TRUE | _FALSE:
            raise InvalidArgument(f"header {BOUND_SCANS_HEADER}: expected true or false")
        client_type = _first(headers, CLIENT_TYPE_HEADER).lower()
        return cls(
            macros=context_from_headers(headers),
            limit=limit,
            grafana=grafana_default or client_type == "grafana",
            bound_scans=bound not in _FALSE,
            parallel_endpoints=parallel or 1,
            client={k: v for k in _KEPT if (v := _first(headers, k))},
        )


def _count(
    headers: Mapping[str, Sequence[Any]], name: str, what: str, low: int, high: int | None
) -> int | None:
    """The integer header ``name`` (None when absent), between ``low`` and ``high``."""
    raw = _first(headers, name)
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"{low} to {high}"
        raise InvalidArgument(f"header {name}: expected {what} ({bounds}), got {raw!r}")
    return value


class HeadersMiddleware(flight.ServerMiddleware):  # type: ignore[misc]
    """Keeps the call's headers for the handlers."""

    def __init__(self, headers: dict[str, list[Any]]) -> None:
        self.headers = headers


class HeadersMiddlewareFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Exposes request headers to handlers (pyarrow gives them only to middleware)."""

    def start_call(self, info: Any, headers: dict[str, list[Any]]) -> HeadersMiddleware:
        return HeadersMiddleware(headers)


@dataclass(frozen=True)
class Call:
    """One RPC as the handlers see it: who calls, with which session and metadata."""

    context: flight.ServerCallContext
    identity: Identity
    session: SessionOptions
    request: RequestInfo
    #: Tables the caller may read (None: all).
    visible: Visibility = None
    #: EXPLAIN shows the caller storage paths.
    explain_paths: bool = False

    @property
    def principal(self) -> str:
        return self.identity.principal

    @property
    def key(self) -> str:
        """Whose share of the query slots a call takes: its principal or, without one
        (authentication off), its client address."""
        if self.principal:
            return "principal:" + self.principal
        peer = self.context.peer() or ""
        return "peer:" + peer.rpartition(":")[0]

    def query(self, sql: str, substrait: bytes | None = None) -> Query:
        """A query of this caller: its principal, session and what it may see."""
        return Query(
            sql,
            None,
            self.principal,
            self.session,
            substrait,
            visible=self.visible,
            explain_paths=self.explain_paths,
        )

    @property
    def schemas(self) -> set[str] | None:
        """Schemas with at least one visible table (None: all)."""
        return None if self.visible is None else {s for s, _ in self.visible}
