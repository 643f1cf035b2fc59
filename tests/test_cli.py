"""The ``flightsql-srv`` command line: bad settings exit 2 with a useful message; serve works."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq
import pytest

from flightsql_srv.config import ENV_PREFIX, ConfigError, Settings, load_settings
from tests.conftest import ROOT, free_port, server_process
from tests.helpers import assert_flight_error, serve_subprocess

#: Every run is bounded; a server that starts by mistake is killed after this.
RUN_TIMEOUT = 30.0


def _clean_env(**extra: str) -> dict[str, str]:
    """The test environment without any FLIGHTSQL_SRV_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return {**env, **extra}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flightsql_srv", *args],
        cwd=ROOT,
        env=env if env is not None else _clean_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def _serve_fails(*args: str, env: dict[str, str] | None = None) -> str:
    """Run ``serve`` expecting exit code 2; return its stderr."""
    result = _cli("serve", *args, env=env)
    assert result.returncode == 2, (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    assert "Traceback" not in result.stderr
    return result.stderr


def _free_ports() -> list[str]:
    return ["--health-port", "0", "--metrics-port", "-1"]


# -- bad settings ----------------------------------------------------------------------


def test_bad_port_flag() -> None:
    err = _serve_fails("--port", "abc")
    assert "--port" in err and "abc" in err


def test_config_file_unknown_key(tmp_path: Path) -> None:
    config = tmp_path / "srv.toml"
    config.write_text('colour = "blue"\n')
    err = _serve_fails("--config", str(config), "--port", "0", *_free_ports())
    assert str(config) in err and "colour" in err


@pytest.mark.parametrize(
    ("line", "key"),
    [
        pytest.param('port = "abc"', "port", id="port-string"),
        pytest.param('ticket_ttl = "soon"', "ticket_ttl", id="ttl-string"),
        pytest.param("host = 5", "host", id="host-integer"),
        pytest.param("port = 1.5", "port", id="port-float"),
    ],
)
def test_config_file_wrong_type(tmp_path: Path, line: str, key: str) -> None:
    config = tmp_path / "srv.toml"
    port = "" if key == "port" else "port = 0\n"  # if it started by mistake: no clash
    config.write_text(f"{line}\n{port}health_port = 0\nmetrics_port = -1\n")
    err = _serve_fails("--config", str(config))
    assert str(config) in err, f"the message does not name the file: {err}"
    assert key in err


def test_config_file_missing(tmp_path: Path) -> None:
    err = _serve_fails("--config", str(tmp_path / "nope.toml"))
    assert "nope.toml" in err


def test_config_file_not_toml(tmp_path: Path) -> None:
    config = tmp_path / "srv.toml"
    config.write_text("port = = 3\n")
    err = _serve_fails("--config", str(config))
    assert str(config) in err and "TOML" in err


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("PORT", "abc", id="port"),
        pytest.param("TICKET_TTL", "forever", id="ticket-ttl"),
        pytest.param("LOG_LEVEL", "verbose", id="log-level"),
    ],
)
def test_bad_environment_variable(name: str, value: str) -> None:
    variable = ENV_PREFIX + name
    port = [] if name == "PORT" else ["--port", "0"]  # a flag would hide the variable
    err = _serve_fails(*port, *_free_ports(), env=_clean_env(**{variable: value}))
    assert variable in err, f"the message does not name {variable}: {err}"
    assert value in err


@pytest.mark.parametrize("source", ["flag", "env", "file"])
def test_value_refused_after_parsing_names_its_source(tmp_path: Path, source: str) -> None:
    """A value that parses but Settings refuses (memory_limit 'lots') is traced to where it
    was given: the flag, the variable or the file's key."""
    config = tmp_path / "srv.toml"
    config.write_text('memory_limit = "lots"\n')
    args, env, where = {
        "flag": (["--memory-limit", "lots"], _clean_env(), "(set by --memory-limit)"),
        "env": (
            [],
            _clean_env(FLIGHTSQL_SRV_MEMORY_LIMIT="lots"),
            "(set by environment variable FLIGHTSQL_SRV_MEMORY_LIMIT)",
        ),
        "file": (
            ["--config", str(config)],
            _clean_env(),
            f"(set by key 'memory_limit' of config file {config})",
        ),
    }[source]
    err = _serve_fails(*args, "--port", "0", *_free_ports(), env=env)
    assert re.search(
        r"^Error: setting 'memory_limit' must be like .*, got 'lots' " + re.escape(where) + "$",
        err,
        re.M,
    ), err


def test_clashing_ports_name_both_settings() -> None:
    err = _serve_fails("--port", "9464", "--health-port", "0")
    assert "settings 'port' and 'metrics_port' are both 9464" in err, err
    assert "(set by --port)" in err


