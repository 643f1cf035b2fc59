"""Debian's nginx for the scale-out tests: found or unpacked; configured from the shipped
deploy/nginx/nginx.conf; run in the foreground on loopback; always stopped.

nginx is not on a fresh machine, and the tests must run from a fresh clone with only Python,
without changing the machine they run on. So :func:`obtain_nginx` uses an nginx that is
already installed (``.ci/run`` installs Debian's package when it runs as root), else fetches
Debian's package into a cache in the work tree (``.cache/nginx``): ``apt-get update`` into
package lists of its own there (the system's lists are only read), ``apt-get download`` and
``dpkg-deb -x``, all as the calling user. Nothing is installed and nothing outside the cache
is written. It never skips: without nginx the caller fails with what was tried.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT, free_port

__all__ = ["NGINX_CONF", "Balancer", "obtain_nginx", "render_config", "running_nginx"]

#: The example config that ships with the project; the tests run exactly this file.
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
#: Where a downloaded nginx is unpacked and kept between runs (git- and docker-ignored).
CACHE = ROOT / ".cache" / "nginx"
_UNPACKED = CACHE / "root" / "usr" / "sbin" / "nginx"
#: All apt-get runs of one attempt to get nginx share this many seconds (pytest's own
#: timeout is 300 s per test, set-up included).
_APT_BUDGET = 200.0
_APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def find_nginx() -> Path | None:
    """An nginx binary that is already there: on PATH, Debian's path, or our cache."""
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx", str(_UNPACKED)):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def obtain_nginx() -> Path:
    """Find nginx, or fetch and unpack Debian's package into :data:`CACHE`; raise with the
    reason when neither works."""
    found = find_nginx()
    if found is not None:
        return found
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one download at a time (parallel test runs)
        found = find_nginx()
        if found is not None:
            return found
        try:
            return _unpack_download(time.monotonic() + _APT_BUDGET)
        except (subprocess.SubprocessError, OSError) as exc:
            reason = _reason(exc)
    raise RuntimeError(
        "the scale-out tests need nginx (Debian's package) and could not get it: apt-get "
        f"update + download into {CACHE} + dpkg-deb -x failed ({reason}). Install it with "
        "apt-get install -y nginx (.ci/run does when run as root), or put nginx on PATH"
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, subprocess.CalledProcessError):
        output = (exc.stderr or exc.stdout or "").strip().splitlines()
        return f"exit {exc.returncode}: {output[-1] if output else ''}"
    return str(exc)


