"""The ``[auth]`` configuration: API keys, users, OIDC issuers and roles.

These key names are the public interface::

    [[auth.api_keys]]      name, sha256, roles
    [[auth.users]]         name, password_hash, roles
    [[auth.oidc]]          issuer, audience, roles_claim, default_roles
    [auth.roles.<name>]    tables = ["*", "demo.*", "demo.logs"], explain_paths = false
    [auth]                 session_ttl = 3600   # seconds a handshake token stays valid
    [auth]                 login_failures_free = 5, login_failures_free_per_peer = 20,
                           login_max_delay = 30, client_address_header = "x-forwarded-for",
                           password_checks = 0 (one per core), password_queue = 16

Authentication is on as soon as any API key, user or OIDC issuer is configured.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flightsql_srv.auth.passwords import check_hash_format

if TYPE_CHECKING:
    from flightsql_srv.auth.oidc import OidcIssuer

__all__ = ["AuthConfig", "ApiKey", "User", "Role", "parse_auth", "DEFAULT_SESSION_TTL"]

#: A handshake token's default lifetime: 90 days, so a Grafana datasource that signed in
#: once keeps working (docs/security.md); revocation does not wait for it (see
#: Authenticator), as every call checks the user is still configured as it was.
DEFAULT_SESSION_TTL = 90 * 86400.0
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PATTERN = re.compile(r"^(\*|[A-Za-z_][A-Za-z0-9_]*\.(\*|[A-Za-z_][A-Za-z0-9_]*))$")


@dataclass(frozen=True)
class ApiKey:
    """A static bearer token; only its SHA-256 digest is configured."""

    name: str
    sha256: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class User:
    """A username/password for the Flight handshake."""

    name: str
    password_hash: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Role:
    """Which tables a role may see: ``*``, ``schema.*`` or ``schema.table`` patterns, and
    whether EXPLAIN shows it storage paths (file lists, object store URLs)."""

    name: str
    tables: tuple[str, ...]
    explain_paths: bool = False

    def allows(self, schema: str, table: str) -> bool:
        return any(p in ("*", f"{schema}.*", f"{schema}.{table}") for p in self.tables)


@dataclass(frozen=True)
class AuthConfig:
    """Everything under ``[auth]``."""

    api_keys: tuple[ApiKey, ...] = ()
    users: tuple[User, ...] = ()
    oidc: tuple[OidcIssuer, ...] = ()
    roles: Mapping[str, Role] = field(default_factory=dict)
    session_ttl: float = DEFAULT_SESSION_TTL
    #: Failed sign-ins per (user, peer), and per peer, before each try must wait.
    login_failures_free: int = 5
    login_failures_free_per_peer: int = 20
    #: The longest wait, in seconds (waits double from 1 s).
    login_max_delay: float = 30.0
    #: Header a trusted proxy sets to the client's address ("" : peers are not told apart).
    client_address_header: str = ""
    #: Password hashes computed at once (0: one per CPU core), and callers that may wait.
    password_checks: int = 0
    password_queue: int = 16

    @property
    def enabled(self) -> bool:
        return bool(self.api_keys or self.users or self.oidc)


class _Reader:
    """Reads one table of the config, naming where each problem is."""

    def __init__(self, raw: Any, where: str, keys: set[str], required: set[str]) -> None:
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected a table")
        unknown = set(raw) - keys
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}")
        missing = required - set(raw)
        if missing:
            raise ValueError(f"{where}: missing key(s) {sorted(missing)}")
        self.raw, self.where = raw, where

    def text(self, key: str, default: str | None = None) -> str:
        value = self.raw.get(key, default)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{self.where}: '{key}' must be a non-empty string")
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.raw.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{self.where}: '{key}' must be a list of strings")
        return tuple(value)


def _list(raw: Any, where: str) -> list[Any]:
    if not isinstance(raw, list):
        raise ValueError(f"{where}: expected an array of tables ([[{where}]])")
    return raw


def parse_auth(raw: Any, where: str = "[auth]") -> AuthConfig:
    """Validate an ``[auth]`` table.

    Raises:
        ValueError: naming the entry and key that is wrong.
    """
    top = _Reader(raw, where, {"api_keys", "users", "oidc", "roles", *_SCALARS}, set())
    roles: dict[str, Role] = {}
    roles_raw = raw.get("roles", {})
    if not isinstance(roles_raw, dict):
        raise ValueError(f"{where}.roles: expected [auth.roles.<name>] tables")
    for name, body in roles_raw.items():
        r = _Reader(body, f"[auth.roles.{name}]", {"tables", "explain_paths"}, {"tables"})
        tables = r.texts("tables")
        explain_paths = r.raw.get("explain_paths", False)
        if not isinstance(explain_paths, bool):
            raise ValueError(f"[auth.roles.{name}]: 'explain_paths' must be true or false")
        for pattern in tables:
            if not _PATTERN.match(pattern):
                raise ValueError(
                    f"[auth.roles.{name}]: table pattern {pattern!r} must be '*', "
                    "'schema.*' or 'schema.table'"
                )
        roles[name] = Role(name, tables, explain_paths)

    def known(entry: _Reader, names: tuple[str, ...]) -> tuple[str, ...]:
        for role in names:
            if role not in roles:
                raise ValueError(f"{entry.where}: role {role!r} is not defined in [auth.roles]")
        return names

    api_keys = []
    for i, body in enumerate(_list(raw.get("api_keys", []), "auth.api_keys")):
        e = _Reader(
            body, f"[[auth.api_keys]] #{i + 1}", {"name", "sha256", "roles"}, {"name", "sha256"}
        )
        digest = e.text("sha256").lower()
        if not _HEX64.match(digest):
            raise ValueError(
                f"{e.where}: 'sha256' must be the 64-hex-digit SHA-256 of the key "
                '(e.g. printf %s "$KEY" | sha256sum)'
            )
        api_keys.append(ApiKey(e.text("name"), digest, known(e, e.texts("roles"))))
    users = []
    for i, body in enumerate(_list(raw.get("users", []), "auth.users")):
        e = _Reader(
            body,
            f"[[auth.users]] #{i + 1}",
            {"name", "password_hash", "roles"},
            {"name", "password_hash"},
        )
        try:
            check_hash_format(e.text("password_hash"))
        except ValueError as exc:
            raise ValueError(f"{e.where}: 'password_hash': {exc}") from None
        if ":" in e.text("name"):
            raise ValueError(f"{e.where}: a user name cannot contain ':'")
        users.append(User(e.text("name"), e.text("password_hash"), known(e, e.texts("roles"))))
    issuers: list[OidcIssuer] = []
    if raw.get("oidc"):
        from flightsql_srv.auth.oidc import OidcIssuer  # JOSE libraries only when used
    oidc_keys = {"issuer", "audience", "roles_claim", "default_roles", "principal_claim"}
    for i, body in enumerate(_list(raw.get("oidc", []), "auth.oidc")):
        e = _Reader(body, f"[[auth.oidc]] #{i + 1}", oidc_keys, {"issuer", "audience"})
        audience = e.texts("audience")
        try:
            issuers.append(
                OidcIssuer(
                    issuer=e.text("issuer"),
                    audience=audience[0] if len(audience) == 1 else audience,
                    roles_claim=e.raw.get("roles_claim"),
                    default_roles=known(e, e.texts("default_roles")),
                    principal_claim=e.raw.get("principal_claim", "sub"),
                )
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{e.where}: {exc}") from None
    scalars = {name: _scalar(top, name, *rule) for name, rule in _SCALARS.items()}
    seen: set[str] = set()
    for entry_name in [k.name for k in api_keys] + [u.name for u in users]:
        if entry_name in seen:
            raise ValueError(f"{where}: the name {entry_name!r} is used twice")
        seen.add(entry_name)
    return AuthConfig(tuple(api_keys), tuple(users), tuple(issuers), roles, **scalars)


#: The scalar [auth] keys: (type, default, smallest value, what it must be).
_SCALARS: dict[str, tuple[type, Any, float, str]] = {
    "session_ttl": (float, DEFAULT_SESSION_TTL, 1e-9, "a positive number of seconds"),
    "login_failures_free": (int, 5, 0, "a count, 0 or more"),
    "login_failures_free_per_peer": (int, 20, 0, "a count, 0 or more"),
    "login_max_delay": (float, 30.0, 0, "a number of seconds, 0 or more"),
    "client_address_header": (str, "", 0, "a header name"),
    "password_checks": (int, 0, 0, "a count, 0 (one per CPU core) or more"),
    "password_queue": (int, 16, 0, "a count, 0 or more"),
}


def _scalar(top: _Reader, name: str, kind: type, default: Any, low: float, what: str) -> Any:
    value = top.raw.get(name, default)
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{top.where}: '{name}' must be {what}")
        return value.strip().lower()
    numeric = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, numeric) or value < low:
        raise ValueError(f"{top.where}: '{name}' must be {what}")
    return kind(value)
