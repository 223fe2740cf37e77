"""``geoseg models``: the built-in models, their bands and classes."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from geoseg.cli.errors import user_errors
from geoseg.models import builtin_cards


def models(as_json: bool = typer.Option(False, "--json", help="Print the model cards as JSON.")) -> None:
    """List the built-in models (pass a name to `geoseg run --model`; `auto` picks one per scene)."""
    with user_errors():
        cards = builtin_cards()
    if as_json:
        print(json.dumps([c.to_dict() for c in cards], indent=2))
        return
    table = Table("name", "bands", "classes", "tile / overlap", "trained at",
                  title="built-in models (--json for full cards)")
    for c in cards:
        table.add_row(c.name, ", ".join(c.bands), ", ".join(f"{k.value}={k.name}" for k in c.classes),
                      f"{c.tile_size} / {c.overlap}", f"{c.resolution_m:g} m" if c.resolution_m else "-")
    Console().print(table)
