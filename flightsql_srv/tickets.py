"""Self-contained, encrypted tokens: DoGet tickets, prepared-statement handles, session
cookies and session tokens.

Every token carries all the state needed to serve it (SQL after macro expansion, bound
parameters, principal, expiry), so any replica that shares the secret can redeem it and the
server keeps nothing between calls. Tokens are sealed with AES-256-GCM (authenticated
encryption): whoever holds one (a proxy log, a browser) can neither read nor change what it
carries. The wire form is ``b"F2" + key id (4) + nonce (12) + ciphertext + tag (16)``. Each
purpose (ticket, prepared statement, ...) has its own key, derived from the secret with
HMAC-SHA256 and also bound as associated data, so a handle can never be replayed as a ticket.
The key id names the secret that sealed a token, so rotation costs one decryption, not one
per configured secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["Signer", "encode_batch", "decode_batch", "TICKET", "PREPARED"]

_MAGIC = b"F2"
_KID_LEN = 4
_NONCE_LEN = 12
_TAG_LEN = 16
_HEADER_LEN = len(_MAGIC) + _KID_LEN + _NONCE_LEN
TICKET = "ticket"
PREPARED = "prepared-statement"
#: What to do about an expired token, per purpose (for the error message).
_RENEW = {
    TICKET: "call GetFlightInfo again to get a fresh one",
    PREPARED: "create the prepared statement again",
}


class Signer:
    """Seals and opens tokens with a list of secrets; the first one seals.

    Args:
        secrets_: shared secrets; when empty a random one is made, which only this process
            knows (fine for one replica, wrong for several).
        ttls: the lifetime, in seconds, of tokens of a purpose sealed without an explicit
            ``ttl`` (e.g. prepared-statement handles).
    """

    def __init__(self, secrets_: list[bytes], ttls: Mapping[str, float] | None = None) -> None:
        self._secrets = secrets_ or [secrets.token_bytes(32)]
        self.ephemeral = not secrets_
        self._ttls = dict(ttls or {})
        self._kids = [
            hmac.new(s, b"flightsql-srv/key-id", hashlib.sha256).digest()[:_KID_LEN]
            for s in self._secrets
        ]
        self._aeads: dict[tuple[int, str], AESGCM] = {}  # one per (secret, purpose)

    def _aead(self, index: int, purpose: str) -> AESGCM:
        aead = self._aeads.get((index, purpose))
        if aead is None:
            message = b"flightsql-srv/aead/" + purpose.encode()
            key = hmac.new(self._secrets[index], message, hashlib.sha256).digest()
            aead = self._aeads[(index, purpose)] = AESGCM(key)
        return aead

    def sign(self, purpose: str, body: dict[str, Any], ttl: float | None = None) -> bytes:
        """Serialise ``body`` (plus an expiry when ``ttl`` is given, or configured for the
        purpose) and seal it."""
        ttl = ttl if ttl is not None else self._ttls.get(purpose)
        if ttl is not None:
            body = {**body, "exp": round(time.time() + ttl, 3)}
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        nonce = os.urandom(_NONCE_LEN)
        sealed = self._aead(0, purpose).encrypt(nonce, payload, purpose.encode())
        return _MAGIC + self._kids[0] + nonce + sealed

    def verify(
        self,
        purpose: str,
        token: bytes,
        what: str,
        renew: str | None = None,
    ) -> dict[str, Any]:
        """Return the body of a token this service sealed, or raise UNAUTHENTICATED.

        Args:
            purpose: the purpose it must have been sealed for.
            token: the bytes the client sent back.
            what: how to name the token in errors ("ticket", "prepared statement handle").
            renew: what to do about an expired one, for the error message (default: by
                purpose).
        """
        if not token.startswith(_MAGIC) or len(token) < _HEADER_LEN + _TAG_LEN:
            raise flight.FlightUnauthenticatedError(
                f"invalid {what}: it was not issued by this service"
            )
        kid = token[len(_MAGIC) : len(_MAGIC) + _KID_LEN]
        nonce = token[len(_MAGIC) + _KID_LEN : _HEADER_LEN]
        payload = None
        for index, known in enumerate(self._kids):
            if not hmac.compare_digest(kid, known):
                continue
            try:
                payload = self._aead(index, purpose).decrypt(
                    nonce, token[_HEADER_LEN:], purpose.encode()
                )
            except InvalidTag:
                continue
            break
        if payload is None:
            raise flight.FlightUnauthenticatedError(
                f"invalid {what}: signature does not match (tampered, or sealed with another "
                "secret; replicas must share ticket_secret)"
            )
        body: dict[str, Any] = json.loads(payload)
        expiry = body.get("exp")
        if expiry is not None and time.time() > expiry:
            renew = renew or _RENEW.get(purpose, "get a fresh one")
            raise flight.FlightUnauthenticatedError(f"{what} expired; {renew}")
        return body


def encode_batch(batch: pa.RecordBatch | None) -> str | None:
    """A record batch as base64 Arrow IPC stream bytes, for a token body."""
    if batch is None:
        return None
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return base64.b64encode(sink.getvalue().to_pybytes()).decode()


def decode_batch(text: str | None) -> pa.RecordBatch | None:
    """Inverse of :func:`encode_batch`."""
    if text is None:
        return None
    reader = pa.ipc.open_stream(base64.b64decode(text))
    return reader.read_next_batch()
