"""User macros: SQL templates declared in TOML files, invoked like built-ins (``$__name(args)``).

File format (any number of ``*.toml`` files in one directory)::

    [macros.hostFilter]
    params = ["column"]                       # optional, default []
    description = "Only the web hosts"        # optional
    template = "{column} IN ('a','b') AND $__timeFilter(time)"

Placeholders in ``template``:

* ``{param}``: the argument's text as written (trimmed, macros in it expanded);
* ``{from}`` / ``{to}``: RFC 3339 UTC, second precision (``2024-01-01T00:00:00Z``);
* ``{from_ms}`` ``{from_s}`` ``{from_ns}`` (and ``to_``): Unix epoch integers;
* ``{from_sql}`` / ``{to_sql}``: ``TIMESTAMP '2024-01-01T00:00:00Z'``;
* ``{interval_s}`` / ``{interval_ms}``: the interval as whole seconds / milliseconds.

``{{`` and ``}}`` are literal braces; other braces are left alone. The expanded template is
expanded again, so it may call built-ins and other user macros (up to a nesting depth of 10).

Everything is validated at load time (:class:`MacroConfigError` naming file and macro): TOML
syntax, unknown keys, names that are not identifiers or shadow a built-in, unknown
placeholders, parameters clashing with placeholders, duplicate names across files, templates
calling unknown macros, and templates that call each other in a cycle.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .builtins import BUILTIN_NAMES
from .errors import MacroConfigError
from .lexer import MACRO, tokenize

__all__ = [
    "UserMacro",
    "load_user_macros",
    "RANGE_PLACEHOLDERS",
    "INTERVAL_PLACEHOLDERS",
    "MAX_DEPTH",
]

#: Placeholders rendered from the time range.
RANGE_PLACEHOLDERS: frozenset[str] = frozenset(
    f"{end}{suffix}" for end in ("from", "to") for suffix in ("", "_ms", "_s", "_ns", "_sql")
)
#: Placeholders rendered from the interval.
INTERVAL_PLACEHOLDERS: frozenset[str] = frozenset({"interval_s", "interval_ms"})
#: How deeply user macro templates may nest.
MAX_DEPTH = 10

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_KEYS = frozenset({"params", "template", "description"})
_LOWER_BUILTINS = {name.lower(): name for name in BUILTIN_NAMES}

#: A compiled template piece: (kind, text) with kind "" literal, "p" parameter, "v" value.
_Part = tuple[str, str]


@dataclass(frozen=True)
class UserMacro:
    """A user-defined macro; the template is checked and compiled on construction.

    Raises:
        ValueError: a bad name or parameter, a built-in shadowed, an unknown placeholder.
    """

    name: str
    params: tuple[str, ...]
    template: str
    description: str = ""
    file: Path = Path("<memory>")
    parts: tuple[_Part, ...] = field(init=False, repr=False, compare=False)
    calls: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _IDENT.fullmatch(self.name):
            raise ValueError(
                f"name {self.name!r} is not an identifier (letters, digits, _; not a digit first)"
            )
        builtin = _LOWER_BUILTINS.get(self.name.lower())
        if builtin is not None:
            case = "" if builtin == self.name else " (the names differ only in case)"
            raise ValueError(f"cannot shadow built-in $__{builtin}{case}; rename it")
        object.__setattr__(self, "params", tuple(self.params))
        seen: set[str] = set()
        for param in self.params:
            if not isinstance(param, str) or not _IDENT.fullmatch(param):
                raise ValueError(f"parameter {param!r} is not an identifier")
            if param in RANGE_PLACEHOLDERS or param in INTERVAL_PLACEHOLDERS:
                raise ValueError(f"parameter {param!r} clashes with the placeholder {{{param}}}")
            if param in seen:
                raise ValueError(f"parameter {param!r} is listed twice")
            seen.add(param)
        object.__setattr__(self, "parts", _compile(self.template, self.params))
        calls = frozenset(text[3:] for text, _, _ in _macro_tokens(self.template))
        object.__setattr__(self, "calls", calls)

    @property
    def needs_range(self) -> bool:
        """Whether the template uses a range placeholder."""
        return any(kind == "v" and text in RANGE_PLACEHOLDERS for kind, text in self.parts)

    def render(self, args: Sequence[str], value: Callable[[str], str]) -> str:
        """The template with ``args`` (one per parameter) and ``value(placeholder)`` filled in."""
        bound = dict(zip(self.params, args, strict=True))
        out: list[str] = []
        for kind, text in self.parts:
            if kind == "":
                out.append(text)
            elif kind == "p":
                out.append(bound[text])
            else:
                out.append(value(text))
        return "".join(out)


def _macro_tokens(template: str) -> list[tuple[str, int, int]]:
    """The ``$__name`` texts in the template's code, as (text, start, end)."""
    return [(template[s:e], s, e) for kind, s, e in tokenize(template) if kind == MACRO]


