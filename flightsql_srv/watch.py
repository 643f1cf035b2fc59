"""Notice changes to the catalog and macro files, by polling (no extra dependency)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["DirectoryWatcher", "snapshot"]

log = logging.getLogger("flightsql_srv")

Snapshot = tuple[tuple[str, int, int], ...]


def snapshot(directories: list[Path]) -> Snapshot:
    """(path, mtime_ns, size) of every ``*.toml`` in ``directories``."""
    entries = []
    for directory in directories:
        for path in sorted(directory.glob("*.toml")):
            try:
                stat = path.stat()
            except OSError:  # removed between glob and stat
                continue
            entries.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(entries)


class DirectoryWatcher:
    """Calls ``on_change`` when the TOML files in ``directories`` change.

    Args:
        directories: folders to watch.
        interval: seconds between polls.
        on_change: called from the watcher thread after a change.
    """

    def __init__(
        self, directories: list[Path], interval: float, on_change: Callable[[], object]
    ) -> None:
        self._directories = directories
        self._interval = interval
        self._on_change = on_change
        self._seen = snapshot(directories)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        pending: Snapshot | None = None
        while not self._stop.wait(self._interval):
            current = snapshot(self._directories)
            if current == self._seen:
                pending = None
                continue
            # Reload once a change has settled (the same for two polls) and no file is
            # empty: an editor saving in place truncates the file first, and an empty
            # catalog file would otherwise be read as "no tables" (delete a file to drop
            # its tables).
            settled = current == pending
            pending = current
            if not settled or any(size == 0 for _, _, size in current):
                continue
            self._seen = current
            log.info("catalog or macro files changed: reloading")
            try:
                self._on_change()
            except Exception:
                log.exception("reload after a file change failed")
