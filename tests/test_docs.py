"""The docs stay true: the README's configuration table is what the CLI prints, and every shell
and Python snippet in README.md and docs/*.md runs as written against a real server."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner

from flightsql_srv.cli import main
from flightsql_srv.config import ENV_PREFIX
from flightsql_srv.health import check
from tests.conftest import ROOT, free_port


def test_readme_config_table_matches_cli() -> None:
    printed = CliRunner().invoke(main, ["config-reference"]).output.strip()
    readme = (ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- config-reference:start -->\n(.*?)\n<!-- config-reference:end -->", readme, re.S
    )
    assert block is not None, "README lost its config-reference markers"
    assert block.group(1).strip() == printed, "run: flightsql-srv config-reference"


def test_readme_quickstart_has_both_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "flightsql-srv serve" in readme
    assert ".venv/bin/python -m pytest" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest" in ci


# -- every shell and Python snippet, run as written ----------------------------------------------
#
# A fresh copy of the tracked files and a venv built only by the install lines the README gives;
# the Quickstart's server snippet runs in the background, then every other snippet runs against
# it. Ports are the only thing changed: the documented 50051/50052/9464 become free ports, so
# the test runs beside anything else. A snippet marked <!-- docs-test: skip: reason --> is
# reported with its reason (tests/test_docs.py::test_skipped_snippets_say_why).

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(
    r"(?:<!-- docs-test: (?P<mark>[^>]*?) -->\n)?```(?P<lang>sh|python)\n(?P<body>.*?)```", re.S
)


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int
    lang: str
    body: str
    mark: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def snippets() -> list[Snippet]:
    found = []
    for path in DOCS:
        text = path.read_text()
        for m in _FENCE.finditer(text):
            line = text.count("\n", 0, m.start("lang")) + 1
            found.append(Snippet(path, line, m["lang"], m["body"], m["mark"] or ""))
    return found


def test_skipped_snippets_say_why() -> None:
    marks = {s.mark for s in snippets()} - {""}
    for mark in marks:
        assert mark in ("server", "continues", "after-server") or re.fullmatch(
            r"skip: .{15,}", mark
        ), f"unknown or unexplained docs-test mark {mark!r}"
    skipped = [s for s in snippets() if s.mark.startswith("skip")]
    assert len(skipped) <= 10, "keep the skipped snippets few: " + ", ".join(s.id for s in skipped)


@pytest.fixture(scope="session")
def docs_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tracked files only (a fresh clone's content), without a venv."""
    clone = tmp_path_factory.mktemp("clone")
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, clone / rel)
    return clone


def _ported(text: str, ports: dict[str, int]) -> str:
    return re.sub(r"\b(50051|50052|9464)\b", lambda m: str(ports[m.group()]), text)


@pytest.fixture(scope="session")
def docs_server(docs_clone: Path) -> Iterator[tuple[Path, dict[str, int], dict[str, str]]]:
    """The Quickstart's server snippet, run as written (it builds .venv), in the background."""
    (server,) = [s for s in snippets() if s.mark == "server"]
    ports = {"50051": free_port(), "50052": free_port(), "9464": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.pop("VIRTUAL_ENV", None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(
        FLIGHTSQL_SRV_PORT=str(ports["50051"]),
        FLIGHTSQL_SRV_HEALTH_PORT=str(ports["50052"]),
        FLIGHTSQL_SRV_METRICS_PORT=str(ports["9464"]),
    )
    log = docs_clone / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", server.body],
            cwd=docs_clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 540  # pip installs the dependencies first
        while True:
            assert proc.poll() is None, f"{server.id} exited: {log.read_text()[-3000:]}"
            try:
                if check("127.0.0.1", ports["50052"], "", 2.0) == "SERVING":
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        for install in _installs():  # what the text says to install, in its order
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", install.body],
                cwd=docs_clone,
                env=env,
                capture_output=True,
                text=True,
                timeout=540,
            )
            assert result.returncode == 0, f"{install.id}: {result.stdout}{result.stderr}"
        yield docs_clone, ports, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _installs() -> list[Snippet]:
    """Unmarked shell snippets that only install (run by the fixture, before the others)."""
    return [
        s
        for s in snippets()
        if s.lang == "sh"
        and not s.mark
        and re.fullmatch(r"\.venv/bin/pip install [^\n&;|]*\n", s.body)
    ]


def _runnable() -> list[Any]:
    params = []
    previous: Snippet | None = None
    for s in snippets():
        body = s.body
        if s.mark == "continues":
            assert previous is not None and previous.lang == s.lang, s.id
            body = _indent_into(previous.body, body)
        previous = s
        if s.mark == "server" or s in _installs():
            continue
        marks = (
            [pytest.mark.skip(reason=s.mark[len("skip: ") :])] if s.mark.startswith("skip") else []
        )
        params.append(pytest.param(s.lang, body, id=s.id, marks=marks))
    return params


def _indent_into(first: str, then: str) -> str:
    """A snippet that continues one ending in a ``with`` block runs inside that block."""
    lines = first.rstrip("\n").split("\n")
    last = lines[-1]
    indent = last[: len(last) - len(last.lstrip())]
    return first + "".join(indent + line + "\n" if line else "\n" for line in then.split("\n"))


@pytest.mark.parametrize(("lang", "body"), _runnable())
def test_snippet_runs(
    lang: str, body: str, docs_server: tuple[Path, dict[str, int], dict[str, str]]
) -> None:
    clone, ports, env = docs_server
    body = _ported(body, ports)
    if lang == "python":
        argv = [str(clone / ".venv" / "bin" / "python"), "-c", body]
    else:
        argv = ["bash", "-euo", "pipefail", "-c", body]
    result = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
