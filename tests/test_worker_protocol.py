"""The front reads what engine workers send as untrusted input: any bytes give a reply or
WorkerProtocolError, never another exception; replies round-trip."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.flight as flight
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flightsql_srv.errors import InvalidArgument, ResourceExhausted
from flightsql_srv.workers.protocol import (
    FinishReply,
    PlanReply,
    WorkerProtocolError,
    error_from_flight,
    error_to_flight,
)

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_fields = st.dictionaries(
    st.sampled_from(
        ["schema", "partitions", "outcome", "rows", "nbytes", "error_class", "message", "plan_s"]
    ),
    _json,
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=256), _fields.map(lambda d: json.dumps(d).encode())))
def test_malformed_replies_are_protocol_errors(data: bytes) -> None:
    for decode in (PlanReply.decode, FinishReply.decode):
        try:
            reply = decode(data)
        except WorkerProtocolError:
            continue
        assert isinstance(reply, PlanReply | FinishReply)
        if isinstance(reply, FinishReply):
            reply.error()  # never raises


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=128))
def test_malformed_error_details_are_not_trusted(detail: bytes) -> None:
    error = error_from_flight(flight.FlightServerError("x", extra_info=detail))
    assert error is None or isinstance(error, Exception)


def test_replies_round_trip() -> None:
    schema = pa.schema([pa.field("a", pa.int64()), pa.field("b", pa.string())])
    assert PlanReply.decode(PlanReply(schema, 3).encode()) == PlanReply(schema, 3)
    finish = FinishReply("error", 5, 100, "ResourceExhausted", "too big", 0.25)
    assert FinishReply.decode(finish.encode()) == finish
    assert isinstance(finish.error(), ResourceExhausted)


def test_a_bad_schema_is_a_protocol_error() -> None:
    with pytest.raises(WorkerProtocolError, match="schema"):
        PlanReply.decode(b'{"schema": "bm90IGEgc2NoZW1h", "partitions": 1}')


def test_errors_cross_as_their_class_and_unknown_ones_as_internal() -> None:
    back = error_from_flight(error_to_flight(InvalidArgument("bad column")))
    assert isinstance(back, InvalidArgument) and str(back) == "bad column"
    internal = error_from_flight(error_to_flight(KeyError("surprise")))
    assert isinstance(internal, flight.FlightInternalError)
