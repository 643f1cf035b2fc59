"""A small SQL lexer: just enough to find things *outside* strings, quoted identifiers and
comments (placeholders such as ``$1`` and ``?``; Grafana macros build on the same scanner)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from flightsql_srv.errors import InvalidArgument

__all__ = [
    "Segment",
    "segments",
    "placeholders",
    "number_qmarks",
    "operator_counts",
    "quote_name",
    "NON_CODE_PATTERN",
    "MAX_PLACEHOLDERS",
]

_SET_OPERATION = re.compile(r"\b(?:UNION|INTERSECT|EXCEPT)\b", re.IGNORECASE)
_OPERATOR = re.compile(r"\b(?:AND|OR)\b|\|\||<>|!=|<=|>=|[-+*/%<>=]", re.IGNORECASE)


@dataclass(frozen=True)
class Segment:
    """A slice of SQL text; ``code`` is False for literals, quoted identifiers and comments."""

    start: int
    end: int
    code: bool


#: Regex alternatives for everything that is not code (verbose syntax). Every branch starts
#: with a literal character so the regex engine skips plain text in C.
#: Possessive quantifiers throughout: each character is looked at once, so a megabyte of
#: ``*`` or ``''`` costs milliseconds, not the 0.1 s per pass the backtracking form did.
NON_CODE_PATTERN = r"""
      '[^']*+(?:''[^']*+)*+'?                       # string literal ('' escapes)
    | "[^"]*+(?:""[^"]*+)*+"?                       # quoted identifier
    | --[^\n]*+                                     # line comment
    | /\*[^*]*+(?:\*++(?!/)[^*]*+)*+(?:\*++/)?      # block comment
"""
_NON_CODE = re.compile(NON_CODE_PATTERN, re.VERBOSE)


def segments(sql: str) -> Iterator[Segment]:
    """Split ``sql`` into code and non-code segments (unterminated ones run to the end)."""
    start = 0
    for match in _NON_CODE.finditer(sql):
        begin, end = match.span()
        if begin > start:
            yield Segment(start, begin, True)
        yield Segment(begin, end, False)
        start = end
    if start < len(sql):
        yield Segment(start, len(sql), True)


def _in_code(token: str, stop: str, lone: str = "") -> re.Pattern[str]:
    """Matches (at a position) the code up to the next ``token`` in it, then the token
    (named group ``at`` where it starts). ``stop`` is the character tokens start with;
    ``lone`` matches one that starts none. One Python call per token: literals and comments
    are skipped in C."""
    lone = f"| {lone}" if lone else ""
    return re.compile(
        rf"(?:[^'\"/\-{re.escape(stop)}]++|{NON_CODE_PATTERN}| [/\-] {lone})*+(?P<at>{token})",
        re.VERBOSE,
    )


#: ``$`` placeholders, and ``?`` (numbered in order) or ``?N`` (SQLite's explicit form).
#: DataFusion's SQL has no ``?`` operator (its dialect parses PostgreSQL's JSON ``?``, ``?|``
#: and ``?&`` as errors).
_PLACEHOLDER_IN_CODE = _in_code(
    r"\$(?P<name>\d+|[A-Za-z_][A-Za-z0-9_]*)", "$", lone=r"\$(?![0-9A-Za-z_])"
)
_QMARK_IN_CODE = _in_code(r"\?(?P<n>\d*)", "?")


#: Placeholders a query may hold (PostgreSQL's limit): a megabyte of them would cost the
#: front a fifth of a second to number.
MAX_PLACEHOLDERS = 65535


def _tokens(sql: str, pattern: re.Pattern[str]) -> Iterator[re.Match[str]]:
    pos = 0
    for _ in range(MAX_PLACEHOLDERS):
        match = pattern.match(sql, pos)
        if match is None:
            return
        yield match
        pos = match.end()
    if pattern.match(sql, pos) is not None:
        raise InvalidArgument(
            f"the query has more than {MAX_PLACEHOLDERS} placeholders; bind fewer values "
            "(e.g. a long IN list as one array parameter)"
        )


def placeholders(sql: str) -> list[str]:
    """Parameter placeholders without ``$``: numbered ones (``$1``, ``$2``, ...) by number,
    then named ones (``$name``) in order of first use. This is the parameter schema's
    order, in which clients bind values by position.

    ``$__name`` is a macro, not a placeholder.
    """
    found: dict[str, None] = {}  # ordered, and a set: 100,000 names stay fast
    for match in _tokens(sql, _PLACEHOLDER_IN_CODE):
        name = match.group("name")
        if not name.startswith("__"):
            found.setdefault(name)
    numbered = sorted((p for p in found if p.isdigit()), key=int)
    return numbered + [p for p in found if not p.isdigit()]


def number_qmarks(sql: str) -> str:
    """``sql`` with its ``?`` placeholders (outside literals, quoted identifiers and
    comments) written ``$1``, ``$2``, ... in order, and ``?N`` as ``$N``: DataFusion binds
    only ``$`` placeholders, while ADBC's DB-API (paramstyle qmark), JDBC and SQLAlchemy send
    ``?``.

    Raises:
        InvalidArgument: ``?`` is mixed with ``$`` placeholders, or with ``?N``.
    """
    if "?" not in sql:
        return sql
    parts: list[str] = []
    start = count = 0
    bare = numbered = False
    for match in _tokens(sql, _QMARK_IN_CODE):
        if match.group("n"):
            numbered, number = True, match.group("n")
        else:
            bare, count = True, count + 1
            number = str(count)
        parts += [sql[start : match.start("at")], "$", number]
        start = match.end()
    if not parts:
        return sql
    if bare and numbered:
        raise InvalidArgument(
            "the query mixes ? and ?N placeholders: use one style (? for positional values)"
        )
    if placeholders(sql):
        raise InvalidArgument(
            "the query mixes ? and $ placeholders: use one style, ? or $1, $2, ..."
        )
    parts.append(sql[start:])
    return "".join(parts)


def operator_counts(sql: str) -> tuple[int, int]:
    """(binary operators, set operations) in the code of ``sql``: the engine plans chains
    of them recursively, so their number bounds how deep planning goes."""
    operators = set_operations = 0
    for seg in segments(sql):
        if seg.code:
            operators += sum(1 for _ in _OPERATOR.finditer(sql, seg.start, seg.end))
            set_operations += sum(1 for _ in _SET_OPERATION.finditer(sql, seg.start, seg.end))
    return operators, set_operations


def quote_name(name: str) -> str:
    """``name`` as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'
