"""Network-level fuzzing: mutated Flight SQL requests against a real in-process server.

Every RPC (GetFlightInfo, GetSchema, DoGet, DoPut, DoAction, ListActions, ListFlights,
DoExchange, Handshake) is sent with mutated serialized ``Any`` commands, tickets, handles,
action bodies, parameter batches and fuzzed headers. Each answer must be success or a proper
gRPC status (INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED, PERMISSION_DENIED, UNIMPLEMENTED,
UNAVAILABLE, ...) whose message carries no traceback; never INTERNAL, never UNKNOWN from an
unexpected Python exception, never a timeout (a hang).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

from flightsql_srv.app import Service
from flightsql_srv.auth.config import parse_auth
from flightsql_srv.protocol import flight_pb2, pack, sql_pb2, unpack_command
from tests.conftest import running_server
from tests.fuzz.data import Input, UndocumentedError
from tests.fuzz.targets import header_values, mutate, parameter_batch

__all__ = ["NetworkFuzzer", "network_fuzzer", "resources"]

API_KEY = "network-fuzz-key"
#: Seconds any single call may take before it counts as a hang.
CALL_TIMEOUT = 15.0
#: Client-side classes that stand for the statuses a bad request may legitimately get.
ACCEPTED: tuple[type[BaseException], ...] = (
    flight.FlightUnauthenticatedError,  # UNAUTHENTICATED
    flight.FlightUnauthorizedError,  # PERMISSION_DENIED
    flight.FlightUnavailableError,  # UNAVAILABLE
    flight.FlightCancelledError,  # CANCELLED
    pa.ArrowInvalid,  # INVALID_ARGUMENT
    pa.ArrowKeyError,  # NOT_FOUND
    pa.ArrowNotImplementedError,  # UNIMPLEMENTED
)
#: GetSchema errors reach pyarrow 26 clients as a plain OSError with "Detail: <code>".
_SCHEMA_DETAIL = re.compile(r"Detail: (\w+)$")
_ACCEPTED_DETAILS = {"Unauthenticated", "Unauthorized", "Unavailable", "Cancelled"}
_TRACEBACK = ("Traceback", 'File "')

ACTION_TYPES = (
    "CreatePreparedStatement",
    "CreatePreparedSubstraitPlan",
    "ClosePreparedStatement",
    "CancelFlightInfo",
    "CancelQuery",
    "SetSessionOptions",
    "GetSessionOptions",
    "CloseSession",
    "BeginTransaction",
    "EndTransaction",
    "",
    "Nope\x00",
)
SQL = (
    "select 1 as x",
    "select * from fz.t where host = 'a'",
    "select host, avg(value) from fz.t group by host",
    "select $1 as a, $2 as b",
    "select * from information_schema.tables",
    "select $__timeFilter(time), $__interval from fz.t",
    "create table x as select 1",
    "copy (select 1) to '/tmp/fuzz-out.csv'",
    "select * from '/etc/passwd'",
)


def _catalog(directory: Path) -> Path:
    """A one-table catalog (a tiny Parquet file with a time column)."""
    times = pa.array([0, 60_000_000_000, 120_000_000_000], pa.timestamp("ns", "UTC"))
    table = pa.table({"time": times, "host": ["a", "b", "a"], "value": [1.0, 2.5, None]})
    pq.write_table(table, directory / "t.parquet")
    (directory / "fz.toml").write_text(
        '[tables.t]\nsource = "t.parquet"\nformat = "parquet"\ntime_column = "time"\n'
    )
    return directory


def seed_commands() -> list[bytes]:
    """Genuine serialized ``Any`` commands of every kind the server reads."""
    messages: list[Any] = [sql_pb2.CommandStatementQuery(query=q) for q in SQL]
    messages += [
        sql_pb2.CommandGetTables(include_schema=True, table_name_filter_pattern="%"),
        sql_pb2.CommandGetDbSchemas(db_schema_filter_pattern="f_"),
        sql_pb2.CommandGetCatalogs(),
        sql_pb2.CommandGetTableTypes(),
        sql_pb2.CommandGetSqlInfo(info=[0, 1, 508, 999999]),
        sql_pb2.CommandGetXdbcTypeInfo(data_type=12),
        sql_pb2.CommandGetPrimaryKeys(table="t"),
        sql_pb2.CommandGetCrossReference(pk_table="t", fk_table="t"),
        sql_pb2.CommandStatementSubstraitPlan(plan=sql_pb2.SubstraitPlan(plan=b"\x0a\x00")),
        sql_pb2.CommandStatementUpdate(query="delete from fz.t"),
        sql_pb2.CommandStatementIngest(table="t"),
        sql_pb2.ActionCreatePreparedStatementRequest(query="select $1 as a"),
        sql_pb2.ActionClosePreparedStatementRequest(prepared_statement_handle=b"F1"),
        sql_pb2.ActionCancelQueryRequest(info=b"\x0a\x00"),
    ]
    return [pack(m) for m in messages]


def _printable(text: str) -> str:
    """gRPC clients refuse non-printable text metadata locally; keep the fuzz server-side."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


