"""``geoseg run SCENE``: segment one scene into a mask beside it."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from geoseg.cli.errors import printable, user_errors
from geoseg.cli.options import cluster_options, json_option, with_run_settings
from geoseg.config import RunConfig

if TYPE_CHECKING:
    from geoseg.cluster.workers import ClusterSpec
    from geoseg.prepare import VectorRequest
    from geoseg.summary import RunSummary


@with_run_settings
@cluster_options
def run(
    scenes: list[Path] = typer.Argument(..., help="Input raster (GeoTIFF, COG, VRT, JP2); or a STAC Item (.json) "
                                        "of per-band assets; or one file per band (..._B02.tif ..._B03.tif ...).",
                                        show_default=False, metavar="SCENE..."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Mask file [default: SCENE.mask.tif]"),
    overwrite: bool = typer.Option(False, help="Replace an existing output file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
    as_json: bool = json_option(),
    vector: Path | None = typer.Option(None, "--vector", help="Also polygonise the mask into this layer "
                                       "(.gpkg, .fgb, .parquet, .geojson).", show_default=False),
    min_area: float = typer.Option(0.0, "--min-area", min=0, help="With --vector: sieve regions smaller than this "
                                   "many m² first."),
    simplify: float = typer.Option(0.0, "--simplify", min=0, help="With --vector: simplify polygons by this "
                                   "tolerance in map units, keeping shared edges shared."),
    *,
    settings: RunConfig,
    cluster: ClusterSpec | None,
) -> None:
    """Segment SCENE into a georeferenced class mask (Cloud-Optimized GeoTIFF, uint8, nodata 255) with its
    QGIS style (.qml), STAC Item (.json) and GDAL legend (.aux.xml) beside it."""
    config = replace(settings, overwrite=overwrite)
    err = Console(stderr=True)
    plain = quiet or as_json or not err.is_terminal
    with user_errors(as_json):
        if cluster is not None:  # on a dask cluster's workers (or this user's geoseg service)
            if cluster.service and not quiet:
                print(service_notice(cluster), file=sys.stderr)
            summary = _on_cluster(cluster, scenes, output, config, _layer(vector, min_area, simplify), plain, err)
        else:
            from geoseg.io.stack import stack_input
            from geoseg.prepare import prepare_run

            # Every check a user can fail (scene, output, model card, bands, settings) before torch is imported:
            # a mistake is reported in a second, not after the network's libraries have loaded.
            scene, output = stack_input(scenes, output, overwrite)
            prepared = prepare_run(scene, output, config, vector=vector)
            layer = _layer(vector, min_area, simplify)
            from geoseg.run import segment_scene  # torch, after the checks

            if plain:
                summary = segment_scene(scene, output, config, vector=layer, prepared=prepared)
            else:
                with _progress_bar(err) as (bar, task):
                    summary = segment_scene(scene, output, config, vector=layer, prepared=prepared,
                                            progress=lambda done, total: bar.update(task, completed=done,
                                                                                    total=total))
    for note in summary.warnings:
        print(printable(f"geoseg: warning: {note}"), file=sys.stderr)
    if as_json:
        print(json.dumps(summary.to_dict(), indent=2))
    elif not quiet:
        Console().print(summary_table(summary))


def _layer(vector: Path | None, min_area: float, simplify: float) -> VectorRequest | None:
    if vector is None:
        return None
    from geoseg.prepare import VectorRequest

    return VectorRequest(vector, min_area, simplify)


def _on_cluster(cluster: ClusterSpec, scenes: list[Path], output: Path | None, config: RunConfig,
                layer: VectorRequest | None, plain: bool, err: Console) -> RunSummary:
    if cluster.service_door is not None:  # one scene, one worker: the service's door, no dask in this process
        from geoseg.cluster.door import segment_scene_at_door

        return segment_scene_at_door(cluster.service_door, scenes, output, config, layer)
    from geoseg.cluster.scenes import segment_scene_as_task
    from geoseg.cluster.workers import connect

    with connect(cluster) as client:
        if len(client.scheduler_info()["workers"]) == 1:  # the whole scene on the one worker, checked and written there
            return segment_scene_as_task(client, scenes, output, config, layer)
        from geoseg.cluster.split import segment_scene_on
        from geoseg.io.stack import stack_input
        from geoseg.prepare import prepare_run

        scene, output = stack_input(scenes, output, config.overwrite)
        prepared = prepare_run(scene, output, config, vector=None if layer is None else layer.path)
        if plain:  # row strips on the workers, written here
            return segment_scene_on(client, scene, output, config, vector=layer, prepared=prepared)
        with _progress_bar(err) as (bar, task):
            return segment_scene_on(client, scene, output, config, vector=layer, prepared=prepared,
                                    progress=lambda done, total: bar.update(task, completed=done, total=total))


def service_notice(cluster: ClusterSpec) -> str:
    """The line that says a command runs on this user's geoseg service."""
    return f"geoseg: running on the geoseg service at {cluster.scheduler} (geoseg serve status; --local runs here)"


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
    decoded = {"gpu": ", tiles decoded on the GPU", "hybrid": ", tiles decoded on the GPU and CPU"}.get(s.decode, "")
    table.add_row("input", f"{s.input} ({s.width} x {s.height}, bands {','.join(map(str, s.bands))}{decoded})")
    grid = ("scene's own grid" if s.factor == 1 else
            f"inferred at {s.pixel_size_m * s.factor:g} m (scene: {s.pixel_size_m:g} m)" if s.pixel_size_m else
            f"inferred at 1/{s.factor} of the scene's resolution")
    table.add_row("model", f"{s.model} on {s.device} ({s.backend}, {s.precision}, batches of {s.batch_size}), {grid}")
    table.add_row("tiling", f"{s.tile_size} px tiles, {s.overlap} px overlap, {s.blend} blend")
    finishing = f" ({s.finish_seconds:.1f} s of it finishing the {s.output_format})" if s.finish_seconds else ""
    table.add_row("time", f"{s.seconds:.1f} s, {s.megapixels_per_second:.2f} MP/s{finishing}")
    for c in s.class_stats:
        area = f"{c['area_ha']:,.1f} ha" if c["area_ha"] is not None else "area unknown (no CRS)"
        table.add_row(c["name"], f"{100 * c['share']:.2f} % of the valid area, {area}")
    table.add_row("no data", f"{100 * s.nodata_share:.2f} % of the scene")
    if s.seam_share is not None:
        table.add_row("seams", f"overlapping patches disagreed on {100 * s.seam_share:.2f} % of the valid pixels "
                               f"(blended away)")
    for kind, path in s.files.items():
        table.add_row(kind, path)
    if s.vector is not None:
        table.add_row("vector", f"{s.vector['path']} ({s.vector['polygons']:,} polygons, {s.vector['seconds']:.1f} s)")
    return table
