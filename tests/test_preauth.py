"""Pre-authentication bounds (issue 15, outcome 4): what an unauthenticated caller can make
the server hold, directly and behind the shipped deploy/nginx config.

pyarrow's Flight server takes gRPC messages of any size (Arrow sets the gRPC server's
maximum receive size to unlimited and pyarrow exposes no option for it) and reads a whole
request before the auth middleware sees its headers. So the bound before authentication is
the proxy's: nginx refuses a call body over ``client_max_body_size`` with a gRPC
RESOURCE_EXHAUSTED. The server itself refuses any command, action body, ticket or path over
``MAX_REQUEST_BYTES`` before decoding it. docs/security.md ("Request size") has the figures.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flightsql_srv.app import Service
from flightsql_srv.auth.config import parse_auth
from flightsql_srv.auth.passwords import hash_password
from flightsql_srv.engine import MAX_SQL_BYTES
from flightsql_srv.protocol import pack, sql_pb2
from flightsql_srv.server import MAX_REQUEST_BYTES
from tests.conftest import running_server, server_process
from tests.helpers import assert_flight_error, peak_rss, statement_descriptor
from tests.nginx import running_nginx

KEY = "preauth-key-6b0e"
PASSWORD = "the right one"
MiB = 2**20
BIG = 256 * MiB


def _bearer(key: str = KEY) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {key}".encode())], timeout=60
    )


def _auth_file(directory: Path) -> Path:
    path = directory / "auth.toml"
    path.write_text(
        f'[[auth.api_keys]]\nname = "probe"\nsha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"'
        '\nroles = ["all"]\n[auth.roles.all]\ntables = ["*"]\n'
    )
    return path


def _flood(uri: str, pid: int, calls: int, size: int) -> tuple[int, int, list[BaseException]]:
    """``calls`` unauthenticated GetFlightInfo of ``size`` bytes at once; returns the
    server's RSS before, its peak meanwhile, and the errors the callers got."""
    command = statement_descriptor("select 1 -- " + "x" * size)
    errors: list[BaseException] = []

    def call() -> None:
        with flight.connect(uri) as client:
            try:
                client.get_flight_info(command, flight.FlightCallOptions(timeout=120))
            except Exception as exc:  # the class is checked by the caller
                errors.append(exc)

    def flood() -> None:
        callers = [threading.Thread(target=call) for _ in range(calls)]
        for t in callers:
            t.start()
        for t in callers:
            t.join()

    baseline, peak = peak_rss(pid, flood)
    return baseline, peak, errors


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, int, Path]]:
    """``flightsql-srv serve`` (its own process, so its RSS is the server's alone) with an
    API key, and nginx in front of it with the shipped config."""
    root = tmp_path_factory.mktemp("preauth")
    (root / "catalog").mkdir()
    args = ("--auth-file", str(_auth_file(root)), "--catalog", str(root / "catalog"))
    ready = [(b"authorization", f"Bearer {KEY}".encode())]
    with server_process(*args, ready_headers=ready) as (proc, port):
        yield proc, port, root


def test_big_unauthenticated_requests_stop_at_nginx(served: tuple[Any, int, Path]) -> None:
    """The issue's four 256 MB GetFlightInfo: through nginx the server never sees them."""
    proc, port, root = served
    with running_nginx([port], root / "nginx") as balancer:
        baseline, peak, errors = _flood(balancer.uri, proc.pid, 4, BIG)
        with flight.connect(balancer.uri) as client:  # the proxy still serves normal calls
            info = client.get_flight_info(statement_descriptor("select 1 as one"), _bearer())
            assert client.do_get(info.endpoints[0].ticket, _bearer()).read_all().num_rows == 1
    print(f"through nginx: RSS {baseline / MiB:.0f} MiB -> peak {peak / MiB:.0f} MiB")
    assert len(errors) == 4
    for error in errors:
        # RESOURCE_EXHAUSTED (pyarrow's client has no class of its own for it).
        assert_flight_error(
            error,
            pa.ArrowInvalid,
            "resource exhausted error, with message: request too large: at most 5 MiB",
        )
    assert peak - baseline < 32 * MiB, f"RSS grew by {(peak - baseline) / MiB:.0f} MiB"


def test_direct_unauthenticated_requests_are_read_whole_by_pyarrow(
    served: tuple[Any, int, Path],
) -> None:
    """Without the proxy, pyarrow reads a whole request before the middleware answers
    UNAUTHENTICATED: the server holds at least the request (one 64 MB call here; the
    issue's four of 256 MB took it to 1.8 GB). If pyarrow ever bounds it, this fails and
    docs/security.md needs a new row."""
    proc, port, _ = served
    baseline, peak, errors = _flood(f"grpc://127.0.0.1:{port}", proc.pid, 1, 64 * MiB)
    print(f"direct: RSS {baseline / MiB:.0f} MiB -> peak {peak / MiB:.0f} MiB")
    assert len(errors) == 1
    assert_flight_error(errors[0], flight.FlightUnauthenticatedError, "")
    assert peak - baseline >= 64 * MiB


