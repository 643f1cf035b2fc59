"""Authentication and access control."""

from __future__ import annotations

from .identity import ANONYMOUS, CredentialsRejected, Identity, ProviderUnavailable

__all__ = ["ANONYMOUS", "CredentialsRejected", "Identity", "ProviderUnavailable"]
