"""Self-contained, HMAC-signed tokens: DoGet tickets and prepared-statement handles.

Every token carries all the state needed to serve it (SQL after macro expansion, bound
parameters, principal, expiry), so any replica that shares the secret can redeem it and the
server keeps nothing between calls. The wire form is ``b"F1" + HMAC-SHA256 + JSON body``;
each purpose (ticket, prepared statement) signs with its own derived key so a handle can never
be replayed as a ticket.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

__all__ = ["Signer", "encode_batch", "decode_batch", "TICKET", "PREPARED"]

_MAGIC = b"F1"
_MAC_LEN = hashlib.sha256().digest_size
TICKET = "ticket"
PREPARED = "prepared-statement"


class Signer:
    """Signs and verifies tokens with a list of secrets; the first one signs.

    Args:
        secrets_: shared secrets; when empty a random one is made, which only this process
            knows (fine for one replica, wrong for several).
    """

    def __init__(self, secrets_: list[bytes]) -> None:
        self._secrets = secrets_ or [secrets.token_bytes(32)]
        self.ephemeral = not secrets_
        self._keys: dict[tuple[bytes, str], bytes] = {}  # derived once per purpose

    def _key(self, secret: bytes, purpose: str) -> bytes:
        key = self._keys.get((secret, purpose))
        if key is None:
            message = b"flightsql-srv/" + purpose.encode()
            key = self._keys[(secret, purpose)] = hmac.new(secret, message, hashlib.sha256).digest()
        return key

    def sign(self, purpose: str, body: dict[str, Any], ttl: float | None = None) -> bytes:
        """Serialise ``body`` (plus an expiry when ``ttl`` is given) and sign it."""
        if ttl is not None:
            body = {**body, "exp": round(time.time() + ttl, 3)}
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        mac = hmac.new(self._key(self._secrets[0], purpose), payload, hashlib.sha256).digest()
        return _MAGIC + mac + payload

    def verify(
        self,
        purpose: str,
        token: bytes,
        what: str,
        renew: str = "call GetFlightInfo again to get a fresh one",
    ) -> dict[str, Any]:
        """Return the body of a token this service signed, or raise UNAUTHENTICATED.

        Args:
            purpose: the purpose it must have been signed for.
            token: the bytes the client sent back.
            what: how to name the token in errors ("ticket", "prepared statement handle").
            renew: what to do about an expired one, for the error message.
        """
        if not token.startswith(_MAGIC) or len(token) <= len(_MAGIC) + _MAC_LEN:
            raise flight.FlightUnauthenticatedError(
                f"invalid {what}: it was not issued by this service"
            )
        mac = token[len(_MAGIC) : len(_MAGIC) + _MAC_LEN]
        payload = token[len(_MAGIC) + _MAC_LEN :]
        for secret in self._secrets:
            expected = hmac.new(self._key(secret, purpose), payload, hashlib.sha256).digest()
            if hmac.compare_digest(mac, expected):
                break
        else:
            raise flight.FlightUnauthenticatedError(
                f"invalid {what}: signature does not match (tampered, or signed with another "
                "secret; replicas must share ticket_secret)"
            )
        body: dict[str, Any] = json.loads(payload)
        expiry = body.get("exp")
        if expiry is not None and time.time() > expiry:
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
