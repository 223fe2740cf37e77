"""The one place where user mistakes become a one-line message and an exit code."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from geoseg.errors import EXIT_SIGINT, WRITE_ERRNOS, GeosegError, OutputError


@contextmanager
def user_errors(as_json: bool = False) -> Iterator[None]:
    """Turn :class:`GeosegError` into ``geoseg: error: ...`` on stderr and its exit code; Ctrl-C into 130.

    With ``as_json`` (a command's ``--json``) the error is also one JSON object on stdout,
    ``{"error": ..., "exit_code": ...}``, where a script reads the command's JSON.
    """
    try:
        yield
    except GeosegError as exc:
        _report(str(exc), exc.exit_code, as_json)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        _report("interrupted; no output was left at the final path", EXIT_SIGINT, as_json)
        raise typer.Exit(EXIT_SIGINT) from None
    except OSError as exc:
        # A full disk, a quota or a file-size limit met by a write that no command names (a library's own
        # file, an export): the environment's fault, not a bug, so one line and the output error's code.
        if exc.errno not in WRITE_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        _report(f"{where}a write failed ({exc.strerror}); free space or choose another output folder, then run "
                f"again", OutputError.exit_code, as_json)
        raise typer.Exit(OutputError.exit_code) from None


def printable(text: str) -> str:
    """``text`` with control characters (an ESC sequence in a file name, a newline in a YAML value) shown as
    escapes, so a message is one line and never drives the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _report(message: str, code: int, as_json: bool) -> None:
    print(f"geoseg: error: {printable(message)}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": message, "exit_code": code}))
