"""The Flight SQL server: decode each RPC and dispatch it. No query logic lives here."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
from google.protobuf.message import Message

from flightsql_srv.actions import ACTIONS, Actions
from flightsql_srv.auth import ANONYMOUS
from flightsql_srv.auth.authenticator import Authenticator
from flightsql_srv.auth.config import AuthConfig
from flightsql_srv.auth.middleware import (
    AnonymousHandshakeFactory,
    AuthMiddlewareFactory,
    HandshakeHandler,
)
from flightsql_srv.auth.policy import Policy
from flightsql_srv.discovery import METADATA_COMMANDS, Discovery
from flightsql_srv.engine import MAX_SQL_BYTES, Engine
from flightsql_srv.errors import InvalidArgument, NotFound, Unimplemented, rpc_boundary
from flightsql_srv.execution import Executor
from flightsql_srv.macros import UserMacro
from flightsql_srv.protocol import InvalidCommand, sql_pb2, unpack_command
from flightsql_srv.request import Call, HeadersMiddlewareFactory, RequestInfo
from flightsql_srv.sessions import SessionMiddlewareFactory
from flightsql_srv.sqlinfo import sql_info_values
from flightsql_srv.sqltext import quote_name
from flightsql_srv.statements import Statements
from flightsql_srv.tickets import TICKET, Signer

__all__ = ["FlightSqlServer", "MAX_REQUEST_BYTES", "bounded"]

#: The largest command, action body, ticket or path descriptor decoded. SQL is at most
#: MAX_SQL_BYTES; a prepared handle with bound parameters (1 MiB) stays below 3 MiB.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
_READ_ONLY = "flightsql-srv is read-only: {what} is not supported; run queries (SELECT) instead"
#: Flight SQL commands and actions that would write, with how to name them in the error.
_WRITES: dict[type[Message] | str, str] = {
    sql_pb2.CommandStatementUpdate: "CommandStatementUpdate (INSERT/UPDATE/DELETE/DDL)",
    sql_pb2.CommandPreparedStatementUpdate: "a prepared update",
    sql_pb2.CommandStatementIngest: "bulk ingestion",
    "BeginTransaction": "BeginTransaction (transactions)",
    "EndTransaction": "EndTransaction (transactions)",
    "BeginSavepoint": "BeginSavepoint (transactions)",
    "EndSavepoint": "EndSavepoint (transactions)",
}


class FlightSqlServer(flight.FlightServerBase):  # type: ignore[misc]
    """A Flight SQL endpoint over one :class:`Engine`.

    Args:
        location: ``grpc://host:port`` to listen on.
        engine: the planned catalog.
        signer: signs tickets and handles.
        ticket_ttl: seconds a ticket stays valid.
        executor: runs queries under the server's limits.
        middleware: extra middleware factories (metrics).
        user_macros: macros loaded from ``macros/``.
        grafana_profile: shape every result for Grafana, not only flagged requests.
        auth: the ``[auth]`` configuration (authentication is on when it configures any).
        on_auth_failure: called with a reason label for every rejected call.
    """

    def __init__(
        self,
        location: str,
        engine: Engine,
        signer: Signer,
        ticket_ttl: float,
        executor: Executor,
        middleware: dict[str, flight.ServerMiddlewareFactory] | None = None,
        user_macros: Mapping[str, UserMacro] | None = None,
        grafana_profile: bool = False,
        auth: AuthConfig | None = None,
        on_auth_failure: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> None:
        auth = auth or AuthConfig()
        factories: dict[str, flight.ServerMiddlewareFactory] = {}
        self.authenticator: Authenticator | None = None
        if auth.enabled:
            # First: a rejected call must not reach the other middleware, which would never
            # hear that it ended (pyarrow does not complete calls refused in start_call).
            self.authenticator = Authenticator(auth, signer)
            factories["auth"] = AuthMiddlewareFactory(self.authenticator, on_auth_failure)
        else:
            factories["handshake"] = AnonymousHandshakeFactory()
        kwargs["auth_handler"] = HandshakeHandler()
        middleware = {
            **factories,
            **(middleware or {}),
            "session": SessionMiddlewareFactory(signer),
            "headers": HeadersMiddlewareFactory(),
        }
        self._auth = auth
        self.policy = Policy(auth, engine.tables)
        self.grafana_profile = grafana_profile
        self.signer = signer
        self.engine = engine
        #: Set when shutting down: new queries are refused with UNAVAILABLE.
        self.draining = False
        self.statements = Statements(engine, signer, ticket_ttl, executor, user_macros)
        self.discovery = Discovery(engine, sql_info_values(engine.ctx))
        self.actions = Actions(self.statements, signer)
        self._info_handlers: dict[type[Message], Callable[..., flight.FlightInfo]] = {
            sql_pb2.CommandStatementQuery: self._statement_info,
            sql_pb2.CommandPreparedStatementQuery: self._prepared_info,
            sql_pb2.CommandStatementSubstraitPlan: self._substrait_info,
        }
        for command in METADATA_COMMANDS:
            self._info_handlers[command] = self._metadata_info
        # Last: pyarrow starts accepting calls here, so every attribute must already exist.
        super().__init__(location, middleware=middleware, **kwargs)

    def swap(self, engine: Engine, user_macros: Mapping[str, UserMacro]) -> None:
        """Serve a newly loaded catalog and macros from now on. Queries already planned keep
        the engine they were planned with; each attribute swap is atomic."""
        discovery = Discovery(engine, sql_info_values(engine.ctx))
        policy = Policy(self._auth, engine.tables)
        self.statements.user_macros = dict(user_macros)
        self.statements.engine = engine
        self.discovery, self.policy, self.engine = discovery, policy, engine

    def swap_auth(self, auth: AuthConfig) -> None:
        """Check credentials and roles against a reloaded ``[auth]`` from the next call on.
        Authentication cannot be turned on or off this way (the middleware is chosen at
        start): that raises ValueError."""
        if auth.enabled != self._auth.enabled:
            raise ValueError("turning authentication on or off needs a restart")
        if self.authenticator is not None:
            self.authenticator.reload(auth)
        self._auth = auth
        self.policy = Policy(auth, self.engine.tables)

    # -- helpers -------------------------------------------------------------------------

    def _accepting(self) -> None:
        if self.draining:
            raise flight.FlightUnavailableError(
                "the server is shutting down; retry the query (on another replica)"
            )

    def _call(self, context: flight.ServerCallContext) -> Call:
        """Who calls (anonymous when authentication is off), what they may see, and with
        which session options and request metadata."""
        auth = context.get_middleware("auth")
        identity = auth.identity if auth is not None else ANONYMOUS
        return Call(
            context=context,
            identity=identity,
            session=context.get_middleware("session").options_for(identity.principal),
            request=RequestInfo.from_headers(
                context.get_middleware("headers").headers, self.grafana_profile
            ),
            visible=self.policy.visible(identity),
            explain_paths=self.policy.explain_paths(identity),
        )

    @staticmethod
    def _command(descriptor: flight.FlightDescriptor) -> Message:
        if descriptor.descriptor_type != flight.DescriptorType.CMD:
            raise InvalidArgument(
                "expected a command descriptor holding a Flight SQL command (google.protobuf.Any)"
            )
        bounded(len(descriptor.command), "command")
        try:
            return unpack_command(descriptor.command)
        except InvalidCommand as exc:
            raise InvalidArgument(str(exc)) from None

    def _refuse_writes(self, key: type[Message] | str) -> None:
        if key in _WRITES:
            raise Unimplemented(_READ_ONLY.format(what=_WRITES[key]))

    def _ticket_info(
        self, body: dict[str, Any], schema: pa.Schema, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        ticket = self.statements.signer.sign(TICKET, body, ttl=self.statements.ticket_ttl)
        return flight.FlightInfo(schema, descriptor, [flight.FlightEndpoint(ticket, [])], -1, -1)

    # -- GetFlightInfo / GetSchema -------------------------------------------------------

    def _statement_info(
        self,
        command: sql_pb2.CommandStatementQuery,
        descriptor: flight.FlightDescriptor,
        call: Call,
        run: bool,
    ) -> flight.FlightInfo:
        query = call.query(command.query)
        return self.statements.flight_info(query, descriptor, call.request, call, run)

    def _substrait_info(
        self,
        command: sql_pb2.CommandStatementSubstraitPlan,
        descriptor: flight.FlightDescriptor,
        call: Call,
        run: bool,
    ) -> flight.FlightInfo:
        plan = command.plan.plan
        query = call.query("", plan)
        return self.statements.flight_info(query, descriptor, call.request, call, run)

    def _prepared_info(
        self,
        command: sql_pb2.CommandPreparedStatementQuery,
        descriptor: flight.FlightDescriptor,
        call: Call,
        run: bool,
    ) -> flight.FlightInfo:
        handle = command.prepared_statement_handle
        query = self.statements.redeem_handle(
            handle, call.principal, call.session, call.visible, call.explain_paths
        )
        return self.statements.flight_info(query, descriptor, call.request, call, run)

    def _metadata_info(
        self, command: Message, descriptor: flight.FlightDescriptor, call: Call, run: bool
    ) -> flight.FlightInfo:
        body = {
            "kind": "metadata",
            "command": base64.b64encode(descriptor.command).decode(),
            "principal": call.principal,
        }
        return self._ticket_info(body, self.discovery.schema(command), descriptor)

    def get_flight_info(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        with rpc_boundary("GetFlightInfo"):
            return self._flight_info(context, descriptor, run=True)

    def _flight_info(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor, run: bool
    ) -> flight.FlightInfo:
        """GetFlightInfo; with ``run``, a query may start running now (see
        :meth:`Statements.flight_info`); GetSchema only plans."""
        self._accepting()
        call = self._call(context)
        if descriptor.descriptor_type == flight.DescriptorType.PATH:
            return self._table_info(descriptor, call, run)
        command = self._command(descriptor)
        self._refuse_writes(type(command))
        handler = self._info_handlers.get(type(command))
        if handler is None:
            raise Unimplemented(
                f"{command.DESCRIPTOR.name} is not supported by GetFlightInfo on this server"
            )
        return handler(command, descriptor, call, run)

    def _table_info(
        self, descriptor: flight.FlightDescriptor, call: Call, run: bool = False
    ) -> flight.FlightInfo:
        """A path descriptor ``[schema, table]`` reads the whole table."""
        bounded(sum(len(p) for p in descriptor.path), "path descriptor")
        try:
            path = [p.decode() for p in descriptor.path]
        except UnicodeDecodeError:
            raise InvalidArgument("path descriptor elements must be UTF-8 names") from None
        if len(path) != 2:
            raise InvalidArgument(
                f"a path descriptor names [schema, table]; got {len(path)} element(s)"
            )
        schema, table = path
        if (schema, table) not in {
            (s, t) for s, t, _ in self.discovery.table_rows(visible=call.visible)
        }:
            raise NotFound(f"no table {schema}.{table}; ListFlights shows the tables")
        sql = f"SELECT * FROM {quote_name(schema)}.{quote_name(table)}"
        query = call.query(sql)
        return self.statements.flight_info(query, descriptor, call.request, call, run)

    def list_flights(
        self, context: flight.ServerCallContext, criteria: bytes
    ) -> Iterator[flight.FlightInfo]:
        with rpc_boundary("ListFlights"):
            call = self._call(context)
            infos = [
                self._table_info(flight.FlightDescriptor.for_path(s, t), call)
                for s, t, _ in self.discovery.table_rows(visible=call.visible)
            ]
        return iter(infos)

    def get_schema(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.SchemaResult:
        with rpc_boundary("GetSchema"):
            return flight.SchemaResult(self._flight_info(context, descriptor, run=False).schema)

    # -- DoGet -----------------------------------------------------------------------------

    def do_get(
        self, context: flight.ServerCallContext, ticket: flight.Ticket
    ) -> flight.FlightDataStream:
        with rpc_boundary("DoGet"):
            self._accepting()
            bounded(len(ticket.ticket), "ticket")
            call = self._call(context)
            principal = call.principal
            body = self.statements.redeem_ticket(ticket.ticket, principal)
            if body.get("kind") == "metadata":
                command = unpack_command(base64.b64decode(body["command"]))
                return _table_stream(self.discovery.table(command, call.visible))
            # The worker's stream is read in C++ (no Python per batch); the generator around
            # it ends the query's lease once the client is done.
            schema, stream = self.statements.execute(body, call)
            return flight.GeneratorStream(schema, stream)

    # -- DoPut -----------------------------------------------------------------------------

    def do_put(
        self,
        context: flight.ServerCallContext,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        with rpc_boundary("DoPut"):
            self._accepting()
            command = self._command(descriptor)
            self._refuse_writes(type(command))
            if not isinstance(command, sql_pb2.CommandPreparedStatementQuery):
                raise Unimplemented(f"DoPut does not accept {command.DESCRIPTOR.name}")
            handle = self.statements.bind(
                command.prepared_statement_handle, reader, self._call(context).principal
            )
            result = sql_pb2.DoPutPreparedStatementResult(prepared_statement_handle=handle)
            writer.write(pa.py_buffer(result.SerializeToString()))

    # -- DoAction --------------------------------------------------------------------------

    def list_actions(self, context: flight.ServerCallContext) -> list[tuple[str, str]]:
        return list(ACTIONS)

    def do_action(
        self, context: flight.ServerCallContext, action: flight.Action
    ) -> Iterator[bytes]:
        with rpc_boundary("DoAction"):
            if not action.type.startswith("Close"):
                self._accepting()
            self._refuse_writes(action.type)
            bounded(action.body.size if action.body is not None else 0, f"{action.type} body")
            call = self._call(context)
            return iter(self.actions.run(call, action))


def bounded(size: int, what: str) -> None:
    """Refuse a request part over :data:`MAX_REQUEST_BYTES` before decoding or decrypting it
    (gRPC has already read it: the bound before that is the proxy's, see docs/security.md)."""
    if size > MAX_REQUEST_BYTES:
        raise InvalidArgument(
            f"the {what} is {size} bytes; at most {MAX_REQUEST_BYTES} are accepted "
            f"(SQL texts: {MAX_SQL_BYTES})"
        )


def _table_stream(table: pa.Table) -> flight.RecordBatchStream:
    """Stream a small metadata table; an empty one sends no batch at all (Grafana reads a
    missing batch as "not found" but fails on an empty one)."""
    batches = [b for b in table.to_batches() if b.num_rows]
    return flight.RecordBatchStream(pa.RecordBatchReader.from_batches(table.schema, batches))
