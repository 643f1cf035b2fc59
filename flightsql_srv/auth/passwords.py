"""Salted, deliberately slow password hashes (scrypt, from the standard library)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["hash_password", "verify_password", "check_hash_format"]

_SCHEME = "scrypt"
_N, _R, _P = 2**15, 8, 1
_MAXMEM = 128 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash``, for the ``password_hash`` of an ``[[auth.users]]`` entry."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM)
    return f"{_SCHEME}${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def check_hash_format(encoded: str) -> None:
    """Raise ValueError unless ``encoded`` is a hash this module made."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME or not all(p.isdigit() for p in parts[1:4]):
        raise ValueError("expected the output of `flightsql-srv hash-password` (scrypt$N$r$p$...)")
    _unb64(parts[4])
    _unb64(parts[5])


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches ``encoded`` (constant-time comparison)."""
    try:
        check_hash_format(encoded)
    except ValueError:
        return False
    _, n, r, p, salt, expected = encoded.split("$")
    digest = hashlib.scrypt(
        password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), maxmem=_MAXMEM
    )
    return hmac.compare_digest(digest, _unb64(expected))
