"""Assemble a running service from :class:`~flightsql_srv.config.Settings`."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from flightsql_srv import __version__
from flightsql_srv.admission import Admission
from flightsql_srv.audit import Auditor
from flightsql_srv.catalog import load_catalog
from flightsql_srv.config import ENV_PREFIX, ConfigError, Settings, auth_files, load_auth
from flightsql_srv.engine import Engine
from flightsql_srv.execution import Executor
from flightsql_srv.generated import materialize
from flightsql_srv.health import HealthService
from flightsql_srv.macros import load_user_macros
from flightsql_srv.metrics import Metrics, MetricsMiddlewareFactory
from flightsql_srv.server import FlightSqlServer
from flightsql_srv.tickets import PREPARED, Signer
from flightsql_srv.watch import DirectoryWatcher
from flightsql_srv.workers.pool import EnginePool

__all__ = ["ListenError", "Service"]

log = logging.getLogger("flightsql_srv")

_CANCEL_WAIT_S = 5.0  # after cancelling, how long calls get to notice before we give up


def _tls_options(settings: Settings) -> tuple[str, dict[str, Any]]:
    """The URI scheme and pyarrow server arguments for the configured TLS/mTLS.

    Raises:
        ConfigError: a TLS file is missing, not PEM, or the key does not match the certificate
            (gRPC itself only says "Server did not start properly").
    """
    if settings.tls_cert is None or settings.tls_key is None:
        return "grpc", {}
    cert = _read_pem(settings.tls_cert, "tls_cert")
    key = _read_pem(settings.tls_key, "tls_key")
    try:
        chain = x509.load_pem_x509_certificates(cert)
    except ValueError:
        raise ConfigError(f"TLS: tls_cert {settings.tls_cert} holds no PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"TLS: tls_key {settings.tls_key} is not an unencrypted PEM private key"
        ) from None
    if private.public_key() != chain[0].public_key():
        raise ConfigError(
            f"TLS: tls_key {settings.tls_key} does not belong to the certificate in "
            f"tls_cert {settings.tls_cert}"
        )
    options: dict[str, Any] = {"tls_certificates": [(cert, key)]}
    if settings.tls_client_ca is not None:
        ca = _read_pem(settings.tls_client_ca, "tls_client_ca")
        try:
            x509.load_pem_x509_certificates(ca)
        except ValueError:
            raise ConfigError(
                f"TLS: tls_client_ca {settings.tls_client_ca} holds no PEM CA certificate"
            ) from None
        options["verify_client"] = True
        options["root_certificates"] = ca
    return "grpc+tls", options


def _read_pem(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"TLS: {setting} {path} cannot be read: {exc.strerror or exc}") from None


class ListenError(OSError):
    """A port cannot be bound; the message names the port, its flag and variable, and what
    else is taken, so two servers on one machine say exactly what to change."""


#: Every listener's setting and what it serves, in the order they are bound.
_LISTENERS = {"metrics_port": "metrics", "port": "Flight SQL", "health_port": "gRPC health"}


def _in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` (a trial bind, released at once)."""
    if port <= 0:
        return False
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as trial:
            # Only a listening socket refuses this; one in TIME_WAIT does not.
            trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            trial.bind(address)
    except OSError as exc:
        return exc.errno == errno.EADDRINUSE
    return False


def _listen_error(settings: Settings, setting: str, exc: BaseException) -> ListenError:
    port = getattr(settings, setting)
    taken = _in_use(settings.host, port)
    reason = "address already in use" if taken else str(exc).strip() or type(exc).__name__
    off = ", or -1 to turn metrics off" if setting == "metrics_port" else ""
    message = (
        f"cannot listen on {settings.host}:{port} for the {_LISTENERS[setting]} port "
        f"({reason})"
        + (": another process (another flightsql-srv?) holds it" if taken else "")
        + f". Choose another port with {_flag(setting)}{off}"
    )
    later = list(_LISTENERS)[list(_LISTENERS).index(setting) + 1 :]
    also = [s for s in later if _in_use(settings.host, getattr(settings, s))]
    if also:
        message += "; also in use: " + ", ".join(
            f"{getattr(settings, s)} ({_flag(s)})" for s in also
        )
    return ListenError(message)


