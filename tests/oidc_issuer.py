"""A small OpenID Connect issuer for the tests, run as its own process.

    python tests/oidc_issuer.py --port 0 --clients '{"svc": {"secret": "s", "roles": ["r"]}}'

It prints its issuer URL on stdout once listening, then serves on 127.0.0.1 only until killed
(or, with ``--exit-on-stdin-eof``, until its parent goes away):

- ``GET  <issuer>/.well-known/openid-configuration`` and ``GET <issuer>/jwks``
- ``POST <issuer>/token``: the OAuth2 client-credentials grant (HTTP Basic or form client auth,
  optional ``audience`` and ``scope``), answering ``access_token``/``token_type``/``expires_in``.

Test-only hooks, always answered even while "down":

- ``GET  /admin/stats`` → requests seen per endpoint; ``POST /admin/stats/reset``
- ``GET  /admin/key`` → the current key's kid, alg, public JWK and PEM
- ``POST /admin/rotate`` ``{"key_type": "RSA"|"EC"|"OKP", "keep_old": true}`` → new kid
- ``POST /admin/mint`` ``{"claims": {...}, "drop": [...], "exp_in": s, "nbf_in": s,
  "alg": ..., "kid": ..., "no_kid": bool, "signer": "current"|"foreign"|<kid>, "header": {...}}``
- ``POST /admin/down`` ``{"mode": "503"|"close"|"hang", "hang_s": 3}``; ``POST /admin/up``
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from joserfc.jwk import ECKey, Key, KeyParameters, OctKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

HOST = "127.0.0.1"  # never anything else
ALG_FOR = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_key(key_type: str, kid: str) -> Key:
    params: KeyParameters = {"kid": kid, "use": "sig"}
    if key_type == "RSA":
        return RSAKey.generate_key(2048, parameters=params)
    if key_type == "EC":
        return ECKey.generate_key("P-256", parameters=params)
    if key_type == "OKP":
        return OKPKey.generate_key("Ed25519", parameters=params)
    raise ValueError(f"unknown key type {key_type!r}")


def sign(header: dict[str, Any], claims: dict[str, Any], key: Key | None) -> str:
    """A compact JWS, signed directly with the algorithm model (any alg, even ``none``)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if header["alg"] == "none" or key is None:
        return signing_input + "."
    signature = JWSRegistry.algorithms[header["alg"]].sign(signing_input.encode(), key)
    return f"{signing_input}.{b64(signature)}"


