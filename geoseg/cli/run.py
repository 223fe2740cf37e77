"""``geoseg run SCENE``: segment one scene into a mask beside it."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from geoseg.cli.errors import user_errors
from geoseg.cli.options import with_run_settings
from geoseg.config import RunConfig
from geoseg.run import RunSummary, segment_scene


@with_run_settings
def run(
    scene: Path = typer.Argument(..., help="Input raster (GeoTIFF, COG, VRT, JP2).", show_default=False),
    output: Path | None = typer.Option(None, "-o", "--output", help="Mask file \\[default: SCENE.mask.tif]"),
    overwrite: bool = typer.Option(False, help="Replace an existing output file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    *,
    settings: RunConfig,
) -> None:
    """Segment SCENE into a georeferenced class mask (uint8 GeoTIFF, nodata 255)."""
    config = replace(settings, overwrite=overwrite)
    err = Console(stderr=True)
    with user_errors():
        if quiet or as_json or not err.is_terminal:
            summary = segment_scene(scene, output, config)
        else:
            with _progress_bar(err) as (bar, task):
                summary = segment_scene(scene, output, config,
                                        progress=lambda done, total: bar.update(task, completed=done, total=total))
    for note in summary.warnings:
        print(f"geoseg: warning: {note}", file=sys.stderr)
    if as_json:
        print(json.dumps(summary.to_dict(), indent=2))
    elif not quiet:
        Console().print(summary_table(summary))


class _progress_bar:
    def __init__(self, console: Console):
        self.progress = Progress(TextColumn("segmenting"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)

    def __enter__(self) -> tuple[Progress, int]:
        self.progress.__enter__()
        return self.progress, self.progress.add_task("run", total=None)

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)


def summary_table(s: RunSummary) -> Table:
    table = Table(title=f"geoseg: {s.output}", show_header=False, title_justify="left")
    table.add_row("input", f"{s.input} ({s.width} x {s.height}, bands {','.join(map(str, s.bands))})")
    grid = f"inferred at 1/{s.factor} of the scene's resolution" if s.factor > 1 else "scene's own grid"
    table.add_row("model", f"{s.model} on {s.device} ({s.precision}, batches of {s.batch_size}), {grid}")
    table.add_row("tiling", f"{s.tile_size} px tiles, {s.overlap} px overlap, {s.blend} blend")
    table.add_row("time", f"{s.seconds:.1f} s, {s.megapixels_per_second:.2f} MP/s")
    for name, share in s.class_shares.items():
        table.add_row(name, f"{100 * share:.2f} %")
    table.add_row("no data", f"{100 * s.nodata_share:.2f} %")
    return table
