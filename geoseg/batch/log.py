"""A batch's log: one JSON event per line, appended as it happens."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from geoseg.errors import OutputError


class EventLog:
    """JSON lines, one event each, flushed as they happen (``tail -f`` friendly); thread-safe.

    Each line is one ``write`` to a file opened for appending, so batches (and processes) sharing a
    log never interleave inside a line. ``record=True`` keeps the events in :attr:`events` instead (a
    dask worker hands them back to its batch, which writes them)."""

    def __init__(self, path: Path | None, record: bool = False):
        self.path = path
        self.events: list[dict[str, Any]] | None = [] if record else None
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> EventLog:
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                if _ends_mid_line(self.path):  # a run stopped by a full disk: its cut line stays a line of its own
                    os.write(self._fd, b"\n")
            except OSError as exc:
                raise OutputError(f"{self.path}: the batch's log cannot be written ({exc.strerror}); choose a "
                                  f"writable output folder or --log PATH") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def emit(self, event: str, **fields: Any) -> None:
        self.write({"time": now(), "event": event, **fields})

    def write(self, record: dict[str, Any]) -> None:
        """Write one event as it is (a worker's events keep their own time)."""
        if self.events is not None:
            self.events.append(record)
        if self._fd is None:
            return
        line = (json.dumps(record, default=str) + "\n").encode()
        with self._lock:
            try:
                if os.write(self._fd, line) < len(line):  # a short write: the disk filled up within the line
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError as exc:
                raise OutputError(f"{self.path}: the batch's log cannot be written ({exc.strerror}); free space "
                                  f"and run the batch again (it picks up where it stopped; a cut line is "
                                  f"skipped)") from None


def _ends_mid_line(path: Path) -> bool:
    """The regular file at ``path`` ends inside a line (a pipe or a device, ``--log /dev/stderr``, never does)."""
    if not stat.S_ISREG(path.stat().st_mode):
        return False
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return False
        f.seek(size - 1)
        return f.read(1) != b"\n"


def now() -> str:
    """The time of an event: UTC, to the second, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")
