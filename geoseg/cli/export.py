"""``geoseg export vector|stats MASK``: products made from a finished mask, without inference."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from geoseg.cli.errors import user_errors
from geoseg.cli.options import json_option

export = typer.Typer(help="Products from a finished mask: polygons, statistics.", no_args_is_help=True)


@export.command()
def vector(
    mask: Path = typer.Argument(..., help="A class mask (geoseg's, or any single-band class raster).",
                                show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Polygon layer: .gpkg, .fgb, .parquet or .geojson.",
                                show_default=False),
    min_area: float = typer.Option(0.0, "--min-area", min=0, help="Sieve regions smaller than this many m² first."),
    simplify: float = typer.Option(0.0, "--simplify", min=0, help="Simplify by this tolerance in map units, keeping "
                                   "shared edges shared (holds the layer in memory)."),
    overwrite: bool = typer.Option(False, help="Replace an existing output."),
    as_json: bool = json_option(),
) -> None:
    """Polygonise MASK window by window into one layer (class, name, area_m2), merging across windows."""
    from geoseg.export.vector import polygonize

    with user_errors(as_json):
        summary = polygonize(mask, output, min_area_m2=min_area, simplify=simplify, overwrite=overwrite)
    if as_json:
        print(json.dumps(asdict(summary), indent=2))
    else:
        Console().print(f"{summary.path}: {summary.polygons:,} polygons in {summary.seconds:.1f} s "
                        f"({', '.join(f'{k} {v:,}' for k, v in summary.per_class.items())})")
    for name in summary.removed:
        print(f"geoseg: note: class {name!r} is in the mask but has no region of at least --min-area {min_area:g} m²; "
              f"the layer has none of it", file=sys.stderr)


@export.command()
def stats(
    mask: Path = typer.Argument(..., help="A class mask.", show_default=False),
    regions: Path | None = typer.Option(None, "--regions", help="Polygons to count within (any vector format).",
                                        show_default=False),
    by: str | None = typer.Option(None, "--by", help="Field of --regions that names each region "
                                  "[default: its index]", show_default=False),
    output: Path | None = typer.Option(None, "-o", "--output", help="Also write the table as CSV.",
                                       show_default=False),
    as_json: bool = json_option(),
) -> None:
    """Per-class pixels, area (ha) and share of the valid area, for the whole mask or per region."""
    from geoseg.export.stats import mask_stats, write_table, zonal_stats

    with user_errors(as_json):
        if regions is not None:
            rows = zonal_stats(mask, regions, by)
            about = {"mask": str(mask), "regions": str(regions), "by": by}
        else:
            table, about = mask_stats(mask)
            rows = [{"classes": [asdict(s) for s in table]}]
        if output is not None:
            write_table(rows, output)
    if as_json:
        print(json.dumps({**about, "rows" if regions is not None else "classes":
                          rows if regions is not None else rows[0]["classes"]}, indent=2, default=str))
        return
    shown = Table("region", "class", "pixels", "area ha", "share", title=str(mask), title_justify="left")
    for row in rows:
        for c in row["classes"]:
            area = f"{c['area_ha']:,.2f}" if c["area_ha"] is not None else "unknown (no CRS)"
            shown.add_row(str(row.get("region", "")), c["name"], f"{c['pixels']:,}", area,
                          f"{100 * c['share']:.2f} %")
    Console().print(shown)
