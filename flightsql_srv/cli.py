"""The ``flightsql-srv`` command line."""

from __future__ import annotations

import os
import sys
from dataclasses import Field
from pathlib import Path
from typing import Any, Literal, get_args

import click

from flightsql_srv.catalog import CatalogError
from flightsql_srv.config import (
    ENV_PREFIX,
    ConfigError,
    field_type,
    load_settings,
    setting_fields,
)
from flightsql_srv.macros import MacroConfigError
from flightsql_srv.observability import configure_logging

__all__ = ["main"]


def _click_type(f: Field[Any]) -> Any:
    kind = field_type(f)
    if getattr(kind, "__origin__", None) is Literal:
        return click.Choice(list(get_args(kind)))
    return click.Path(path_type=Path) if kind is Path else kind


def _settings_options(func: Any) -> Any:
    """Add one ``--flag`` per setting (default None = "not given", so files/env apply)."""
    for f in reversed(setting_fields()):
        env_name = ENV_PREFIX + f.name.upper()
        shown = "" if f.metadata.get("secret") or f.default == Path() else f"; default {f.default}"
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} [env {env_name}{shown}]"
        if field_type(f) is bool:  # a bare switch, with a --no- form to override env/file
            option = click.option(f"{flag}/--no-{flag[2:]}", f.name, default=None, help=help_text)
        else:
            option = click.option(flag, f.name, type=_click_type(f), default=None, help=help_text)
        func = option(func)
    return func


@click.group()
@click.version_option(package_name="flightsql-srv")
def main() -> None:
    """flightsql-srv: an Arrow Flight SQL query service answered by Apache DataFusion."""


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help=f"TOML file with settings (keys as the flags, underscores) [env {ENV_PREFIX}CONFIG].",
)
@_settings_options
def serve(config_file: Path | None, **flags: Any) -> None:
    """Serve Flight SQL on the configured catalog (the demo catalog by default)."""
    try:
        settings = load_settings(flags, os.environ, config_file)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(settings.log_level, settings.log_format)
    from flightsql_srv.app import Service  # heavy imports only when serving

    try:
        service = Service(settings)
    except CatalogError as exc:
        raise click.UsageError(f"catalog: {exc}") from None
    except MacroConfigError as exc:
        raise click.UsageError(f"macros: {exc}") from None
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:  # ListenError: names the port and the flag to change
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    service.start()
    if not service.serve():
        os._exit(0)  # drained and cancelled; only wedged client connections were left


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Health port address.")
@click.option("--port", default=50052, show_default=True, help="Health port.")
@click.option("--service", default="", help="Service name to check ('' = the whole server).")
@click.option("--timeout", default=3.0, show_default=True, help="Seconds to wait for an answer.")
@click.option(
    "--tls-ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="PEM CA bundle: the health port uses TLS (the server's --tls-cert).",
)
def healthcheck(host: str, port: int, service: str, timeout: float, tls_ca: Path | None) -> None:
    """Exit 0 when the server reports SERVING, 1 otherwise (for Docker HEALTHCHECK)."""
    import grpc

    from flightsql_srv.health import check

    try:
        status = check(host, port, service, timeout, tls_ca.read_bytes() if tls_ca else None)
    except grpc.RpcError as exc:
        click.echo(f"UNHEALTHY {host}:{port}: {exc.code().name} {exc.details() or ''}".strip())
        sys.exit(1)
    click.echo(f"{status} {host}:{port} service={service!r}")
    sys.exit(0 if status == "SERVING" else 1)


@main.command("hash-password")
def hash_password_command() -> None:
    """Read a password on stdin; print the password_hash for an [[auth.users]] entry."""
    from flightsql_srv.auth.passwords import hash_password

    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.UsageError("no password on standard input (echo -n pw | flightsql-srv ...)")
    click.echo(hash_password(password))


@main.command("config-reference")
def config_reference() -> None:
    """Print every setting with its flag, environment variable and default (Markdown)."""
    click.echo("| setting / TOML key | flag | environment | default | meaning |")
    click.echo("|---|---|---|---|---|")
    click.echo(
        f"| (the file itself) | `--config` | `{ENV_PREFIX}CONFIG` | `None` | TOML file with any "
        "of the settings below, keys as in the first column (relative paths in it are "
        "relative to the file). |"
    )
    for f in setting_fields():
        default = "(secret)" if f.metadata.get("secret") else f"`{f.default!s}`"
        if isinstance(f.default, Path) and f.default == Path():
            default = "(see meaning)"
        flag = "--" + f.name.replace("_", "-")
        click.echo(
            f"| `{f.name}` | `{flag}` | `{ENV_PREFIX}{f.name.upper()}` | {default} | "
            f"{f.metadata['help']} |"
        )
