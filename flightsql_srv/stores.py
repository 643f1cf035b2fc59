"""Object stores for remote catalog sources: ``[stores.<name>]`` sections.

A catalog file may declare connection settings for S3 (and S3-compatible servers), Google
Cloud Storage, Azure Blob Storage/ADLS Gen2 and HTTPS servers::

    [stores.lake]
    type = "s3"
    bucket = "metrics"
    endpoint = "http://127.0.0.1:8333"
    allow_http = true
    access_key_id_env = "LAKE_KEY_ID"        # the NAME of an environment variable
    secret_access_key_env = "LAKE_SECRET"

A table whose ``source`` is a URL reads it through the store it names (``store = "lake"``),
else the store of its file declared for that bucket, else the file's only store of that type
that names no bucket, else a store configured from the standard environment alone
(``AWS_*``, ``GOOGLE_*``, ``AZURE_*`` variables, as the object_store crate reads them).

Secrets are never written in a catalog file: they are named by environment variable (the
``*_env`` keys) and read when the store is built, at start-up.

Building the store objects and registering them in DataFusion contexts is
:mod:`flightsql_srv.objectstores`.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "STORE_TYPES",
    "StoreConfigError",
    "StoreDecl",
    "StoreBinding",
    "parse_stores",
    "bind_source",
    "is_remote",
]

#: URL scheme -> store type.
SCHEMES = {
    "s3": "s3",
    "gs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "https": "http",
    "http": "http",
}
STORE_TYPES = ("s3", "gcs", "azure", "http")

#: Settings each store type accepts, with their Python type.
_KEYS: dict[str, dict[str, type]] = {
    "s3": {
        "bucket": str,
        "region": str,
        "endpoint": str,
        "allow_http": bool,
        "path_style": bool,
        "anonymous": bool,
        "access_key_id_env": str,
        "secret_access_key_env": str,
        "session_token_env": str,
    },
    "gcs": {"bucket": str, "service_account_path": str, "service_account_path_env": str},
    "azure": {
        "container": str,
        "account": str,
        "allow_http": bool,
        "use_emulator": bool,
        "account_key_env": str,
        "sas_token_env": str,
        "bearer_token_env": str,
        "client_id": str,
        "tenant_id": str,
        "client_secret_env": str,
    },
    "http": {"url": str},
}
_COMMON_KEYS = {"type", "description"}
#: Inline secrets that are refused, whatever the store type.
_SECRETS = {
    "access_key_id",
    "secret_access_key",
    "session_token",
    "token",
    "account_key",
    "access_key",
    "sas_token",
    "bearer_token",
    "client_secret",
    "password",
    "secret",
    "service_account_key",
}
#: The ``*_env`` key to use instead of an inline secret, where its name is not ``<key>_env``.
_SECRET_ENV_KEYS = {
    ("s3", "token"): "session_token_env",
    ("azure", "access_key"): "account_key_env",
    ("azure", "token"): "bearer_token_env",
}
#: A ``*_env`` pair that must be given together.
_PAIRS = {"s3": [("access_key_id_env", "secret_access_key_env")]}


class StoreConfigError(ValueError):
    """A ``[stores]`` section or a remote ``source`` is invalid; the message names the file."""


@dataclass(frozen=True)
class StoreDecl:
    """One ``[stores.<name>]`` section (``name`` is empty for the environment-only store)."""

    name: str
    file: Path
    type: str
    settings: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.settings).get(key, default)

    @property
    def label(self) -> str:
        return self.name or "(environment)"


@dataclass(frozen=True)
class StoreBinding:
    """How a remote table reaches its bytes: the store and DataFusion's registry key."""

    store: StoreDecl
    scheme: str
    host: str
    bucket: str

    @property
    def url(self) -> str:
        """The object-store URL DataFusion looks stores up by, e.g. ``s3://metrics``."""
        return f"{self.scheme}://{self.host}"

    @property
    def key(self) -> tuple[Any, ...]:
        """Equal for bindings that can share one store object."""
        return (self.url, self.store.type, self.store.settings)


def is_remote(source: str) -> bool:
    """True for a URL with a scheme other than ``file://``."""
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    return bool(scheme) and scheme != "file"


def parse_stores(path: Path, raw: Any) -> dict[str, StoreDecl]:
    """Validate a file's ``stores`` table.

    Raises:
        StoreConfigError: an unknown type or key, a wrongly typed value, or an inline secret.
    """
    if not isinstance(raw, dict):
        raise StoreConfigError(f"{path}: 'stores' must be a table of [stores.<name>] sections")
    return {name: _store(path, name, section) for name, section in raw.items()}


def _store(path: Path, name: str, raw: Any) -> StoreDecl:
    where = f"{path}: store '{name}'"
    if not isinstance(raw, dict):
        raise StoreConfigError(f"{where}: expected a [stores.{name}] section")
    kind = raw.get("type")
    secrets = sorted(set(raw) & _SECRETS)
    if secrets:
        key = secrets[0]
        instead = _SECRET_ENV_KEYS.get((str(kind), key), f"{key}_env")
        raise StoreConfigError(
            f"{where}: '{key}' must not be written in the catalog; put the secret in an "
            f'environment variable and name it: {instead} = "MY_VARIABLE"'
        )
    if kind not in STORE_TYPES:
        raise StoreConfigError(f"{where}: 'type' must be one of {list(STORE_TYPES)}, got {kind!r}")
    allowed = _KEYS[kind]
    unknown = set(raw) - set(allowed) - _COMMON_KEYS
    if unknown:
        raise StoreConfigError(
            f"{where}: unknown key(s) {sorted(unknown)} for type {kind!r} "
            f"(valid: {sorted(allowed)})"
        )
    for key, expected in allowed.items():
        if key in raw and not isinstance(raw[key], expected):
            raise StoreConfigError(f"{where}: '{key}' must be {expected.__name__}")
    if "description" in raw and not isinstance(raw["description"], str):
        raise StoreConfigError(f"{where}: 'description' must be str")
    for key in (k for k in raw if k.endswith("_env")):
        if not raw[key]:
            raise StoreConfigError(f"{where}: '{key}' must name an environment variable")
    for first, second in _PAIRS.get(kind, []):
        if (first in raw) != (second in raw):
            raise StoreConfigError(f"{where}: give both '{first}' and '{second}', or neither")
    _check_store(where, kind, raw)
    settings = tuple(sorted((k, v) for k, v in raw.items() if k not in _COMMON_KEYS))
    return StoreDecl(name, path, kind, settings)


