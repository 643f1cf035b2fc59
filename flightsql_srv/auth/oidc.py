"""OIDC bearer tokens: discovery, JWKS with key rotation, and JWT validation for several issuers.

``OidcVerifier.verify`` answers ``None`` for anything that is not a JWT from a configured issuer,
so API keys and session tokens can be tried next. Tokens are never logged nor echoed in errors.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from joserfc.errors import JoseError
from joserfc.jwk import Key, OKPKey
from joserfc.jws import JWSRegistry

from flightsql_srv.auth.identity import CredentialsRejected, Identity
from flightsql_srv.auth.jwks import IssuerKeys, Jwks, b64url_decode, check_issuer_url

__all__ = [
    "DEFAULT_ALGORITHMS",
    "JWKS_REFETCH_MIN_INTERVAL_S",
    "OidcIssuer",
    "OidcVerifier",
]

log = logging.getLogger(__name__)

#: The asymmetric JWS algorithms a token may use unless an issuer narrows the list.
DEFAULT_ALGORITHMS: Final = (
    "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA",
)  # fmt: skip
#: JWS algorithm → the JWK ``kty`` it needs. Anything else (``none``, ``HS*``) is never accepted.
_KEY_TYPES: Final[Mapping[str, str]] = {
    **{f"{p}{n}": "RSA" for p in ("RS", "PS") for n in (256, 384, 512)},
    "ES256": "EC", "ES384": "EC", "ES512": "EC",
    "EdDSA": "OKP", "Ed25519": "OKP",
}  # fmt: skip
#: An unknown ``kid`` refetches the JWKS at most this often per issuer; a failed fetch is not
#: retried sooner either (callers get the cached keys, or ProviderUnavailable without waiting).
JWKS_REFETCH_MIN_INTERVAL_S: Final = 10.0
#: Validated tokens cached, and how long before ``exp`` an entry is dropped.
TOKEN_CACHE_SIZE: Final = 10_000
TOKEN_CACHE_MARGIN_S: Final = 30.0
#: A cached token is checked again (signature, current JWKS) at least this often.
TOKEN_CACHE_MAX_AGE_S: Final = 300.0
#: Longer bearer values are not treated as JWTs (gRPC metadata is limited to ~8-16 KiB anyway).
MAX_TOKEN_CHARS: Final = 16_384

_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True)
class OidcIssuer:
    """One trusted OpenID Connect issuer and how its tokens become identities.

    Args:
        issuer: the issuer URL exactly as tokens carry it in ``iss`` (https; plain http only
            for loopback addresses unless ``allow_insecure_http``).
        audience: the audience (or audiences) a token's ``aud`` must contain.
        roles_claim: claim holding roles, a string (space-separated) or a list; a dotted path
            such as ``realm_access.roles`` reaches into objects. None: no roles from the token.
        default_roles: roles every token of this issuer gets.
        principal_claim: claim naming the caller. For ``sub``, tokens without one fall back to
            ``client_id`` then ``azp`` (client-credentials tokens of some providers).
        algorithms: allowed JWS algorithms; asymmetric only (``none`` and ``HS*`` are refused).
        leeway_s: clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
        jwks_ttl_s: how long fetched keys are used before they are fetched again.
        http_timeout_s: timeout of each request to the issuer.
        allow_insecure_http: accept a plain-http issuer that is not on a loopback address.
    """

    issuer: str
    audience: str | tuple[str, ...]
    roles_claim: str | None = None
    default_roles: tuple[str, ...] = ()
    principal_claim: str = "sub"
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway_s: int = 60
    jwks_ttl_s: float = 3600
    http_timeout_s: float = 5
    allow_insecure_http: bool = False

    def __post_init__(self) -> None:
        for name in ("audience", "default_roles", "algorithms"):
            value = getattr(self, name)
            if isinstance(value, list):  # from TOML/JSON: keep the dataclass hashable
                object.__setattr__(self, name, tuple(value))
            elif isinstance(value, str) and name != "audience":
                object.__setattr__(self, name, (value,))
        check_issuer_url(self.issuer, "issuer", self.allow_insecure_http)
        if not self.audiences or not all(isinstance(a, str) and a for a in self.audiences):
            raise ValueError("audience must be a non-empty string or a list of them")
        if not all(isinstance(r, str) and r for r in self.default_roles):
            raise ValueError("default_roles must be a list of non-empty strings")
        for name in ("roles_claim", "principal_claim"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty string")
        if not self.algorithms:
            raise ValueError("algorithms must list at least one JWS algorithm")
        for alg in self.algorithms:
            if alg == "none" or str(alg).upper().startswith("HS"):
                raise ValueError(
                    f"algorithm {alg!r} is not allowed for OIDC tokens: only asymmetric "
                    "signatures can be checked against an issuer's published keys"
                )
            if alg not in _KEY_TYPES:
                raise ValueError(
                    f"unknown JWS algorithm {alg!r}; choose from {', '.join(sorted(_KEY_TYPES))}"
                )
        for name in ("leeway_s", "jwks_ttl_s", "http_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a non-negative number")
        if self.jwks_ttl_s <= 0 or self.http_timeout_s <= 0:
            raise ValueError("jwks_ttl_s and http_timeout_s must be positive")

    @property
    def audiences(self) -> tuple[str, ...]:
        """``audience`` as a tuple."""
        return (self.audience,) if isinstance(self.audience, str) else tuple(self.audience)


@dataclass(frozen=True)
class _Parts:
    header_b64: str
    payload_b64: str
    signature_b64: str
    claims: dict[str, Any]


def _split(token: str) -> _Parts | None:
    """The pieces of a compact JWS whose payload is a JSON object, or None."""
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2 or not token.isascii():
        return None
    header, payload, signature = token.split(".")
    if not header or not payload or not all(_SEGMENT.fullmatch(s) for s in (header, payload)):
        return None
    if not _SEGMENT.fullmatch(signature):
        return None
    try:
        claims = json.loads(b64url_decode(payload))
    except (ValueError, binascii.Error, RecursionError):
        return None
    if not isinstance(claims, dict):
        return None
    return _Parts(header, payload, signature, claims)


def _reject(message: str, reason: str) -> CredentialsRejected:
    return CredentialsRejected(message, reason)


def _is_time(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # a JSON integer too large for a float
        return False


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by name, or by dotted path into nested objects when no claim has that name."""
    if path in claims:  # e.g. "https://example.com/roles"
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _fits(alg: str, key: Key) -> bool:
    """Whether ``key`` may check an ``alg`` signature (type, curve, its own use/alg)."""
    if key.key_type != _KEY_TYPES[alg]:
        return False
    if alg == "EdDSA" and not (isinstance(key, OKPKey) and key.curve_name in ("Ed25519", "Ed448")):
        return False
    try:
        JWSRegistry.algorithms[alg].check_key(key)
    except JoseError:
        return False
    return True


