"""Turn credentials into an :class:`Identity`: API keys, session tokens, OIDC JWTs, and the
username/password of the Flight handshake (which returns a session token)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow.flight as flight

from flightsql_srv.auth.config import AuthConfig
from flightsql_srv.auth.identity import CredentialsRejected, Identity
from flightsql_srv.auth.passwords import hash_password, verify_password
from flightsql_srv.auth.throttle import HashGate, LoginThrottle
from flightsql_srv.tickets import Signer

if TYPE_CHECKING:
    from flightsql_srv.auth.oidc import OidcVerifier

__all__ = ["Authenticator", "SESSION_TOKEN_PREFIX"]

#: Session tokens from the handshake start with this, so they are told apart cheaply.
SESSION_TOKEN_PREFIX = "fss1."
_PURPOSE = "session-token"


class Authenticator:
    """Checks credentials against the ``[auth]`` configuration.

    Args:
        config: the ``[auth]`` section; :meth:`reload` replaces it while serving.
        signer: seals session tokens.
        on_throttle: called with "user" or "peer" when a burst of failed sign-ins starts
            being delayed (metrics).
    """

    def __init__(
        self,
        config: AuthConfig,
        signer: Signer,
        on_throttle: Callable[[str], None] | None = None,
    ) -> None:
        self._signer = signer
        self._on_throttle = on_throttle
        self._oidc: OidcVerifier | None = None
        self._decoy_hash = ""
        self._throttle: LoginThrottle | None = None
        self._gate: HashGate | None = None
        self.config = AuthConfig()
        self.reload(config)

    def reload(self, config: AuthConfig) -> None:
        """Check credentials against ``config`` from the next call on. Session tokens of
        users removed or given another password stop working; role changes apply at once.
        """
        oidc, old = self._oidc, self.config
        if config.oidc != old.oidc:
            oidc = None
            if config.oidc:
                from flightsql_srv.auth.oidc import OidcVerifier  # JOSE libraries only when used

                oidc = OidcVerifier(config.oidc)
        if config.users and not self._decoy_hash:
            # Checked for unknown user names too, so timing does not reveal which exist.
            self._decoy_hash = hash_password("not a real password")
        limits = ("login_failures_free", "login_failures_free_per_peer", "login_max_delay")
        if self._throttle is None or any(getattr(config, k) != getattr(old, k) for k in limits):
            # Kept across reloads that leave the limits alone: a reload forgives nobody.
            self._throttle = LoginThrottle(
                config.login_failures_free,
                config.login_failures_free_per_peer,
                config.login_max_delay,
                self._on_throttle,
            )
        gate = ("password_checks", "password_queue")
        if self._gate is None or any(getattr(config, k) != getattr(old, k) for k in gate):
            slots = config.password_checks or os.cpu_count() or 1
            self._gate = HashGate(slots, config.password_queue)
        # Each attribute is replaced whole: a call in progress sees the old or the new one.
        self._keys = [(bytes.fromhex(k.sha256), k) for k in config.api_keys]
        self._users = {u.name: u for u in config.users}
        self._oidc = oidc
        self.config = config

    def bearer(self, token: str) -> Identity:
        """The identity behind ``authorization: Bearer <token>``.

        Raises:
            CredentialsRejected: unknown, expired or forged credentials.
            ProviderUnavailable: an OIDC issuer could not be reached to check a JWT.
        """
        if token.startswith(SESSION_TOKEN_PREFIX):
            return self._session(token)
        if self._oidc is not None:
            identity = self._oidc.verify(token)
            if identity is not None:
                return identity
        digest = hashlib.sha256(token.encode()).digest()
        match = None
        for expected, key in self._keys:  # compare with every key: no early exit
            if hmac.compare_digest(expected, digest):
                match = key
        if match is None:
            raise CredentialsRejected(
                "invalid bearer token: not a known API key, a valid session token or a JWT "
                "from a configured issuer",
                "unknown_token",
            )
        return Identity(f"key:{match.name}", frozenset(match.roles), "api_key")

    def peer(self, headers: Mapping[str, list[Any]]) -> str:
        """The caller's address as the trusted proxy reports it ("" when not configured)."""
        name = self.config.client_address_header
        values = headers.get(name) if name else None
        if not values:
            return ""
        value = values[0]
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        return text.split(",")[0].strip()  # X-Forwarded-For: the client, then proxies

    def basic(self, encoded: str, peer: str = "") -> tuple[Identity, str]:
        """Check ``authorization: Basic <base64(user:password)>`` (padding optional) and
        issue a session token for it.

        Raises:
            CredentialsRejected: malformed credentials or a wrong password.
            Throttled: too many failures for this user from ``peer``, or from ``peer``.
            Busy: too many password checks in progress.
        """
        try:
            decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
            name, _, password = decoded.decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise CredentialsRejected(
                "malformed Basic credentials: send base64(username:password)", "malformed"
            ) from None
        throttle, gate = self._throttle, self._gate
        assert throttle is not None and gate is not None
        throttle.check(name, peer)
        user = self._users.get(name)
        expected = user.password_hash if user else self._decoy_hash
        if not gate.run(lambda: verify_password(password, expected)) or user is None:
            throttle.failed(name, peer)
            raise CredentialsRejected("invalid username or password", "bad_password")
        throttle.succeeded(name, peer)
        identity = Identity(f"user:{user.name}", frozenset(user.roles), "password")
        return identity, self.issue(identity, _fingerprint(user.password_hash))

    def issue(self, identity: Identity, password: str = "") -> str:
        """A sealed session token standing for ``identity`` until ``session_ttl`` passes,
        and only while the user keeps the password hash ``password`` fingerprints."""
        body = {"sub": identity.principal, "m": identity.method, "pw": password}
        token = self._signer.sign(_PURPOSE, body, ttl=self.config.session_ttl)
        return SESSION_TOKEN_PREFIX + base64.urlsafe_b64encode(token).decode().rstrip("=")

    def _session(self, token: str) -> Identity:
        raw = token[len(SESSION_TOKEN_PREFIX) :]
        try:
            data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
            body = self._signer.verify(
                _PURPOSE, data, "session token", "authenticate again with the handshake"
            )
        except (binascii.Error, ValueError):
            raise CredentialsRejected("malformed session token", "malformed") from None
        except flight.FlightUnauthenticatedError as exc:
            reason = "expired" if "expired" in str(exc) else "bad_signature"
            raise CredentialsRejected(str(exc), reason) from None
        principal = str(body.get("sub", ""))
        user = self._users.get(principal.removeprefix("user:"))
        if (
            user is None
            or not principal.startswith("user:")
            or not hmac.compare_digest(str(body.get("pw", "")), _fingerprint(user.password_hash))
        ):
            raise CredentialsRejected(
                "session token revoked: its user was removed or given a new password; "
                "authenticate again with the handshake",
                "revoked",
            )
        return Identity(principal, frozenset(user.roles), "password")


def _fingerprint(password_hash: str) -> str:
    """Names a password hash in a session token without carrying it."""
    return hashlib.sha256(b"flightsql-srv/session/" + password_hash.encode()).hexdigest()[:32]
