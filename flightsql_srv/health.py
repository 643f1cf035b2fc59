"""gRPC health (``grpc.health.v1``) on its own port, derived from a background probe.

pyarrow's Flight server cannot host a second gRPC service, so health listens on
``health_port``. Status is never declared once at boot: a probe runs a trivial query through
the real engine every ``interval`` seconds; SERVING needs a probe that succeeded within
``stale_after`` seconds, so a stuck engine or a broken catalog flips it to NOT_SERVING.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

__all__ = ["HealthService", "SERVICES", "check"]

log = logging.getLogger("flightsql_srv")

#: Services the health port reports on: the whole server and the Flight service.
SERVICES = ("", "arrow.flight.protocol.FlightService")
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthService:
    """The health port plus the probe loop that feeds it.

    Args:
        host: address to bind (the Flight host).
        port: port to bind; 0 picks a free one (see :attr:`port`).
        probe: raises when the engine cannot answer a trivial query.
        interval: seconds between probes.
        stale_after: a success older than this no longer counts as healthy.
        on_change: called with the new state whenever it changes.
        credentials: TLS for the health port (plaintext when None).
    """

    def __init__(
        self,
        host: str,
        port: int,
        probe: Callable[[], None],
        interval: float = 5.0,
        stale_after: float = 15.0,
        on_change: Callable[[bool], None] | None = None,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self._probe = probe
        self._on_change = on_change
        self._interval = interval
        self._stale_after = stale_after
        self._servicer = health.HealthServicer(experimental_non_blocking=True)
        for service in SERVICES:
            self._servicer.set(service, _NOT_SERVING)
        # gRPC sets SO_REUSEPORT by default: a second server on the same port would then
        # share it silently (and answer half the probes) instead of failing to bind.
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)]
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, self._server)
        address = f"{host}:{port}"
        self.port = (
            self._server.add_secure_port(address, credentials)
            if credentials is not None
            else self._server.add_insecure_port(address)
        )
        self._stop = threading.Event()
        self._draining = False
        self._last_ok = float("-inf")
        self._runner = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe")
        self._pending: futures.Future[None] | None = None
        self._thread = threading.Thread(target=self._loop, name="health", daemon=True)
        self.serving = False

    def start(self) -> None:
        """Run one probe now (so readiness is known at once), then keep probing."""
        self._server.start()
        self.check_now()
        self._thread.start()

    def drain(self) -> None:
        """Report NOT_SERVING for good: the server is shutting down."""
        self._draining = True
        self._servicer.enter_graceful_shutdown()
        self.serving = False
        if self._on_change is not None:
            self._on_change(False)

    def stop(self) -> None:
        self._stop.set()
        self._server.stop(grace=1.0).wait(5)
        self._runner.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.check_now()

    def check_now(self) -> bool:
        """Run (or keep waiting for) the probe and publish the result; returns it.

        A failing probe means NOT_SERVING at once; a probe that hangs keeps the last
        success valid until it is ``stale_after`` seconds old.
        """
        if self._pending is None or self._pending.done():
            self._pending = self._runner.submit(self._probe)
        try:
            self._pending.result(timeout=min(self._interval, self._stale_after))
            self._last_ok = time.monotonic()
        except futures.TimeoutError:
            log.warning("health probe still running: the engine may be stuck")
        except Exception as exc:
            log.warning("health probe failed", extra={"fields": {"error": str(exc)}})
            self._last_ok = float("-inf")
        serving = time.monotonic() - self._last_ok <= self._stale_after
        self._publish(serving)
        return serving

    def _publish(self, serving: bool) -> None:
        if self._draining or serving == self.serving:
            return
        self.serving = serving
        for service in SERVICES:
            self._servicer.set(service, _SERVING if serving else _NOT_SERVING)
        if self._on_change is not None:
            self._on_change(serving)
        log.info("health changed", extra={"fields": {"serving": serving}})


def check(
    host: str, port: int, service: str, timeout: float, root_certs: bytes | None = None
) -> str:
    """Ask a health port for ``service``'s status; returns its name (e.g. ``SERVING``).

    Args:
        root_certs: PEM CA bundle to verify a TLS health port (plaintext when None).

    Raises:
        grpc.RpcError: the port did not answer, or the service is unknown.
    """
    target = f"{host}:{port}"
    channel = (
        grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certs))
        if root_certs is not None
        else grpc.insecure_channel(target)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return name