class NetworkFuzzer:
    """Sends one fuzzed request per :meth:`run` call to a served catalog.

    Args:
        service: a started service with API-key authentication.
        client: a client connected to it.
    """

    def __init__(self, service: Service, client: flight.FlightClient) -> None:
        self.service = service
        self.client = client
        self.commands = seed_commands()
        self.executions = 0
        good = self._options(Input(b""), fuzz_headers=False)
        info = client.get_flight_info(
            self._cmd(pack(sql_pb2.CommandStatementQuery(query=SQL[1]))), good
        )
        self.ticket = info.endpoints[0].ticket.ticket
        self.info = info
        result = next(
            iter(
                client.do_action(
                    flight.Action(
                        "CreatePreparedStatement",
                        pack(sql_pb2.ActionCreatePreparedStatementRequest(query=SQL[3])),
                    ),
                    good,
                )
            )
        )
        prepared = unpack_command(result.body.to_pybytes())
        self.handle: bytes = prepared.prepared_statement_handle  # type: ignore[attr-defined]
        self._rpcs: list[Callable[[Input, flight.FlightCallOptions], object]] = [
            self._get_flight_info,
            self._get_flight_info,
            self._path_info,
            self._get_schema,
            self._do_get,
            self._do_put,
            self._do_action,
            self._do_action,
            self._list,
            self._do_exchange,
            self._handshake,
        ]

    # -- requests ----------------------------------------------------------------------------

    @staticmethod
    def _cmd(data: bytes) -> flight.FlightDescriptor:
        return flight.FlightDescriptor.for_command(data)

    def _command(self, inp: Input) -> bytes:
        return mutate(self.commands[inp.byte() % len(self.commands)], inp)

    def _options(self, inp: Input, fuzz_headers: bool = True) -> flight.FlightCallOptions:
        """Valid credentials most of the time (to reach the handlers), plus fuzzed headers."""
        headers: list[tuple[bytes, bytes]] = []
        if not fuzz_headers or inp.byte() % 8:
            headers.append((b"authorization", f"Bearer {API_KEY}".encode()))
        if fuzz_headers and inp.byte() % 4 == 0:  # mostly clean, to reach the handlers
            for name, values in header_values(inp).items():
                headers += [(name.encode(), _printable(v).encode()) for v in values]
        return flight.FlightCallOptions(headers=headers, timeout=CALL_TIMEOUT)

    def _get_flight_info(self, inp: Input, options: flight.FlightCallOptions) -> object:
        return self.client.get_flight_info(self._cmd(self._command(inp)), options)

    def _path_info(self, inp: Input, options: flight.FlightCallOptions) -> object:
        # Valid UTF-8 only: the path is a proto3 string, and pyarrow's gRPC layer (not the
        # server's code) answers INTERNAL to one that is not (see docs/reliability.md).
        parts = [inp.text(16).encode() for _ in range(inp.byte() % 4)]
        return self.client.get_flight_info(flight.FlightDescriptor.for_path(*parts), options)

    def _get_schema(self, inp: Input, options: flight.FlightCallOptions) -> object:
        return self.client.get_schema(self._cmd(self._command(inp)), options)

    def _do_get(self, inp: Input, options: flight.FlightCallOptions) -> object:
        ticket = mutate(self.ticket, inp)
        return self.client.do_get(flight.Ticket(ticket), options).read_all()

    def _do_put(self, inp: Input, options: flight.FlightCallOptions) -> object:
        handle = mutate(self.handle, inp) if inp.byte() % 2 else self.handle
        command = sql_pb2.CommandPreparedStatementQuery(prepared_statement_handle=handle)
        descriptor = self._cmd(pack(command) if inp.byte() % 4 else self._command(inp))
        batch = parameter_batch(inp)
        writer, reader = self.client.do_put(descriptor, batch.schema, options)
        with writer:
            for _ in range(inp.byte() % 3):
                writer.write_batch(batch)
            writer.done_writing()
            metadata = reader.read()
        if metadata is not None and inp.byte() % 2:  # execute what was bound
            bound = sql_pb2.DoPutPreparedStatementResult.FromString(metadata.to_pybytes())
            query = sql_pb2.CommandPreparedStatementQuery(
                prepared_statement_handle=bound.prepared_statement_handle
            )
            info = self.client.get_flight_info(self._cmd(pack(query)), options)
            self.client.do_get(info.endpoints[0].ticket, options).read_all()
        return metadata

    def _action_body(self, kind: str, inp: Input) -> bytes:
        if kind == "CancelFlightInfo":
            message = flight_pb2.FlightInfo.FromString(self.info.serialize())
            genuine = flight_pb2.CancelFlightInfoRequest(info=message).SerializeToString()
            return mutate(genuine, inp)
        if kind == "SetSessionOptions":
            request = flight_pb2.SetSessionOptionsRequest()
            request.session_options[inp.text(12)].string_value = _printable(inp.text(64))
            return mutate(request.SerializeToString(), inp)
        return self._command(inp)

    def _do_action(self, inp: Input, options: flight.FlightCallOptions) -> object:
        kind = str(inp.choice(ACTION_TYPES))
        # Never cancel the shared ticket: later DoGets of it would be refused.
        body = self._action_body(kind, inp)
        if kind.startswith("Cancel") and self.ticket in body:
            return None
        return list(self.client.do_action(flight.Action(kind, body), options))

    def _list(self, inp: Input, options: flight.FlightCallOptions) -> object:
        if inp.byte() % 2:
            return list(self.client.list_actions(options))
        return list(self.client.list_flights(inp.bytes(32), options))

    def _do_exchange(self, inp: Input, options: flight.FlightCallOptions) -> object:
        writer, reader = self.client.do_exchange(self._cmd(self._command(inp)), options)
        with writer:
            writer.done_writing()
            return reader.read_all()

    def _handshake(self, inp: Input, options: flight.FlightCallOptions) -> object:
        user = _printable(inp.text(16))
        return self.client.authenticate_basic_token(user, _printable(inp.text(16)), options)

    # -- the target --------------------------------------------------------------------------

    def run(self, data: bytes) -> None:
        """Send one request chosen and mutated by ``data``; check how it was answered."""
        inp = Input(data)
        rpc = self._rpcs[inp.byte() % len(self._rpcs)]
        options = self._options(inp)
        self.executions += 1
        try:
            rpc(inp, options)
        except BaseException as exc:  # noqa: BLE001 - classifying every outcome is the point
            check_error(rpc.__name__, exc)


