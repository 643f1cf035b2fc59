"""Fetching an OIDC issuer's signing keys: discovery, the JWKS, caching and rotation.

Only http(s) URLs are fetched (http only on loopback unless allowed), https never redirects to
http, documents are size-limited, and a failing issuer is not retried more often than
``JWKS_REFETCH_MIN_INTERVAL_S``.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import json
import logging
import math
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

from flightsql_srv.auth.identity import ProviderUnavailable

if TYPE_CHECKING:
    from flightsql_srv.auth.oidc import OidcIssuer

__all__ = ["IssuerKeys", "Jwks", "check_issuer_url", "b64url_decode", "is_loopback"]

log = logging.getLogger("flightsql_srv.auth.oidc")

#: Discovery documents and JWKS larger than this are refused.
MAX_DOCUMENT_BYTES: Final = 1 << 20
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_issuer_url(url: str, what: str, allow_http: bool) -> None:
    """Raise ValueError unless ``url`` is an acceptable issuer or JWKS URL."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"{what} must be a URL")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{what} {url!r} must be an https:// URL")
    if parts.query or parts.fragment:
        raise ValueError(f"{what} {url!r} must not have a query or fragment")
    if parts.scheme == "http" and not allow_http and not is_loopback(parts.hostname):
        raise ValueError(
            f"{what} {url!r} uses plain http: keys fetched that way can be forged in transit; "
            "use https (or set allow_insecure_http for a trusted network)"
        )


# --- fetching discovery documents and key sets -------------------------------------------------


