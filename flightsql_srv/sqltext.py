"""A small SQL lexer: just enough to find things *outside* strings, quoted identifiers and
comments (placeholders such as ``$1`` today; Grafana macros build on the same scanner)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Segment", "segments", "placeholders", "quote_name"]

_PLACEHOLDER = re.compile(r"\$(\d+|[A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Segment:
    """A slice of SQL text; ``code`` is False for literals, quoted identifiers and comments."""

    start: int
    end: int
    code: bool


def segments(sql: str) -> Iterator[Segment]:
    """Split ``sql`` into code and non-code segments (unterminated ones run to the end)."""
    i = start = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        end = -1
        if ch in "'\"":
            end = i + 1
            while end < n:  # a doubled quote is an escaped quote
                if sql[end] == ch:
                    if end + 1 < n and sql[end + 1] == ch:
                        end += 2
                        continue
                    break
                end += 1
            end = min(end + 1, n)
        elif sql.startswith("--", i):
            nl = sql.find("\n", i)
            end = n if nl < 0 else nl
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            end = n if close < 0 else close + 2
        if end < 0:
            i += 1
            continue
        if i > start:
            yield Segment(start, i, True)
        yield Segment(i, end, False)
        i = start = end
    if start < n:
        yield Segment(start, n, True)


def placeholders(sql: str) -> list[str]:
    """Parameter placeholders (``$1``, ``$name``) in order of first use, without ``$``.

    ``$__name`` is a macro, not a placeholder.
    """
    found: list[str] = []
    for seg in segments(sql):
        if not seg.code:
            continue
        for match in _PLACEHOLDER.finditer(sql, seg.start, seg.end):
            name = match.group(1)
            if not name.startswith("__") and name not in found:
                found.append(name)
    return found


def quote_name(name: str) -> str:
    """``name`` as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'
