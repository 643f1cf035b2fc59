"""Grafana SQL macros (``$__timeFilter(time)`` ...) and user-defined ones, expanded in UTC.

Typical use by the server::

    user_macros = load_user_macros(Path("macros"))          # once, at start-up
    context = context_from_headers(headers)                 # per request
    sql = expand(sql, context, user_macros)                 # MacroError → INVALID_ARGUMENT

Modules: :mod:`.engine` (parser and expander), :mod:`.builtins` (the Grafana macros),
:mod:`.user` (TOML user macros), :mod:`.context` (time range, interval, headers),
:mod:`.timeparse` (RFC 3339, epoch ms, ``now-6h``; durations), :mod:`.lexer` (finding macros
outside strings and comments), :mod:`.errors`.
"""

from __future__ import annotations

from .builtins import BUILTIN_NAMES
from .context import (
    INTERVAL_MS_HEADER,
    MAX_DATA_POINTS_HEADER,
    RANGE_BEGIN_HEADER,
    RANGE_END_HEADER,
    MacroContext,
    TimeRange,
    auto_interval,
    context_from_headers,
)
from .engine import expand
from .errors import MacroConfigError, MacroError
from .timeparse import parse_duration, parse_time
from .user import UserMacro, load_user_macros

__all__ = [
    "BUILTIN_NAMES",
    "INTERVAL_MS_HEADER",
    "MAX_DATA_POINTS_HEADER",
    "RANGE_BEGIN_HEADER",
    "RANGE_END_HEADER",
    "MacroConfigError",
    "MacroContext",
    "MacroError",
    "TimeRange",
    "UserMacro",
    "auto_interval",
    "context_from_headers",
    "expand",
    "load_user_macros",
    "parse_duration",
    "parse_time",
]
