"""Server settings: one frozen, validated object built from defaults, a TOML file,
``FLIGHTSQL_SRV_<NAME>`` environment variables and command-line flags (later wins).

Every setting is declared once, as a field of :class:`Settings`; the CLI, the TOML keys and
the environment variable names are derived from it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from flightsql_srv.auth.config import AuthConfig, parse_auth

__all__ = [
    "ConfigError",
    "Settings",
    "ENV_PREFIX",
    "load_settings",
    "default_catalog_dir",
    "default_macros_dir",
    "setting_fields",
    "field_type",
]

ENV_PREFIX = "FLIGHTSQL_SRV_"
LogFormat = Literal["json", "text"]
LogLevel = Literal["debug", "info", "warning", "error"]

_PACKAGE_DIR = Path(__file__).resolve().parent


class ConfigError(Exception):
    """A setting is missing, malformed or contradicts another one."""


def _bundled(name: str) -> Path:
    """The ``catalog/`` or ``macros/`` folder: the source tree's, else the wheel's copy."""
    source_tree = _PACKAGE_DIR.parent / name
    if source_tree.is_dir():
        return source_tree
    return _PACKAGE_DIR / "_bundled" / name


def default_catalog_dir() -> Path:
    """The embedded demo catalog (``catalog/`` of the source tree or the installed wheel)."""
    return _bundled("catalog")


def default_macros_dir() -> Path:
    """The shipped user macros (``macros/`` of the source tree or the installed wheel)."""
    return _bundled("macros")


def _opt(default: Any, help: str, *, secret: bool = False, flag: bool = True) -> Any:
    return field(
        default=default, repr=not secret, metadata={"help": help, "secret": secret, "flag": flag}
    )


@dataclass(frozen=True)
class Settings:
    """Everything ``flightsql-srv serve`` needs; validated on construction."""

    host: str = _opt("127.0.0.1", "Address the Flight SQL port listens on.")
    port: int = _opt(50051, "Flight SQL port (0 picks a free port).")
    health_port: int = _opt(50052, "gRPC health port (grpc.health.v1); 0 picks a free port.")
    metrics_port: int = _opt(9464, "Prometheus /metrics HTTP port; -1 disables it.")
    catalog: Path = _opt(
        Path(), "Directory of catalog TOML files (default: the embedded demo catalog)."
    )
    macros: Path = _opt(
        Path(), "Directory of user macro TOML files (default: the shipped macros/ folder)."
    )
    grafana_profile: bool = _opt(
        False,
        "Shape every result for the Grafana datasource (dates as timestamps, decimals as "
        "float64, nested values as JSON text), not only requests with x-client-type: grafana.",
    )
    catalog_name: str = _opt("flightsql", "Name of the single SQL catalog the tables live in.")
    ticket_secret: str = _opt(
        "",
        "Secret that signs tickets and prepared-statement handles; replicas must share it. "
        "Several comma-separated secrets are accepted, the first one signs. "
        "Default: random per process.",
        secret=True,
    )
    ticket_ttl: float = _opt(600.0, "Seconds a ticket from GetFlightInfo stays redeemable.")
    prepared_ttl: float = _opt(
        7 * 86400.0,
        "Seconds a prepared-statement handle stays usable after it was created or last bound "
        "(default 7 days); clients then prepare the statement again.",
    )
    reload_interval: float = _opt(
        2.0,
        "Seconds between checks of the catalog and macro directories for changes, which are "
        "then loaded without a restart (0: only on SIGHUP).",
    )
    shutdown_grace: float = _opt(
        25.0,
        "Seconds in-flight calls get to finish after SIGTERM/SIGINT before they are cancelled.",
    )
    query_timeout: float = _opt(
        300.0, "Seconds a query may run before it is stopped (0: no limit)."
    )
    max_concurrent_queries: int = _opt(
        0,
        "Queries that may run at once, each in its own engine worker process (0: twice the "
        "CPU cores, at least 4).",
    )
    max_queries_per_principal: int = _opt(
        0,
        "Queries one principal (or, without auth, one client address) may run at once "
        "(0: all slots but one, so no caller can hold every slot).",
    )
    stall_timeout: float = _opt(
        30.0,
        "Seconds a result stream may go unread before the query is stopped and its slot "
        "freed (a client that stopped reading).",
    )
    max_queued_queries: int = _opt(
        64, "Queries that may wait for a slot; beyond that UNAVAILABLE (retry later)."
    )
    queue_timeout: float = _opt(30.0, "Seconds a query waits for a slot before it is refused.")
    memory_limit: str = _opt(
        "50%",
        "Memory all running queries together may use: a share of RAM like '50%', a size "
        "like '8GiB', or 'unlimited'. Each query's DataFusion pool (spilling) gets an even "
        "share; a query whose engine worker grows the total past the limit is stopped with an "
        "error naming memory_limit (docs/architecture.md).",
    )
    worker_recycle_memory: str = _opt(
        "192MiB",
        "An engine worker that keeps more than this above its start when a query ends is "
        "replaced by a fresh one (one idle for 30 s, above half of it): DataFusion's allocator "
        "keeps much of what queries free. A size like '192MiB', or 'unlimited'.",
    )
    spill_dir: Path | None = _opt(None, "Directory for spill files (default: the system temp).")
    batch_size: int = _opt(
        0,
        "Rows per record batch sent; 0 sizes each query's batches to about 2 MiB by "
        "estimate (1024-65536 rows), under gRPC's 4 MiB message limit.",
    )
    target_partitions: int = _opt(0, "DataFusion parallelism (0 = number of CPU cores).")
    tls_cert: Path | None = _opt(None, "PEM certificate chain: serve gRPC over TLS.")
    tls_key: Path | None = _opt(None, "PEM private key for --tls-cert.")
    tls_client_ca: Path | None = _opt(
        None, "PEM CA bundle: require client certificates signed by it (mTLS)."
    )
    health_plaintext: bool = _opt(
        False,
        "Serve the health port without TLS even when --tls-cert is set (Kubernetes grpc "
        "probes cannot speak TLS); it only reveals SERVING / NOT_SERVING.",
    )
    auth_file: Path | None = _opt(
        None,
        "TOML file whose [auth] section replaces the config file's (e.g. a mounted secret).",
    )
    allow_unauthenticated: bool = _opt(
        False,
        "Serve a non-loopback address without authentication (refused otherwise).",
    )
    audit_sql_limit: int = _opt(
        4096,
        "Characters of a query's SQL its audit record keeps (sql_length says how long it "
        "was; the fingerprint is of all of it); 0 keeps all.",
    )
    log_level: LogLevel = _opt("info", "debug, info, warning or error.")
    log_format: LogFormat = _opt("json", "json (one object per line) or text.")
    config: Path | None = _opt(None, "TOML file with any of these settings.", flag=False)
    auth: AuthConfig = field(
        default_factory=AuthConfig, metadata={"help": "[auth] section", "flag": False}
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f, getattr(self, f.name), f"setting '{f.name}'")
        for name in ("port", "health_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ConfigError(f"setting '{name}' must be a TCP port 0-65535, got {value}")
        if not -1 <= self.metrics_port <= 65535:
            raise ConfigError(
                f"setting 'metrics_port' must be a TCP port 0-65535 or -1, got {self.metrics_port}"
            )
        for other in ("health_port", "metrics_port"):
            if self.port and self.port == getattr(self, other):
                raise ConfigError(
                    f"settings 'port' and '{other}' are both {self.port}: give each listener "
                    "its own port"
                )
        if self.batch_size < 0:
            raise ConfigError("setting 'batch_size' must be 0 (auto) or positive")
        if self.stall_timeout <= 0:
            raise ConfigError("setting 'stall_timeout' must be positive")
        for name in (
            "query_timeout",
            "queue_timeout",
            "max_queued_queries",
            "reload_interval",
            "max_concurrent_queries",
            "max_queries_per_principal",
            "audit_sql_limit",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"setting '{name}' must be 0 or positive")
        self.memory_limit_bytes  # noqa: B018 - validates the setting
        self.worker_recycle_bytes  # noqa: B018 - validates the setting
        if self.shutdown_grace < 0:
            raise ConfigError("setting 'shutdown_grace' must be 0 or positive")
        for name in ("ticket_ttl", "prepared_ttl"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"setting '{name}' must be positive, got {getattr(self, name)}")
        if self.target_partitions < 0:
            raise ConfigError("setting 'target_partitions' must be 0 (auto) or positive")
        if not self.catalog_name:
            raise ConfigError("setting 'catalog_name' must not be empty")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("settings 'tls_cert' and 'tls_key' go together: give both")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("setting 'tls_client_ca' (mTLS) needs 'tls_cert' and 'tls_key'")
        if not self.auth.enabled and not self.allow_unauthenticated and not _loopback(self.host):
            raise ConfigError(
                f"refusing to serve {self.host} without authentication: configure [auth] "
                "(API keys, users or OIDC) or pass --allow-unauthenticated to accept that "
                "anyone who can reach the port can read every table"
            )

    @property
    def query_slots(self) -> int:
        """Queries that may run at once (``max_concurrent_queries`` resolved)."""
        return self.max_concurrent_queries or max(4, 2 * (os.cpu_count() or 1))

    @property
    def principal_slots(self) -> int:
        """Queries one principal may run at once (``max_queries_per_principal`` resolved)."""
        slots = self.query_slots
        return min(self.max_queries_per_principal or max(1, slots - 1), slots)

    @property
    def catalog_dir(self) -> Path:
        """The catalog directory to load (the embedded demo when none was given)."""
        return self.catalog if self.catalog != Path() else default_catalog_dir()

    @property
    def memory_limit_bytes(self) -> int | None:
        """The memory pool size in bytes; None for no limit."""
        text = self.memory_limit.strip().replace(" ", "")
        if text.endswith("%"):
            try:
                share = float(text[:-1])
            except ValueError:
                share = -1
            if not 0 < share <= 100:
                raise ConfigError(f"setting 'memory_limit': {text!r} is not a share of 1-100%")
            return int(_physical_memory() * share / 100)
        return _size_bytes("memory_limit", self.memory_limit, "'50%', '8GiB', '512MB'")

    @property
    def worker_recycle_bytes(self) -> int | None:
        """``worker_recycle_memory`` in bytes; None: workers are never replaced for it."""
        return _size_bytes("worker_recycle_memory", self.worker_recycle_memory, "'192MiB'")

    @property
    def macros_dir(self) -> Path:
        """The user macro directory to load."""
        return self.macros if self.macros != Path() else default_macros_dir()

    @property
    def ticket_secrets(self) -> list[bytes]:
        """Configured signing secrets, first one signs; empty when none was configured."""
        return [s.strip().encode() for s in self.ticket_secret.split(",") if s.strip()]


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]i?B|B|)$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1} | {
    f"{p}{suffix}": (1024 if suffix == "ib" else 1000) ** (i + 1)
    for i, p in enumerate("kmgt")
    for suffix in ("b", "ib")
}


def _size_bytes(name: str, value: str, examples: str) -> int | None:
    """A size setting in bytes ('512MB', '8GiB'); None for 'unlimited'."""
    text = value.strip().replace(" ", "")
    if text.lower() in ("unlimited", "0", "none"):
        return None
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"setting '{name}' must be like {examples} or 'unlimited', got {value!r}")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * _UNITS[unit])


def _physical_memory() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def setting_fields() -> list[dataclasses.Field[Any]]:
    """The settings that are also command-line flags."""
    return [f for f in dataclasses.fields(Settings) if f.metadata.get("flag", True)]


def field_type(f: dataclasses.Field[Any]) -> Any:
    """The field's type with ``| None`` removed (a Literal alias stays a Literal)."""
    hint = get_type_hints(Settings)[f.name]
    if isinstance(hint, types.UnionType):
        hint = next(a for a in get_args(hint) if a is not type(None))
    return hint


