"""The ``geoseg`` Typer application: wires the commands together."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperArgument, TyperGroup

try:  # recent typer vendors click; older ones use the click package
    from typer._click import exceptions as _click
except ImportError:  # pragma: no cover
    from click import exceptions as _click  # type: ignore[no-redef]

from geoseg.cli.assess import assess
from geoseg.cli.batch import batch
from geoseg.cli.errors import printable
from geoseg.cli.export import export
from geoseg.cli.info import info
from geoseg.cli.models import models
from geoseg.cli.report import report
from geoseg.cli.run import run
from geoseg.cli.serve import serve
from geoseg.cli.train import evaluate, train
from geoseg.errors import EXIT_SIGINT
from geoseg.version import __version__


def _usage_message(exc: Exception) -> str:
    """click's message, with an unknown option's suggestions led by those it is the start of (``--tile`` ->
    ``--tile-size``, where click's string likeness put ``--compile`` first)."""
    name, possible = getattr(exc, "option_name", None), getattr(exc, "possibilities", None)
    if name and possible:
        ranked = sorted(possible, key=lambda option: (not option.startswith(name), option))
        shown = ranked[0] if ranked[0].startswith(name) else ", ".join(ranked)
        return f"no such option: {name} (did you mean {shown})"
    return exc.format_message()  # type: ignore[attr-defined]


#: How help names the values of a list argument (typer shows the annotation: ``<list[Path]>``).
_LIST_LABELS = {"Path": "path", "str": "text"}


def _list_label(display_type: Callable[[Any, Any], str]) -> Callable[[Any, Any], str]:
    def shown(self: Any, ctx: Any) -> str:
        label = display_type(self, ctx)
        return re.sub(r"<list\[(\w+)\]>", lambda m: f"<{_LIST_LABELS.get(m.group(1), m.group(1).lower())}>", label)

    return shown


if hasattr(TyperArgument, "display_type"):  # typer >= 0.16 shows the type; older ones show none to rename
    TyperArgument.display_type = _list_label(TyperArgument.display_type)  # type: ignore[method-assign]


class _OneLineErrors(TyperGroup):
    """Usage errors (bad flag, bad value) as one ``geoseg: error:`` line and exit code 2, like every other error."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `geoseg`: the help, as usual
                exc.show()
                return self._exit(2, standalone_mode)
            command = exc.ctx.command_path if exc.ctx is not None else "geoseg"
            message = " ".join(_usage_message(exc).split()).rstrip(".?")
            message = re.sub(r"\. Did you mean (.+)$", r" (did you mean \1)", message)
            print(printable(f"geoseg: error: {message}; see `{command} --help`"), file=sys.stderr)
            code = 2
        return self._exit(code, standalone_mode)

    @staticmethod
    def _exit(code: Any, standalone_mode: bool) -> Any:
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="geoseg",
    cls=_OneLineErrors,
    help="Segment large satellite and aerial GeoTIFFs into seamless georeferenced masks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help (click's formatter): it wraps at any width, where rich's panels cut option names at 80 columns.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        print(f"geoseg {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print geoseg's version and exit.")) -> None:
    """Segment large satellite and aerial GeoTIFFs into seamless georeferenced masks."""


app.command()(run)
app.command()(batch)
app.add_typer(models, name="models")
app.command()(info)
app.command()(train)
app.command()(evaluate)
app.add_typer(export, name="export")
app.add_typer(serve, name="serve")
app.add_typer(assess, name="assess")
app.command()(report)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C while a command starts (its imports): one line, not a traceback
        print("geoseg: interrupted", file=sys.stderr)
        sys.exit(EXIT_SIGINT)
