"""The one place where user mistakes become a one-line message and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from geoseg.errors import EXIT_SIGINT, GeosegError


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn :class:`GeosegError` into ``geoseg: error: ...`` on stderr and its exit code; Ctrl-C into 130."""
    try:
        yield
    except GeosegError as exc:
        print(f"geoseg: error: {exc}", file=sys.stderr)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        print("geoseg: interrupted; no output was left at the final path", file=sys.stderr)
        raise typer.Exit(EXIT_SIGINT) from None