def _check_type(f: dataclasses.Field[Any], value: Any, where: str) -> None:
    expected = field_type(f)
    if value is None and f.default is None:
        return
    if getattr(expected, "__origin__", None) is Literal:
        if value not in get_args(expected):
            choices = ", ".join(get_args(expected))
            raise ConfigError(f"{where} must be one of {choices}, got {value!r}")
        return
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ConfigError(f"{where} must be {_describe(expected)}, got {value!r}")


def _describe(expected: Any) -> str:
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        Path: "a path",
        bool: "true or false",
    }.get(expected, str(expected))


def coerce(f: dataclasses.Field[Any], raw: Any, where: str) -> Any:
    """Convert a raw TOML or environment value into the field's type, or raise ConfigError."""
    expected = field_type(f)
    if expected is Path:
        if not isinstance(raw, str | Path):
            raise ConfigError(f"{where} must be a path string, got {raw!r}")
        return Path(raw)
    if expected is bool and isinstance(raw, str):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where} must be true or false, got {raw!r}")
    if isinstance(raw, str) and expected in (int, float):
        try:
            return expected(raw.strip())
        except ValueError:
            raise ConfigError(f"{where} must be {_describe(expected)}, got {raw!r}") from None
    if expected is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    return raw


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    known = {f.name: f for f in setting_fields()}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key == "auth":
            values["auth"] = _auth_section(raw, f"config file {path}")
            continue
        if key not in known:
            hint = ""
            if isinstance(raw, dict):
                hint = f" (section [{key}] is not supported by this version)"
            raise ConfigError(f"config file {path}: unknown key '{key}'{hint}")
        where = f"config file {path}: key '{key}'"
        value = coerce(known[key], raw, where)
        _check_type(known[key], value, where)
        if isinstance(value, Path) and not value.is_absolute():
            value = path.parent / value  # relative paths are relative to the config file
        values[key] = value
    return values