def test_config_reference_lists_the_config_file() -> None:
    reference = _cli("config-reference").stdout
    assert "| (the file itself) | `--config` | `FLIGHTSQL_SRV_CONFIG` |" in reference


# -- ports taken ---------------------------------------------------------------------------


def _taken_message(host_port: str, what: str, setting: str) -> str:
    flag = "--" + setting.replace("_", "-")
    return (
        f"Error: cannot listen on {host_port} for the {what} port (address already in use): "
        f"another process (another flightsql-srv?) holds it. Choose another port with "
        f"{flag} / {ENV_PREFIX}{setting.upper()}"
    )


def test_second_server_with_the_same_ports_names_each_port_and_flag() -> None:
    """Two servers with the same settings (as two with the defaults): the second exits 2
    naming the first port it cannot have (in the order they are bound: metrics, Flight SQL,
    health), its flag, and the other ports also taken; with that one changed, the next.
    Then the health port is refused too, not shared (gRPC's SO_REUSEPORT would let both
    bind it)."""
    health, metrics = free_port(), free_port()
    ports = ["--health-port", str(health), "--metrics-port", str(metrics)]
    with server_process(*ports) as (_, port):
        err = _serve_fails("--port", str(port), *ports)
        expected = _taken_message(f"127.0.0.1:{metrics}", "metrics", "metrics_port")
        assert f"{expected}, or -1 to turn metrics off; also in use: " in err, err
        assert err.rstrip().endswith(
            f"; also in use: {port} (--port / {ENV_PREFIX}PORT), "
            f"{health} (--health-port / {ENV_PREFIX}HEALTH_PORT)"
        ), err
        err = _serve_fails("--port", str(port), *ports[:2], "--metrics-port", "0")
        assert _taken_message(f"127.0.0.1:{port}", "Flight SQL", "port") in err, err
        assert err.rstrip().endswith(
            f"also in use: {health} (--health-port / {ENV_PREFIX}HEALTH_PORT)"
        ), err
        err = _serve_fails("--port", "0", *ports[:2], "--metrics-port", "0")
        assert _taken_message(f"127.0.0.1:{health}", "gRPC health", "health_port") in err, err


def test_port_taken_by_another_program(tmp_path: Path) -> None:
    """Not a flightsql-srv: a plain listening socket on the Flight port, set by variable."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        err = _serve_fails(*_free_ports(), env=_clean_env(FLIGHTSQL_SRV_PORT=str(port)))
    assert _taken_message(f"127.0.0.1:{port}", "Flight SQL", "port") in err, err
    assert "RuntimeError" not in err and "Server did not start properly" not in err


def _catalog(tmp_path: Path, table: str) -> Path:
    directory = tmp_path / "catalog"
    directory.mkdir()
    pq.write_table(pa.table({"x": [1], "t": ["not a time"]}), tmp_path / "ok.parquet")
    (directory / "sales.toml").write_text(f"[tables.broken]\n{table}\n")
    return directory


@pytest.mark.parametrize(
    "table",
    [
        pytest.param('source = "missing.parquet"\nformat = "parquet"', id="missing-source"),
        pytest.param('source = "../ok.parquet"\nformat = "excel"', id="bad-format"),
        pytest.param('source = "../ok.parquet"', id="no-format"),
        pytest.param(
            'source = "../ok.parquet"\nformat = "parquet"\ntime_column = "t"',
            id="time-column-not-timestamp",
        ),
        pytest.param(
            'source = "../ok.parquet"\nformat = "parquet"\ntime_column = "when"',
            id="time-column-missing",
        ),
        pytest.param('source = "../ok.parquet"\nformat = "parquet"\nsize = 3', id="unknown-key"),
        pytest.param('sql = "select * from nowhere"', id="view-does-not-plan"),
    ],
)
def test_broken_catalog(tmp_path: Path, table: str) -> None:
    directory = _catalog(tmp_path, table)
    err = _serve_fails("--catalog", str(directory), "--port", "0", *_free_ports())
    assert str(directory / "sales.toml") in err, f"the message does not name the file: {err}"
    assert "broken" in err, f"the message does not name the table: {err}"
    assert "got None" not in err, err


def test_corrupt_parquet_names_file_and_table(tmp_path: Path) -> None:
    directory = _catalog(tmp_path, 'source = "../junk.parquet"\nformat = "parquet"')
    (tmp_path / "junk.parquet").write_bytes(b"this is not parquet")
    err = _serve_fails("--catalog", str(directory), "--port", "0", *_free_ports())
    assert str(directory / "sales.toml") in err and "broken" in err


# -- precedence --------------------------------------------------------------------------


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    config = tmp_path / "srv.toml"
    config.write_text("port = 1111\nbatch_size = 100\nticket_ttl = 5\ncatalog = 'here'\n")
    env = {ENV_PREFIX + "PORT": "2222", ENV_PREFIX + "BATCH_SIZE": "200"}

    from_file = load_settings({}, {}, config)
    assert (from_file.port, from_file.batch_size, from_file.ticket_ttl) == (1111, 100, 5.0)
    assert from_file.catalog == tmp_path / "here"  # relative to the file

    from_env = load_settings({"port": None}, env, config)
    assert (from_env.port, from_env.batch_size, from_env.ticket_ttl) == (2222, 200, 5.0)

    from_flags = load_settings({"port": 3333, "batch_size": None}, env, config)
    assert (from_flags.port, from_flags.batch_size, from_flags.ticket_ttl) == (3333, 200, 5.0)


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    config = tmp_path / "srv.toml"
    config.write_text("port = 4444\n")
    settings = load_settings({}, {ENV_PREFIX + "CONFIG": str(config)})
    assert settings.port == 4444
    assert settings.config == config


def test_load_settings_errors_name_their_source(tmp_path: Path) -> None:
    assert_flight_error(
        lambda: load_settings({}, {ENV_PREFIX + "PORT": "x"}), ConfigError, ENV_PREFIX + "PORT"
    )
    config = tmp_path / "srv.toml"
    config.write_text("nope = 1\n")
    assert_flight_error(lambda: load_settings({}, {}, config), ConfigError, r"srv\.toml.*nope")


@contextmanager
def _serve_with_config(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flightsql_srv", "serve", "--config", str(config)],
            cwd=ROOT,
            env=_clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait_for_query(uri: str, proc: subprocess.Popen[Any], log: Path) -> list[tuple[Any, ...]]:
    """Poll (bounded) until ``select 1`` answers; fail early if the server exits."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {log.read_text()}")
        try:
            with flight.connect(uri) as probe:
                probe.wait_for_available(timeout=0.5)
            with adbc.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
                cur.execute("select 1 as x")
                rows: list[tuple[Any, ...]] = cur.fetchall()
                return rows
        except (flight.FlightError, OSError, adbc.Error):
            if time.monotonic() > deadline:
                pytest.fail(f"server did not answer in {RUN_TIMEOUT}s: {log.read_text()}")
            time.sleep(0.1)


