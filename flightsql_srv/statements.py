"""Statement queries and stateless prepared statements.

A prepared-statement handle is a signed token holding the SQL and any bound parameters;
binding returns a *new* handle (the stateless pattern of the Flight SQL spec), so any replica
sharing the secret can execute it and closing one has nothing to free.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from flightsql_srv.audit import QueryRecord
from flightsql_srv.engine import Engine, Visibility
from flightsql_srv.errors import InvalidArgument, ReadOnlyViolation
from flightsql_srv.execution import Executor
from flightsql_srv.macros import UserMacro, expand
from flightsql_srv.parameters import LastBound, parameter_row
from flightsql_srv.query import Query
from flightsql_srv.request import Call, RequestInfo
from flightsql_srv.running import RunningQueries
from flightsql_srv.sessions import SessionOptions
from flightsql_srv.sqltext import number_qmarks, placeholders
from flightsql_srv.tickets import PREPARED, TICKET, Signer
from flightsql_srv.workers.protocol import PlanReply

__all__ = ["Statements", "Query", "MAX_PARAMETER_BYTES"]

MAX_PARAMETER_BYTES = 1024 * 1024


class Statements:
    """Plans statements and issues/redeems the tokens that stand for them."""

    def __init__(
        self,
        engine: Engine,
        signer: Signer,
        ticket_ttl: float,
        executor: Executor,
        user_macros: Mapping[str, UserMacro] | None = None,
    ) -> None:
        self.engine = engine
        self.signer = signer
        self.ticket_ttl = ticket_ttl
        self.executor = executor
        self.user_macros = dict(user_macros or {})
        self.running = RunningQueries(ticket_ttl)
        self.last_bound = LastBound()

    def shape(self, query: Query, request: RequestInfo) -> Query:
        """Apply a request's metadata: expand macros with its time range and interval, and
        take its range bounds, row limit and result profile."""
        sql = query.sql
        if query.substrait is None:
            sql = number_qmarks(expand(sql, request.macros, self.user_macros))
        return replace(
            query,
            sql=sql,
            bounds=request.bounds,
            limit=request.limit,
            grafana=request.grafana,
        )

    @staticmethod
    def check_bound(query: Query) -> None:
        """Refuse a SQL query whose placeholders have no bound values (before any engine
        work: it would only fail later)."""
        if query.substrait is None and query.params is None and placeholders(query.sql):
            names = ", ".join("$" + p for p in placeholders(query.sql))
            raise InvalidArgument(
                f"the query has parameters ({names}): bind values with DoPut before executing"
            )

    def plan(
        self,
        query: Query,
        call: Call,
        fixed_partitions: bool = False,
        query_id: str = "",
        run: bool = False,
    ) -> PlanReply:
        """Plan a query in an engine worker, insisting that every placeholder has a bound
        value; with ``fixed_partitions``, so that its partitions can be executed apart; with
        ``run``, start running it for the DoGet of ``query_id``."""
        self.check_bound(query)
        return self.executor.plan(
            query,
            call.key,
            query_id or uuid.uuid4().hex,
            call.context,
            fixed_partitions=fixed_partitions,
            run=run,
        )

    def flight_info(
        self,
        query: Query,
        descriptor: flight.FlightDescriptor,
        request: RequestInfo,
        call: Call,
        run: bool = True,
    ) -> flight.FlightInfo:
        """Plan ``query`` as ``request`` shapes it; describe its result with signed tickets
        that carry the expanded SQL, range, limit and profile.

        One endpoint, unless the request asks for parallel endpoints and the result has
        several fixed partitions: then one per partition, up to the number asked for (never
        for Grafana, which reads only the first endpoint). A one-endpoint query starts
        running now (with ``run``): the client's DoGet, which follows at once, then finds its
        result ready on this replica (any other replica runs the ticket itself).
        """
        query = self.shape(query, request)
        wanted = 1 if query.grafana else request.parallel_endpoints
        query_id = uuid.uuid4().hex
        run = run and wanted == 1
        try:
            planned = self.plan(
                query, call, fixed_partitions=wanted > 1, query_id=query_id, run=run
            )
        except Exception as exc:
            if run:  # it may have failed running: audited as its DoGet would have been
                self.executor.failed(_record(query, query_id, call), exc)
            raise
        body = {"kind": "query", "id": query_id, **query.body()}
        count = min(wanted, planned.partitions)
        if count == 1:
            tickets = [self.signer.sign(TICKET, body, ttl=self.ticket_ttl)]
        else:
            tickets = [
                self.signer.sign(
                    TICKET,
                    {**body, "id": f"{query_id}.{i}", "partition": [i, count, planned.partitions]},
                    ttl=self.ticket_ttl,
                )
                for i in range(count)
            ]
        endpoints = [flight.FlightEndpoint(ticket, []) for ticket in tickets]
        return flight.FlightInfo(planned.schema, descriptor, endpoints, -1, -1)

    def prepare(
        self, query: Query, request: RequestInfo, call: Call
    ) -> tuple[bytes, pa.Schema, pa.Schema]:
        """Create a handle plus the dataset and parameter schemas for a SQL or Substrait query.

        Preparing only plans: nothing runs and nothing is written. The handle keeps the SQL
        as written: macros are expanded again, with the executing call's time range.
        """
        shaped = self.shape(query, request)
        if query.substrait is not None:
            return self.handle(query), self.plan(shaped, call).schema, pa.schema([])
        parameter_schema = self.engine.parameter_schema(shaped.sql)
        try:
            # Without the range: it does not change the schema, and binding its values
            # while the statement's own placeholders are still unbound would fail.
            unbound = replace(shaped, params=None, bounds=None)
            key, context = call.key, call.context
            dataset_schema = self.executor.plan(unbound, key, uuid.uuid4().hex, context).schema
        except ReadOnlyViolation:
            raise
        except InvalidArgument:
            if not len(parameter_schema):
                raise
            # Some placeholders only get a type once bound; the schema comes at execution.
            dataset_schema = pa.schema([])
        return self.handle(query), dataset_schema, parameter_schema

    def handle(self, query: Query) -> bytes:
        """A signed prepared-statement handle for ``query`` (session options excluded: the
        session of the call that executes it applies)."""
        body = query.body()
        del body["session"]
        # Each handle stands for its own statement: parameters remembered for one (see
        # bind) never reach another that happens to hold the same SQL.
        body["statement"] = uuid.uuid4().hex
        return self.signer.sign(PREPARED, body)

    def redeem_handle(
        self,
        handle: bytes,
        principal: str,
        options: SessionOptions,
        visible: Visibility = None,
        explain_paths: bool = False,
    ) -> Query:
        """The query behind a handle, if it was issued to ``principal``; ``visible`` and
        ``explain_paths`` are the caller's, now."""
        body = self.signer.verify(PREPARED, handle, "prepared statement handle")
        query = self._owned(body, principal, "prepared statement handle")
        query = self._with_last_bound(query, handle, principal)
        return replace(query, options=options, visible=visible, explain_paths=explain_paths)

    def redeem_ticket(self, ticket: bytes, principal: str) -> dict[str, Any]:
        """The body of a DoGet ticket this service issued to ``principal``."""
        body = self.signer.verify(TICKET, ticket, "ticket")
        self._owned(body, principal, "ticket")
        return body

    def execute(
        self, body: dict[str, Any], call: Call
    ) -> tuple[pa.Schema, Iterator[flight.FlightDataStream]]:
        """Run the query of a redeemed ticket (see :meth:`redeem_ticket`) under the server's
        limits; CancelFlightInfo on the same ticket stops it. DoGet's own headers fill in a
        range, limit or profile the ticket does not carry."""
        if body.get("kind") != "query":
            raise InvalidArgument("this ticket is not a query ticket")
        request = call.request
        query = Query.from_body(body)
        query = replace(
            query,
            bounds=query.bounds or request.bounds,
            limit=query.limit if query.limit is not None else request.limit,
            grafana=query.grafana or request.grafana,
            visible=call.visible,
            explain_paths=call.explain_paths,
        )
        query_id = str(body["id"])
        cancelled = self.running.start(query_id)
        return self.executor.run(
            _record(query, query_id, call),
            query,
            _partition(body.get("partition")),
            call.key,
            cancelled,
            lambda: self.running.finish(query_id),
            call.context,
        )

    def cancel(self, ticket: bytes, principal: str) -> bool:
        """Cancel the query behind a ticket issued to ``principal``: stop it if it runs on
        this replica and refuse any later DoGet of it. False for a metadata ticket, which
        has nothing to stop."""
        body = self.signer.verify(TICKET, ticket, "ticket")
        if body.get("kind") != "query":
            return False
        self._owned(body, principal, "ticket")
        self.running.cancel(str(body["id"]))
        self.executor.discard(str(body["id"]))
        return True

    def _owned(self, body: dict[str, Any], principal: str, what: str) -> Query:
        if body.get("principal", "") != principal:
            raise flight.FlightUnauthorizedError(f"this {what} was issued to another principal")
        return Query.from_body(body)

    def bind(
        self, handle: bytes, reader: flight.MetadataRecordBatchReader, principal: str
    ) -> bytes:
        """Read one row of parameters from a DoPut stream; return the handle that carries it
        (and remember the row for clients that execute ``handle`` itself)."""
        query = self.redeem_handle(handle, principal, SessionOptions())
        if query.substrait is not None:
            raise InvalidArgument("a prepared Substrait plan takes no parameters")
        try:
            reader.schema  # noqa: B018 - raises when the client sent no data message
        except (OSError, pa.ArrowException):
            raise InvalidArgument(
                "DoPut for a prepared statement needs a record batch of parameter values"
            ) from None
        batches, size = [], 0
        for chunk in reader:
            if chunk.data is None:
                continue
            size += chunk.data.nbytes
            if size > MAX_PARAMETER_BYTES:
                raise InvalidArgument(f"parameter data is larger than {MAX_PARAMETER_BYTES} bytes")
            batches.append(chunk.data)
        rows = sum(b.num_rows for b in batches)
        if rows != 1:
            raise InvalidArgument(
                f"a prepared query binds exactly one row of parameters, got {rows}"
            )
        batch = next(b for b in batches if b.num_rows)
        params = parameter_row(batch, placeholders(number_qmarks(query.sql)))
        self.last_bound.remember(principal, handle, params)
        return self.handle(Query(query.sql, params, principal))

    def _with_last_bound(self, query: Query, handle: bytes, principal: str) -> Query:
        """``query`` with the parameters last bound to ``handle`` when it carries none."""
        if query.params is not None or query.substrait is not None:
            return query
        return replace(query, params=self.last_bound.recall(principal, handle))


def _record(query: Query, query_id: str, call: Call) -> QueryRecord:
    """The audit record of ``query`` run for ``call``."""
    return QueryRecord(
        query_id=query_id,
        principal=call.principal,
        sql=query.sql if query.substrait is None else "<substrait plan>",
        kind="substrait" if query.substrait is not None else "sql",
        peer=call.context.peer(),
        client=call.request.client,
        time_range=(query.bounds[0].isoformat(), query.bounds[1].isoformat())
        if query.bounds
        else None,
        limit=query.limit,
    )


def _partition(value: Any) -> tuple[int, int, int] | None:
    """A ticket's ``[index, endpoints, partitions]``, checked (tickets are signed, but a
    bad one must not crash the server)."""
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) == 3
        and all(type(v) is int for v in value)
        and 0 <= value[0] < value[1] <= value[2]
    ):
        return value[0], value[1], value[2]
    raise InvalidArgument("the ticket's partition is malformed; call GetFlightInfo again")
