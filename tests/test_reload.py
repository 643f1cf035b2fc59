"""Live reload: file changes and SIGHUP load a new catalog; in-flight queries keep theirs."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pyarrow.flight as flight
import pytest

from flightsql_srv.protocol import pack, sql_pb2
from tests.conftest import free_port, running_server, server_process


def _query(client: flight.FlightClient, sql: str) -> dict[str, list[object]]:
    descriptor = flight.FlightDescriptor.for_command(pack(sql_pb2.CommandStatementQuery(query=sql)))
    info = client.get_flight_info(descriptor)
    return client.do_get(info.endpoints[0].ticket).read_all().to_pydict()


def _until(condition: Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _catalog(directory: Path, tables: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    body = ""
    for name, rows in tables.items():
        (directory / f"{name}.csv").write_text("n\n" + rows)
        body += f'[tables.{name}]\nsource = "{name}.csv"\nformat = "csv"\n\n'
    (directory / "lake.toml").write_text(body)
    return directory


def _sees(client: flight.FlightClient, table: str) -> bool:
    try:
        _query(client, f"select * from lake.{table}")
    except flight.FlightError:
        return False
    except Exception:  # pyarrow.ArrowInvalid for "table not found"
        return False
    return True


def test_file_change_reloads_and_a_broken_file_keeps_the_previous_catalog(
    tmp_path: Path,
) -> None:
    catalog = _catalog(tmp_path / "catalog", {"a": "1\n2\n"})
    metrics_port = free_port()
    with running_server(catalog=catalog, reload_interval=0.1, metrics_port=metrics_port) as service:
        client = flight.connect(f"grpc://127.0.0.1:{service.port}")
        assert _query(client, "select sum(n) as s from lake.a") == {"s": [3]}
        assert not _sees(client, "b")

        _catalog(catalog, {"a": "1\n2\n", "b": "5\n"})
        assert _until(lambda: _sees(client, "b")), "the new table never appeared"
        assert _query(client, "select sum(n) as s from lake.b") == {"s": [5]}

        (catalog / "lake.toml").write_text("[tables.b]\nsource = 'b.csv'\nformat = 'exotic'\n")
        page = f"http://127.0.0.1:{metrics_port}/metrics"

        def failed() -> bool:
            text = urllib.request.urlopen(page, timeout=5).read().decode()
            return 'flightsql_catalog_reloads_total{outcome="failed"} 1.0' in text

        assert _until(failed), "the broken file was not reported"
        assert _query(client, "select sum(n) as s from lake.b") == {"s": [5]}
        assert service.health.check_now()
        client.close()


def test_in_flight_query_keeps_its_catalog_during_reload(tmp_path: Path) -> None:
    rows = "".join(f"{i}\n" for i in range(200_000))
    catalog = _catalog(tmp_path / "catalog", {"big": rows})
    with running_server(catalog=catalog, reload_interval=0) as service:
        client = flight.connect(f"grpc://127.0.0.1:{service.port}")
        descriptor = flight.FlightDescriptor.for_command(
            pack(sql_pb2.CommandStatementQuery(query="select n from lake.big"))
        )
        info = client.get_flight_info(descriptor)
        reader = client.do_get(info.endpoints[0].ticket)
        received = reader.read_chunk().data.num_rows
        _catalog(catalog, {"other": "1\n"})  # big disappears from the catalog
        assert service.reload()
        while True:
            try:
                received += reader.read_chunk().data.num_rows
            except StopIteration:
                break
        assert received == 200_000
        assert not _sees(client, "big")
        assert _query(client, "select n from lake.other") == {"n": [1]}
        client.close()


@pytest.mark.timeout(120)
def test_sighup_reloads(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path / "catalog", {"a": "1\n"})
    lines: list[str] = []
    with server_process(
        "--catalog", str(catalog), "--reload-interval", "0", output_lines=lines
    ) as (proc, port):
        client = flight.connect(f"grpc://127.0.0.1:{port}")
        _catalog(catalog, {"a": "1\n", "c": "7\n"})
        time.sleep(0.2)
        assert not _sees(client, "c"), "reloaded without SIGHUP although the watch is off"
        proc.send_signal(signal.SIGHUP)
        assert _until(lambda: _sees(client, "c")), "SIGHUP did not reload"
        client.close()
    messages = [json.loads(line).get("msg") for line in lines if line.startswith("{")]
    assert "reloaded" in messages