def test_config_file_values_are_used(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "cat").mkdir()
    config = tmp_path / "srv.toml"
    config.write_text(
        f'port = {port}\nhealth_port = 0\nmetrics_port = -1\ncatalog = "cat"\n'
        'ticket_secret = "from-file"\nlog_format = "text"\n'
    )
    log = tmp_path / "server.log"
    with _serve_with_config(config, log) as proc:
        assert _wait_for_query(f"grpc://127.0.0.1:{port}", proc, log) == [(1,)]
    assert "from-file" not in log.read_text(), "the secret must never be logged"


# -- reference and end to end ----------------------------------------------------------


def test_config_reference_lists_every_setting() -> None:
    reference = _cli("config-reference")
    assert reference.returncode == 0, reference.stderr
    help_text = _cli("serve", "--help").stdout
    for f in dataclasses.fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        variable = ENV_PREFIX + f.name.upper()
        if f.name == "auth":  # a TOML section, documented in the README's Authentication
            continue
        assert flag in help_text, f"serve has no {flag}"
        if f.name == "config":  # the file itself is not a key of the file
            assert variable in help_text
            continue
        assert f"`{f.name}`" in reference.stdout, f"{f.name} missing from config-reference"
        assert f"`{flag}`" in reference.stdout
        assert f"`{variable}`" in reference.stdout


def test_serve_end_to_end(tmp_path: Path, record_property: pytest.RecordProperty) -> None:
    started = time.monotonic()
    with serve_subprocess(env={ENV_PREFIX + "TICKET_SECRET": "e2e"}) as (_, port, output):
        uri = f"grpc://127.0.0.1:{port}"
        with adbc.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("select 1 as x")
            assert cur.fetchall() == [(1,)]
            startup = time.monotonic() - started
            cur.execute("select count(*) from demo.metrics")
            assert cur.fetchall()[0][0] > 0
    record_property("startup_s", startup)
    print(f"\nserve: Popen to first answered query in {startup:.2f}s")
    assert startup < 10, f"startup took {startup:.1f}s"
    assert any('"serving"' in line for line in output), "no 'serving' log line"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("192MiB", 192 * 2**20), ("1GB", 10**9), ("unlimited", None), ("0", None)],
)
def test_worker_recycle_memory_is_a_size(value: str, expected: int | None) -> None:
    assert Settings(worker_recycle_memory=value).worker_recycle_bytes == expected


def test_worker_recycle_memory_refuses_a_share() -> None:
    with pytest.raises(ConfigError, match=r"'worker_recycle_memory' must be like '192MiB'"):
        Settings(worker_recycle_memory="50%")