def _flag(setting: str) -> str:
    return f"--{setting.replace('_', '-')} / {ENV_PREFIX}{setting.upper()}"


def _start_health(settings: Settings, *args: Any, **kwargs: Any) -> HealthService:
    """Bind the health port (gRPC raises RuntimeError when it cannot)."""
    try:
        return HealthService(*args, **kwargs)
    except (RuntimeError, OSError) as exc:
        raise _listen_error(settings, "health_port", exc) from None


def _start_metrics(settings: Settings, metrics: Metrics) -> int | None:
    """Serve /metrics unless turned off (``metrics_port`` -1); the bound port."""
    if settings.metrics_port < 0:
        return None
    try:
        return metrics.serve(settings.host, settings.metrics_port)
    except OSError as exc:
        raise _listen_error(settings, "metrics_port", exc) from None


def _start_flight(settings: Settings, *args: Any, **kwargs: Any) -> FlightSqlServer:
    """Bind the Flight SQL port; a TLS file gRPC cannot use becomes a ConfigError."""
    try:
        return FlightSqlServer(*args, **kwargs)
    except pa.ArrowException as exc:
        # pyarrow says only "Server did not start properly", whatever the cause.
        if settings.tls_cert is None or _in_use(settings.host, settings.port):
            raise _listen_error(settings, "port", exc) from None
        raise ConfigError(
            f"the Flight SQL port did not start with the TLS files given ({exc}): check that "
            "--tls-cert and --tls-key are a matching PEM certificate chain and private key, "
            "and --tls-client-ca a PEM CA bundle"
        ) from None


def _health_credentials(tls: dict[str, Any]) -> grpc.ServerCredentials | None:
    """The Flight port's TLS (and mTLS) settings, for the health port."""
    if not tls:
        return None
    return grpc.ssl_server_credentials(
        [(key, cert) for cert, key in tls["tls_certificates"]],
        root_certificates=tls.get("root_certificates"),
        require_client_auth=tls.get("verify_client", False),
    )


