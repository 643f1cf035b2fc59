"""The client conformance suite's shared parts: a server with auth on and a small catalog of
many types, and the clients that cannot live in the test venv, each installed into a cache of
its own under ``.cache`` (see :mod:`tests.clients.cache`)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from flightsql_srv.app import Service
from flightsql_srv.auth.config import AuthConfig, parse_auth
from flightsql_srv.auth.passwords import hash_password
from tests.conftest import running_server

__all__ = [
    "USER",
    "PASSWORD",
    "API_KEY",
    "ITEMS",
    "write_catalog",
    "reader_auth",
    "clients_server",
]

USER = "alice"
PASSWORD = "clients-pw"
API_KEY = "clients-api-key-0123456789"

#: shop.items: one column per type clients have to decode.
ITEMS = pa.table(
    {
        "id": pa.array([1, 2, 3], pa.int64()),
        "name": pa.array(["apple", "pear", None], pa.string()),
        "qty": pa.array([10, 0, 7], pa.int32()),
        "price": pa.array([Decimal("1.50"), Decimal("12.00"), None], pa.decimal128(10, 2)),
        "ratio": pa.array([0.5, 1.25, None], pa.float64()),
        "ok": pa.array([True, False, None], pa.bool_()),
        "day": pa.array([dt.date(2024, 1, 1), dt.date(2024, 2, 29), None], pa.date32()),
        "at": pa.array(
            [dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC), None, None], pa.timestamp("us", "UTC")
        ),
        "blob": pa.array([b"\x00\x01", b"", None], pa.binary()),
    }
)


def write_catalog(directory: Path) -> Path:
    """``shop.items`` (Parquet) and the view ``shop.cheap``."""
    pq.write_table(ITEMS, directory / "items.parquet")
    (directory / "shop.toml").write_text(
        'description = "The client suite\'s shop"\n'
        '[tables.items]\nsource = "items.parquet"\nformat = "parquet"\n'
        'description = "One column per type"\n'
        '[tables.cheap]\nsql = "select id, name, price from shop.items where price < 10"\n'
    )
    return directory


def reader_auth(user: str, password: str, api_key: str) -> AuthConfig:
    """``[auth]`` with one user, one API key and a role that sees every table."""
    return parse_auth(
        {
            "api_keys": [
                {
                    "name": "clients",
                    "sha256": hashlib.sha256(api_key.encode()).hexdigest(),
                    "roles": ["reader"],
                }
            ],
            "users": [
                {"name": user, "password_hash": hash_password(password), "roles": ["reader"]}
            ],
            "roles": {"reader": {"tables": ["*"]}},
        }
    )


@contextmanager
def clients_server(catalog: Path) -> Iterator[Service]:
    """The server every client talks to: :data:`USER`, :data:`API_KEY`, ``shop.*``."""
    auth = reader_auth(USER, PASSWORD, API_KEY)
    with running_server(auth=auth, catalog=write_catalog(catalog)) as service:
        yield service