def _compile(template: str, params: Sequence[str]) -> tuple[_Part, ...]:
    parts: list[_Part] = []
    literal: list[str] = []
    last = 0
    known = set(params)
    for m in _PLACEHOLDER.finditer(template):
        literal.append(template[last : m.start()])
        last = m.end()
        name = m.group(1)
        if name is None:  # {{ or }}
            literal.append(m.group(0)[0])
            continue
        if name in known:
            kind = "p"
        elif name in RANGE_PLACEHOLDERS or name in INTERVAL_PLACEHOLDERS:
            kind = "v"
        else:
            choices = ", ".join(
                "{" + p + "}"
                for p in [*params, *sorted(RANGE_PLACEHOLDERS), *sorted(INTERVAL_PLACEHOLDERS)]
            )
            raise ValueError(f"unknown placeholder {{{name}}} in template; known: {choices}")
        if literal:
            parts.append(("", "".join(literal)))
            literal = []
        parts.append((kind, name))
    literal.append(template[last:])
    text = "".join(literal)
    if text:
        parts.append(("", text))
    return tuple(parts)


def _config_error(file: Path, name: str | None, detail: str) -> MacroConfigError:
    where = f"{file}: $__{name}: " if name is not None else f"{file}: "
    return MacroConfigError(where + detail)


def _read(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise _config_error(file, None, f"invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _config_error(file, None, f"cannot read: {exc}") from None


def _parse_file(file: Path) -> list[UserMacro]:
    doc = _read(file)
    extra = sorted(set(doc) - {"macros"})
    if extra:
        raise _config_error(
            file, None, f"unknown top-level key(s) {', '.join(extra)}; expected [macros.<name>]"
        )
    table = doc.get("macros", {})
    if not isinstance(table, dict):
        raise _config_error(file, None, "'macros' must be a table of [macros.<name>] tables")
    out: list[UserMacro] = []
    for name, spec in table.items():
        if not isinstance(spec, dict):
            raise _config_error(file, name, "must be a table with params, template, description")
        unknown = sorted(set(spec) - _KEYS)
        if unknown:
            raise _config_error(
                file,
                name,
                f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_KEYS))})",
            )
        template = spec.get("template")
        if not isinstance(template, str) or not template.strip():
            raise _config_error(file, name, "needs a non-empty string 'template'")
        params = spec.get("params", [])
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            raise _config_error(file, name, "'params' must be a list of strings")
        description = spec.get("description", "")
        if not isinstance(description, str):
            raise _config_error(file, name, "'description' must be a string")
        try:
            out.append(UserMacro(name, tuple(params), template, description, file))
        except ValueError as exc:
            raise _config_error(file, name, str(exc)) from None
    return out


def load_user_macros(directory: Path) -> dict[str, UserMacro]:
    """Load every ``*.toml`` file in ``directory`` (sorted by name); key = macro name.

    Raises:
        MacroConfigError: anything invalid, naming the file and the macro.
    """
    if not directory.is_dir():
        raise MacroConfigError(f"{directory}: not a directory of macro files")
    macros: dict[str, UserMacro] = {}
    for file in sorted(directory.glob("*.toml")):
        for macro in _parse_file(file):
            other = macros.get(macro.name)
            if other is not None:
                raise _config_error(file, macro.name, f"is already defined in {other.file}")
            macros[macro.name] = macro
    check_references(macros)
    return macros


def check_references(macros: Mapping[str, UserMacro]) -> None:
    """Every macro a template calls exists, and no templates call each other in a cycle.

    Raises:
        MacroConfigError: naming the file and macro.
    """
    for macro in macros.values():
        for callee in sorted(macro.calls):
            if callee not in BUILTIN_NAMES and callee not in macros:
                raise _config_error(
                    macro.file,
                    macro.name,
                    f"template uses unknown macro $__{callee} (built-ins: "
                    f"{', '.join(sorted(BUILTIN_NAMES))}; user macros: "
                    f"{', '.join(sorted(macros)) or 'none'})",
                )
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in done:
            return
        if name in path:
            cycle = " → ".join(f"$__{n}" for n in [*path[path.index(name) :], name])
            first = macros[path[path.index(name)]]
            raise _config_error(first.file, first.name, f"templates call each other: {cycle}")
        path.append(name)
        for callee in sorted(macros[name].calls):
            if callee in macros:
                visit(callee, path)
        path.pop()
        done.add(name)

    for name in sorted(macros):
        visit(name, [])
