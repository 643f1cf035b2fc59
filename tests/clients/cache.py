"""Clients that cannot live in the test venv, installed into ``.cache/clients``.

A Python client whose pins fight ours (flightsql-dbapi wants SQLAlchemy 1.4) gets a venv of
its own, and the npm clients a ``node_modules`` of their own; both are built once, reused
while what they were built from is unchanged, and never touch anything outside the cache.
Each build is bounded in time and fails with the installer's last words, never skips.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT

__all__ = ["CACHE", "python_client", "npm_clients"]

#: Git- and docker-ignored, like .cache/nginx.
CACHE = ROOT / ".cache" / "clients"
#: Seconds one build may take (pytest's timeout is 300 s per test, set-up included).
_BUDGET = 240.0


def python_client(name: str, requirements: list[str]) -> Path:
    """The ``python`` of a venv under :data:`CACHE` holding ``requirements``."""
    home = CACHE / name
    python = home / "bin" / "python"

    def build(deadline: float) -> None:
        _run([sys.executable, "-m", "venv", "--clear", str(home)], deadline)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        _run([*pip, *requirements], deadline)

    _cached(home, requirements, build)
    return python


def npm_clients(name: str, packages: list[str]) -> Path:
    """A directory under :data:`CACHE` whose ``node_modules`` holds ``packages``."""
    home = CACHE / name

    def build(deadline: float) -> None:
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        (home / "package.json").write_text('{"private": true}\n')
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("the npm clients need node and npm on PATH")
        _run(
            [npm, "install", "--prefix", str(home), "--no-audit", "--no-fund", *packages],
            deadline,
        )

    _cached(home, packages, build)
    return home


def _cached(home: Path, spec: list[str], build: Callable[[float], None]) -> None:
    """Build ``home`` unless its stamp says it was built from ``spec``; one build at a time."""
    stamp = home.with_suffix(".built")
    wanted = json.dumps(spec)
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs share the cache
        if stamp.exists() and stamp.read_text() == wanted and home.is_dir():
            return
        stamp.unlink(missing_ok=True)
        build(time.monotonic() + _BUDGET)
        stamp.write_text(wanted)


def _run(argv: list[str], deadline: float) -> None:
    left = deadline - time.monotonic()
    try:
        subprocess.run(
            argv, capture_output=True, text=True, check=True, timeout=max(left, 1.0), cwd=CACHE
        )
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or exc.stdout or "").strip().splitlines()[-5:]
        raise RuntimeError(f"{argv[0]} exited {exc.returncode}: " + "\n".join(last)) from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{' '.join(argv[:3])} took more than {_BUDGET:.0f} s") from None
