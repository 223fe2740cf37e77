"""``geoseg assess design|estimate``: a stratified random sample of a mask to label, and accuracy and area with
95 % confidence intervals from the labelled sample (Olofsson et al. 2014)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from geoseg.cli.errors import user_errors
from geoseg.cli.options import json_option

assess = typer.Typer(help="Accuracy and area with confidence intervals: sample a mask, label the points, estimate.",
                     no_args_is_help=True)


@assess.command()
def design(
    mask: Path = typer.Argument(..., help="A class mask (geoseg's, or any single-band class raster).",
                                show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="The sample: a GeoPackage of points to label.",
                                show_default=False),
    n: int = typer.Option(600, "--n", min=1, help="Sample points in all."),
    min_per_class: int = typer.Option(50, "--min-per-class", min=0, help="Points per mapped class at least."),
    seed: int = typer.Option(0, help="Seed of the draw: the same seed, the same points."),
    overwrite: bool = typer.Option(False, help="Replace an existing sample."),
    as_json: bool = json_option(),
) -> None:
    """A stratified random sample of MASK's pixels by mapped class, with an empty 'reference' field to label."""
    from geoseg.assess.design import design as make_design

    with user_errors(as_json):
        result = make_design(mask, output, n, min_per_class, seed, overwrite)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table("class", "mapped pixels", "points", title=f"{result['points']} points in {output}: label the "
                  "'reference' field of each (QGIS: open the layer, edit its attribute table)", title_justify="left")
    for s in result["strata"]:
        table.add_row(f"{s['value']} {s['name']}", f"{s['mapped_pixels']:,}", str(s["points"]))
    Console().print(table)


@assess.command()
def estimate(
    sample: Path = typer.Argument(..., help="The labelled sample from geoseg assess design.", show_default=False),
    reference: str = typer.Option("reference", "--reference", help="The field holding each point's reference "
                                  "class (a class value or name), or a reference raster (.tif) read at the points."),
    as_json: bool = json_option(),
) -> None:
    """Overall, user's and producer's accuracy and each class's error-adjusted area, with 95 % intervals."""
    from geoseg.assess.design import estimate_sample

    with user_errors(as_json):
        result, left = estimate_sample(sample, reference)
    report = {**result.to_dict(), "points_left_out": left}
    if as_json:
        print(json.dumps(report, indent=2))
        return

    def f(v: float | None, ci: float | None, digits: int = 3) -> str:
        return "-" if v is None else f"{v:.{digits}f} ± {ci:.{digits}f}" if ci is not None else f"{v:.{digits}f}"

    overall = f(report["overall_accuracy"], report["overall_accuracy_ci95"])
    table = Table("class", "mapped", "points", "user's accuracy", "producer's accuracy", "area share",
                  "area ha" if result.pixel_area_m2 else "area pixels",
                  title=f"{sample.name}: overall accuracy {overall} (95 % intervals, {report['sample_points']} points)",
                  title_justify="left")
    for c in report["classes"]:
        area = (f(c["area_ha"], c["area_ha_ci95"], 1) if result.pixel_area_m2 else
                f(c["area_pixels"], c["area_pixels_ci95"], 0))
        table.add_row(f"{c['value']} {c['name']}", f"{c['mapped_pixels']:,}", str(c["sample_points"]),
                      f(c["users_accuracy"], c["users_accuracy_ci95"]),
                      f(c["producers_accuracy"], c["producers_accuracy_ci95"]),
                      f(c["area_share"], c["area_share_ci95"], 4), area)
    Console().print(table)
    if left["not labelled"]:
        Console().print(f"{left['not labelled']} point(s) left out: not labelled")
