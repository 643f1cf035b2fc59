"""Turn credentials into an :class:`Identity`: API keys, session tokens, OIDC JWTs, and the
username/password of the Flight handshake (which returns a session token)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import pyarrow.flight as flight

from flightsql_srv.auth.config import AuthConfig
from flightsql_srv.auth.identity import CredentialsRejected, Identity
from flightsql_srv.auth.passwords import hash_password, verify_password
from flightsql_srv.tickets import Signer

__all__ = ["Authenticator", "SESSION_TOKEN_PREFIX"]

#: Session tokens from the handshake start with this, so they are told apart cheaply.
SESSION_TOKEN_PREFIX = "fss1."
_PURPOSE = "session-token"


class Authenticator:
    """Checks credentials against the ``[auth]`` configuration."""

    def __init__(self, config: AuthConfig, signer: Signer) -> None:
        self.config = config
        self._signer = signer
        self._keys = [(bytes.fromhex(k.sha256), k) for k in config.api_keys]
        self._users = {u.name: u for u in config.users}
        self._oidc = None
        if config.oidc:
            from flightsql_srv.auth.oidc import OidcVerifier  # JOSE libraries only when used

            self._oidc = OidcVerifier(config.oidc)
        # Checked for unknown user names too, so timing does not reveal which names exist.
        self._decoy_hash = hash_password("not a real password") if config.users else ""

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

    def basic(self, encoded: str) -> tuple[Identity, str]:
        """Check ``authorization: Basic <base64(user:password)>`` (padding optional) and
        issue a session token for it."""
        try:
            decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
            name, _, password = decoded.decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise CredentialsRejected(
                "malformed Basic credentials: send base64(username:password)", "malformed"
            ) from None
        user = self._users.get(name)
        if not verify_password(password, user.password_hash if user else self._decoy_hash):
            raise CredentialsRejected("invalid username or password", "bad_password")
        assert user is not None
        identity = Identity(f"user:{user.name}", frozenset(user.roles), "password")
        return identity, self.issue(identity)

    def issue(self, identity: Identity) -> str:
        """A signed session token standing for ``identity`` until ``session_ttl`` passes."""
        body = {"sub": identity.principal, "roles": sorted(identity.roles), "m": identity.method}
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
        return Identity(
            str(body["sub"]), frozenset(body.get("roles", [])), body.get("m", "session")
        )
