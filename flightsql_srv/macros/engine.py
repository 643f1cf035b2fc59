"""The macro parser and expander.

Parsing follows the newer Grafana SDK parser (v0.200+), plus string safety:

* ``$__name`` is found only in code, never in string literals, quoted identifiers or comments;
  the name is the longest run of ``[A-Za-z0-9_]`` after ``$__``.
* An argument list exists only when ``(`` immediately follows the name (never for
  ``$__interval`` and ``$__interval_ms``); parentheses nest; arguments split on commas at depth
  1 only (commas in strings or comments never split); arguments are trimmed; ``()`` is no
  arguments. An unclosed ``(`` is an error, and so is an unknown ``$__name``.
* Macros in arguments are expanded first (``$__dateBin(coalesce(t, $__timeFrom))``). A user
  macro's template is expanded again after its placeholders are filled in.
* Everything outside the macro calls is copied byte for byte.
* Work is bounded whatever the input: the query's size is checked first (:data:`MAX_SQL_BYTES`),
  the SQL is scanned once with regexes that skip code in C, and arguments, argument
  punctuation, calls and nesting have limits (``MAX_*``), each failing with a MacroError.

Positions in error messages are 1-based character positions in the SQL (plus line and column
for multi-line SQL).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from .builtins import BUILTIN_NAMES, BUILTINS, NO_ARGUMENTS, Arg, Call
from .context import MacroContext
from .errors import MacroError, location
from .lexer import NAME, SKIP_TO_MACRO, SKIP_TO_TOKEN
from .timeparse import UTC
from .user import MAX_DEPTH, RANGE_PLACEHOLDERS, UserMacro

__all__ = [
    "expand",
    "MAX_ARGUMENT_NESTING",
    "MAX_ARGUMENT_TOKENS",
    "MAX_ARGUMENTS",
    "MAX_EXPANDED_CHARS",
    "MAX_MACRO_CALLS",
    "MAX_SQL_BYTES",
]

#: Longest query accepted, checked before any macro work (the engine's limit too).
MAX_SQL_BYTES = 1024 * 1024
#: How deeply macro calls may nest inside each other's arguments.
MAX_ARGUMENT_NESTING = 32
#: Most arguments one macro call may have (the built-ins take at most three).
MAX_ARGUMENTS = 64
#: Most macro calls in one expansion, counting those in arguments and user templates.
MAX_MACRO_CALLS = 4096
#: Most parentheses, commas and macro names inside argument lists, all calls together.
MAX_ARGUMENT_TOKENS = 16384
#: Longest expansion; a macro may repeat its argument, so nesting can grow text exponentially.
MAX_EXPANDED_CHARS = 1024 * 1024

_SECOND = timedelta(seconds=1)
_MILLI = timedelta(milliseconds=1)
_BUILTIN_LIST = ", ".join(f"$__{n}" for n in sorted(BUILTIN_NAMES, key=str.lower))
_NO_USER_MACROS: Mapping[str, UserMacro] = {}


def expand(
    sql: str, context: MacroContext, user_macros: Mapping[str, UserMacro] | None = None
) -> str:
    """Expand every macro in ``sql``.

    Args:
        sql: the query text.
        context: the time range, interval and reference "now".
        user_macros: user macros by name (see :func:`~.user.load_user_macros`); load them once.

    Raises:
        MacroError: an oversized query, an unknown macro, bad arguments, an unclosed ``(``, a
            missing range or interval... (an :class:`~flightsql_srv.errors.InvalidArgument`).
    """
    # A character is at most 4 bytes: encode only when the length alone cannot decide.
    if len(sql) > MAX_SQL_BYTES or (
        4 * len(sql) > MAX_SQL_BYTES and len(sql.encode("utf-8", "surrogatepass")) > MAX_SQL_BYTES
    ):
        raise MacroError(f"the query is longer than {MAX_SQL_BYTES} bytes")
    if "$__" not in sql:
        return sql
    return _Expander(context, user_macros or _NO_USER_MACROS).text(sql, ())


class _Expander:
    __slots__ = ("context", "user", "_now", "_calls", "_tokens")

    def __init__(self, context: MacroContext, user: Mapping[str, UserMacro]) -> None:
        self.context = context
        self.user = user
        self._now: datetime | None = context.now
        self._calls = 0
        self._tokens = 0

    def now(self) -> datetime:
        """The reference time for relative arguments, fixed for the whole expansion."""
        if self._now is None:
            self._now = datetime.now(UTC)
        return self._now

    def text(self, sql: str, chain: tuple[str, ...], nesting: int = 0) -> str:
        """Expand a whole text (the query, or a filled-in user template).

        ``nesting`` counts the argument lists this text sits in, so that the Python stack
        stays bounded across user templates too.
        """
        if "$__" not in sql:
            return sql
        out: list[str] = []
        n = len(sql)
        last = size = 0
        pos = SKIP_TO_MACRO.match(sql).end()  # type: ignore[union-attr]
        while pos < n:
            replacement, call_end = self._call(sql, pos, chain, nesting)
            out.append(sql[last:pos])
            out.append(replacement)
            size += (pos - last) + len(replacement)
            self._check_size(size, sql, pos)
            last = call_end
            pos = SKIP_TO_MACRO.match(sql, call_end).end()  # type: ignore[union-attr]
        if not out:
            return sql
        out.append(sql[last:])
        return "".join(out)

    def _check_size(self, size: int, sql: str, ts: int) -> None:
        if size > MAX_EXPANDED_CHARS:
            name = _name_at(sql, ts)
            raise MacroError.at(
                name,
                ts + 1,
                location(sql, ts),
                f"the expanded query is longer than {MAX_EXPANDED_CHARS} characters "
                "(macros inside macro arguments repeat them); simplify the query",
            )

    def _call(self, sql: str, ts: int, chain: tuple[str, ...], nesting: int) -> tuple[str, int]:
        """Expand the macro call whose ``$__`` is at ``ts``.

        Returns the replacement and the offset after the call.
        """
        te = NAME.match(sql, ts).end()  # type: ignore[union-attr]
        name = sql[ts + 3 : te]
        builtin = BUILTINS.get(name)
        user = None if builtin is not None else self.user.get(name)
        if builtin is None and user is None:
            raise self._unknown(sql, name, ts)
        self._calls += 1
        if self._calls > MAX_MACRO_CALLS:
            raise MacroError.at(
                name,
                ts + 1,
                location(sql, ts),
                f"more than {MAX_MACRO_CALLS} macro calls in one query; simplify the query",
            )
        args: list[Arg] | None = None
        call_end = te
        if te < len(sql) and sql[te] == "(" and name not in NO_ARGUMENTS:
            if nesting >= MAX_ARGUMENT_NESTING:
                raise MacroError.at(
                    name,
                    ts + 1,
                    location(sql, ts),
                    f"macro calls nested more than {MAX_ARGUMENT_NESTING} deep",
                )
            args, call_end = self._arguments(sql, te, name, ts, chain, nesting)
        if builtin is not None:
            return builtin(Call(name, ts + 1, sql, args, self.context, self.now)), call_end
        assert user is not None
        return self._user(sql, user, name, ts, args, chain, nesting), call_end

    def _arguments(
        self,
        sql: str,
        open_at: int,
        name: str,
        ts: int,
        chain: tuple[str, ...],
        nesting: int,
    ) -> tuple[list[Arg], int]:
        """Parse and expand the argument list whose ``(`` is at ``open_at``.

        Returns the arguments and the offset after the matching ``)``. Macros in arguments
        are expanded as they are met, so each character is scanned once.
        """
        n = len(sql)
        args: list[Arg] = []
        depth = 1
        arg_start = seg = pos = open_at + 1
        pieces: list[str] = []  # the current argument so far, when it holds macros
        size = 0
        while True:
            pos = SKIP_TO_TOKEN.match(sql, pos).end()  # type: ignore[union-attr]
            if pos >= n:
                raise MacroError.at(
                    name,
                    ts + 1,
                    location(sql, ts),
                    f"unclosed '(' at position {open_at + 1}: the argument list has no "
                    "matching ')'",
                )
            self._tokens += 1
            if self._tokens > MAX_ARGUMENT_TOKENS:
                raise MacroError.at(
                    name,
                    ts + 1,
                    location(sql, ts),
                    f"macro arguments hold more than {MAX_ARGUMENT_TOKENS} parentheses, "
                    "commas and macros; simplify the query",
                )
            ch = sql[pos]
            if ch == "$":
                replacement, end = self._call(sql, pos, chain, nesting + 1)
                pieces.append(sql[seg:pos])
                pieces.append(replacement)
                size += (pos - seg) + len(replacement)
                self._check_size(size, sql, pos)
                seg = pos = end
                continue
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            if (ch == "," and depth == 1) or depth == 0:
                raw = sql[arg_start:pos]
                if pieces:
                    pieces.append(sql[seg:pos])
                    text = "".join(pieces).strip()
                    pieces = []
                    size = 0
                else:
                    text = raw.strip()
                args.append(Arg(text, arg_start + (len(raw) - len(raw.lstrip())) + 1))
                if depth == 0:
                    break
                if len(args) >= MAX_ARGUMENTS:
                    raise MacroError.at(
                        name,
                        ts + 1,
                        location(sql, ts),
                        f"more than {MAX_ARGUMENTS} arguments; check the commas and parentheses",
                    )
                arg_start = seg = pos + 1
            pos += 1
        if len(args) == 1 and not args[0].text:
            args = []
        return args, pos + 1

    def _user(
        self,
        sql: str,
        macro: UserMacro,
        name: str,
        ts: int,
        args: list[Arg] | None,
        chain: tuple[str, ...],
        nesting: int,
    ) -> str:
        """Fill in a user macro's template and expand it."""
        where = location(sql, ts)
        given = args or []
        if len(given) != len(macro.params):
            usage = f"({', '.join(macro.params)})" if macro.params else "no arguments"
            got = "no argument list" if args is None else f"{len(given)} argument(s)"
            raise MacroError.at(name, ts + 1, where, f"expects {usage}, got {got}")
        for index, arg in enumerate(given):
            if not arg.text:
                raise MacroError.at(name, ts + 1, where, f"argument {index + 1} is empty")
        if name in chain:
            cycle = " → ".join(f"$__{n}" for n in (*chain[chain.index(name) :], name))
            raise MacroError.at(name, ts + 1, where, f"user macros call each other: {cycle}")
        if len(chain) >= MAX_DEPTH:
            raise MacroError.at(
                name, ts + 1, where, f"user macros nested more than {MAX_DEPTH} deep"
            )

        def value(placeholder: str) -> str:
            return self._placeholder(macro, placeholder, ts, where)

        body = macro.render([a.text for a in given], value)
        if chain:
            return self.text(body, (*chain, name), nesting)
        try:
            return self.text(body, (name,), nesting)
        except MacroError as exc:
            raise MacroError(
                f"$__{name} at position {ts + 1}{where}: in its expansion "
                f"(template from {macro.file.name}): {exc}",
                macro=name,
                position=ts + 1,
            ) from None

    def _placeholder(self, macro: UserMacro, placeholder: str, ts: int, where: str) -> str:
        if placeholder in RANGE_PLACEHOLDERS:
            r = self.context.range
            if r is None:
                raise MacroError(
                    f"$__{macro.name} at position {ts + 1}{where} needs a time range (its "
                    f"template uses {{{placeholder}}}): send the query_range_begin and "
                    "query_range_end headers (RFC 3339, e.g. 2024-01-01T00:00:00Z, or Grafana "
                    "forms like now-6h)",
                    macro=macro.name,
                    position=ts + 1,
                )
            end, _, unit = placeholder.partition("_")
            first = end == "from"
            if unit == "":
                return r.start_rfc3339 if first else r.end_rfc3339
            if unit == "sql":
                return f"TIMESTAMP '{r.start_rfc3339 if first else r.end_rfc3339}'"
            if unit == "ms":
                return str(r.start_ms if first else r.end_ms)
            if unit == "s":
                return str(r.start_s if first else r.end_s)
            return str(r.start_ns if first else r.end_ns)
        interval = self.context.interval
        if interval is None:
            raise MacroError(
                f"$__{macro.name} at position {ts + 1}{where} needs an interval (its template "
                f"uses {{{placeholder}}}): send the interval_ms header (milliseconds, e.g. "
                "10000), or max_data_points together with a time range",
                macro=macro.name,
                position=ts + 1,
            )
        return str(interval // (_SECOND if placeholder == "interval_s" else _MILLI))

    def _unknown(self, sql: str, name: str, ts: int) -> MacroError:
        users = ", ".join(f"$__{n}" for n in sorted(self.user, key=str.lower))
        return MacroError(
            f"unknown macro $__{name} at position {ts + 1}{location(sql, ts)}; built-ins are "
            f"{_BUILTIN_LIST}; "
            + (f"user macros are {users}" if users else "no user macros are loaded"),
            macro=name,
            position=ts + 1,
        )


def _name_at(sql: str, ts: int) -> str:
    match = NAME.match(sql, ts)
    return sql[ts + 3 : match.end()] if match else ""
