"""GetFlightInfo's plan is reused by the DoGet that follows it, and only when it is valid."""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.flight as flight

from flightsql_srv.app import Service
from flightsql_srv.engine import Plan
from flightsql_srv.plancache import PlanCache
from flightsql_srv.statements import Query
from tests.helpers import statement_descriptor

SQL = "SELECT host, count(*) AS n FROM demo.metrics GROUP BY host ORDER BY host"


def _plan(service: Service, sql: str = "SELECT 1") -> Plan:
    return service.flight.engine.plan(sql)


def test_doget_takes_the_plan_getflightinfo_made(server: Service) -> None:
    plans = server.flight.statements.plans
    with flight.connect(f"grpc://127.0.0.1:{server.port}") as client:
        info = client.get_flight_info(statement_descriptor(SQL))
        assert len(plans) >= 1
        before = len(plans)
        table = client.do_get(info.endpoints[0].ticket).read_all()
        assert len(plans) == before - 1
        # A second DoGet of the same ticket plans again and gives the same answer.
        again = client.do_get(info.endpoints[0].ticket).read_all()
    assert table.num_rows > 0
    assert again.equals(table)


def test_doget_headers_that_change_the_query_replan(server: Service) -> None:
    """A limit sent only on DoGet makes a different query than the one planned."""
    with flight.connect(f"grpc://127.0.0.1:{server.port}") as client:
        info = client.get_flight_info(statement_descriptor("SELECT * FROM demo.logs"))
        options = flight.FlightCallOptions(headers=[(b"limit", b"2")])
        limited = client.do_get(info.endpoints[0].ticket, options).read_all()
    assert limited.num_rows == 2


def test_a_plan_is_taken_once_and_only_for_its_query_and_engine(server: Service) -> None:
    cache = PlanCache(ttl=60)
    engine = server.flight.engine
    plan = _plan(server)
    cache.put("a", engine, "query a", plan)
    assert cache.take("a", engine, "query a") is plan
    assert cache.take("a", engine, "query a") is None  # taken
    cache.put("b", engine, "query b", plan)
    assert cache.take("b", engine, "another query") is None
    cache.put("c", engine, "query c", plan)
    assert cache.take("c", object(), "query c") is None  # planned on a replaced engine


def test_plans_expire_and_stay_bounded(server: Service) -> None:
    plan = _plan(server)
    engine = server.flight.engine
    expired = PlanCache(ttl=0.01)
    expired.put("a", engine, "q", plan)
    time.sleep(0.05)
    assert expired.take("a", engine, "q") is None
    small = PlanCache(ttl=60, size=3)
    for i in range(10):
        small.put(str(i), engine, "q", plan)
    assert len(small) == 3
    assert small.take("0", engine, "q") is None
    assert small.take("9", engine, "q") is plan


def test_parameters_are_part_of_the_query(server: Service) -> None:
    """Equal SQL with other bound values is another query."""
    one = Query("SELECT $1", pa.record_batch([pa.array([1])], names=["0"]))
    two = Query("SELECT $1", pa.record_batch([pa.array([2])], names=["0"]))
    cache = PlanCache(ttl=60)
    cache.put("a", server.flight.engine, one, _plan(server))
    assert cache.take("a", server.flight.engine, two) is None
