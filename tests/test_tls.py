"""TLS and mTLS from PEM files: pyarrow and ADBC clients, ALPN h2 (grpc-go ≥ 1.67 requires
it), refused clients, TLS with authentication, and configuration errors.

Certificates come from :mod:`tests.tls_certs` (a throw-away CA, a server certificate for
127.0.0.1/localhost and client certificates), generated once for the module.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightsql_srv.app import Service
from flightsql_srv.auth.config import parse_auth
from flightsql_srv.auth.passwords import hash_password
from flightsql_srv.config import ENV_PREFIX, ConfigError, Settings
from tests.conftest import ROOT, running_server
from tests.helpers import assert_flight_error, statement_descriptor
from tests.tls_certs import Pki, make_pki

QUERY = "select 41 + 1 as answer"
ANSWER = {"answer": [42]}
#: Bounds every call that is expected to fail to connect.
FAIL_FAST = flight.FlightCallOptions(timeout=10)
RUN_TIMEOUT = 30.0
TLS_ROOT = "adbc.flight.sql.client_option.tls_root_certs"
MTLS_CERT = "adbc.flight.sql.client_option.mtls_cert_chain"
MTLS_KEY = "adbc.flight.sql.client_option.mtls_private_key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def empty_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = tmp_path_factory.mktemp("empty-catalog")
    return path


@pytest.fixture(scope="module")
def tls_server(pki: Pki, empty_catalog: Path) -> Iterator[Service]:
    with running_server(
        tls_cert=pki.server_cert, tls_key=pki.server_key, catalog=empty_catalog
    ) as service:
        yield service


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, empty_catalog: Path) -> Iterator[Service]:
    with running_server(
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_client_ca=pki.ca_cert,
        catalog=empty_catalog,
    ) as service:
        yield service


def _query(client: flight.FlightClient, options: Any = None) -> dict[str, Any]:
    info = client.get_flight_info(statement_descriptor(QUERY), options)
    assert len(info.endpoints) == 1
    assert not info.endpoints[0].locations  # "this same service": no address to get wrong
    table: pa.Table = client.do_get(info.endpoints[0].ticket, options).read_all()
    return table.to_pydict()


def _fails_to_connect(uri: str, **kwargs: Any) -> BaseException:
    with pytest.raises(flight.FlightUnavailableError) as raised:
        with flight.connect(uri, **kwargs) as c:
            c.get_flight_info(statement_descriptor(QUERY), FAIL_FAST)
    return raised.value


# -- TLS ------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_pyarrow_tls_with_the_ca(tls_server: Service, pki: Pki, host: str) -> None:
    uri = f"grpc+tls://{host}:{tls_server.port}"
    with flight.connect(uri, tls_root_certs=pki.ca_pem) as c:
        assert _query(c) == ANSWER
        assert list(c.list_actions())


def test_pyarrow_tls_without_the_ca_fails(tls_server: Service) -> None:
    exc = _fails_to_connect(f"grpc+tls://127.0.0.1:{tls_server.port}")
    assert "certificate verify failed" in str(exc) or "handshake" in str(exc).lower(), exc


def test_pyarrow_tls_with_another_ca_fails(tls_server: Service, pki: Pki) -> None:
    uri = f"grpc+tls://127.0.0.1:{tls_server.port}"
    exc = _fails_to_connect(uri, tls_root_certs=pki.rogue_ca_cert.read_bytes())
    assert "certificate verify failed" in str(exc) or "handshake" in str(exc).lower(), exc


def test_plaintext_client_fails_against_tls(tls_server: Service) -> None:
    _fails_to_connect(f"grpc://127.0.0.1:{tls_server.port}")


def test_tls_client_fails_against_plaintext(empty_catalog: Path, pki: Pki) -> None:
    with running_server(catalog=empty_catalog) as plain:
        uri = f"grpc+tls://127.0.0.1:{plain.port}"
        _fails_to_connect(uri, tls_root_certs=pki.ca_pem)
        with flight.connect(f"grpc://127.0.0.1:{plain.port}") as c:  # h2c is served
            assert _query(c) == ANSWER


def test_adbc_tls_with_the_ca(tls_server: Service, pki: Pki) -> None:
    uri = f"grpc+tls://127.0.0.1:{tls_server.port}"
    with adbc.connect(uri, db_kwargs={TLS_ROOT: pki.ca_pem.decode()}, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute(QUERY)
            assert cur.fetchall() == [(42,)]
            cur.execute("select $1 + 1 as x", (1,))
            assert cur.fetchall() == [(2,)]
        assert conn.adbc_get_table_types()


def test_adbc_tls_without_the_ca_fails(tls_server: Service) -> None:
    uri = f"grpc+tls://127.0.0.1:{tls_server.port}"
    with pytest.raises(adbc.Error) as raised:
        with adbc.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(QUERY)
    assert "certificate" in str(raised.value) or "Unavailable" in str(raised.value), raised.value


def _alpn(port: int, pki: Pki, client_cert: bool = False) -> tuple[str | None, str | None]:
    """Negotiate TLS with ALPN offering only h2; returns (selected protocol, TLS version)."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.set_alpn_protocols(["h2"])
    if client_cert:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.selected_alpn_protocol(), tls.version()


