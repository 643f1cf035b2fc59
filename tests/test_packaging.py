"""Packaging and deployment files stay true: the wheel carries what the image needs, the
Dockerfile, compose file and Kubernetes manifests agree with each other and with the server's
settings, and the example auth/catalog/macros files load with the server's own parsers.

Docker and a cluster are not available to the tests; what they would do is checked here as far
as it can be without them: what each container executes is resolved with Docker's, compose's
and Kubernetes' ENTRYPOINT/CMD/command/args rules and run against the built wheel, with the
environment and mounted files it would get, and every manifest is validated against the
Kubernetes API schemas (kubernetes-validate, which bundles them, so no cluster or network).
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pyarrow.flight as flight
import pytest
import yaml
from kubernetes_validate import ValidationError
from kubernetes_validate import latest_version as kubernetes_latest
from kubernetes_validate import validate as validate_manifest

from flightsql_srv.auth.config import parse_auth
from flightsql_srv.auth.passwords import verify_password
from flightsql_srv.catalog import load_catalog
from flightsql_srv.config import ENV_PREFIX, ConfigError, Settings, load_settings, setting_fields
from flightsql_srv.health import check
from flightsql_srv.macros.user import load_user_macros
from flightsql_srv.protocol import pack, sql_pb2
from tests.conftest import ROOT, free_port

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "kubernetes"
AUTH_EXAMPLE = DEPLOY / "auth.example.toml"

FLIGHT_PORT, HEALTH_PORT, METRICS_PORT = 50051, 50052, 9464
EXAMPLE_KEY = "change-me-example-key"
EXAMPLE_PASSWORD = "change-me"
SHUTDOWN_GRACE = Settings().shutdown_grace
#: Names the deploy files may use: one per setting, plus the config-file variable.
ENV_NAMES = {ENV_PREFIX + f.name.upper() for f in setting_fields()} | {ENV_PREFIX + "CONFIG"}


# -- the wheel ---------------------------------------------------------------------------------


def _build_wheel(source: Path, out: Path) -> Path:
    """``pip wheel --no-deps`` (with build isolation, as the Dockerfile's build stage runs it)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--wheel-dir", str(out), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("flightsql_srv-*.whl")
    return wheel


def _dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _docker_ignored(rel: str, patterns: list[str]) -> bool:
    """The subset of .dockerignore matching this repository uses: paths and ``**/name``."""
    parts = rel.split("/")
    for pattern in patterns:
        assert not pattern.startswith("!"), "exceptions are not modelled here"
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts):
                return True
        elif any(
            fnmatch.fnmatchcase("/".join(parts[:i]), pattern.rstrip("/"))
            for i in range(1, len(parts) + 1)
        ):
            return True
    return False


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_wheel(ROOT, tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def extracted_wheel(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    return target


def test_wheel_contents(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        bundled = {
            "flightsql_srv/_bundled/catalog/demo.toml": ROOT / "catalog" / "demo.toml",
            "flightsql_srv/_bundled/macros/examples.toml": ROOT / "macros" / "examples.toml",
        }
        for member, source in bundled.items():
            assert zf.read(member) == source.read_bytes(), member
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
        metadata = zf.read(f"{dist_info}/METADATA").decode()
    assert "flightsql_srv/py.typed" in names
    generated = {p.name for p in (ROOT / "flightsql_srv" / "protocol").glob("*_pb2.py")}
    assert generated >= {"Flight_pb2.py", "FlightSql_pb2.py"}
    for name in generated:
        assert f"flightsql_srv/protocol/{name}" in names
    assert re.search(r"^flightsql-srv = flightsql_srv\.entrypoint:main$", entry_points, re.M)
    assert not {n for n in names if n.startswith(("tests/", "bench/", "deploy/", "docs/"))}
    # Installing the wheel pulls the runtime dependencies only; extras stay behind their marker.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    unconditional = [
        line.split(":", 1)[1].strip()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert sorted(unconditional) == sorted(pyproject["project"]["dependencies"])


def test_docker_context_builds_the_same_wheel(wheel: Path, tmp_path: Path) -> None:
    """The Dockerfile's build stage sees the repository minus .dockerignore: still enough."""
    patterns = _dockerignore_patterns()
    for needed in ("pyproject.toml", "README.md", "flightsql_srv/cli.py", "catalog/demo.toml"):
        assert not _docker_ignored(needed, patterns), needed
    for unwanted in (
        ".venv",
        ".git",
        "tests",
        "bench/.data",
        ".pytest_cache",
        "x/__pycache__",
        ".cache",
    ):
        assert _docker_ignored(unwanted, patterns), unwanted
    context = tmp_path / "context"
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = Path(dirpath).relative_to(ROOT)
        dirnames[:] = [
            d for d in dirnames if not _docker_ignored((rel_dir / d).as_posix(), patterns)
        ]
        for filename in filenames:
            rel = rel_dir / filename
            if not _docker_ignored(rel.as_posix(), patterns):
                (context / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, context / rel)
    from_context = _build_wheel(context, tmp_path / "dist")
    with zipfile.ZipFile(wheel) as a, zipfile.ZipFile(from_context) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())


# -- the Dockerfile ----------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
    assert not pending, "Dockerfile ends inside a continuation line"
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for word, rest in _instructions():
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, rest))
    return stages


