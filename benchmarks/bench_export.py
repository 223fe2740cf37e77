"""What the GIS product costs: COG finishing against the run it finishes, and polygonising the mask
against GDAL's polygonize of the whole mask, all in one process.

    python benchmarks/bench_export.py SOURCE.tif --size 16384 --model MODEL_DIR --real-mask MASK.tif \
        [--device cuda] [--rounds 2]

1. geoseg warm (model loaded, a small scene run first), the same scene as a plain GeoTIFF
   (``--format gtiff``) and as a COG (the default), interleaved ``--rounds`` times: the COG's
   ``finish_seconds`` (GDAL's COG driver: overviews by MODE, 512-px blocks) against its whole run
   (target: at most 25 %), and against the GeoTIFF run's time.
   A model with random weights (as in bench_run.py: speed does not depend on them) makes masks of
   unrealistic texture, and finishing and polygonising depend on it. So parts 2 and 3 also run on a
   *realistic* mask of the same size: the real model's mask of the real scene (``--real-mask``, made
   by ``geoseg run`` on it), mirrored and repeated like the scenes; its COG finishing is timed alone
   and compared with the same COG run.
2. ``geoseg export vector`` of the masks into a GeoPackage (windows of 4096 px, merged), against
   the baseline: GDAL's polygonize of the whole mask in one call (``rasterio.features.shapes`` over
   the whole array, 4-connectivity, the same library ``gdal_polygonize`` uses) written with pyogrio,
   and the polygon counts of both (they must agree).
3. ``geoseg export stats`` of the mask, for scale.
4. ``--parts levels``: the realistic mask written as a run writes a COG (the working GeoTIFF and its
   overview levels, strip by strip), then finished at DEFLATE levels ``--cog-levels`` interleaved
   ``--rounds`` times: seconds and MB of each, against GDAL's default level (6) as the baseline.

Prints a markdown table; the scene is built from the real one by make_scene.py (mirror and repeat).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.make_scene import build_scene, peak_rss_gib
from benchmarks.runbench.common import ensure_weights, table


def gdal_polygonize_whole(mask: Path, out: Path) -> tuple[float, int]:
    """The baseline: GDAL's polygonize over the whole mask in memory, then one write (GeoPackage
    through pyogrio, or GeoParquet through the same writer geoseg uses)."""
    import shapely
    from rasterio.features import shapes

    from geoseg.export.vector import _write_parquet

    started = time.perf_counter()
    with rasterio.open(mask) as ds:
        labels = ds.read(1)
        found = list(shapes(labels, mask=labels != ds.nodata, connectivity=4, transform=ds.transform))
        crs = ds.crs
    geoms = np.array([shapely.geometry.shape(s) for s, _ in found], dtype=object)
    values = np.array([int(v) for _, v in found], dtype=np.int32)
    if out.suffix == ".parquet":
        _write_parquet(out, values, geoms, [str(v) for v in values], shapely.area(geoms), crs)
    else:
        import pyogrio

        pyogrio.raw.write(str(out), geometry=shapely.to_wkb(geoms), field_data=[values], fields=["class"],
                          crs=crs.to_wkt(), driver="GPKG", geometry_type="Polygon")
    return time.perf_counter() - started, len(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--real-mask", type=Path, required=True, help="a mask of the real scene by the real model")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-bench"))
    parser.add_argument("--vector-ext", default=".gpkg", choices=[".gpkg", ".parquet"],
                        help="layer format of both the geoseg export and the baseline")
    parser.add_argument("--cog-levels", type=int, nargs="*", default=[6, 5, 4, 1],
                        help="--parts levels: the COG's DEFLATE levels to compare (the first is the baseline)")
    parser.add_argument("--parts", nargs="*", default=["run", "vector"], choices=["run", "vector", "levels"],
                        help="run: the runs and COG finishing; vector: polygons and statistics of the masks the run "
                        "part left in --workdir")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    if "run" in args.parts:
        part_run(args)
    if "vector" in args.parts:
        part_vector(args)
    if "levels" in args.parts:
        part_levels(args)


def part_run(args: argparse.Namespace) -> None:
    from geoseg.config import RunConfig
    from geoseg.engine.device import DeviceSession
    from geoseg.io.writing import RASTER_FORMATS, RasterSpec, finish
    from geoseg.models import load_model
    from geoseg.run import segment_scene

    scene = build_scene(args.source, args.workdir / f"s2-{args.size}.tif", args.size)
    ensure_weights(args.model)
    loaded = load_model(str(args.model))
    DeviceSession.tune_for_many_scenes()
    base = RunConfig(device=args.device, overwrite=True, batch_size=16 if args.device != "cpu" else None)
    segment_scene(args.source, args.workdir / "warm.tif", base, model=loaded)  # warm-up: model placed, kernels
    runs: dict[str, list] = {"gtiff": [], "cog": []}
    for _ in range(args.rounds):
        for fmt in ("gtiff", "cog"):
            runs[fmt].append(segment_scene(scene, args.workdir / f"mask-{fmt}.tif", replace(base, output_format=fmt),
                                           model=loaded))
    g = statistics.median(s.seconds for s in runs["gtiff"])
    c = statistics.median(s.seconds for s in runs["cog"])
    f = statistics.median(s.finish_seconds for s in runs["cog"])
    real_gtiff = build_scene(args.real_mask, args.workdir / f"real-mask-{args.size}.tif", args.size)
    real_cog = args.workdir / f"real-mask-{args.size}.cog.tif"
    with rasterio.open(real_gtiff) as ds:
        spec = RasterSpec(1, "uint8", ds.nodata)
    real_finish = statistics.median(finish(RASTER_FORMATS["cog"], real_gtiff, real_cog, spec)
                                    for _ in range(args.rounds))
    mp = args.size * args.size / 1e6
    print(f"device {args.device}; scene {args.size}² ({mp:.0f} MP), {args.rounds} interleaved rounds, medians; "
          f"peak RSS {peak_rss_gib():.2f} GiB", flush=True)
    size_mb = {k: (args.workdir / f"mask-{k}.tif").stat().st_size / 1e6 for k in ("gtiff", "cog")}
    table("COG finishing", ("mask", "run gtiff s", "run cog s", "cog finishing s", "finishing / cog run",
                            "cog / gtiff run", "MB gtiff / cog"),
          [["random-weights (in the run)", f"{g:.2f}", f"{c:.2f}", f"{f:.2f}", f"{f / c:.0%}", f"{c / g:.2f}",
            f"{size_mb['gtiff']:.1f} / {size_mb['cog']:.1f}"],
           ["realistic (finished alone)", "-", "-", f"{real_finish:.2f}", f"{real_finish / c:.0%}", "-",
            f"{real_gtiff.stat().st_size / 1e6:.1f} / {real_cog.stat().st_size / 1e6:.1f}"]])


def part_vector(args: argparse.Namespace) -> None:
    from geoseg.export.stats import mask_stats
    from geoseg.export.vector import polygonize

    polygons = []
    for name, mask in (("random-weights mask", args.workdir / "mask-cog.tif"),
                       ("realistic mask", args.workdir / f"real-mask-{args.size}.cog.tif")):
        vector = polygonize(mask, args.workdir / f"mask{args.vector_ext}", overwrite=True)
        base_s, base_n = gdal_polygonize_whole(mask, args.workdir / f"whole{args.vector_ext}")
        (args.workdir / f"whole{args.vector_ext}").unlink()
        started = time.perf_counter()
        mask_stats(mask)
        stats_s = time.perf_counter() - started
        polygons.append([name, f"{vector.seconds:.2f}", f"{vector.polygons:,}", f"{base_s:.2f}", f"{base_n:,}",
                         f"{vector.seconds / base_s:.2f}", f"{stats_s:.2f}"])
    table("polygons of the mask", ("mask", "geoseg export vector s", "polygons",
                                   "GDAL polygonize whole mask s (baseline)", "polygons", "geoseg / baseline",
                                   "geoseg export stats s"), polygons)


def part_levels(args: argparse.Namespace) -> None:
    """Finishing the realistic mask's COG at several DEFLATE levels, from the files a run leaves for it."""
    from geoseg.io import writing
    from geoseg.io.overviews import OverviewPyramid, overview_vrt
    from geoseg.io.scene import open_scene

    real = build_scene(args.real_mask, args.workdir / f"real-mask-{args.size}.tif", args.size)
    scene = open_scene(real)
    fmt, spec = writing.RASTER_FORMATS["cog"], writing.RasterSpec(1, "uint8", writing.NODATA)
    work = args.workdir / "levels"
    work.mkdir(exist_ok=True)
    levels: list[Path] = []
    with ExitStack() as writers, rasterio.open(real) as src:  # the mask's and its levels' writers, as a run's
        mask = writers.enter_context(writing.StripWriter(work / "mask.tif", scene, spec, fmt, real))

        def open_level(k: int, grid: object) -> object:
            levels.append(work / f"overview{k}.tif")
            return writers.enter_context(writing.StripWriter(levels[-1], grid, spec, fmt, real)).write

        pyramid = OverviewPyramid(scene, writing.NODATA, open_level)
        for row0 in range(0, scene.height, 256):
            strip = src.read(1, window=rasterio.windows.Window(0, row0, scene.width, min(256, scene.height - row0)))
            mask.write(row0, strip)
            pyramid.add(strip)
        pyramid.close()
    vrt = work / "mask.vrt"
    vrt.write_text(overview_vrt(work / "mask.tif", levels, scene, writing.NODATA, None, {}, "class"))
    seconds: dict[int, list[float]] = {level: [] for level in args.cog_levels}
    sizes: dict[int, float] = {}
    for _ in range(args.rounds):
        for level in args.cog_levels:
            writing.COG_LEVEL = level
            out = work / f"cog-{level}.tif"
            seconds[level].append(writing.finish(fmt, vrt, out, spec))
            sizes[level] = out.stat().st_size / 1e6
    base = args.cog_levels[0]
    b = statistics.median(seconds[base])
    table(f"COG finishing of the realistic {args.size}² mask by DEFLATE level ({args.rounds} interleaved rounds, "
          f"medians; level {base} is the baseline)", ("level", "finishing s", "vs baseline", "MB", "vs baseline"),
          [[str(level), f"{statistics.median(seconds[level]):.2f}", f"{statistics.median(seconds[level]) / b:.2f}",
            f"{sizes[level]:.1f}", f"{sizes[level] / sizes[base]:.2f}"] for level in args.cog_levels])


if __name__ == "__main__":
    main()
