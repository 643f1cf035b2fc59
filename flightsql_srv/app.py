"""Assemble a running service from :class:`~flightsql_srv.config.Settings`."""

from __future__ import annotations

import logging
import sys
import time

from flightsql_srv import __version__
from flightsql_srv.catalog import load_catalog
from flightsql_srv.config import Settings
from flightsql_srv.engine import Engine
from flightsql_srv.server import FlightSqlServer
from flightsql_srv.tickets import Signer

__all__ = ["build_server"]

log = logging.getLogger("flightsql_srv")


def build_server(settings: Settings) -> FlightSqlServer:
    """Load the catalog, plan the engine and bind the Flight SQL port.

    Raises:
        CatalogError: a catalog file is invalid (the message names file and table).
    """
    started = time.monotonic()
    # Clients see exception text in status details; keep stack frames out of it.
    sys.tracebacklimit = 0
    schemas = load_catalog(settings.catalog_dir)
    engine = Engine(settings, schemas)
    signer = Signer(settings.ticket_secrets)
    if signer.ephemeral:
        log.warning(
            "no ticket_secret configured: using a random one; replicas behind one load "
            "balancer must share FLIGHTSQL_SRV_TICKET_SECRET"
        )
    server = FlightSqlServer(
        f"grpc://{settings.host}:{settings.port}", engine, signer, settings.ticket_ttl
    )
    log.info(
        "serving",
        extra={
            "fields": {
                "version": __version__,
                "address": f"{settings.host}:{server.port}",
                "catalog": str(settings.catalog_dir),
                "tables": sum(len(s.tables) for s in schemas),
                "startup_s": round(time.monotonic() - started, 3),
            }
        },
    )
    return server