def test_alpn_negotiates_h2(tls_server: Service, pki: Pki) -> None:
    """grpc-go ≥ 1.67 (the Grafana datasource forks) rejects servers without ALPN h2."""
    protocol, version = _alpn(tls_server.port, pki)
    assert protocol == "h2"
    assert version in ("TLSv1.2", "TLSv1.3")


def test_server_certificate_is_verified_by_hostname(tls_server: Service, pki: Pki) -> None:
    """The certificate is valid for 127.0.0.1 and localhost only: a name it does not carry
    fails verification (so the client really checks it, and the SANs are right)."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            with ctx.wrap_socket(raw, server_hostname="flightsql.example.com"):
                pass


# -- mTLS -----------------------------------------------------------------------------------


def test_mtls_client_without_a_certificate_is_refused(mtls_server: Service, pki: Pki) -> None:
    _fails_to_connect(f"grpc+tls://127.0.0.1:{mtls_server.port}", tls_root_certs=pki.ca_pem)


def test_mtls_client_with_a_certificate_from_another_ca_is_refused(
    mtls_server: Service, pki: Pki
) -> None:
    _fails_to_connect(
        f"grpc+tls://127.0.0.1:{mtls_server.port}",
        tls_root_certs=pki.ca_pem,
        cert_chain=pki.rogue_client_cert.read_bytes(),
        private_key=pki.rogue_client_key.read_bytes(),
    )


def test_mtls_client_with_a_certificate_signed_by_the_ca(mtls_server: Service, pki: Pki) -> None:
    with flight.connect(
        f"grpc+tls://127.0.0.1:{mtls_server.port}",
        tls_root_certs=pki.ca_pem,
        cert_chain=pki.client_cert.read_bytes(),
        private_key=pki.client_key.read_bytes(),
    ) as c:
        assert _query(c) == ANSWER


def test_mtls_handshake_fails_without_a_client_certificate_at_tls_level(
    mtls_server: Service, pki: Pki
) -> None:
    """Refused by the TLS layer itself (before any RPC), while ALPN h2 still negotiates
    for a client that presents a certificate."""
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        with socket.create_connection(("127.0.0.1", mtls_server.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                if not tls.recv(1024):  # TLS 1.3 reports a missing certificate on read
                    raise ConnectionError("closed by the server")
    assert _alpn(mtls_server.port, pki, client_cert=True)[0] == "h2"


def test_adbc_mtls(mtls_server: Service, pki: Pki) -> None:
    uri = f"grpc+tls://127.0.0.1:{mtls_server.port}"
    kwargs = {
        TLS_ROOT: pki.ca_pem.decode(),
        MTLS_CERT: pki.client_cert.read_text(),
        MTLS_KEY: pki.client_key.read_text(),
    }
    with adbc.connect(uri, db_kwargs=kwargs, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(QUERY)
        assert cur.fetchall() == [(42,)]


def test_adbc_mtls_without_a_client_certificate_fails(mtls_server: Service, pki: Pki) -> None:
    uri = f"grpc+tls://127.0.0.1:{mtls_server.port}"
    with pytest.raises(adbc.Error):
        with adbc.connect(uri, db_kwargs={TLS_ROOT: pki.ca_pem.decode()}, autocommit=True) as conn:
            with conn.cursor() as cur:
                cur.execute(QUERY)


# -- TLS with authentication (what Grafana's secure=true needs) -------------------------------


def test_tls_with_basic_auth_and_api_key(pki: Pki, empty_catalog: Path) -> None:
    key = "tls-api-key-6e0c"
    auth = parse_auth(
        {
            "api_keys": [{"name": "k", "sha256": hashlib.sha256(key.encode()).hexdigest()}],
            "users": [{"name": "alice", "password_hash": hash_password("pw over tls")}],
        }
    )
    with running_server(
        tls_cert=pki.server_cert, tls_key=pki.server_key, catalog=empty_catalog, auth=auth
    ) as srv:
        uri = f"grpc+tls://127.0.0.1:{srv.port}"
        db = {TLS_ROOT: pki.ca_pem.decode(), "username": "alice", "password": "pw over tls"}
        with adbc.connect(uri, db_kwargs=db, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(QUERY)
            assert cur.fetchall() == [(42,)]
        with flight.connect(uri, tls_root_certs=pki.ca_pem) as c:
            header = c.authenticate_basic_token("alice", "pw over tls")
            assert _query(c, flight.FlightCallOptions(headers=[header])) == ANSWER
            bearer = (b"authorization", f"Bearer {key}".encode())
            assert _query(c, flight.FlightCallOptions(headers=[bearer])) == ANSWER
            with pytest.raises(flight.FlightUnauthenticatedError) as raised:
                c.get_flight_info(statement_descriptor(QUERY))
            assert_flight_error(raised, flight.FlightUnauthenticatedError, "missing credentials")


# -- configuration errors -------------------------------------------------------------------


def test_tls_cert_without_key_is_a_config_error(pki: Pki) -> None:
    with pytest.raises(ConfigError, match="tls_cert.*tls_key"):
        Settings(tls_cert=pki.server_cert)
    with pytest.raises(ConfigError, match="tls_cert.*tls_key"):
        Settings(tls_key=pki.server_key)
    with pytest.raises(ConfigError, match="tls_client_ca"):
        Settings(tls_client_ca=pki.ca_cert)


@pytest.mark.parametrize("which", ["tls_cert", "tls_key", "tls_client_ca"])
def test_unreadable_tls_file_is_a_clear_config_error(
    pki: Pki, empty_catalog: Path, tmp_path: Path, which: str
) -> None:
    settings: dict[str, Any] = {
        "tls_cert": pki.server_cert,
        "tls_key": pki.server_key,
        "tls_client_ca": pki.ca_cert,
    }
    settings[which] = tmp_path / "no-such.pem"
    with pytest.raises(ConfigError) as raised:
        with running_server(catalog=empty_catalog, **settings):
            pass
    message = str(raised.value)
    assert "tls" in message.lower() and "no-such.pem" in message, message
    settings[which] = tmp_path  # a directory
    with pytest.raises(ConfigError, match="(?i)tls"):
        with running_server(catalog=empty_catalog, **settings):
            pass


@dataclass(frozen=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def cli_runs(
    pki: Pki, empty_catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, CliRun]:
    """Every ``serve`` case of this module, in parallel (each costs a Python start)."""
    directory = tmp_path_factory.mktemp("tls-cli")
    garbage = directory / "garbage.pem"
    garbage.write_text("this is not a PEM file\n")
    cert, key = str(pki.server_cert), str(pki.server_key)
    cases = {  # the Settings checks behind the first two are tested in-process above
        "cert-without-key": ["--tls-cert", cert],
        "missing-cert-file": ["--tls-cert", str(directory / "missing.pem"), "--tls-key", key],
        "garbage-cert": ["--tls-cert", str(garbage), "--tls-key", key],
        "key-of-another-cert": ["--tls-cert", cert, "--tls-key", str(pki.client_key)],
        "garbage-client-ca": [
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--tls-client-ca",
            str(garbage),
        ],
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    common = ["--catalog", str(empty_catalog), "--port", "0", "--health-port", "0"]
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flightsql_srv",
                "serve",
                *common,
                "--metrics-port",
                "-1",
                *args,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in cases.items()
    }
    runs = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:  # it started serving: a failure, reported below
            proc.kill()
            out, err = proc.communicate()
        runs[name] = CliRun(proc.returncode, out, err)
    return runs


@pytest.mark.parametrize(
    "case, fragments",
    [
        ("cert-without-key", ["tls_cert", "tls_key"]),
        ("missing-cert-file", ["tls", "missing.pem"]),
    ],
)
def test_cli_tls_config_errors_exit_2(
    cli_runs: dict[str, CliRun], case: str, fragments: list[str]
) -> None:
    run = cli_runs[case]
    assert run.returncode == 2, run
    assert "Traceback" not in run.stderr
    for fragment in fragments:
        assert fragment.lower() in run.stderr.lower(), f"{fragment!r} not in: {run.stderr}"


@pytest.mark.parametrize(
    "case, paths",
    [
        ("garbage-cert", ["garbage.pem"]),
        ("key-of-another-cert", ["client.key", "server.pem"]),
        ("garbage-client-ca", ["garbage.pem"]),
    ],
)
def test_cli_unusable_tls_pem_is_a_clear_error(
    cli_runs: dict[str, CliRun], case: str, paths: list[str]
) -> None:
    """Files that exist but hold no usable certificate/key: a configuration error (exit 2)
    that says which TLS file is wrong, not a bare "Server did not start properly"."""
    run = cli_runs[case]
    assert run.returncode == 2, run
    assert "Traceback" not in run.stderr
    error = run.stderr.split("Error:")[-1]  # the message itself, not gRPC's own log lines
    assert "tls" in error.lower(), run.stderr
    assert any(path in error for path in paths), run.stderr
