"""Logging: one JSON object per line (or plain text), never secrets."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
from typing import Any

__all__ = ["configure_logging", "JsonFormatter", "escape_control"]

_TRACEBACK_FRAMES = 64  # explicit: the server sets sys.tracebacklimit = 0 for clients' sake


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line; ``extra={"fields": {...}}`` adds keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[1] is not None:
            entry["exception"] = "".join(
                traceback.format_exception(record.exc_info[1], limit=_TRACEBACK_FRAMES)
            )
        # ensure_ascii (the default) escapes every control and non-ASCII character.
        return json.dumps(entry, default=str)


#: C0 and C1 control characters, DEL, and the Unicode line/paragraph separators and bidi
#: controls: anything that could end a log line early or make it display as another.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
#: Values printed bare in text logs; anything else is quoted.
_BARE = re.compile(r"[^\s\"=]+")


def escape_control(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(_escape_one, text)


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if _BARE.fullmatch(text):
        return escape_control(text)
    return json.dumps(text)  # quoted, every control character escaped


class _TextFormatter(logging.Formatter):
    """``time LEVEL message k=v ...`` on one line: logged values never add lines, and the
    lines of a traceback are indented so that none of them reads as a record."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        message = escape_control(record.getMessage())
        line = f"{self.formatTime(record)} {record.levelname:<7} {message}"
        if fields:
            line += " " + " ".join(
                f"{escape_control(str(k))}={_text_value(v)}" for k, v in fields.items()
            )
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(record.exc_info[1], limit=_TRACEBACK_FRAMES))
            line += "".join(f"\n    | {escape_control(part)}" for part in text.splitlines())
        return line


def configure_logging(level: str, fmt: str) -> None:
    """Send the ``flightsql_srv`` logs to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger("flightsql_srv")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