def _check_store(where: str, kind: str, raw: dict[str, Any]) -> None:
    if kind == "s3":
        endpoint = raw.get("endpoint")
        if endpoint is not None:
            parts = urllib.parse.urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise StoreConfigError(
                    f"{where}: 'endpoint' must be an http(s) URL such as http://127.0.0.1:8333"
                )
            if parts.scheme == "http" and not raw.get("allow_http", False):
                raise StoreConfigError(
                    f"{where}: endpoint {endpoint} is plain http; set allow_http = true"
                )
        if raw.get("anonymous") and "access_key_id_env" in raw:
            raise StoreConfigError(f"{where}: anonymous = true cannot use credentials")
    elif kind == "http":
        if "url" not in raw:
            raise StoreConfigError(f'{where}: an http store needs url = "https://host[:port]"')
        _http_origin(where, raw["url"])
    elif kind == "azure":
        parts = [k for k in ("client_id", "tenant_id", "client_secret_env") if k in raw]
        if parts and len(parts) != 3:
            raise StoreConfigError(
                f"{where}: client_id, tenant_id and client_secret_env go together"
            )


def _http_origin(where: str, url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "http":
        raise StoreConfigError(
            f"{where}: plain http:// URLs cannot be read (DataFusion's HTTP store is "
            "https-only); serve the files over https://"
        )
    if parts.scheme != "https" or not parts.netloc:
        raise StoreConfigError(f"{where}: {url!r} is not an https:// URL")
    return parts.scheme, parts.netloc


def bind_source(
    where: str,
    source: str,
    store_name: str | None,
    stores: Mapping[str, StoreDecl],
    path: Path,
) -> StoreBinding:
    """Resolve the store of a remote ``source`` URL (see the module docs for the order).

    Raises:
        StoreConfigError: an unsupported scheme, a malformed URL, an unknown store or one of
            another type or bucket.
    """
    scheme = source.split("://", 1)[0].lower()
    kind = SCHEMES.get(scheme)
    if kind is None:
        supported = ", ".join(f"{s}://" for s in SCHEMES if s != "http")
        raise StoreConfigError(
            f"{where}: source scheme '{scheme}://' is not supported (use a local path, or "
            f"one of {supported})"
        )
    parts = urllib.parse.urlsplit(source)
    if kind == "http":
        _, host = _http_origin(where, source)
        bucket = host
    elif scheme in ("abfs", "abfss"):
        if not parts.username or not parts.hostname:
            raise StoreConfigError(
                f"{where}: expected {scheme}://<container>@<account>.dfs.core.windows.net/<path>"
            )
        bucket, host = parts.username, parts.netloc.split("@", 1)[1]
    else:
        if not parts.netloc:
            raise StoreConfigError(f"{where}: the source URL {source!r} names no bucket")
        bucket = host = parts.netloc
    store = _pick_store(where, kind, bucket, store_name, stores, path)
    bucket_key = "container" if kind == "azure" else "bucket"
    declared = store.get(bucket_key)
    if declared is not None and declared != bucket:
        raise StoreConfigError(
            f"{where}: store '{store.name}' is for {bucket_key} '{declared}', "
            f"the source is in '{bucket}'"
        )
    url = store.get("url")
    if kind == "http" and url is not None and _http_origin(where, url)[1] != host:
        raise StoreConfigError(
            f"{where}: store '{store.name}' serves {store.get('url')}, not {source}"
        )
    return StoreBinding(store, scheme, host, bucket)


def _pick_store(
    where: str,
    kind: str,
    bucket: str,
    store_name: str | None,
    stores: Mapping[str, StoreDecl],
    path: Path,
) -> StoreDecl:
    if store_name is not None:
        store = stores.get(store_name)
        if store is None:
            known = ", ".join(sorted(stores)) or "none"
            raise StoreConfigError(
                f"{where}: store '{store_name}' is not declared in this file (stores: {known})"
            )
        if store.type != kind:
            raise StoreConfigError(
                f"{where}: store '{store_name}' is of type {store.type!r}, "
                f"the source needs {kind!r}"
            )
        return store
    same_type = [s for s in stores.values() if s.type == kind]
    bucket_key = "container" if kind == "azure" else "bucket"
    if kind == "http":
        matching = [s for s in same_type if _http_origin(where, s.get("url"))[1] == bucket]
    else:
        matching = [s for s in same_type if s.get(bucket_key) == bucket]
    if len(matching) > 1:
        names = ", ".join(s.name for s in matching)
        raise StoreConfigError(f"{where}: several stores match ({names}); name one with store =")
    if matching:
        return matching[0]
    general = [s for s in same_type if s.get(bucket_key) is None and kind != "http"]
    if len(general) == 1:
        return general[0]
    return StoreDecl("", path, kind)


# -- building ----------------------------------------------------------------------------
