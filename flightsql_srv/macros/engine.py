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

Positions in error messages are 1-based character positions in the SQL (plus line and column
for multi-line SQL).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from .builtins import BUILTIN_NAMES, BUILTINS, NO_ARGUMENTS, Arg, Call
from .context import MacroContext
from .errors import MacroError, location
from .lexer import CLOSE, COMMA, MACRO, OPEN, Token, tokenize
from .timeparse import UTC
from .user import MAX_DEPTH, RANGE_PLACEHOLDERS, UserMacro

__all__ = ["expand", "MAX_ARGUMENT_NESTING", "MAX_EXPANDED_CHARS"]

#: How deeply macro calls may nest inside each other's arguments.
MAX_ARGUMENT_NESTING = 32
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
        MacroError: an unknown macro, bad arguments, an unclosed ``(``, a missing range or
            interval... (an :class:`~flightsql_srv.errors.InvalidArgument`).
    """
    if "$__" not in sql:
        return sql
    return _Expander(context, user_macros or _NO_USER_MACROS).text(sql, ())


class _Expander:
    __slots__ = ("context", "user", "_now")

    def __init__(self, context: MacroContext, user: Mapping[str, UserMacro]) -> None:
        self.context = context
        self.user = user
        self._now: datetime | None = context.now

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
        toks = tokenize(sql)
        return self._span(sql, toks, 0, len(toks), 0, len(sql), chain, nesting)

    def _span(
        self,
        sql: str,
        toks: list[Token],
        lo: int,
        hi: int,
        start: int,
        end: int,
        chain: tuple[str, ...],
        nesting: int,
    ) -> str:
        """Expand ``sql[start:end]``, whose tokens are ``toks[lo:hi]``."""
        out: list[str] = []
        last = start
        size = 0
        i = lo
        while i < hi:
            kind, ts, te = toks[i]
            i += 1
            if kind != MACRO:
                continue
            name = sql[ts + 3 : te]
            builtin = BUILTINS.get(name)
            user = None if builtin is not None else self.user.get(name)
            if builtin is None and user is None:
                raise self._unknown(sql, name, ts)
            args: list[Arg] | None = None
            call_end = te
            if te < end and sql[te] == "(" and name not in NO_ARGUMENTS:
                if nesting >= MAX_ARGUMENT_NESTING:
                    raise MacroError.at(
                        name,
                        ts + 1,
                        location(sql, ts),
                        f"macro calls nested more than {MAX_ARGUMENT_NESTING} deep",
                    )
                args, i, call_end = self._arguments(sql, toks, i, hi, name, ts, chain, nesting)
            if builtin is not None:
                call = Call(name, ts + 1, sql, args, self.context, self.now)
                replacement = builtin(call)
            else:
                assert user is not None
                replacement = self._user(sql, user, name, ts, args, chain, nesting)
            out.append(sql[last:ts])
            out.append(replacement)
            size += (ts - last) + len(replacement)
            last = call_end
            if size > MAX_EXPANDED_CHARS:
                raise MacroError.at(
                    name,
                    ts + 1,
                    location(sql, ts),
                    f"the expanded query is longer than {MAX_EXPANDED_CHARS} characters "
                    "(macros inside macro arguments repeat them); simplify the query",
                )
        if not out:
            return sql[start:end]
        out.append(sql[last:end])
        return "".join(out)

    def _arguments(
        self,
        sql: str,
        toks: list[Token],
        i: int,
        hi: int,
        name: str,
        ts: int,
        chain: tuple[str, ...],
        nesting: int,
    ) -> tuple[list[Arg], int, int]:
        """Parse the argument list whose ``(`` is ``toks[i]``.

        Returns the expanded arguments, the index of the token after ``)`` and the offset
        after ``)``.
        """
        depth = 0
        bounds: list[tuple[int, int, int, int]] = []  # text start/end, token lo/hi
        arg_start = toks[i][2]
        arg_lo = i + 1
        j = i
        while j < hi:
            kind, s, e = toks[j]
            if kind == OPEN:
                depth += 1
            elif kind == CLOSE:
                depth -= 1
                if depth == 0:
                    bounds.append((arg_start, s, arg_lo, j))
                    break
            elif kind == COMMA and depth == 1:
                bounds.append((arg_start, s, arg_lo, j))
                arg_start = e
                arg_lo = j + 1
            j += 1
        else:
            raise MacroError.at(
                name,
                ts + 1,
                location(sql, ts),
                f"unclosed '(' at position {toks[i][1] + 1}: the argument list has no matching ')'",
            )
        args: list[Arg] = []
        for s, e, tlo, thi in bounds:
            raw = sql[s:e]
            text = raw.strip()
            position = s + (len(raw) - len(raw.lstrip())) + 1
            if any(toks[k][0] == MACRO for k in range(tlo, thi)):
                text = self._span(sql, toks, tlo, thi, s, e, chain, nesting + 1).strip()
            args.append(Arg(text, position))
        if len(args) == 1 and not args[0].text:
            args = []
        return args, j + 1, toks[j][2]

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
