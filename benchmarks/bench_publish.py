"""What checking a product before publishing it costs (issue 28), against finishing it, in one process.

    python benchmarks/bench_publish.py LABELS.tif --size 16384 [--rounds 3]

A realistic mask: the real land-use labels (``../shared/data/sentinel2-t33uuu/...osm_landuse_labels_10m.tif``)
mirrored and repeated to ``--size``², written as a run writes its working GeoTIFF, then finished as a COG
(the baseline: what every COG run already pays). On that COG, interleaved ``--rounds`` times:

* ``sync_file``: ``fsync`` of the file (what every run now pays);
* ``check_tiff``: every directory's tile table read and checked (what every run now pays);
* ``check_pixels``: every tile of every level decoded (only where the folder has under 64 MiB free).

Prints a markdown table of median seconds and their share of the finishing time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geoseg.io.integrity import check_pixels, check_tiff, sync_file
from geoseg.io.writing import RASTER_FORMATS


def realistic_mask(labels: Path, size: int, path: Path) -> Path:
    """``labels`` mirrored and repeated to ``size``², written strip by strip as a plain tiled GeoTIFF."""
    with rasterio.open(labels) as ds:
        tile = ds.read(1)
        profile = ds.profile
    block = np.block([[tile, tile[:, ::-1]], [tile[::-1], tile[::-1, ::-1]]])
    profile.update(driver="GTiff", width=size, height=size, count=1, dtype="uint8", tiled=True, blockxsize=256,
                   blockysize=256, compress="zstd", zstd_level=1, nodata=255)
    reps = (-(-size // block.shape[0]), -(-size // block.shape[1]))
    with rasterio.open(path, "w", **profile) as out:
        for row0 in range(0, size, 1024):
            rows = min(1024, size - row0)
            strip = np.tile(block, (1, reps[1]))[:, :size]
            lines = np.arange(row0, row0 + rows) % block.shape[0]
            out.write(strip[lines].astype(np.uint8)[None], window=Window(0, row0, size, rows))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("labels", type=Path)
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=".") as folder:
        working = realistic_mask(args.labels, args.size, Path(folder) / "working.tif")
        cog = Path(folder) / "mask.tif"
        times: dict[str, list[float]] = {"COG finishing (baseline)": [], "sync_file": [], "check_tiff": [],
                                         "check_pixels": []}
        for _ in range(args.rounds):
            started = time.perf_counter()
            cog.unlink(missing_ok=True)
            RASTER_FORMATS["cog"].finish(working, cog, "MODE")  # type: ignore[misc]
            times["COG finishing (baseline)"].append(time.perf_counter() - started)
            for name, check in (("sync_file", sync_file), ("check_tiff", check_tiff), ("check_pixels", check_pixels)):
                started = time.perf_counter()
                check(cog, cog)
                times[name].append(time.perf_counter() - started)
        base = statistics.median(times["COG finishing (baseline)"])
        print(f"{args.size}² realistic mask, COG {cog.stat().st_size / 2**20:.1f} MB, median of {args.rounds}\n")
        print("| step | seconds | share of finishing |\n|---|---|---|")
        for name, values in times.items():
            print(f"| {name} | {statistics.median(values):.4f} | {statistics.median(values) / base:.1%} |")


if __name__ == "__main__":
    main()
