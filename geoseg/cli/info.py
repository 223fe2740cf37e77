"""``geoseg info SCENE``: what geoseg sees in a raster, and which built-in model fits it."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from geoseg.cli.errors import user_errors
from geoseg.cli.options import json_option


def info(
    scene: Path = typer.Argument(..., help="Input raster, STAC Item, or product folder / .zip (Landsat, SAFE).",
                                 show_default=False),
    as_json: bool = json_option(),
) -> None:
    """Show size, bands, dtype, CRS, nodata and the built-in model that fits SCENE (for an Item or a product
    folder: which asset or file feeds which model input)."""
    from geoseg.info import describe

    with user_errors(as_json):
        facts = describe(scene)
    if as_json:
        print(json.dumps(facts, indent=2))
        return
    table = Table(title=str(scene), show_header=False, title_justify="left")
    for key, value in facts.items():
        shown = (", ".join(f"{i + 1}={d or '(no name)'}" for i, d in enumerate(value)) if key == "bands" else
                 "\n".join(value) if key == "inputs" else value)
        table.add_row(key, str(shown))
    Console().print(table)
