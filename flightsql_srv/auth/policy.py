"""Roles → visible tables: what each principal may see, in discovery and in queries."""

from __future__ import annotations

import threading
from collections.abc import Callable

from flightsql_srv.auth.config import AuthConfig
from flightsql_srv.auth.identity import Identity
from flightsql_srv.engine import Visibility

__all__ = ["Policy"]


class Policy:
    """Maps an identity's roles to the tables it may read.

    Args:
        config: the ``[auth]`` configuration (no auth → everything is visible).
        tables: lists every (schema, table) of the catalog.
    """

    def __init__(self, config: AuthConfig, tables: Callable[[], list[tuple[str, str]]]) -> None:
        self._config = config
        self._tables = tables
        self._cache: dict[frozenset[str], Visibility] = {}
        self._lock = threading.Lock()

    def visible(self, identity: Identity) -> Visibility:
        """None for every table, else the (schema, table) pairs ``identity`` may read."""
        if not self._config.enabled:
            return None
        with self._lock:
            if identity.roles in self._cache:
                return self._cache[identity.roles]
        roles = [self._config.roles[r] for r in identity.roles if r in self._config.roles]
        result: Visibility
        if any("*" in role.tables for role in roles):
            result = None
        else:
            result = frozenset(
                (s, t) for s, t in self._tables() if any(r.allows(s, t) for r in roles)
            )
        with self._lock:
            self._cache[identity.roles] = result
        return result

    def explain_paths(self, identity: Identity) -> bool:
        """Whether EXPLAIN shows ``identity`` storage paths: when one of its roles says
        ``explain_paths = true``, and always without authentication (no roles, nothing
        to keep apart; the server then listens on loopback unless told otherwise)."""
        if not self._config.enabled:
            return True
        roles = self._config.roles
        return any(roles[r].explain_paths for r in identity.roles if r in roles)
