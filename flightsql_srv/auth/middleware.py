"""Authentication on every RPC, as Flight server middleware.

Every call must carry ``authorization: Bearer <token>``; the Handshake instead takes
``authorization: Basic ...`` and answers with ``authorization: Bearer <session token>`` in its
response headers (what ADBC and the Grafana datasource read). pyarrow answers Handshake only
when an auth handler is installed, so :class:`HandshakeHandler` is a no-op one: the real check
happens here, where headers are visible.

With authentication off the same no-op handler answers Handshake, so clients that always
handshake (lancedb's npm client, altertable) connect whatever credentials they send;
:class:`AnonymousHandshakeFactory` hands them a token that nothing checks.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow.flight as flight

from flightsql_srv.auth.authenticator import Authenticator
from flightsql_srv.auth.identity import (
    ANONYMOUS,
    CredentialsRejected,
    Identity,
    ProviderUnavailable,
)
from flightsql_srv.auth.throttle import Busy, Throttled

__all__ = [
    "AuthMiddlewareFactory",
    "AuthMiddleware",
    "AnonymousHandshakeFactory",
    "HandshakeHandler",
    "ANONYMOUS_TOKEN",
]

#: What a Handshake answers with when authentication is off.
ANONYMOUS_TOKEN = "anonymous"

log = logging.getLogger("flightsql_srv")


class AuthMiddleware(flight.ServerMiddleware):  # type: ignore[misc]
    """The caller's identity, plus a token to hand back after a handshake."""

    def __init__(self, identity: Identity, issued: str | None = None) -> None:
        self.identity = identity
        self._issued = issued

    def sending_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._issued}"} if self._issued else {}


class AuthMiddlewareFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Rejects calls without valid credentials before any handler runs.

    Args:
        authenticator: checks the credentials.
        on_failure: called with a reason label for every rejected call (metrics).
    """

    def __init__(self, authenticator: Authenticator, on_failure: Any = None) -> None:
        super().__init__()
        self._auth = authenticator
        self._on_failure = on_failure

    def start_call(self, info: Any, headers: dict[str, list[Any]]) -> AuthMiddleware:
        values = headers.get("authorization") or []
        header = values[0] if values else ""
        header = header.decode() if isinstance(header, bytes) else header
        scheme, _, credentials = header.strip().partition(" ")
        credentials = credentials.strip()
        try:
            if info.method == flight.FlightMethod.HANDSHAKE and scheme.lower() == "basic":
                identity, token = self._auth.basic(credentials, self._auth.peer(headers))
                return AuthMiddleware(identity, token)
            if scheme.lower() != "bearer" or not credentials:
                raise CredentialsRejected(
                    "missing credentials: send 'authorization: Bearer <token>' (an API key, "
                    "an OIDC access token, or the token the Handshake returns for "
                    "'authorization: Basic <base64(user:password)>')",
                    "missing",
                )
            return AuthMiddleware(self._auth.bearer(credentials))
        except CredentialsRejected as exc:
            self._failed(exc.reason)
            raise flight.FlightUnauthenticatedError(str(exc)) from None
        except ProviderUnavailable as exc:
            self._failed("provider_unavailable")
            raise flight.FlightUnavailableError(str(exc)) from None
        except Throttled as exc:  # answered at once: no handler thread waits out the delay
            self._failed("throttled", quiet=True)  # logged once per burst by the throttle
            raise flight.FlightUnauthenticatedError(str(exc)) from None
        except Busy as exc:
            self._failed("busy")
            raise flight.FlightUnavailableError(str(exc)) from None

    def _failed(self, reason: str, quiet: bool = False) -> None:
        if not quiet:
            log.info("authentication failed", extra={"fields": {"reason": reason}})
        if self._on_failure is not None:
            self._on_failure(reason)


class AnonymousHandshakeFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Authentication off: Handshake succeeds whatever credentials it carries and answers
    ``authorization: Bearer anonymous``, for clients that insist on getting a token back
    (pyarrow's ``authenticate_basic_token`` returns the header to send). Other calls pass
    untouched, with or without an ``authorization`` header."""

    def start_call(self, info: Any, headers: dict[str, list[Any]]) -> AuthMiddleware | None:
        if info.method == flight.FlightMethod.HANDSHAKE:
            return AuthMiddleware(ANONYMOUS, ANONYMOUS_TOKEN)
        return None


class HandshakeHandler(flight.ServerAuthHandler):  # type: ignore[misc]
    """Lets Handshake through to the middleware; it sends and expects no messages."""

    def authenticate(self, outgoing: Any, incoming: Any) -> None:
        return None

    def is_valid(self, token: bytes) -> str:
        return ""
