"""The two errors of the macro engine.

:class:`MacroError` is a client error (the SQL or its time range is wrong) and maps to gRPC
INVALID_ARGUMENT through :class:`flightsql_srv.errors.InvalidArgument`. :class:`MacroConfigError`
is an operator error (a user macro file is wrong) and should stop the server at start-up.
"""

from __future__ import annotations

from flightsql_srv.errors import InvalidArgument

__all__ = ["MacroError", "MacroConfigError", "location"]


class MacroError(InvalidArgument):
    """A macro could not be expanded.

    Attributes:
        macro: the macro name without ``$__`` (``None`` when no single macro is at fault).
        position: 1-based character position of the macro in the text being expanded.
    """

    def __init__(self, message: str, *, macro: str | None = None, position: int | None = None):
        super().__init__(message)
        self.macro = macro
        self.position = position

    @classmethod
    def at(cls, name: str, position: int, where: str, detail: str) -> MacroError:
        """``$__name at position N[ (line L, column C)]: detail``."""
        return cls(
            f"$__{name} at position {position}{where}: {detail}", macro=name, position=position
        )


class MacroConfigError(Exception):
    """A user macro definition is invalid (bad TOML, unknown key, clash, bad template...)."""


# pyarrow prints the class name in the gRPC status detail; keep it short like errors.py does.
MacroError.__module__ = "builtins"


def location(text: str, offset: int) -> str:
    """`` (line L, column C)`` for a 0-based ``offset`` in multi-line ``text``, else ``""``."""
    if "\n" not in text:
        return ""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f" (line {line}, column {column})"
