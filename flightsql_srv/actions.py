"""DoAction: prepared statements, session options and cancellation.

Flight SQL actions carry Any-wrapped bodies and results; the Flight-level ones
(CancelFlightInfo, session options) use raw Flight messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow.flight as flight
from google.protobuf.message import DecodeError, Message

from flightsql_srv.errors import InvalidArgument, Unimplemented
from flightsql_srv.protocol import InvalidCommand, flight_pb2, pack, sql_pb2, unpack_command
from flightsql_srv.request import Call
from flightsql_srv.sessions import SessionOptions, apply_options, encode_cookie, options_result
from flightsql_srv.statements import Statements
from flightsql_srv.tickets import Signer

__all__ = ["ACTIONS", "Actions"]

#: (type, description) of every action, as ListActions reports them.
ACTIONS = [
    ("CreatePreparedStatement", "Prepare a SQL query; returns a stateless handle"),
    ("CreatePreparedSubstraitPlan", "Prepare a Substrait plan; returns a stateless handle"),
    ("ClosePreparedStatement", "Close a prepared statement (forgets its remembered parameters)"),
    ("CancelFlightInfo", "Stop the query behind a FlightInfo's ticket"),
    ("CancelQuery", "Deprecated Flight SQL form of CancelFlightInfo"),
    ("SetSessionOptions", "Set catalog, schema or timezone (kept in a signed cookie)"),
    ("GetSessionOptions", "Show the session's options"),
    ("CloseSession", "Forget the session's options"),
]


def _parse(message: Message, body: bytes, action: str) -> Any:
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise InvalidArgument(f"{action}: malformed {message.DESCRIPTOR.name}: {exc}") from None
    return message


def _unpack(action: flight.Action, expected: type[Message]) -> Any:
    try:
        command = unpack_command(action.body.to_pybytes())
    except InvalidCommand as exc:
        raise InvalidArgument(f"{action.type}: {exc}") from None
    if not isinstance(command, expected):
        raise InvalidArgument(
            f"{action.type} expects {expected.DESCRIPTOR.name}, got {command.DESCRIPTOR.name}"
        )
    return command


class Actions:
    """Runs one action and returns its result bodies."""

    def __init__(self, statements: Statements, signer: Signer) -> None:
        self.statements = statements
        self.signer = signer
        self._handlers: dict[str, Callable[[Call, flight.Action], list[bytes]]] = {
            "CreatePreparedStatement": self._prepare,
            "CreatePreparedSubstraitPlan": self._prepare,
            "ClosePreparedStatement": self._close_prepared,
            "CancelFlightInfo": self._cancel_flight_info,
            "CancelQuery": self._cancel_query,
            "SetSessionOptions": self._set_session_options,
            "GetSessionOptions": self._get_session_options,
            "CloseSession": self._close_session,
        }

    def run(self, call: Call, action: flight.Action) -> list[bytes]:
        handler = self._handlers.get(action.type)
        if handler is None:
            raise Unimplemented(
                f"unknown action {action.type!r}; ListActions shows the supported ones"
            )
        return handler(call, action)

    def _prepare(self, call: Call, action: flight.Action) -> list[bytes]:
        if action.type == "CreatePreparedStatement":
            request = _unpack(action, sql_pb2.ActionCreatePreparedStatementRequest)
            query = call.query(request.query)
        else:
            request = _unpack(action, sql_pb2.ActionCreatePreparedSubstraitPlanRequest)
            plan = request.plan.plan
            query = call.query("", plan)
        handle, dataset, parameters = self.statements.prepare(query, call.request, call)
        result = sql_pb2.ActionCreatePreparedStatementResult(
            prepared_statement_handle=handle,
            dataset_schema=dataset.serialize().to_pybytes(),
            parameter_schema=parameters.serialize().to_pybytes() if len(parameters) else b"",
        )
        return [pack(result)]

    def _close_prepared(self, call: Call, action: flight.Action) -> list[bytes]:
        # Handles carry their state; only the parameters remembered for clients that execute
        # the handle they bound (statements.bind) are dropped. Never fail: ADBC's cursor
        # breaks for good if closing fails.
        try:
            request = _unpack(action, sql_pb2.ActionClosePreparedStatementRequest)
        except InvalidArgument:
            return []
        self.statements.last_bound.forget(call.principal, request.prepared_statement_handle)
        return []

    def _cancel(self, call: Call, info: flight_pb2.FlightInfo) -> bool:
        """Cancel every query ticket in ``info``; False when none of them is a query."""
        cancelled = [self.statements.cancel(e.ticket.ticket, call.principal) for e in info.endpoint]
        return any(cancelled)

    def _cancel_flight_info(self, call: Call, action: flight.Action) -> list[bytes]:
        request = _parse(
            flight_pb2.CancelFlightInfoRequest(), action.body.to_pybytes(), action.type
        )
        status = (
            flight_pb2.CANCEL_STATUS_CANCELLED
            if self._cancel(call, request.info)
            else flight_pb2.CANCEL_STATUS_NOT_CANCELLABLE
        )
        return [flight_pb2.CancelFlightInfoResult(status=status).SerializeToString()]

    def _cancel_query(self, call: Call, action: flight.Action) -> list[bytes]:
        request = _unpack(action, sql_pb2.ActionCancelQueryRequest)
        info = _parse(flight_pb2.FlightInfo(), request.info, action.type)
        result = sql_pb2.ActionCancelQueryResult
        status = (
            result.CANCEL_RESULT_CANCELLED
            if self._cancel(call, info)
            else result.CANCEL_RESULT_NOT_CANCELLABLE
        )
        return [pack(result(result=status))]

    def _set_session_options(self, call: Call, action: flight.Action) -> list[bytes]:
        request = _parse(
            flight_pb2.SetSessionOptionsRequest(), action.body.to_pybytes(), action.type
        )
        engine = self.statements.engine
        schemas = call.schemas if call.schemas is not None else engine.schema_names()
        options, errors = apply_options(call.session, request, engine.catalog_name, schemas)
        call.context.add_header("set-cookie", encode_cookie(self.signer, options, call.principal))
        outcome = flight_pb2.SetSessionOptionsResult()
        for name, code in errors.items():
            outcome.errors[name].value = code  # type: ignore[assignment]
        return [outcome.SerializeToString()]

    def _get_session_options(self, call: Call, action: flight.Action) -> list[bytes]:
        return [options_result(call.session, self.statements.engine.catalog_name)]

    def _close_session(self, call: Call, action: flight.Action) -> list[bytes]:
        call.context.add_header("set-cookie", encode_cookie(self.signer, SessionOptions()))
        closed = flight_pb2.CloseSessionResult.CLOSED
        return [flight_pb2.CloseSessionResult(status=closed).SerializeToString()]
