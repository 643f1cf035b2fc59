"""Building the object stores that ``[stores.<name>]`` sections declare (see
:mod:`flightsql_srv.stores`) and registering them in DataFusion session contexts.

DataFusion keys object stores by ``scheme://bucket``, per session context, so every context
that reads the catalog's tables needs them: :func:`register_object_stores` registers the
(cached, shared) store objects in one context. Secrets are read from the environment
variables the declaration names, when the store is built.
"""

from __future__ import annotations

import hashlib
import os
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from datafusion import SessionContext
from datafusion import object_store as df_store

from flightsql_srv.stores import StoreBinding, StoreDecl

__all__ = ["StoreUnavailable", "build_store", "register_object_stores", "storage_options"]

#: Environment variables that object_store's builders (and TLS roots) read.
_BUILDER_ENV_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_", "SSL_CERT_")
_ENV_LOCK = threading.Lock()
_BUILT: dict[tuple[Any, ...], Any] = {}
_BUILT_LOCK = threading.Lock()


class StoreUnavailable(Exception):
    """A store cannot be built (missing environment variable, bad settings)."""


def _env(store: StoreDecl, key: str) -> str | None:
    """The value of the environment variable that ``key`` (a ``*_env`` setting) names."""
    variable = store.get(key)
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise StoreUnavailable(f"environment variable {variable} ({key}) is not set")
    return str(value)


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@contextmanager
def _environment(overrides: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) environment variables while a store builder reads them:
    object_store's ``from_env`` is the only way to reach some settings through DataFusion's
    Python API. Builders run at start-up; the lock keeps two builds apart."""
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in overrides}
        try:
            _set_environment(overrides)
            yield
        finally:
            _set_environment(saved)


def _set_environment(values: Mapping[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def build_store(binding: StoreBinding) -> Any:
    """The DataFusion object store for ``binding``, cached and shared between contexts.

    Raises:
        StoreUnavailable: a referenced environment variable is unset, or the settings are
            rejected by the object_store crate.
    """
    with _BUILT_LOCK:
        cache_key = (*binding.key, _environment_digest(binding.store))
        store = _BUILT.get(cache_key)
        if store is None:
            store = _build(binding)
            _BUILT[cache_key] = store
        return store


def _environment_digest(store: StoreDecl) -> str:
    """A digest of the variables the store's build reads (its ``*_env`` references, and the
    credentials, endpoints and CA files object_store's builders pick up): when one changes,
    the store is built anew instead of reusing stale settings."""
    named = {v for k, v in store.settings if k.endswith("_env")}
    relevant = sorted(
        (k, v) for k, v in os.environ.items() if k in named or k.startswith(_BUILDER_ENV_PREFIXES)
    )
    return hashlib.sha256(repr(relevant).encode()).hexdigest()


def _build(binding: StoreBinding) -> Any:
    store = binding.store
    try:
        if store.type == "s3":
            return _s3(binding)
        if store.type == "gcs":
            path = store.get("service_account_path") or _env(store, "service_account_path_env")
            path = path or os.environ.get("GOOGLE_SERVICE_ACCOUNT_PATH")
            path = path or os.environ.get("GOOGLE_SERVICE_ACCOUNT")
            return df_store.GoogleCloud(binding.bucket, service_account_path=path)
        if store.type == "azure":
            return _azure(binding)
        return df_store.Http(f"https://{binding.host}")
    except StoreUnavailable:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # the bindings panic (pyo3 PanicException) on bad settings
        raise StoreUnavailable(str(exc).splitlines()[0] if str(exc) else repr(exc)) from None


def _s3(binding: StoreBinding) -> Any:
    store = binding.store
    overrides: dict[str, str | None] = {}
    if store.get("access_key_id_env") is not None and store.get("session_token_env") is None:
        # explicit keys: an unrelated session token from the environment must not join them
        overrides.update(AWS_SESSION_TOKEN=None, AWS_TOKEN=None)
    if store.get("path_style") is not None:
        overrides["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = str(not store.get("path_style")).lower()
    if store.get("anonymous"):
        overrides["AWS_SKIP_SIGNATURE"] = "true"
    allow_http = store.get("allow_http")
    if allow_http is None:
        allow_http = _flag(os.environ.get("AWS_ALLOW_HTTP"))
    kwargs = {
        "region": store.get("region"),
        "endpoint": store.get("endpoint"),
        "access_key_id": _env(store, "access_key_id_env"),
        "secret_access_key": _env(store, "secret_access_key_env"),
        "session_token": _env(store, "session_token_env"),
    }
    with _environment(overrides):
        return df_store.AmazonS3(
            bucket_name=binding.bucket,
            allow_http=bool(allow_http),
            **{k: v for k, v in kwargs.items() if v is not None},
        )


def _azure(binding: StoreBinding) -> Any:
    store = binding.store
    account = store.get("account")
    if account is None and binding.scheme in ("abfs", "abfss"):
        account = binding.host.split(".", 1)[0]
    env_account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") or os.environ.get(
        "AZURE_STORAGE_ACCOUNT"
    )
    if account is None and not env_account and not store.get("use_emulator"):
        raise StoreUnavailable(
            'no storage account: set account = "..." in the store or AZURE_STORAGE_ACCOUNT_NAME'
        )
    sas = _env(store, "sas_token_env")
    kwargs: dict[str, Any] = {
        "account": account or env_account,
        "access_key": _env(store, "account_key_env"),
        "bearer_token": _env(store, "bearer_token_env"),
        "client_id": store.get("client_id"),
        "client_secret": _env(store, "client_secret_env"),
        "tenant_id": store.get("tenant_id"),
        "sas_query_pairs": urllib.parse.parse_qsl(sas.lstrip("?")) if sas else None,
        "use_emulator": store.get("use_emulator"),
        "allow_http": store.get("allow_http"),
    }
    return df_store.MicrosoftAzure(
        binding.bucket, **{k: v for k, v in kwargs.items() if v is not None}
    )


def register_object_stores(
    ctx: SessionContext, bindings: Iterable[StoreBinding]
) -> list[tuple[StoreBinding, str]]:
    """Register the store of every binding in ``ctx``; returns the ones that failed, with
    the reason (their tables cannot be read)."""
    failed: list[tuple[StoreBinding, str]] = []
    seen: set[tuple[Any, ...]] = set()
    for binding in bindings:
        if binding.key in seen:
            continue
        seen.add(binding.key)
        try:
            store = build_store(binding)
        except StoreUnavailable as exc:
            failed.append((binding, str(exc)))
            continue
        ctx.register_object_store(f"{binding.scheme}://", store, binding.host)
    return failed


def storage_options(binding: StoreBinding) -> dict[str, str]:
    """The same settings as deltalake ``storage_options`` (credentials read from the
    environment variables the store names).

    Raises:
        StoreUnavailable: a referenced environment variable is unset.
    """
    store = binding.store
    options: dict[str, str | None] = {}
    if store.type == "s3":
        path_style = store.get("path_style")
        options = {
            "AWS_REGION": store.get("region"),
            "AWS_ENDPOINT_URL": store.get("endpoint"),
            "AWS_ALLOW_HTTP": "true" if store.get("allow_http") else None,
            "AWS_ACCESS_KEY_ID": _env(store, "access_key_id_env"),
            "AWS_SECRET_ACCESS_KEY": _env(store, "secret_access_key_env"),
            "AWS_SESSION_TOKEN": _env(store, "session_token_env"),
            "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": None
            if path_style is None
            else str(not path_style).lower(),
            "AWS_SKIP_SIGNATURE": "true" if store.get("anonymous") else None,
        }
    elif store.type == "gcs":
        options = {
            "GOOGLE_SERVICE_ACCOUNT": store.get("service_account_path")
            or _env(store, "service_account_path_env"),
        }
    elif store.type == "azure":
        account = store.get("account")
        if account is None and binding.scheme in ("abfs", "abfss"):
            account = binding.host.split(".", 1)[0]
        options = {
            "AZURE_STORAGE_ACCOUNT_NAME": account,
            "AZURE_STORAGE_ACCOUNT_KEY": _env(store, "account_key_env"),
            "AZURE_STORAGE_SAS_KEY": _env(store, "sas_token_env"),
            "AZURE_STORAGE_TOKEN": _env(store, "bearer_token_env"),
            "AZURE_STORAGE_CLIENT_ID": store.get("client_id"),
            "AZURE_STORAGE_CLIENT_SECRET": _env(store, "client_secret_env"),
            "AZURE_STORAGE_TENANT_ID": store.get("tenant_id"),
            "AZURE_STORAGE_USE_EMULATOR": "true" if store.get("use_emulator") else None,
            "allow_http": "true" if store.get("allow_http") else None,
        }
    return {k: v for k, v in options.items() if v is not None}