class _NoDowngradeRedirect(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but never from https to http nor to other schemes."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        old, new = urlsplit(req.full_url).scheme, urlsplit(newurl).scheme
        if new not in ("http", "https") or (old == "https" and new != "https"):
            fp.close()
            raise _FetchError(f"{req.full_url} redirects to a {new}: URL; refused", False)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    """http(s) only: no file:, ftp: or data: handlers a hostile document could point at."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),  # honours https_proxy / no_proxy
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(context=ssl.create_default_context()),
        _NoDowngradeRedirect(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


class _FetchError(Exception):
    """A fetch failed; ``unreachable`` tells a down issuer from a misconfigured one."""

    def __init__(self, detail: str, unreachable: bool) -> None:
        super().__init__(detail)
        self.unreachable = unreachable


def _get_json(opener: urllib.request.OpenerDirector, url: str, timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": "flightsql-srv"}
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(MAX_DOCUMENT_BYTES + 1)
    except urllib.error.HTTPError as exc:
        exc.close()
        unreachable = exc.code >= 500 or exc.code in (408, 429)
        raise _FetchError(f"HTTP {exc.code} from {url}", unreachable) from None
    except urllib.error.URLError as exc:
        raise _FetchError(f"{exc.reason} ({url})", True) from None
    except TimeoutError:
        raise _FetchError(f"no answer within {timeout:g} s ({url})", True) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _FetchError(f"{type(exc).__name__}: {exc} ({url})", True) from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise _FetchError(f"{url} is larger than {MAX_DOCUMENT_BYTES} bytes", False)
    try:
        document = json.loads(body)
    except ValueError:
        raise _FetchError(f"{url} did not return JSON", False) from None
    if not isinstance(document, dict):
        raise _FetchError(f"{url} did not return a JSON object", False)
    return document


@dataclass(frozen=True)
class Jwks:
    """An issuer's signing keys as fetched at ``fetched_at`` (monotonic clock)."""

    keys: tuple[Key, ...]
    by_kid: Mapping[str, tuple[Key, ...]]
    fetched_at: float


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _import_jwks(document: Mapping[str, Any], url: str) -> tuple[Key, ...]:
    """The usable signing keys of a JWKS document; others are skipped with a log line."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise _FetchError(f"{url} is not a JWK set (no 'keys' list)", False)
    keys: list[Key] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kty, kid = entry.get("kty"), entry.get("kid")
        if entry.get("use", "sig") != "sig" or kty not in ("RSA", "EC", "OKP"):
            continue  # encryption keys, symmetric keys: never for verifying tokens
        try:
            key: Key
            if kty == "RSA":
                n = b64url_decode(str(entry.get("n", "")))
                if int.from_bytes(n, "big").bit_length() < 2048:
                    log.warning("skipping RSA key %.64r of %s: shorter than 2048 bits", kid, url)
                    continue
                key = RSAKey.import_key(entry)
            elif kty == "EC":
                key = ECKey.import_key(entry)
            else:
                key = OKPKey.import_key(entry)
        except (JoseError, ValueError, TypeError, binascii.Error) as exc:
            log.warning("skipping unusable key %.64r of %s: %s", kid, url, exc)
            continue
        keys.append(key)
    return tuple(keys)


class IssuerKeys:
    """The cached JWKS of one issuer, and when it may be fetched again."""

    def __init__(self, config: OidcIssuer, refetch_interval_s: float) -> None:
        self.config = config
        self.discovery_url = config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        self._refetch_interval_s = refetch_interval_s
        self._opener = _opener()
        self._lock = threading.Lock()  # one fetch at a time per issuer
        self._jwks: Jwks | None = None
        self._jwks_uri: str | None = None
        self._last_kid_refetch = -math.inf
        self._last_failure = -math.inf
        self._failure = ""

    def current(self) -> tuple[Jwks, bool]:
        """Keys to verify with, and whether they were fetched just now.

        Expired keys are still used when a refresh fails or another thread is refreshing.
        """
        jwks = self._jwks
        if jwks is not None and time.monotonic() - jwks.fetched_at < self.config.jwks_ttl_s:
            return jwks, False
        if jwks is None:
            self._lock.acquire()
        elif not self._lock.acquire(blocking=False):
            return jwks, False  # someone is refreshing already: do not queue behind the HTTP call
        try:
            latest = self._jwks
            if latest is not None and latest is not jwks:
                return latest, False
            if time.monotonic() - self._last_failure < self._refetch_interval_s:
                if latest is not None:
                    return latest, False
                raise self._unavailable()
            fetched = self._fetch_locked(discover=True)
            if fetched is not None:
                return fetched, True
            if latest is not None:
                log.warning("using cached keys of %s: %s", self.config.issuer, self._failure)
                return latest, False
            raise self._unavailable()
        finally:
            self._lock.release()

    def refetch(self, seen: Jwks) -> Jwks | None:
        """Newer keys after an unknown ``kid``, or None when rate-limited.

        Raises ProviderUnavailable when the issuer cannot tell us whether the key exists.
        """
        with self._lock:
            latest = self._jwks
            if latest is not None and latest is not seen:
                return latest
            now = time.monotonic()
            if now - self._last_failure < self._refetch_interval_s:
                raise self._unavailable()
            if now - self._last_kid_refetch < self._refetch_interval_s:
                return None
            self._last_kid_refetch = now
            fetched = self._fetch_locked(discover=self._jwks_uri is None)
            if fetched is None:
                raise self._unavailable()
            return fetched

    def _unavailable(self) -> ProviderUnavailable:
        return ProviderUnavailable(self._failure)

    def _fetch_locked(self, discover: bool) -> Jwks | None:
        """Fetch (discovery and) the JWKS; on failure remember why and return None."""
        issuer = self.config.issuer
        timeout = self.config.http_timeout_s
        try:
            if discover or self._jwks_uri is None:
                document = _get_json(self._opener, self.discovery_url, timeout)
                if document.get("issuer") != issuer:
                    named = str(document.get("issuer"))[:200]
                    raise _FetchError(
                        f"its discovery document names issuer {named!r}, "
                        "not the configured one (they must match exactly)",
                        False,
                    )
                jwks_uri = document.get("jwks_uri")
                if not isinstance(jwks_uri, str):
                    raise _FetchError("its discovery document has no jwks_uri", False)
                try:
                    check_issuer_url(jwks_uri, "jwks_uri", self.config.allow_insecure_http)
                except ValueError as exc:
                    raise _FetchError(f"bad jwks_uri in discovery document: {exc}", False) from None
                self._jwks_uri = jwks_uri
            assert self._jwks_uri is not None
            keys = _import_jwks(_get_json(self._opener, self._jwks_uri, timeout), self._jwks_uri)
        except _FetchError as exc:
            state = "unreachable" if exc.unreachable else "misconfigured"
            self._failure = f"identity provider {issuer} is {state}: {exc}"
            self._last_failure = time.monotonic()
            log.warning("%s", self._failure)
            return None
        by_kid: dict[str, list[Key]] = {}
        for key in keys:
            if key.kid is not None:
                by_kid.setdefault(key.kid, []).append(key)
        if not keys:
            log.warning("the JWKS of %s has no usable signing key", issuer)
        log.info("fetched %d signing key(s) of %s", len(keys), issuer)
        self._jwks = Jwks(keys, {k: tuple(v) for k, v in by_kid.items()}, time.monotonic())
        self._failure, self._last_failure = "", -math.inf
        return self._jwks


# --- token parsing and validation -------------------------------------------------------------
