"""roapi (a Rust, DataFusion-based server) as a subprocess: the peer we compare against, in
its default mode (tables loaded into memory at startup) and in file mode
(``use_memory_table=false``: Parquet read on every query, as our server does).

The suite never installs it: :func:`find_binary` looks next to the running interpreter (where
``pip install roapi`` / the ``bench`` extra puts it) and on ``PATH``, and the report says
"not installed" when it is missing. Only its Flight SQL port is used; the HTTP and Postgres
listeners it always opens are bound to free loopback ports.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import adbc_driver_flightsql.dbapi as adbc

from bench.server import ServerProcess, free_ports, supervised

__all__ = ["find_binary", "version", "running_roapi"]


def find_binary(explicit: str | None = None) -> str | None:
    """The roapi executable: ``explicit`` if given (``None`` when it does not exist), else the
    one beside ``sys.executable``, else ``roapi`` on ``PATH``."""
    if explicit is not None:
        return explicit if Path(explicit).is_file() else shutil.which(explicit)
    beside = Path(sys.executable).with_name("roapi")
    return str(beside) if beside.is_file() else shutil.which("roapi")


def version(binary: str) -> str:
    """``roapi --version`` output (e.g. ``roapi 0.12.7``), or ``unknown``."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _adbc_probe(server: ServerProcess) -> None:
    # roapi has no ListActions; a real query is the honest readiness check anyway.
    with adbc.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        cur.fetch_arrow_table()


@contextmanager
def running_roapi(
    binary: str, tables: dict[str, Path], memory: bool, ready_timeout: float = 120.0
) -> Iterator[ServerProcess]:
    """Serve ``tables`` (name -> Parquet file or directory), yielding once it answers.

    With ``memory`` roapi runs as users run it by default, loading every table into memory
    before it answers; without, it reads the files on every query (``use_memory_table=false``).
    """
    flight_port, http_port, pg_port = free_ports(3)
    cmd = [
        binary,
        "--addr-flight-sql",
        f"127.0.0.1:{flight_port}",
        "--addr-http",
        f"127.0.0.1:{http_port}",
        "--addr-postgres",
        f"127.0.0.1:{pg_port}",
    ]
    for name, path in tables.items():
        source = path.resolve().as_posix() + ("/" if path.is_dir() else "")
        mode = "" if memory else ",use_memory_table=false"
        cmd += ["-t", f"{name}={source},format=parquet{mode}"]
    label = "roapi" if memory else "roapi-file"
    with tempfile.TemporaryDirectory(prefix="roapi-bench-") as tmp:
        with supervised(label, cmd, flight_port, Path(tmp), _adbc_probe, ready_timeout) as server:
            yield server