# -- what the server bounds itself -----------------------------------------------------------


@pytest.fixture(scope="module")
def srv() -> Iterator[Service]:
    auth = parse_auth(
        {
            "api_keys": [
                {"name": "k", "sha256": hashlib.sha256(KEY.encode()).hexdigest(), "roles": ["a"]}
            ],
            "users": [{"name": "alice", "password_hash": hash_password(PASSWORD), "roles": ["a"]}],
            "roles": {"a": {"tables": ["*"]}},
            "client_address_header": "x-forwarded-for",
        }
    )
    with running_server(auth=auth) as service:
        yield service


def _over(size: int = MAX_REQUEST_BYTES + 1) -> bytes:
    return b"x" * size


OVERSIZED: list[Any] = [
    pytest.param(
        lambda c: c.get_flight_info(statement_descriptor("select " + "1" * MAX_REQUEST_BYTES)),
        "the command is",
        id="statement",
    ),
    pytest.param(
        lambda c: c.get_flight_info(
            flight.FlightDescriptor.for_command(
                pack(
                    sql_pb2.CommandStatementSubstraitPlan(plan=sql_pb2.SubstraitPlan(plan=_over()))
                )
            )
        ),
        "the command is",
        id="substrait",
    ),
    pytest.param(
        lambda c: c.get_schema(flight.FlightDescriptor.for_command(_over())),
        "the command is",
        id="get-schema",
    ),
    pytest.param(
        lambda c: c.get_flight_info(flight.FlightDescriptor.for_path("demo", _over().decode())),
        "the path descriptor is",
        id="path",
    ),
    pytest.param(
        lambda c: list(c.do_action(flight.Action("CreatePreparedStatement", _over()))),
        "the CreatePreparedStatement body is",
        id="action",
    ),
    pytest.param(
        lambda c: c.do_get(flight.Ticket(_over())).read_all(), "the ticket is", id="ticket"
    ),
]


@pytest.mark.parametrize(("call", "part"), OVERSIZED)
def test_oversized_request_parts_are_refused_before_decoding(
    srv: Service, call: Callable[[Any], object], part: str
) -> None:
    with flight.connect(f"grpc://127.0.0.1:{srv.port}") as c:
        options = _bearer()
        wrapped = _with_options(c, options)
        started = time.monotonic()
        assert_flight_error(
            lambda: call(wrapped),
            pa.ArrowInvalid,
            f"{part} \\d+ bytes; at most {MAX_REQUEST_BYTES} are accepted",
        )
        assert time.monotonic() - started < 5
        info = c.get_flight_info(statement_descriptor("select 1 as one"), options)
        assert c.do_get(info.endpoints[0].ticket, options).read_all().num_rows == 1


def test_sql_over_its_limit_is_refused_in_the_front(srv: Service) -> None:
    with flight.connect(f"grpc://127.0.0.1:{srv.port}") as c:
        sql = "select 1 -- " + "x" * MAX_SQL_BYTES
        assert_flight_error(
            lambda: c.get_flight_info(statement_descriptor(sql), _bearer()),
            pa.ArrowInvalid,
            f"longer than {MAX_SQL_BYTES} bytes",
        )
        body = pack(sql_pb2.ActionCreatePreparedStatementRequest(query=sql))
        assert_flight_error(
            lambda: list(c.do_action(flight.Action("CreatePreparedStatement", body), _bearer())),
            pa.ArrowInvalid,
            f"longer than {MAX_SQL_BYTES} bytes",
        )


class _with_options:  # noqa: N801 (reads as a function at the call sites)
    """A client whose calls all carry ``options``."""

    def __init__(self, client: flight.FlightClient, options: flight.FlightCallOptions) -> None:
        self._client, self._options = client, options

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)
        return lambda *args: method(*args, options=self._options)


# -- nginx sets the client's address ---------------------------------------------------------


def test_nginx_sets_the_client_address_a_client_cannot_choose(srv: Service, tmp_path: Path) -> None:
    """With ``client_address_header = "x-forwarded-for"`` behind the shipped nginx, a client
    that sends its own X-Forwarded-For (a new one per guess) is still one peer: the sixth
    wrong password in a row is throttled."""
    with running_nginx([srv.port], tmp_path / "nginx") as balancer:
        answers = []
        for i in range(6):
            spoofed = flight.FlightCallOptions(
                headers=[(b"x-forwarded-for", f"198.51.100.{i}".encode())], timeout=30
            )
            with flight.connect(balancer.uri) as c:
                try:
                    c.authenticate_basic_token("alice", "wrong", spoofed)
                except flight.FlightUnauthenticatedError as exc:
                    answers.append(str(exc))
    assert len(answers) == 6
    assert "too many failed sign-ins" not in answers[0]
    assert "too many failed sign-ins for this user from this address" in answers[-1], answers
