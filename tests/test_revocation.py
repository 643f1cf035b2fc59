"""Revocation (issue 15, outcome 2): a session token is valid only while its user is still
configured with the same password hash, and the user's current roles apply. Removing a user,
changing a password or a role takes effect at the next call after ``[auth]`` is reloaded:
the auth file is watched like the catalog (and reread on SIGHUP).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

import flightsql_srv.tickets
from flightsql_srv.app import Service
from flightsql_srv.auth.config import DEFAULT_SESSION_TTL, parse_auth
from flightsql_srv.auth.passwords import hash_password
from flightsql_srv.config import load_settings
from tests.conftest import TEST_SECRET, running_server
from tests.helpers import assert_flight_error, statement_descriptor

PASSWORD = "revocation-password"
NEW_PASSWORD = "another-password"
KEY = "revocation-api-key"


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return {"old": hash_password(PASSWORD), "new": hash_password(NEW_PASSWORD)}


def _auth_toml(password_hash: str, roles: str = '["everything"]', with_alice: bool = True) -> str:
    user = (
        f'[[auth.users]]\nname = "alice"\npassword_hash = "{password_hash}"\nroles = {roles}\n'
        if with_alice
        else ""
    )
    return (
        f"[auth]\n{user}"
        f'[[auth.api_keys]]\nname = "ops"\nsha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"\n'
        'roles = ["everything"]\n'
        '[auth.roles.everything]\ntables = ["*"]\n'
        '[auth.roles.public_only]\ntables = ["r.open"]\n'
    )


@pytest.fixture
def setup(tmp_path: Path, hashes: dict[str, str]) -> Iterator[tuple[Service, Path]]:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    pq.write_table(pa.table({"v": [1]}), catalog / "open.parquet")
    pq.write_table(pa.table({"v": [2]}), catalog / "closed.parquet")
    (catalog / "r.toml").write_text(
        '[tables.open]\nsource = "open.parquet"\nformat = "parquet"\n'
        '[tables.closed]\nsource = "closed.parquet"\nformat = "parquet"\n'
    )
    auth_dir = tmp_path / "secret"
    auth_dir.mkdir()
    auth_file = auth_dir / "auth.toml"
    auth_file.write_text(_auth_toml(hashes["old"]))
    settings = load_settings(
        {
            "auth_file": auth_file,
            "catalog": catalog,
            "reload_interval": 0.1,
            "port": 0,
            "health_port": 0,
            "metrics_port": -1,
            "ticket_secret": TEST_SECRET,
        },
        env={},
    )
    with running_server(
        **{f: getattr(settings, f) for f in ("auth", "auth_file", "catalog")}, reload_interval=0.1
    ) as service:
        yield service, auth_file


def _token(service: Service, password: str = PASSWORD) -> flight.FlightCallOptions:
    with flight.connect(f"grpc://127.0.0.1:{service.port}") as c:
        _, value = c.authenticate_basic_token("alice", password)
    return flight.FlightCallOptions(headers=[(b"authorization", value)], timeout=30)


def _query(service: Service, options: Any, sql: str = "select v from r.closed") -> Any:
    with flight.connect(f"grpc://127.0.0.1:{service.port}") as c:
        info = c.get_flight_info(statement_descriptor(sql), options)
        return c.do_get(info.endpoints[0].ticket, options).read_all().to_pydict()


def _rewrite(path: Path, text: str) -> None:
    path.write_text(text)


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def _refused(service: Service, options: Any, sql: str = "select v from r.closed") -> bool:
    try:
        _query(service, options, sql)
    except flight.FlightError:
        return True
    except pa.ArrowException:
        return True
    return False


REVOKED = (
    r"session token revoked: its user was removed or given a new password; "
    r"authenticate again with the handshake"
)


def test_removing_the_user_revokes_its_session_tokens(
    setup: tuple[Service, Path], hashes: dict[str, str]
) -> None:
    service, auth_file = setup
    alice = _token(service)
    assert _query(service, alice) == {"v": [2]}
    _rewrite(auth_file, _auth_toml(hashes["old"], with_alice=False))
    assert _eventually(lambda: _refused(service, alice)), "the watcher did not reload [auth]"
    assert_flight_error(lambda: _query(service, alice), flight.FlightUnauthenticatedError, REVOKED)
    ops = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {KEY}".encode())])
    assert _query(service, ops) == {"v": [2]}  # the rest of [auth] is served


def test_a_new_password_revokes_old_tokens_and_is_the_one_accepted(
    setup: tuple[Service, Path], hashes: dict[str, str]
) -> None:
    service, auth_file = setup
    alice = _token(service)
    _rewrite(auth_file, _auth_toml(hashes["new"]))
    assert service.reload_auth()
    assert_flight_error(lambda: _query(service, alice), flight.FlightUnauthenticatedError, REVOKED)
    with pytest.raises(flight.FlightUnauthenticatedError, match="invalid username or password"):
        _token(service, PASSWORD)
    assert _query(service, _token(service, NEW_PASSWORD)) == {"v": [2]}


def test_current_roles_apply_to_existing_tokens(
    setup: tuple[Service, Path], hashes: dict[str, str]
) -> None:
    service, auth_file = setup
    alice = _token(service)
    assert _query(service, alice) == {"v": [2]}
    _rewrite(auth_file, _auth_toml(hashes["old"], roles='["public_only"]'))
    assert service.reload_auth()
    assert_flight_error(
        lambda: _query(service, alice), pa.ArrowInvalid, r"table 'flightsql\.r\.closed' not found"
    )
    assert _query(service, alice, "select v from r.open") == {"v": [1]}


def test_a_broken_auth_file_keeps_the_previous_one(
    setup: tuple[Service, Path], caplog: pytest.LogCaptureFixture
) -> None:
    service, auth_file = setup
    alice = _token(service)
    _rewrite(auth_file, "[auth]\nusers = 3\n")
    assert not service.reload_auth()
    assert "auth reload failed" in caplog.text
    assert _query(service, alice) == {"v": [2]}


def test_turning_auth_off_by_reload_is_refused(setup: tuple[Service, Path]) -> None:
    service, auth_file = setup
    alice = _token(service)
    _rewrite(auth_file, "[auth]\n")
    assert not service.reload_auth()
    assert _query(service, alice) == {"v": [2]}


def test_default_session_lifetime_outlasts_a_month_of_grafana_uptime(
    hashes: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Grafana's datasource handshakes once per datasource instance and keeps the token."""
    assert DEFAULT_SESSION_TTL >= 30 * 86400
    auth = parse_auth(
        {
            "users": [{"name": "alice", "password_hash": hashes["old"], "roles": ["all"]}],
            "roles": {"all": {"tables": ["*"]}},
        }
    )
    assert auth.session_ttl == DEFAULT_SESSION_TTL
    with running_server(auth=auth, catalog=tmp_path) as service:
        alice = _token(service)
        real = time.time
        monkeypatch.setattr(flightsql_srv.tickets.time, "time", lambda: real() + 31 * 86400)
        assert _query(service, alice, "select 1 as x") == {"x": [1]}
        monkeypatch.setattr(
            flightsql_srv.tickets.time, "time", lambda: real() + DEFAULT_SESSION_TTL + 60
        )
        assert_flight_error(
            lambda: _query(service, alice, "select 1 as x"),
            flight.FlightUnauthenticatedError,
            r"session token expired; authenticate again with the handshake",
        )
