"""Who a caller is, and how authentication fails."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Identity", "Method", "CredentialsRejected", "ProviderUnavailable", "ANONYMOUS"]

Method = Literal["none", "api_key", "oidc", "password", "session"]


@dataclass(frozen=True)
class Identity:
    """An authenticated principal and the roles that decide what it may see."""

    principal: str
    roles: frozenset[str] = field(default_factory=frozenset)
    method: Method = "none"


#: The caller when authentication is off.
ANONYMOUS = Identity("")


class CredentialsRejected(Exception):
    """Credentials were sent but are not valid (UNAUTHENTICATED).

    Args:
        message: what the client is told (never the credential itself).
        reason: a short label for metrics and logs, e.g. ``expired``, ``bad_signature``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ProviderUnavailable(Exception):
    """The identity provider needed to check a credential cannot be reached (UNAVAILABLE)."""
