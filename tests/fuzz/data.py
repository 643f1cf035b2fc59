"""Turn one fuzzer-chosen ``bytes`` input into structured values, deterministically.

atheris hands a target raw bytes; hypothesis can too (``st.binary()``). Reading them through
:class:`Input` keeps both engines on the same target code, and keeps each input reproducible
from its file in the corpus.
"""

from __future__ import annotations

import random

__all__ = ["Input", "UndocumentedError", "toml_text"]


class UndocumentedError(AssertionError):
    """A target let through an exception its interface does not document (a crash)."""


class Input:
    """A cursor over fuzz bytes; reading past the end yields zeros / empty values."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        """One byte (0 when exhausted)."""
        if self.pos >= len(self.data):
            return 0
        value = self.data[self.pos]
        self.pos += 1
        return value

    def choice(self, options: list[object] | tuple[object, ...]) -> object:
        """One of ``options``, picked by the next byte."""
        return options[self.byte() % len(options)]

    def bytes(self, max_len: int = 256) -> bytes:
        """A length-prefixed run of bytes (the length byte scaled to ``max_len``)."""
        length = self.byte() * max_len // 255
        chunk = self.data[self.pos : self.pos + length]
        self.pos += len(chunk)
        return chunk

    def text(self, max_len: int = 256) -> str:
        """A length-prefixed string, decoded leniently (so any bytes make some text)."""
        return self.bytes(max_len).decode("utf-8", errors="replace")

    def rest(self) -> bytes:
        """Everything not read yet."""
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk

    def rng(self) -> random.Random:
        """A generator seeded by the next 4 bytes, for bulk values (array contents)."""
        return random.Random(int.from_bytes(bytes(self.byte() for _ in range(4)), "big"))


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # nan, inf and -inf are spelled the same in TOML
    if isinstance(value, str):
        escaped = value.encode("unicode_escape").decode("ascii").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_key(key: str) -> str:
    return (
        key
        if key.replace("_", "").replace("-", "").isalnum() and key.isascii()
        else (_toml_value(key))
    )


def toml_text(document: dict[str, object]) -> str:
    """A TOML document for ``document`` (no ``tomli_w`` in the venv): top-level scalars first,
    then one ``[section.name]`` per nested table of tables."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, object]]] = []
    for key, value in document.items():
        if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
            tables.extend((f"{_toml_key(key)}.{_toml_key(k)}", v) for k, v in value.items())  # type: ignore[misc]
            if not value:
                tables.append((_toml_key(key), {}))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for header, body in tables:
        lines.append(f"[{header}]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in body.items())
    return "\n".join(lines) + "\n"