def _apt(*args: str, deadline: float, cwd: Path | None = None) -> None:
    """apt-get with package lists and archives of its own under :data:`CACHE`."""
    remaining = deadline - time.monotonic()
    if remaining <= 1:
        raise subprocess.TimeoutExpired(["apt-get", *args], 0)
    private = [
        "-o", f"Dir::State::Lists={CACHE / 'lists'}",
        "-o", f"Dir::Cache={CACHE / 'apt-cache'}",
        "-o", "Debug::NoLocking=1",  # our lists, our lock (the flock above)
    ]  # fmt: skip
    if os.geteuid() == 0:
        private += ["-o", "APT::Sandbox::User=root"]  # the cache is root's: no _apt drop
    subprocess.run(
        ["apt-get", "-q", *private, *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=remaining,
        env=_APT_ENV,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def _unpack_download(deadline: float) -> Path:
    """Neither step needs root; the binary runs from wherever it is unpacked (every path it
    needs is given on the command line or in the rendered config)."""
    for sub in ("lists/partial", "apt-cache/archives/partial"):
        (CACHE / sub).mkdir(parents=True, exist_ok=True)
    download = Path(tempfile.mkdtemp(dir=CACHE))
    try:
        _apt("update", deadline=deadline)
        _apt("download", "nginx", cwd=download, deadline=deadline)
        (deb,) = download.glob("nginx_*.deb")
        staging = download / "root"
        subprocess.run(
            ["dpkg-deb", "-x", str(deb), str(staging)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        shutil.rmtree(CACHE / "root", ignore_errors=True)
        staging.rename(CACHE / "root")  # whole or not at all
    finally:
        shutil.rmtree(download, ignore_errors=True)
    # Fail here, clearly, if a shared library it links is missing on this machine.
    subprocess.run([str(_UNPACKED), "-v"], check=True, capture_output=True, timeout=10)
    return _UNPACKED


# -- configuration ------------------------------------------------------------------------------

_MARK = re.compile(r"#\s*\(test: ([^)]*)\)")
_PATH = re.compile(r"/[^\s;]+")


def render_config(
    template: str, *, listen_port: int, replica_ports: list[int], prefix: Path
) -> str:
    """The shipped config with the lines marked ``(test: ...)`` pointed at this test's
    loopback ports and files under ``prefix``; everything else is left exactly as shipped.

    Raises:
        AssertionError: a marked line the test relies on is missing or changed shape.
    """
    seen: dict[str, int] = {}
    out: list[str] = []
    for line in template.splitlines():
        mark = _MARK.search(line)
        if mark is None:
            out.append(line)
            continue
        kind = mark.group(1).split(",")[0].strip()
        seen[kind] = seen.get(kind, 0) + 1
        if kind.startswith("dropped"):
            # Root's workers would otherwise run as "nobody", which cannot enter pytest's
            # private temp directory; other users cannot switch user at all.
            out.append("user root;" if os.geteuid() == 0 else "")
        elif kind in ("pid", "error_log", "access_log", "temp path"):
            line, count = _PATH.subn(lambda m: str(prefix / Path(m.group()).name), line, 1)
            assert count == 1, f"no path on the marked line {line!r}"
            out.append(line)
        elif kind == "listen":
            assert re.search(r"\blisten 50051\b", line), line
            out.append(line.replace("listen 50051", f"listen 127.0.0.1:{listen_port}"))
        elif kind == "replica":
            if seen[kind] == 1:  # the first replica line stands for all of ours
                for port in replica_ports:
                    out.append(re.sub(r"server \S+:50051", f"server 127.0.0.1:{port}", line))
        else:
            raise AssertionError(f"unknown test mark {kind!r} in {line!r}")
    expected = {"dropped": 1, "pid": 1, "error_log": 1, "access_log": 1, "temp path": 5}
    for kind, count in expected.items():
        assert seen.get(kind, 0) == count, f"{NGINX_CONF}: {kind!r} lines changed: {seen}"
    assert seen.get("listen") == 1 and seen.get("replica", 0) >= 1, seen
    return "\n".join(out) + "\n"


# -- process ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Balancer:
    """A running nginx in front of the replicas."""

    process: subprocess.Popen[str]
    port: int
    prefix: Path

    @property
    def uri(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> Path:
        return self.prefix / "flightsql-error.log"

    def log_text(self) -> str:
        """The error log so far (connect failures and retries are logged there)."""
        try:
            return self.error_log.read_text()
        except FileNotFoundError:
            return ""


@contextmanager
def running_nginx(
    replica_ports: list[int], prefix: Path, ready_timeout: float = 15.0
) -> Iterator[Balancer]:
    """nginx in the foreground, balancing gRPC over ``replica_ports``; stopped at the end."""
    binary = obtain_nginx()
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        render_config(
            NGINX_CONF.read_text(), listen_port=port, replica_ports=replica_ports, prefix=prefix
        )
    )
    cmd = [str(binary), "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "startup.log")]
    check = subprocess.run([*cmd, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, f"nginx -t refused the rendered config:\n{check.stderr}"
    # Its own session (process group), so teardown can reach workers a stuck master left.
    stderr = open(prefix / "stderr.log", "w")  # a file, not a pipe: a full pipe blocks nginx
    process = subprocess.Popen(
        [*cmd, "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )
    stderr.close()  # the child holds its own copy
    balancer = Balancer(process, port, prefix)
    try:
        _wait_listening(balancer, ready_timeout)
        yield balancer
    finally:
        _stop(process)
        print(f"--- nginx error log ---\n{balancer.log_text()}")  # shown when a test fails


def _wait_listening(balancer: Balancer, timeout: float) -> None:
    # The master binds before it forks workers, and connections made in between wait in the
    # backlog, so an accepted TCP connection means calls will be served.
    deadline = time.monotonic() + timeout
    while True:
        if balancer.process.poll() is not None:
            stderr = (balancer.prefix / "stderr.log").read_text()
            raise RuntimeError(f"nginx exited with {balancer.process.returncode}: {stderr}")
        try:
            with socket.create_connection(("127.0.0.1", balancer.port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nginx did not listen in {timeout} s") from None
            time.sleep(0.05)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()  # fast shutdown: the master stops its workers, then exits
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        # The master is still there, so its process group is still ours to end.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