def _dockerfile_env() -> dict[str, str]:
    """ENV of the final stage (``KEY=value`` pairs)."""
    env: dict[str, str] = {}
    for word, rest in _stages()[-1]:
        if word == "ENV":
            for pair in rest.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_dockerfile_stages() -> None:
    instructions = _instructions()
    args = dict(rest.split("=", 1) for word, rest in instructions if word == "ARG" and "=" in rest)
    stages = _stages()
    assert len(stages) >= 2, "multi-stage: build the wheel, then install it"
    bases = [stage[0][1].split()[0] for stage in stages]
    images = {re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base) for base in bases}
    assert len(images) == 1, f"every stage on the same base image: {images}"
    (image,) = images
    assert re.fullmatch(r"python:3\.1[1-9][\w.-]*-slim[\w.-]*(@sha256:[0-9a-f]{64})?", image)

    build, final = stages[0], stages[-1]
    build_name = build[0][1].split()[-1]
    assert any(w == "RUN" and "pip wheel --no-deps" in r for w, r in build)
    copies = [r for w, r in final if w in ("COPY", "ADD")]
    assert copies and all(r.startswith(f"--from={build_name} /dist") for r in copies), copies
    (install,) = [r for w, r in final if w == "RUN" and "pip install" in r]
    assert re.search(r"pip install --no-cache-dir \S*/\*\.whl", install)

    user = [r for w, r in final if w == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    useradd = re.search(r"useradd .*--uid (\d+)", install)
    assert useradd, "the final stage creates its user"
    uid = int(useradd.group(1))
    assert user == f"{uid}:{uid}" and uid == 10001

    exposed = {int(p) for w, r in final if w == "EXPOSE" for p in r.split()}
    assert exposed == {FLIGHT_PORT, HEALTH_PORT, METRICS_PORT}
    assert ("STOPSIGNAL", "SIGTERM") in final
    (healthcheck,) = [r for w, r in final if w == "HEALTHCHECK"]
    for option in ("--interval=", "--timeout=", "--start-period=", "--retries="):
        assert option in healthcheck
    assert "CMD" in healthcheck and "flightsql-srv healthcheck" in healthcheck
    assert _image_process() == (["flightsql-srv"], ["serve"]), "exec form: the server is PID 1"


def test_dockerfile_environment() -> None:
    env = _dockerfile_env()
    defaults = Settings()
    assert env["FLIGHTSQL_SRV_HOST"] == "0.0.0.0"
    assert int(env["FLIGHTSQL_SRV_PORT"]) == defaults.port == FLIGHT_PORT
    assert int(env["FLIGHTSQL_SRV_HEALTH_PORT"]) == defaults.health_port == HEALTH_PORT
    assert int(env["FLIGHTSQL_SRV_METRICS_PORT"]) == defaults.metrics_port == METRICS_PORT
    # Unset, so the bare image serves the demo catalog bundled in the wheel.
    for name in ("FLIGHTSQL_SRV_CATALOG", "FLIGHTSQL_SRV_MACROS", "FLIGHTSQL_SRV_TICKET_SECRET"):
        assert name not in env
    image_env = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    # 0.0.0.0 needs auth or an explicit opt-out, as the Dockerfile's comments say.
    with pytest.raises(ConfigError, match="allow-unauthenticated"):
        load_settings({}, image_env)
    assert load_settings({}, {**image_env, "FLIGHTSQL_SRV_ALLOW_UNAUTHENTICATED": "true"})
    settings = load_settings({}, {**image_env, "FLIGHTSQL_SRV_AUTH_FILE": str(AUTH_EXAMPLE)})
    assert settings.auth.enabled


def test_deploy_files_name_real_settings() -> None:
    files = [DOCKERFILE, COMPOSE, AUTH_EXAMPLE, *sorted(K8S.iterdir())]
    for path in files:
        for name in set(re.findall(r"\bFLIGHTSQL_SRV_[A-Z_]*[A-Z]", path.read_text())):
            assert name in ENV_NAMES, f"{path.relative_to(ROOT)}: {name} is not a setting"


@pytest.fixture
def shim(extracted_wheel: Path, tmp_path: Path) -> dict[str, str]:
    """An environment where ``flightsql-srv`` runs the extracted wheel, not the source tree."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "flightsql-srv"
    script.write_text(
        f"#!/bin/sh\nexec {sys.executable} -c "
        '\'import sys; from flightsql_srv.entrypoint import main; sys.argv[0] = "flightsql-srv"; '
        'main()\' "$@"\n'
    )
    script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", PYTHONPATH=str(extracted_wheel))
    return env


# -- what each container executes ----------------------------------------------------------------
#
# The image's ENTRYPOINT/CMD combined with what the compose file and the Kubernetes container
# override, by each tool's documented rules, then run against the installed wheel.


def _exec_form(text: str) -> list[str]:
    """A Dockerfile CMD/ENTRYPOINT argument: the JSON exec form, else the shell form."""
    if text.startswith("["):
        form = json.loads(text)
        assert isinstance(form, list) and all(isinstance(a, str) for a in form), text
        return form
    return ["/bin/sh", "-c", text]


def _image_process() -> tuple[list[str], list[str]]:
    """The final stage's ENTRYPOINT and CMD, as Docker keeps them (the last of each counts)."""
    final = _stages()[-1]
    entry = [r for w, r in final if w == "ENTRYPOINT"]
    cmd = [r for w, r in final if w == "CMD"]
    # Otherwise the base image's would apply (python's CMD is ["python3"]): declare both here.
    assert entry and cmd, "the final stage declares its ENTRYPOINT and CMD"
    if not entry[-1].startswith("["):
        return _exec_form(entry[-1]), []  # a shell-form ENTRYPOINT ignores CMD and arguments
    return _exec_form(entry[-1]), _exec_form(cmd[-1])


def docker_argv(run_args: list[str] | None = None) -> list[str]:
    """``docker run IMAGE [run_args]``: the arguments replace CMD, ENTRYPOINT stays."""
    entrypoint, cmd = _image_process()
    if entrypoint[:2] == ["/bin/sh", "-c"]:
        return entrypoint
    return entrypoint + (cmd if run_args is None else run_args)


def compose_argv(service: dict[str, Any]) -> list[str]:
    """Compose: ``entrypoint:`` replaces ENTRYPOINT and drops the image's CMD; ``command:``
    replaces CMD (a string is split like a shell would, without running one)."""

    def words(value: str | list[str]) -> list[str]:
        return shlex.split(value) if isinstance(value, str) else list(value)

    entrypoint, cmd = _image_process()
    if "entrypoint" in service:
        entrypoint, cmd = words(service["entrypoint"]), []
    if "command" in service:
        cmd = words(service["command"])
    return entrypoint + cmd


def kubernetes_argv(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    """Kubernetes: ``command`` replaces ENTRYPOINT (and drops CMD), ``args`` replaces CMD;
    ``$(VAR)`` expands from the container's environment, ``$$`` is a literal ``$``."""
    entrypoint, cmd = _image_process()
    if "command" in container:
        argv = container["command"] + container.get("args", [])
    else:
        argv = entrypoint + container.get("args", cmd)

    def expand(arg: str) -> str:
        return re.sub(
            r"\$\$|\$\((\w+)\)",
            lambda m: "$" if m.group() == "$$" else env.get(m.group(1), m.group()),
            arg,
        )

    return [expand(a) for a in argv]


def healthcheck_argv(service: dict[str, Any] | None = None) -> list[str]:
    """The Dockerfile's HEALTHCHECK (compose's ``healthcheck.test`` wins), run on its own:
    Docker does not prepend the ENTRYPOINT to it."""
    test = (service or {}).get("healthcheck", {}).get("test")
    if test is not None:
        if isinstance(test, str):
            return ["/bin/sh", "-c", test]
        kind, *rest = test
        assert kind in ("CMD", "CMD-SHELL"), test
        return rest if kind == "CMD" else ["/bin/sh", "-c", rest[0]]
    (healthcheck,) = [r for w, r in _stages()[-1] if w == "HEALTHCHECK"]
    assert healthcheck != "NONE"
    return _exec_form(healthcheck.split(" CMD ", 1)[1])


def test_command_resolution_rules() -> None:
    """The rules above, on the cases that tell them apart."""
    entrypoint, cmd = _image_process()
    assert entrypoint == ["flightsql-srv"] and cmd == ["serve"], "exec form: the server is PID 1"
    assert docker_argv() == ["flightsql-srv", "serve"]
    assert docker_argv(["config-reference"]) == ["flightsql-srv", "config-reference"]
    assert compose_argv({}) == ["flightsql-srv", "serve"]
    assert compose_argv({"command": "serve --port 1"}) == ["flightsql-srv", "serve", "--port", "1"]
    assert compose_argv({"entrypoint": ["sh"]}) == ["sh"]
    assert kubernetes_argv({"args": ["serve"]}, {}) == ["flightsql-srv", "serve"]
    assert kubernetes_argv({"command": ["serve"]}, {}) == ["serve"]
    assert kubernetes_argv({"args": ["$(P)", "$$(P)"]}, {"P": "x"}) == [
        "flightsql-srv",
        "x",
        "$(P)",
    ]
    assert kubernetes_argv({}, {}) == ["flightsql-srv", "serve"]
    assert healthcheck_argv({"healthcheck": {"test": ["CMD", "true"]}}) == ["true"]
    assert healthcheck_argv()[:2] == ["/bin/sh", "-c"]


def _container_env(
    container: dict[str, Any], resources: dict[Any, dict[str, Any]]
) -> dict[str, str]:
    """A Kubernetes container's env: literal values and secretKeyRef lookups."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        secret = resources.get(("Secret", ref["name"]))
        if secret is None:
            assert ref.get("optional"), f"{item['name']}: Secret {ref['name']} does not exist"
            continue
        env[item["name"]] = secret["stringData"][ref["key"]]
    return env


def _kubernetes_files(
    pod: dict[str, Any], container: dict[str, Any], resources: dict[Any, dict[str, Any]], root: Path
) -> dict[str, Path]:
    """Write what each ConfigMap/Secret volume mounts under ``root``: mountPath -> local dir."""
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mapped: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        spec = volumes[mount["name"]]
        if "configMap" in spec:
            source = spec["configMap"]
            content = resources[("ConfigMap", source["name"])]["data"]
        elif "secret" in spec:
            source = spec["secret"]
            content = resources[("Secret", source["secretName"])]["stringData"]
        else:
            continue  # emptyDir: the test's own temp directory stands in
        local = root / mount["name"]
        local.mkdir()
        for item in source["items"]:
            (local / item["path"]).write_text(content[item["key"]])
        mapped[mount["mountPath"]] = local
    return mapped


@pytest.mark.parametrize("kind", ["docker-run", "compose", "kubernetes"])
def test_container_process_serves(
    kind: str, shim: dict[str, str], extracted_wheel: Path, tmp_path: Path
) -> None:
    """What each container would execute (argv, env, mounted files), run against the wheel:
    it must start, turn healthy through its own probe, answer a query and drain on SIGTERM."""
    env = dict(_dockerfile_env())
    headers: list[tuple[bytes, bytes]] = []
    catalog = extracted_wheel / "flightsql_srv" / "_bundled" / "catalog"
    if kind == "docker-run":
        argv = docker_argv()
        probe_argv: list[str] | None = healthcheck_argv()
        env["FLIGHTSQL_SRV_ALLOW_UNAUTHENTICATED"] = "true"  # as the Dockerfile's example runs it
    elif kind == "compose":
        service = _compose()["services"]["flightsql-srv"]
        argv = compose_argv(service)
        probe_argv = healthcheck_argv(service)
        for key, value in service["environment"].items():
            # ${NAME:-default} with NAME unset in the shell that runs compose.
            env[key] = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
    else:
        resources = _resources()
        pod = _pod(resources)
        container = _container(pod)
        env.update(_container_env(container, resources))
        argv = kubernetes_argv(container, env)
        probe_argv = None  # the kubelet's grpc: probe, below
        mounted = _kubernetes_files(pod, container, resources, tmp_path)
        for key, value in env.items():
            for mount_path, local in mounted.items():
                if value == mount_path or value.startswith(mount_path + "/"):
                    env[key] = str(local) + value[len(mount_path) :]
        catalog = Path(env["FLIGHTSQL_SRV_CATALOG"])
        headers = [(b"authorization", f"Bearer {EXAMPLE_KEY}".encode())]
        assert {p["grpc"]["port"] for p in (container[n] for n in _PROBES)} == {HEALTH_PORT}
    port, health_port, metrics_port = free_port(), free_port(), free_port()
    assert int(env["FLIGHTSQL_SRV_PORT"]) == FLIGHT_PORT
    assert int(env["FLIGHTSQL_SRV_HEALTH_PORT"]) == HEALTH_PORT
    env = {**shim, **env}
    assert env["PATH"] == shim["PATH"] and env["PYTHONPATH"] == shim["PYTHONPATH"]
    env.update(
        {
            # Loopback and free ports instead of the image's 0.0.0.0 and fixed ports, so the
            # test exposes nothing and runs beside anything else.
            "FLIGHTSQL_SRV_HOST": "127.0.0.1",
            "FLIGHTSQL_SRV_PORT": str(port),
            "FLIGHTSQL_SRV_HEALTH_PORT": str(health_port),
            "FLIGHTSQL_SRV_METRICS_PORT": str(metrics_port),
            "FLIGHTSQL_SRV_LOG_FORMAT": "json",
            "FLIGHTSQL_SRV_SPILL_DIR": str(tmp_path),
        }
    )

    def healthy() -> bool:
        if probe_argv is None:
            try:
                return check("127.0.0.1", health_port, "", 2.0) == "SERVING"
            except grpc.RpcError:
                return False
        probe = subprocess.run(probe_argv, env=env, capture_output=True, text=True, timeout=30)
        return probe.returncode == 0

    assert shutil.which(argv[0], path=env["PATH"]), f"{kind} would execute {argv}"
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            assert not healthy(), "SERVING before the server started?"
            deadline = time.monotonic() + 60
            while not healthy():
                assert proc.poll() is None, f"{argv} exited: {log_path.read_text()}"
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.3)
            options = flight.FlightCallOptions(headers=headers)
            with flight.connect(f"grpc://127.0.0.1:{port}") as client:
                command = sql_pb2.CommandStatementQuery(query="select count(*) from demo.logs")
                descriptor = flight.FlightDescriptor.for_command(pack(command))
                info = client.get_flight_info(descriptor, options)
                rows = client.do_get(info.endpoints[0].ticket, options).read_all().to_pylist()
            assert list(rows[0].values())[0] > 0
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as page:
                assert b"flightsql_" in page.read()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=SHUTDOWN_GRACE + 15) == 0, log_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    events = [json.loads(line) for line in log_path.read_text().splitlines() if line[:1] == "{"]
    (serving,) = [e for e in events if e["msg"] == "serving"]
    assert Path(serving["catalog"]) == catalog and serving["tables"] == 2
    assert serving["user_macros"] > 0
    assert serving["auth"] is (kind == "kubernetes")


_PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


# -- YAML ----------------------------------------------------------------------------------------


def _documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _resources() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object in deploy/kubernetes by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _documents(path):
            assert isinstance(doc, dict), path.name
            assert isinstance(doc.get("apiVersion"), str) and doc["apiVersion"], path.name
            assert isinstance(doc.get("kind"), str) and doc["kind"], path.name
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} declared twice"
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == "flightsql", key
            found[key] = doc
    return found


# -- Kubernetes ----------------------------------------------------------------------------------


def _pod(resources: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    pod: dict[str, Any] = resources[("Deployment", "flightsql-srv")]["spec"]["template"]
    return pod


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def test_kubernetes_manifest_set() -> None:
    resources = _resources()
    kinds = {kind for kind, _ in resources}
    assert kinds == {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Ingress",
    }
    readme = (K8S / "README.md").read_text()
    for path in K8S.glob("*.yaml"):
        assert f"deploy/kubernetes/{path.name}" in readme, f"README apply order lacks {path.name}"


#: The oldest Kubernetes the manifests are for (native gRPC probes are GA since 1.27) and the
#: newest whose schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_latest())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_match_the_api_schemas(version: str) -> None:
    """Every object against the Kubernetes OpenAPI schemas (bundled, offline), strictly:
    an unknown or misspelt field fails, as ``kubectl apply --validate=strict`` would."""
    count = 0
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _documents(path):
            try:
                validate_manifest(doc, version, strict=True)
            except ValidationError as exc:
                pytest.fail(f"{path.relative_to(ROOT)} {doc['kind']}: {exc.message}")
            count += 1
    assert count == len(_resources())


def test_kubernetes_schema_validation_catches_the_old_mistakes() -> None:
    """The validator is not a no-op: a string ``args`` and a misspelt key are refused."""
    deployment = copy.deepcopy(_resources()[("Deployment", "flightsql-srv")])
    _container(_pod({("Deployment", "flightsql-srv"): deployment}))["args"] = "serve"
    with pytest.raises(ValidationError):
        validate_manifest(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    config_map = copy.deepcopy(_resources()[("ConfigMap", "flightsql-srv-catalog")])
    config_map["metadata"]["namspace"] = "flightsql"
    with pytest.raises(ValidationError):
        validate_manifest(config_map, KUBERNETES_VERSIONS[-1], strict=True)


def test_deployment_probes_and_draining() -> None:
    resources = _resources()
    deployment = resources[("Deployment", "flightsql-srv")]
    assert deployment["spec"]["replicas"] == 2
    pod = _pod(resources)
    container = _container(pod)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": HEALTH_PORT, "service": ""}, probe
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"flight": FLIGHT_PORT, "health": HEALTH_PORT, "metrics": METRICS_PORT}

    env = {e["name"]: e for e in container["env"]}
    grace = float(env["FLIGHTSQL_SRV_SHUTDOWN_GRACE"]["value"])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    budget = float(pre_stop[1]) + grace + 5  # + the server's wait for cancelled calls
    assert pod["spec"]["terminationGracePeriodSeconds"] > budget
    assert env["FLIGHTSQL_SRV_HOST"]["value"] == "0.0.0.0"
    assert "FLIGHTSQL_SRV_ALLOW_UNAUTHENTICATED" not in env


def test_deployment_references_exist() -> None:
    resources = _resources()
    pod = _pod(resources)
    container = _container(pod)
    env = {e["name"]: e for e in container["env"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert set(mounts) <= set(volumes)

    secret = resources[
        ("Secret", env["FLIGHTSQL_SRV_TICKET_SECRET"]["valueFrom"]["secretKeyRef"]["name"])
    ]
    for e in container["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["key"] in resources[("Secret", ref["name"])]["stringData"], e["name"]

    def mounted_file(volume: str) -> dict[str, str]:
        """Files a volume puts in the container: path -> content."""
        spec = volumes[volume]
        if "configMap" in spec:
            source, data = spec["configMap"], resources[("ConfigMap", spec["configMap"]["name"])]
            content = data["data"]
        else:
            source = spec["secret"]
            content = resources[("Secret", source["secretName"])]["stringData"]
        files = {}
        for item in source["items"]:
            assert item["key"] in content, f"volume {volume}: no key {item['key']!r}"
            files[f"{mounts[volume]['mountPath']}/{item['path']}"] = content[item["key"]]
        return files

    auth_files = mounted_file("auth")
    assert env["FLIGHTSQL_SRV_AUTH_FILE"]["value"] in auth_files
    assert "ticket-secret" in secret["stringData"]
    for volume, setting in (
        ("catalog", "FLIGHTSQL_SRV_CATALOG"),
        ("macros", "FLIGHTSQL_SRV_MACROS"),
    ):
        assert env[setting]["value"] == mounts[volume]["mountPath"]
        assert mounted_file(volume) and mounts[volume]["readOnly"] is True


def test_deployment_security_and_resources() -> None:
    resources = _resources()
    pod = _pod(resources)
    container = _container(pod)
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and "emptyDir" in {v["name"]: v for v in pod["spec"]["volumes"]}[tmp[0]["name"]]
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert {"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests)
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_service_pdb_hpa() -> None:
    resources = _resources()
    pod_labels = _pod(resources)["metadata"]["labels"]
    deployment = resources[("Deployment", "flightsql-srv")]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = resources[("Service", "flightsql-srv")]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["flight"]["port"] == FLIGHT_PORT and ports["flight"]["targetPort"] == "flight"
    assert ports["flight"]["appProtocol"] in ("kubernetes.io/h2c", "grpc")
    assert ports["metrics"]["port"] == METRICS_PORT
    pdb = resources[("PodDisruptionBudget", "flightsql-srv")]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = resources[("HorizontalPodAutoscaler", "flightsql-srv")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "flightsql-srv"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    (cpu,) = hpa["spec"]["metrics"]
    assert cpu["resource"]["name"] == "cpu"
    assert cpu["resource"]["target"]["averageUtilization"] == 70
    assert "flightsql_queries_running" in (K8S / "hpa.yaml").read_text()


def test_configmaps_load_with_the_server(tmp_path: Path) -> None:
    resources = _resources()
    catalog_dir, macros_dir = tmp_path / "catalog", tmp_path / "macros"
    for directory, name in (
        (catalog_dir, "flightsql-srv-catalog"),
        (macros_dir, "flightsql-srv-macros"),
    ):
        directory.mkdir()
        for key, content in resources[("ConfigMap", name)]["data"].items():
            (directory / key).write_text(content)
    (schema,) = load_catalog(catalog_dir)
    assert schema.name == "demo" and {t.name for t in schema.tables} == {"metrics", "logs"}
    shipped = tomllib.loads((ROOT / "catalog" / "demo.toml").read_text())
    assert tomllib.loads((catalog_dir / "demo.toml").read_text())["tables"] == shipped["tables"]
    assert set(load_user_macros(macros_dir)) == {"hostSeries", "errorRatio", "rangeSeconds"}


# -- auth examples -------------------------------------------------------------------------------


def _check_example_auth(text: str) -> None:
    raw = tomllib.loads(text)
    assert set(raw) == {"auth"}, "an --auth-file holds only [auth]"
    auth = parse_auth(raw["auth"])
    assert auth.enabled
    (key,) = auth.api_keys
    assert key.sha256 == hashlib.sha256(EXAMPLE_KEY.encode()).hexdigest()
    (user,) = auth.users
    assert verify_password(EXAMPLE_PASSWORD, user.password_hash)
    assert auth.roles["logs_only"].allows("demo", "logs")
    assert not auth.roles["logs_only"].allows("demo", "metrics")


def test_auth_example() -> None:
    _check_example_auth(AUTH_EXAMPLE.read_text())
    settings = load_settings({"auth_file": AUTH_EXAMPLE, "host": "0.0.0.0"}, {})
    assert settings.auth.enabled and not settings.allow_unauthenticated


def test_kubernetes_secret_auth() -> None:
    secret = _resources()[("Secret", "flightsql-srv")]
    _check_example_auth(secret["stringData"]["auth.toml"])
    assert "example" in secret["stringData"]["ticket-secret"]


# -- docker compose ------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    (doc,) = _documents(COMPOSE)
    assert isinstance(doc, dict)
    return doc


def _bind_mounts(service: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            yield (COMPOSE.parent / source).resolve(), target


def test_compose_server() -> None:
    server = _compose()["services"]["flightsql-srv"]
    context = (COMPOSE.parent / server["build"]["context"]).resolve()
    assert context == ROOT and (context / server["build"]["dockerfile"]).is_file()
    env = server["environment"]
    assert env["FLIGHTSQL_SRV_TICKET_SECRET"] == "${FLIGHTSQL_SRV_TICKET_SECRET:-change-me}"
    assert env["FLIGHTSQL_SRV_ALLOW_UNAUTHENTICATED"] == "true"
    assert "LOCAL DEMO ONLY" in COMPOSE.read_text()
    published = {p.rsplit(":", 1)[1]: p for p in server["ports"]}
    assert set(published) == {str(FLIGHT_PORT), str(HEALTH_PORT), str(METRICS_PORT)}
    assert all(p.startswith("127.0.0.1:") for p in published.values()), "demo: loopback only"
    assert "healthcheck" not in server, "the image's HEALTHCHECK applies"
    assert int(server["stop_grace_period"].rstrip("s")) > SHUTDOWN_GRACE


def test_compose_grafana_mounts_exist_and_agree() -> None:
    services = _compose()["services"]
    grafana = services["grafana"]
    assert grafana["image"] == "grafana/grafana:11.6.0"
    assert grafana["depends_on"]["flightsql-srv"]["condition"] == "service_healthy"
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    mounts = dict(_bind_mounts(grafana))
    assert mounts, "grafana mounts deploy/grafana"
    for source in mounts:
        assert source.exists() and source.is_relative_to(DEPLOY / "grafana"), source
    by_target = {target: source for source, target in mounts.items()}
    provisioning = DEPLOY / "grafana" / "provisioning"
    for kind in ("datasources", "dashboards"):
        target = f"/etc/grafana/provisioning/{kind}"
        assert by_target.get(target) == provisioning / kind or (
            by_target.get("/etc/grafana/provisioning") == provisioning
        ), target
    (provider,) = _documents(provisioning / "dashboards" / "flightsql.yaml")[0]["providers"]
    dashboards_dir = by_target[provider["options"]["path"]]
    assert list(dashboards_dir.glob("*.json")), "the provider's path holds the dashboards"
    (datasource,) = _documents(provisioning / "datasources" / "flightsql.yaml")[0]["datasources"]
    assert datasource["type"] in grafana["environment"]["GF_INSTALL_PLUGINS"].split(",")
    host, port = datasource["jsonData"]["host"].split(":")
    assert host in services and int(port) == FLIGHT_PORT
