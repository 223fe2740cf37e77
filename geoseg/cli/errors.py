"""The one place where user mistakes become a one-line message and an exit code."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from geoseg.errors import EXIT_SIGINT, GeosegError


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


def _report(message: str, code: int, as_json: bool) -> None:
    print(f"geoseg: error: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": message, "exit_code": code}))