class Service:
    """The Flight SQL port and the health port over one engine.

    Construction loads the catalog and binds both ports; :meth:`start` begins health
    probing; :meth:`serve` blocks until SIGINT/SIGTERM; :meth:`stop` drains and closes.

    Raises:
        CatalogError: a catalog file is invalid (the message names file and table).
        MacroConfigError: a macro file is invalid (the message names file and macro).
        ListenError: a port cannot be bound (the message names it and its flag).
    """

    def __init__(self, settings: Settings) -> None:
        started = time.monotonic()
        # Clients see exception text in status details; keep stack frames out of it.
        sys.tracebacklimit = 0
        self.settings = settings
        schemas = materialize(load_catalog(settings.catalog_dir))
        # The front's own engine only answers discovery (names and schemas); queries run in
        # the engine workers.
        self.engine = Engine(settings, schemas)
        signer = Signer(settings.ticket_secrets, {PREPARED: settings.prepared_ttl})
        if signer.ephemeral:
            log.warning(
                "no ticket_secret configured: using a random one; replicas behind one load "
                "balancer must share FLIGHTSQL_SRV_TICKET_SECRET"
            )
        if not settings.auth.enabled and settings.allow_unauthenticated:
            # Before the port opens: a call may be answered before start() runs.
            log.warning(
                "authentication is OFF and --allow-unauthenticated is set: anyone who can "
                "reach this port can read every table",
                extra={"fields": {"host": settings.host}},
            )
        self.user_macros = load_user_macros(settings.macros_dir)
        self.metrics = Metrics()
        self.metrics.catalog_problems.set(len(self.engine.contexts.problems))
        scheme, tls = _tls_options(settings)
        self.admission = Admission(
            settings.query_slots,
            settings.max_queued_queries,
            settings.queue_timeout,
            settings.principal_slots,
        )
        self.metrics.watch_admission(self.admission)
        self.pool = EnginePool(
            settings,
            schemas,
            self.admission,
            settings.query_slots,
            on_restart=self.metrics.worker_restarted,
        )
        self.pool.start()
        self.metrics.watch_workers(self.pool)
        executor = Executor(
            self.pool, Auditor(self.metrics, settings.audit_sql_limit), settings.query_timeout
        )
        # A port that cannot be bound stops the workers (else exiting deletes the demo data
        # they are still loading) and closes what was bound before it. /metrics comes first,
        # so that it is up once the Flight port answers (a client's or a test's first sign
        # of life); health last, so that it never says SERVING early.
        with contextlib.ExitStack() as undo:
            undo.callback(self.pool.stop)
            self.metrics_port = _start_metrics(settings, self.metrics)
            undo.callback(self.metrics.close)
            self.flight = _start_flight(
                settings,
                f"{scheme}://{settings.host}:{settings.port}",
                self.engine,
                signer,
                settings.ticket_ttl,
                executor,
                middleware={"metrics": MetricsMiddlewareFactory(self.metrics)},
                user_macros=self.user_macros,
                grafana_profile=settings.grafana_profile,
                auth=settings.auth,
                on_auth_failure=lambda reason: self.metrics.auth_failures.labels(reason).inc(),
                **tls,
            )
            undo.callback(self.flight.shutdown)
            self.health = _start_health(
                settings,
                settings.host,
                settings.health_port,
                self.pool.probe,
                on_change=self.metrics.health_serving.set,
                credentials=None if settings.health_plaintext else _health_credentials(tls),
            )
            undo.pop_all()
        self.port: int = self.flight.port
        self.health_port = self.health.port
        self._startup_s = time.monotonic() - started
        self._stopped = False
        self._reload_lock = threading.Lock()
        self._watcher = None
        if settings.reload_interval:
            self._watcher = DirectoryWatcher(
                [settings.catalog_dir, settings.macros_dir], settings.reload_interval, self.reload
            )
        self._auth_watcher = None
        if settings.reload_interval and auth_files(settings):
            folders = sorted({f.parent for f in auth_files(settings)})
            self._auth_watcher = DirectoryWatcher(
                folders, settings.reload_interval, self.reload_auth
            )

    def reload_auth(self) -> bool:
        """Read ``[auth]`` again (from ``auth_file`` or the config file) and check every call
        against it from now on: removed users and keys stop working, changed passwords
        revoke session tokens, role changes apply. A broken file keeps the previous one.

        Returns:
            True when the new section is being served (or there is nothing to reload).
        """
        try:
            auth = load_auth(self.settings)
            if auth is None or auth == self.settings.auth:
                return True
            self.flight.swap_auth(auth)
        except (ConfigError, ValueError) as exc:
            self.metrics.reloads.labels("failed").inc()
            log.error(
                "auth reload failed: still serving the previous [auth]",
                extra={"fields": {"error": str(exc)}},
            )
            return False
        self.settings = dataclasses.replace(self.settings, auth=auth)
        self.metrics.reloads.labels("ok").inc()
        log.info(
            "reloaded [auth]",
            extra={
                "fields": {
                    "users": len(auth.users),
                    "api_keys": len(auth.api_keys),
                    "issuers": len(auth.oidc),
                }
            },
        )
        return True

    def reload(self) -> bool:
        """Load the catalog and macro files again and serve them from now on.

        In-flight queries finish on the catalog they started with. A broken file leaves the
        previous catalog in place; the error is logged and counted.

        Returns:
            True when the new files are being served.
        """
        with self._reload_lock:
            started = time.monotonic()
            try:
                schemas = materialize(load_catalog(self.settings.catalog_dir))
                engine = Engine(self.settings, schemas)
                macros = load_user_macros(self.settings.macros_dir)
            except Exception as exc:  # CatalogError, MacroConfigError, a failing probe...
                self.metrics.reloads.labels("failed").inc()
                log.error(
                    "reload failed: still serving the previous catalog and macros",
                    extra={"fields": {"error": str(exc)}},
                )
                return False
            self.pool.reload(schemas)
            self.flight.swap(engine, macros)
            self.engine, self.user_macros = engine, macros
            self.metrics.catalog_problems.set(len(engine.contexts.problems))
            self.metrics.reloads.labels("ok").inc()
            log.info(
                "reloaded",
                extra={
                    "fields": {
                        "tables": sum(len(s.tables) for s in engine.schemas),
                        "user_macros": len(macros),
                        "tables_left_out": [
                            f"{p.schema}.{p.table}" for p in engine.contexts.problems
                        ],
                        "seconds": round(time.monotonic() - started, 3),
                    }
                },
            )
            return True

    def start(self) -> None:
        """Start health probing and the file watch; the Flight port already accepts calls."""
        self.health.start()
        for watcher in (self._watcher, self._auth_watcher):
            if watcher is not None:
                watcher.start()
        log.info(
            "serving",
            extra={
                "fields": {
                    "version": __version__,
                    "address": f"{self.settings.host}:{self.port}",
                    "health_address": f"{self.settings.host}:{self.health_port}",
                    "metrics_port": self.metrics_port,
                    "catalog": str(self.settings.catalog_dir),
                    "tables": sum(len(s.tables) for s in self.engine.schemas),
                    "tables_left_out": [
                        f"{p.schema}.{p.table}" for p in self.engine.contexts.problems
                    ],
                    "user_macros": len(self.user_macros),
                    "auth": self.settings.auth.enabled,
                    "tls": self.settings.tls_cert is not None,
                    "mtls": self.settings.tls_client_ca is not None,
                    "startup_s": round(self._startup_s, 3),
                }
            },
        )

    def serve(self) -> bool:
        """Block until SIGINT or SIGTERM, then drain and stop (a second signal exits at once);
        SIGHUP reloads the catalog and macros.

        Returns:
            True when every in-flight call finished or was cancelled in time.
        """
        stop = threading.Event()
        reload = threading.Event()

        def on_hangup(signum: int, frame: object) -> None:
            reload.set()

        def on_signal(signum: int, frame: object) -> None:
            if stop.is_set():
                log.warning("second signal: exiting without draining")
                os._exit(1)
            log.info("signal received: draining", extra={"fields": {"signal": signum}})
            stop.set()

        # Handlers only set a flag; the previous ones come back once we have stopped.
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
        try:
            while not stop.wait(0.5):
                if reload.is_set():
                    reload.clear()
                    log.info("SIGHUP: reloading the catalog and macros")
                    self.reload()
                    self.reload_auth()
            return self.stop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def stop(self) -> bool:
        """Drain in a fixed order: health NOT_SERVING, refuse new queries, give in-flight
        calls ``shutdown_grace`` seconds, cancel what remains, close both ports.

        Returns:
            True when the Flight server shut down cleanly.
        """
        if self._stopped:
            return True
        self._stopped = True
        for watcher in (self._watcher, self._auth_watcher):
            if watcher is not None:
                watcher.stop()
        self.health.drain()
        self.flight.draining = True
        deadline = time.monotonic() + self.settings.shutdown_grace
        while self.metrics.calls_in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.metrics.calls_in_flight:
            cancelled = self.flight.statements.running.cancel_all()
            log.warning(
                "shutdown grace exceeded: cancelling running queries",
                extra={"fields": {"calls": self.metrics.calls_in_flight, "queries": cancelled}},
            )
        # Shutdown waits for every call; a client that stopped reading could hold it forever.
        closer = threading.Thread(target=self.flight.shutdown, name="shutdown", daemon=True)
        closer.start()
        closer.join(_CANCEL_WAIT_S)
        self.health.stop()
        self.metrics.close()
        self.pool.stop()
        clean = not closer.is_alive()
        if not clean:
            log.error("calls still open after cancelling them: closing anyway")
        log.info("stopped", extra={"fields": {"clean": clean}})
        return clean