def _signature_ok(alg: str, key: Key, signing_input: bytes, signature: bytes) -> bool:
    try:
        return JWSRegistry.algorithms[alg].verify(signing_input, signature, key)
    except (JoseError, ValueError, TypeError):
        return False


_OK, _UNKNOWN_KID, _NO_KEY, _WRONG_TYPE, _BAD_SIG = range(5)


def _check(jwks: Jwks, alg: str, kid: str | None, parts: _Parts, signature: bytes) -> int:
    candidates = jwks.keys if kid is None else jwks.by_kid.get(kid, ())
    if kid is not None and not candidates:
        return _UNKNOWN_KID
    fitting = [k for k in candidates if _fits(alg, k)]
    if not fitting:
        return _NO_KEY if kid is None else _WRONG_TYPE
    signing_input = f"{parts.header_b64}.{parts.payload_b64}".encode("ascii")
    if any(_signature_ok(alg, k, signing_input, signature) for k in fitting):
        return _OK
    return _BAD_SIG


class OidcVerifier:
    """Checks OIDC JWT bearer tokens against several issuers; thread-safe.

    Args:
        issuers: the trusted issuers (each ``iss`` at most once; list audiences together).
        refetch_interval_s: minimum time between JWKS fetches triggered by unknown key ids,
            and between retries after a failed fetch, per issuer.
        cache_size: how many validated tokens are remembered.
    """

    def __init__(
        self,
        issuers: Sequence[OidcIssuer],
        *,
        refetch_interval_s: float = JWKS_REFETCH_MIN_INTERVAL_S,
        cache_size: int = TOKEN_CACHE_SIZE,
    ) -> None:
        self._issuers: dict[str, IssuerKeys] = {}
        for config in issuers:
            if config.issuer in self._issuers:
                raise ValueError(
                    f"issuer {config.issuer} is configured twice; give one entry with a list "
                    "of audiences instead"
                )
            self._issuers[config.issuer] = IssuerKeys(config, refetch_interval_s)
        self._near: dict[str, str] = {i.rstrip("/"): i for i in self._issuers}
        self._hinted: set[str] = set()
        self._cache: OrderedDict[bytes, tuple[Identity, float]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    def verify(self, token: str) -> Identity | None:
        """The identity of a JWT from a configured issuer; None when the token is not one.

        Raises:
            CredentialsRejected: the token names a configured issuer but is not valid; its
                ``reason`` is one of ``expired``, ``not_yet_valid``, ``bad_audience``,
                ``bad_signature``, ``unknown_key``, ``bad_algorithm``, ``malformed``,
                ``missing_claim``.
            ProviderUnavailable: the issuer could not be reached and no cached key applies.
        """
        if not token.isascii():
            return None
        digest = hashlib.sha256(token.encode("ascii")).digest()
        with self._cache_lock:
            hit = self._cache.get(digest)
        if hit is not None:
            if time.time() < hit[1]:
                return hit[0]
            with self._cache_lock:
                self._cache.pop(digest, None)
        parts = _split(token)
        if parts is None:
            return None
        iss = parts.claims.get("iss")
        if not isinstance(iss, str):
            return None
        keys = self._issuers.get(iss)
        if keys is None:
            self._hint(iss)
            return None
        identity, exp = self._validate(keys, parts)
        until = min(exp - TOKEN_CACHE_MARGIN_S, time.time() + TOKEN_CACHE_MAX_AGE_S)
        if until > time.time():
            with self._cache_lock:
                self._cache[digest] = (identity, until)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return identity

    def _hint(self, iss: str) -> None:
        """Log once when ``iss`` differs from a configured issuer only by a trailing slash."""
        configured = self._near.get(iss.rstrip("/"))
        if configured is not None and iss not in self._hinted and len(self._hinted) < 100:
            self._hinted.add(iss)
            log.warning(
                "ignoring tokens with iss %.200r: the configured issuer is %r and the two must "
                "match exactly (trailing slash included)",
                iss,
                configured,
            )

    def _validate(self, keys: IssuerKeys, parts: _Parts) -> tuple[Identity, float]:
        config = keys.config
        try:
            header = json.loads(b64url_decode(parts.header_b64))
            signature = b64url_decode(parts.signature_b64)
        except (ValueError, binascii.Error, RecursionError):
            raise _reject("malformed JWT: the header is not base64url JSON", "malformed") from None
        if not isinstance(header, dict):
            raise _reject("malformed JWT: the header is not a JSON object", "malformed")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in config.algorithms:
            shown = alg if isinstance(alg, str) else type(alg).__name__
            raise _reject(
                f"JWT algorithm {shown[:32]!r} is not accepted for issuer {config.issuer} "
                f"(allowed: {', '.join(config.algorithms)})",
                "bad_algorithm",
            )
        if "crit" in header:
            raise _reject(
                "JWT has critical header parameters this server does not support", "malformed"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _reject("malformed JWT: 'kid' is not a string", "malformed")

        jwks, fresh = keys.current()
        outcome = _check(jwks, alg, kid, parts, signature)
        if outcome in (_UNKNOWN_KID, _NO_KEY) or (outcome == _BAD_SIG and kid is None):
            newer = None if fresh else keys.refetch(jwks)  # the issuer may have rotated its keys
            if newer is not None:
                outcome = _check(newer, alg, kid, parts, signature)
        if outcome in (_UNKNOWN_KID, _NO_KEY):
            which = f"key id {kid[:64]!r}" if kid is not None else f"a key fit for {alg}"
            raise _reject(
                f"JWT is signed with {which}, which {config.issuer} does not publish",
                "unknown_key",
            )
        if outcome == _WRONG_TYPE:
            raise _reject(
                f"JWT algorithm {alg} does not match the type of key {str(kid)[:64]!r}",
                "bad_algorithm",
            )
        if outcome == _BAD_SIG:
            raise _reject("JWT signature is not valid", "bad_signature")
        return self._identity(config, parts.claims)

    @staticmethod
    def _identity(config: OidcIssuer, claims: Mapping[str, Any]) -> tuple[Identity, float]:
        now = time.time()
        leeway = config.leeway_s
        exp = claims.get("exp")
        if exp is None:
            raise _reject("JWT has no 'exp' claim", "missing_claim")
        for name in ("exp", "nbf", "iat"):
            if name in claims and not _is_time(claims[name]):
                raise _reject(f"malformed JWT: '{name}' is not a number", "malformed")
        if now > exp + leeway:
            raise _reject("JWT has expired; get a new token", "expired")
        nbf = claims.get("nbf")
        if nbf is not None and now + leeway < nbf:
            raise _reject("JWT is not valid yet (nbf is in the future)", "not_yet_valid")
        iat = claims.get("iat")
        if iat is not None and now + leeway < iat:
            raise _reject("JWT was issued in the future (check clocks)", "not_yet_valid")

        aud = claims.get("aud")
        if aud is None:
            raise _reject("JWT has no 'aud' claim", "missing_claim")
        auds = [aud] if isinstance(aud, str) else aud
        if not isinstance(auds, list) or not all(isinstance(a, str) for a in auds):
            raise _reject("malformed JWT: 'aud' is not a string or a list of strings", "malformed")
        if not set(auds).intersection(config.audiences):
            raise _reject(
                f"JWT is not meant for this service: its audience does not include "
                f"{' or '.join(map(repr, config.audiences))}",
                "bad_audience",
            )

        names = [config.principal_claim]
        if config.principal_claim == "sub":
            names += ["client_id", "azp"]
        principal = next(
            (v for v in (_claim(claims, n) for n in names) if isinstance(v, str) and v), None
        )
        if principal is None:
            raise _reject(f"JWT has no '{config.principal_claim}' claim", "missing_claim")

        roles = set(config.default_roles)
        if config.roles_claim is not None:
            value = _claim(claims, config.roles_claim)
            if isinstance(value, str):
                roles.update(value.split())
            elif isinstance(value, list):
                roles.update(v for v in value if isinstance(v, str) and v)
        return Identity(principal, frozenset(roles), "oidc"), float(exp)
