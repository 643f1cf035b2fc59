"""The health port follows the Flight port's TLS, unless health_plaintext asks otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import running_server
from tests.tls_certs import make_pki


def _healthcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flightsql_srv", "healthcheck", "--timeout", "2", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_health_port_uses_tls_when_flight_does(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with running_server(tls_cert=pki.server_cert, tls_key=pki.server_key) as service:
        port = str(service.health_port)
        verified = _healthcheck("--host", "localhost", "--port", port, "--tls-ca", str(pki.ca_cert))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.startswith("SERVING")
        plaintext = _healthcheck("--port", port)
        assert plaintext.returncode == 1
        assert plaintext.stdout.startswith("UNHEALTHY")


def test_health_plaintext_for_probes_that_cannot_speak_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    with running_server(
        tls_cert=pki.server_cert, tls_key=pki.server_key, health_plaintext=True
    ) as service:
        result = _healthcheck("--port", str(service.health_port))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("SERVING")
