"""Logging: one JSON object per line (or plain text), never secrets."""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

__all__ = ["configure_logging", "JsonFormatter"]

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
        return json.dumps(entry, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.getMessage()}"
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info and record.exc_info[1] is not None:
            line += "\n" + "".join(
                traceback.format_exception(record.exc_info[1], limit=_TRACEBACK_FRAMES)
            )
        return line


def configure_logging(level: str, fmt: str) -> None:
    """Send the ``flightsql_srv`` logs to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger("flightsql_srv")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
