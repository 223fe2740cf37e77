"""The ``geoseg`` Typer application: wires the commands together."""

from __future__ import annotations

import typer

from geoseg.cli.batch import batch
from geoseg.cli.info import info
from geoseg.cli.models import models
from geoseg.cli.run import run

app = typer.Typer(
    name="geoseg",
    help="Segment large satellite and aerial GeoTIFFs into seamless georeferenced masks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(run)
app.command()(batch)
app.command()(models)
app.command()(info)


def main() -> None:
    app()
