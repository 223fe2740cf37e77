"""The errors geoseg raises for things a user can fix, each with its CLI exit code.

Every message names what was received, what is allowed and how to fix it, on one line. The CLI
maps these classes to a message and an exit code in one place (``geoseg.cli.errors``); anything
else is a bug and is reported as such.
"""

from __future__ import annotations

import errno


class GeosegError(Exception):
    """Root of geoseg's user-facing errors."""

    exit_code = 1  # overridden by every subclass; EXIT_FAILED for a plain GeosegError


class ConfigError(GeosegError, ValueError):
    """A setting is out of range or inconsistent (tile size, overlap, batch size, ...)."""

    exit_code = 2


class SceneError(GeosegError, OSError):
    """The input is missing, unreadable or not a raster geoseg can segment."""

    exit_code = 3


def no_such_file(path: object) -> SceneError:
    """The error for an input path that does not exist, naming the folder relative paths start at."""
    import os

    return SceneError(f"{path}: no such file; check the path (relative paths start at {os.getcwd()})")


class BandError(GeosegError, ValueError):
    """The scene's bands do not give the model what it needs."""

    exit_code = 4


class ModelError(GeosegError, ValueError):
    """The model name is unknown, or its weights are missing or do not fit the architecture."""

    exit_code = 5


class OutputError(GeosegError, OSError):
    """The output cannot be written where asked (exists, equals the input, not writable)."""

    exit_code = 6


class DeviceError(GeosegError, RuntimeError):
    """The requested compute device is not available."""

    exit_code = 7


#: The errnos of a write the environment refused: no space, over a quota, past a file-size limit.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def reason(exc: BaseException, limit: int = 200) -> str:
    """What a library's exception says, fit for a one-line message: its first line, without the SQL of a
    failed GDAL SQLite statement (GeoPackage), at most ``limit`` characters."""
    import re

    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    first = re.sub(r"sqlite3_exec\(.*\) failed: ", "SQLite: ", first)
    return first if len(first) <= limit else first[:limit - 1] + "…"


class Cancelled(Exception):
    """A run was asked to stop (a signal in ``geoseg batch``); nothing was left at the output path."""


#: Exit codes that belong to no error class (docs/errors.md's table lists them all): a finished command,
#: a bug or a batch with failed scenes, and the signals that stopped it (128 + the signal's number).
EXIT_OK = 0
EXIT_FAILED = 1
#: ``geoseg serve status`` when no service runs (not an error; distinct from every error's code).
EXIT_NOT_RUNNING = 8
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