def check_error(rpc: str, exc: BaseException) -> None:
    """Raise :class:`UndocumentedError` unless ``exc`` stands for a proper status."""
    message = str(exc)
    for fragment in _TRACEBACK:
        if fragment in message:
            raise UndocumentedError(f"{rpc}: traceback in message: {message}"[:2000]) from exc
    if isinstance(exc, flight.FlightTimedOutError):
        raise UndocumentedError(f"{rpc}: no answer within {CALL_TIMEOUT} s (hang)") from exc
    if isinstance(exc, flight.FlightInternalError):
        raise UndocumentedError(f"{rpc}: INTERNAL: {message}"[:2000]) from exc
    if isinstance(exc, ACCEPTED):
        return
    if isinstance(exc, OSError) and not isinstance(exc, flight.FlightError):
        match = _SCHEMA_DETAIL.search(message)
        if rpc == "_get_schema" and match and match.group(1) in _ACCEPTED_DETAILS:
            return
        if rpc == "_get_schema" and "Python exception: " in message and "Internal" not in message:
            return  # a domain error class passed through GetSchema (pyarrow limitation)
    raise UndocumentedError(f"{rpc}: {type(exc).__name__}: {message}"[:2000]) from exc


def resources() -> tuple[int, int]:
    """(threads, open file descriptors) of this process, which hosts the server."""
    me = psutil.Process()
    return me.num_threads(), me.num_fds()


@contextmanager
def network_fuzzer() -> Iterator[NetworkFuzzer]:
    """A served one-table catalog with API-key authentication, and a fuzzer for it."""
    auth = parse_auth(
        {
            "api_keys": [
                {
                    "name": "fuzz",
                    "sha256": hashlib.sha256(API_KEY.encode()).hexdigest(),
                    "roles": ["all"],
                }
            ],
            "roles": {"all": {"tables": ["*"]}},
        }
    )
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fuzz-net-")))
        service = stack.enter_context(
            running_server(catalog=_catalog(directory), auth=auth, query_timeout=10.0)
        )
        client = stack.enter_context(flight.connect(f"grpc://127.0.0.1:{service.port}"))
        yield NetworkFuzzer(service, client)


def answers_select_one(fuzzer: NetworkFuzzer) -> bool:
    """The server still answers ``SELECT 1`` with valid credentials."""
    options = fuzzer._options(Input(b""), fuzz_headers=False)
    descriptor = fuzzer._cmd(pack(sql_pb2.CommandStatementQuery(query="SELECT 1 AS one")))
    info = fuzzer.client.get_flight_info(descriptor, options)
    table = fuzzer.client.do_get(info.endpoints[0].ticket, options).read_all()
    return bool(table.to_pydict() == {"one": [1]})