def _auth_section(raw: Any, where: str) -> AuthConfig:
    try:
        return parse_auth(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _auth_file(path: Path) -> AuthConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"auth file {path} cannot be read: {exc}") from None
    unknown = set(data) - {"auth"}
    if unknown or "auth" not in data:
        raise ConfigError(f"auth file {path}: expected only an [auth] section")
    return _auth_section(data["auth"], f"auth file {path}")


def load_auth(settings: Settings) -> AuthConfig | None:
    """``[auth]`` read again from the file it came from (``auth_file``, else the config
    file); None when it came from neither (nothing to reload).

    Raises:
        ConfigError: the file is missing or invalid (the message names it).
    """
    if settings.auth_file is not None:
        return _auth_file(settings.auth_file)
    if settings.config is None:
        return None
    try:
        data = tomllib.loads(settings.config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {settings.config} cannot be read: {exc}") from None
    return _auth_section(data.get("auth", {}), f"config file {settings.config}")


def auth_files(settings: Settings) -> list[Path]:
    """The files :func:`load_auth` reads."""
    if settings.auth_file is not None:
        return [settings.auth_file]
    return [settings.config] if settings.config is not None else []


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in setting_fields():
        name = ENV_PREFIX + f.name.upper()
        if name in env and env[name] != "":
            where = f"environment variable {name}"
            values[f.name] = coerce(f, env[name], where)
            _check_type(f, values[f.name], where)
    return values


def load_settings(
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Build :class:`Settings` from a config file, the environment and flags (later wins).

    Args:
        flags: values given on the command line; ``None`` means "not given".
        env: environment to read ``FLIGHTSQL_SRV_*`` from (default ``os.environ``).
        config_file: TOML file; ``FLIGHTSQL_SRV_CONFIG`` names one when this is None.

    Raises:
        ConfigError: naming the file, variable or key and what is wrong with it.
    """
    env = os.environ if env is None else env
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(env[ENV_PREFIX + "CONFIG"])
    values: dict[str, Any] = {}
    #: Where each value came from, so a value Settings refuses is traced to its source.
    origins: dict[str, str] = {}
    if config_file is not None:
        from_file = _from_file(config_file)
        values.update(from_file)
        origins.update({k: f"key '{k}' of config file {config_file}" for k in from_file})
        values["config"] = config_file
    from_env = _from_env(env)
    values.update(from_env)
    origins.update({k: f"environment variable {ENV_PREFIX}{k.upper()}" for k in from_env})
    given = {k: v for k, v in flags.items() if v is not None}
    values.update(given)
    origins.update({k: "--" + k.replace("_", "-") for k in given})
    if values.get("auth_file") is not None:
        values["auth"] = _auth_file(values["auth_file"])
    try:
        return Settings(**values)
    except TypeError as exc:  # an unknown keyword from a caller
        raise ConfigError(str(exc)) from None
    except ConfigError as exc:
        raise ConfigError(_with_origins(str(exc), origins)) from None


def _with_origins(message: str, origins: Mapping[str, str]) -> str:
    """``message`` plus where each setting it names was set (flag, variable or file key)."""
    named = [n for n in dict.fromkeys(re.findall(r"'(\w+)'", message)) if n in origins]
    if not named:
        return message
    if len(named) == 1:
        return f"{message} (set by {origins[named[0]]})"
    return f"{message} ({', '.join(f'{n} set by {origins[n]}' for n in named)})"