class Issuer:
    """Keys, clients, failure mode and counters; guarded by one lock."""

    def __init__(self, args: argparse.Namespace, clients: dict[str, Any]) -> None:
        self.args = args
        self.clients = clients
        self.url = ""
        self.lock = threading.Lock()
        self.serial = 0
        self.keys: list[tuple[Key, str]] = []  # (key, alg), newest last
        self.published: list[tuple[Key, str]] = []
        self.foreign: dict[str, tuple[Key, str]] = {}
        self.down: str | None = None
        self.hang_s = 3.0
        self.stats: dict[str, int] = {}
        self.rotate(args.key_type, keep_old=True)

    def next_kid(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}-{self.serial}-{secrets.token_hex(3)}"

    def rotate(self, key_type: str, keep_old: bool) -> tuple[Key, str]:
        pair = (new_key(key_type, self.next_kid(key_type.lower())), ALG_FOR[key_type])
        self.keys.append(pair)
        self.published = [*self.published, pair] if keep_old else [pair]
        return pair

    def foreign_key(self, key_type: str) -> tuple[Key, str]:
        if key_type not in self.foreign:
            key = new_key(key_type, self.next_kid("foreign"))
            self.foreign[key_type] = (key, ALG_FOR[key_type])
        return self.foreign[key_type]

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.url}/jwks",
            "token_endpoint": f"{self.url}/token",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": sorted({a for _, a in self.published}),
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(k.as_dict(private=False), alg=a) for k, a in self.published]}

    def mint(self, spec: dict[str, Any]) -> dict[str, Any]:
        now = int(time.time())
        current_key, current_alg = self.keys[-1]
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": "minted",
            "aud": self.args.default_audience,
            "iat": now,
            "nbf": now,
            "exp": now + int(self.args.token_ttl),
            "jti": secrets.token_hex(8),
        }
        if "exp_in" in spec:
            claims["exp"] = now + int(spec["exp_in"])
        if "nbf_in" in spec:
            claims["nbf"] = now + int(spec["nbf_in"])
        claims.update(spec.get("claims", {}))
        for name in spec.get("drop", []):
            claims.pop(name, None)
        signer = spec.get("signer", "current")
        if signer == "current":
            key, alg = current_key, current_alg
        elif signer == "foreign":
            key, alg = self.foreign_key(current_key.key_type)
        else:
            key, alg = next((k, a) for k, a in self.keys if k.kid == signer)
        header: dict[str, Any] = {"alg": spec.get("alg", alg), "typ": "JWT"}
        if not spec.get("no_kid"):
            header["kid"] = spec.get("kid", key.kid)
        header.update(spec.get("header", {}))
        return {"token": sign(header, claims, key), "kid": header.get("kid"), "claims": claims}

    def client_token(self, client_id: str, form: dict[str, str]) -> dict[str, Any]:
        client = self.clients[client_id]
        now = int(time.time())
        key, alg = self.keys[-1]
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": client_id,
            "client_id": client_id,
            "azp": client_id,
            "aud": form.get("audience") or client.get("audience") or self.args.default_audience,
            "iat": now,
            "nbf": now,
            "exp": now + int(self.args.token_ttl),
            "jti": secrets.token_hex(8),
            "roles": list(client.get("roles", [])),
            **client.get("claims", {}),
        }
        if form.get("scope"):
            claims["scope"] = form["scope"]
        token = sign({"alg": alg, "typ": "at+jwt", "kid": key.kid}, claims, key)
        answer = {"access_token": token, "token_type": "Bearer", "expires_in": self.args.token_ttl}
        if form.get("scope"):
            answer["scope"] = form["scope"]
        return answer


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.issuer.args.verbose:
            sys.stderr.write(f"oidc_issuer: {format % args}\n")

    def do_GET(self) -> None:
        self.route("GET")

    def do_POST(self) -> None:
        self.route("POST")

    def route(self, method: str) -> None:
        issuer = self.server.issuer
        path = self.path.split("?", 1)[0]
        prefix = issuer.args.path
        if path.startswith("/admin/"):
            self.admin(method, path)
            return
        if not path.startswith(prefix):
            self.send_json(404, {"error": "not_found"})
            return
        name = {
            f"{prefix}/.well-known/openid-configuration": "discovery",
            f"{prefix}/jwks": "jwks",
            f"{prefix}/token": "token",
        }.get(path)
        if name is None:
            self.send_json(404, {"error": "not_found"})
            return
        with issuer.lock:
            issuer.stats[name] = issuer.stats.get(name, 0) + 1
            down, hang_s = issuer.down, issuer.hang_s
        if down == "close":
            self.close_connection = True  # no status line at all: the client sees a reset
            return
        if down == "hang":
            time.sleep(hang_s)
        if down is not None:
            self.send_json(503, {"error": "temporarily_unavailable"})
            return
        if name == "token":
            if method != "POST":
                self.send_json(405, {"error": "invalid_request"})
            else:
                self.token()
            return
        if method != "GET":
            self.send_json(405, {"error": "invalid_request"})
            return
        with issuer.lock:
            body = issuer.discovery() if name == "discovery" else issuer.jwks()
        self.send_json(200, body)

    def token(self) -> None:
        issuer = self.server.issuer
        form = {k: v[0] for k, v in parse_qs(self.read_body().decode()).items()}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                raw = base64.b64decode(auth[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raw = ""
            user, _, password = raw.partition(":")
            client_id, secret = unquote_plus(user), unquote_plus(password)
        client = issuer.clients.get(client_id or "")
        if client is None or not secrets.compare_digest(
            str(client.get("secret", "")).encode(), (secret or "").encode()
        ):
            self.send_json(
                401, {"error": "invalid_client"}, {"WWW-Authenticate": 'Basic realm="token"'}
            )
            return
        if form.get("grant_type") != "client_credentials":
            self.send_json(400, {"error": "unsupported_grant_type"})
            return
        with issuer.lock:
            answer = issuer.client_token(client_id or "", form)
        self.send_json(200, answer, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def admin(self, method: str, path: str) -> None:
        issuer = self.server.issuer
        spec = json.loads(self.read_body() or b"{}") if method == "POST" else {}
        with issuer.lock:
            if method == "GET" and path == "/admin/stats":
                body: dict[str, Any] = dict(issuer.stats)
            elif method == "GET" and path == "/admin/key":
                key, alg = issuer.keys[-1]
                assert not isinstance(key, OctKey)
                body = {
                    "kid": key.kid,
                    "alg": alg,
                    "jwk": key.as_dict(private=False),
                    "public_pem": key.as_pem(private=False).decode(),
                }
            elif path == "/admin/stats/reset":
                issuer.stats.clear()
                body = {}
            elif path == "/admin/rotate":
                key_type = spec.get("key_type", issuer.keys[-1][0].key_type)
                key, alg = issuer.rotate(key_type, keep_old=bool(spec.get("keep_old", True)))
                body = {"kid": key.kid, "alg": alg}
            elif path == "/admin/mint":
                body = issuer.mint(spec)
            elif path == "/admin/down":
                issuer.down = str(spec.get("mode", "503"))
                issuer.hang_s = float(spec.get("hang_s", 3.0))
                body = {"down": issuer.down}
            elif path == "/admin/up":
                issuer.down = None
                body = {"down": None}
            else:
                body = {"error": "not_found"}
        self.send_json(404 if "error" in body else 200, body)

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    issuer: Issuer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--path", default="", help="issuer path, e.g. /realms/test")
    parser.add_argument("--key-type", choices=sorted(ALG_FOR), default="RSA")
    parser.add_argument(
        "--clients",
        default="{}",
        help='JSON, or @file: {"client id": {"secret", "roles", "audience", "claims"}}',
    )
    parser.add_argument("--default-audience", default="flightsql")
    parser.add_argument("--token-ttl", type=int, default=300)
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.path = "/" + args.path.strip("/") if args.path.strip("/") else ""
    raw = args.clients
    if raw.startswith("@"):
        with open(raw[1:], encoding="utf-8") as f:
            raw = f.read()
    issuer = Issuer(args, json.loads(raw))
    server = Server((HOST, args.port), Handler)
    server.issuer = issuer
    issuer.url = f"http://{HOST}:{server.server_address[1]}{args.path}"
    if args.exit_on_stdin_eof:

        def watch() -> None:
            sys.stdin.read()
            server.shutdown()

        threading.Thread(target=watch, daemon=True).start()
    print(issuer.url, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
