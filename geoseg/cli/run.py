"""``geoseg run SCENE``: segment one scene into a mask beside it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from geoseg.cli.errors import user_errors
from geoseg.cli.options import blend_option, parse_bands, precision_option
from geoseg.run import RunConfig, RunSummary, segment_scene

D = RunConfig()


def run(
    scene: Path = typer.Argument(..., help="Input raster (GeoTIFF, COG, VRT, JP2).", show_default=False),
    output: Path | None = typer.Option(None, "-o", "--output", help="Mask file [default: SCENE.mask.tif]"),
    model: str = typer.Option(D.model, help="Built-in model name (see `geoseg models`), model folder, or auto."),
    bands: str | None = typer.Option(None, help="Scene bands in the model's input order: 1-based indexes or "
                                     "names, comma-separated [default: matched by band name]"),
    tile_size: int | None = typer.Option(None, help="Patch edge in pixels, a multiple of 32 [default: model's]"),
    overlap: int | None = typer.Option(None, help="Overlap between patches in pixels [default: model's]"),
    blend: str = typer.Option(D.blend, callback=blend_option, help="Blend window: cosine, gaussian or none."),
    batch_size: int = typer.Option(D.batch_size, min=1, help="Patches per model call."),
    device: str = typer.Option(D.device, help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option(D.precision, callback=precision_option,
                                  help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16."),
    match_resolution: bool = typer.Option(D.match_resolution, help="Infer at the model's training resolution "
                                          "when the scene is clearly finer; the mask stays on the scene's grid."),
    scale: float | None = typer.Option(None, help="Multiply pixel values by this before normalising "
                                       "[default: model's, e.g. 0.0001 for uint16 reflectance]"),
    block_size: int = typer.Option(D.block_size, min=1, help="Scene pixels per processing block edge."),
    workers: int | None = typer.Option(None, min=1, help="Reader threads [default: CPU cores]"),
    overwrite: bool = typer.Option(False, help="Replace an existing output file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Segment SCENE into a georeferenced class mask (uint8 GeoTIFF, nodata 255)."""
    config = RunConfig(
        model=model, bands=parse_bands(bands), tile_size=tile_size, overlap=overlap, blend=blend,
        batch_size=batch_size, device=device, precision=precision, match_resolution=match_resolution,
        scale=scale, block_size=block_size, workers=workers, overwrite=overwrite,
    )
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
    table.add_row("model", f"{s.model} on {s.device} ({s.precision}), {grid}")
    table.add_row("tiling", f"{s.tile_size} px tiles, {s.overlap} px overlap, {s.blend} blend")
    table.add_row("time", f"{s.seconds:.1f} s, {s.megapixels_per_second:.2f} MP/s")
    for name, share in s.class_shares.items():
        table.add_row(name, f"{100 * share:.2f} %")
    table.add_row("no data", f"{100 * s.nodata_share:.2f} %")
    return table
