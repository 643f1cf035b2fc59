"""Flight session options (``catalog``, ``schema``, ``timezone``), kept stateless.

The options live in a signed cookie, ``arrow_flight_session``, that SetSessionOptions sets and
clients send back (ADBC: ``adbc.flight.sql.rpc.with_cookie_middleware=true``). Nothing is
stored on the server, so every replica sharing the secret sees the same session.
"""

from __future__ import annotations

import base64
import logging
import re
import zoneinfo
from dataclasses import asdict, dataclass, replace
from http.cookies import CookieError, SimpleCookie
from typing import Any

import pyarrow.flight as flight

from flightsql_srv.protocol import flight_pb2
from flightsql_srv.tickets import Signer

__all__ = [
    "SessionOptions",
    "SessionMiddlewareFactory",
    "COOKIE",
    "apply_options",
    "options_result",
    "encode_cookie",
    "DEFAULT_SCHEMA",
]

log = logging.getLogger("flightsql_srv")

COOKIE = "arrow_flight_session"
#: The schema unqualified names resolve in when the session sets none.
DEFAULT_SCHEMA = "public"
_PURPOSE = "session"
_OFFSET = re.compile(r"^[+-](0\d|1[0-4]):[0-5]\d$")
_Error = flight_pb2.SetSessionOptionsResult


@dataclass(frozen=True)
class SessionOptions:
    """Options that shape how a session's queries are planned."""

    #: Schema searched for unqualified table names.
    schema: str | None = None
    #: Time zone for ``now()`` and zone-less timestamp arithmetic ("+02:00" or an IANA name).
    timezone: str | None = None


def _valid_timezone(value: str) -> bool:
    if _OFFSET.match(value) or value == "UTC":
        return True
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: name too long
        return False
    return True


def apply_options(
    current: SessionOptions,
    request: flight_pb2.SetSessionOptionsRequest,
    catalog_name: str,
    schemas: set[str],
) -> tuple[SessionOptions, dict[str, int]]:
    """Apply a SetSessionOptions request; returns the new options and per-option errors.

    An option whose value is unset is removed. Unknown names and bad values are reported
    per option (the spec's error map); the other options still apply.
    """
    errors: dict[str, int] = {}
    options = current
    for name, value in request.session_options.items():
        kind = value.WhichOneof("option_value")
        text = value.string_value if kind == "string_value" else None
        if name == "catalog":
            if kind is not None and text != catalog_name:
                errors[name] = _Error.INVALID_VALUE
        elif name == "schema":
            if kind is None:
                options = replace(options, schema=None)
            elif text in schemas:
                options = replace(options, schema=text)
            else:
                errors[name] = _Error.INVALID_VALUE
        elif name == "timezone":
            if kind is None:
                options = replace(options, timezone=None)
            elif text is not None and _valid_timezone(text):
                options = replace(options, timezone=text)
            else:
                errors[name] = _Error.INVALID_VALUE
        else:
            errors[name] = _Error.INVALID_NAME
    return options, errors


def options_result(options: SessionOptions, catalog_name: str) -> bytes:
    """A serialized GetSessionOptionsResult for ``options``."""
    result = flight_pb2.GetSessionOptionsResult()
    result.session_options["catalog"].string_value = catalog_name
    # The effective schema is always reported (ADBC's current_db_schema needs one).
    result.session_options["schema"].string_value = options.schema or DEFAULT_SCHEMA
    if options.timezone is not None:
        result.session_options["timezone"].string_value = options.timezone
    data: bytes = result.SerializeToString()
    return data


def encode_cookie(signer: Signer, options: SessionOptions, principal: str = "") -> str:
    """A ``set-cookie`` value carrying ``options`` for ``principal`` (the cookie only counts
    on that principal's calls); an expired cookie when the options are empty."""
    if options == SessionOptions():
        return f"{COOKIE}=; Max-Age=0; Path=/"
    body = {k: v for k, v in asdict(options).items() if v is not None}
    token = signer.sign(_PURPOSE, {**body, "sub": principal})
    return f"{COOKIE}={base64.urlsafe_b64encode(token).decode()}; Path=/"


def _decode_cookie(
    signer: Signer, headers: dict[str, list[Any]]
) -> tuple[SessionOptions, str | None]:
    """The options of the first valid cookie, and the principal it was issued to."""
    for header in headers.get("cookie", []):
        try:
            jar = SimpleCookie(header if isinstance(header, str) else header.decode())
        except CookieError:
            continue
        if COOKIE not in jar or not jar[COOKIE].value:
            continue
        try:
            token = base64.urlsafe_b64decode(jar[COOKIE].value)
            body = signer.verify(_PURPOSE, token, "session cookie")
        except (ValueError, flight.FlightError) as exc:
            log.info("ignoring session cookie", extra={"fields": {"reason": str(exc)}})
            continue
        options = SessionOptions(schema=body.get("schema"), timezone=body.get("timezone"))
        return options, str(body.get("sub", ""))
    return SessionOptions(), None


class SessionMiddleware(flight.ServerMiddleware):  # type: ignore[misc]
    """Holds the session options the caller's cookie carries."""

    def __init__(self, options: SessionOptions, owner: str | None = None) -> None:
        self._options = options
        #: The principal the cookie was issued to (None: no cookie).
        self.owner = owner

    def options_for(self, principal: str) -> SessionOptions:
        """The cookie's options when it was issued to ``principal``; another principal's
        cookie (stolen, or left over in a shared client) counts as no cookie."""
        if self.owner is None or self.owner == principal:
            return self._options
        log.info(
            "ignoring session cookie",
            extra={"fields": {"reason": "issued to another principal"}},
        )
        return SessionOptions()


class SessionMiddlewareFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Reads the session cookie on every call."""

    def __init__(self, signer: Signer) -> None:
        super().__init__()
        self._signer = signer

    def start_call(self, info: Any, headers: dict[str, list[Any]]) -> SessionMiddleware:
        return SessionMiddleware(*_decode_cookie(self._signer, headers))
