"""Build a large benchmark scene from a real one: mirror it into a seamless 2x2 tile, then repeat.

The texture, band statistics and compressibility stay those of the real data. Written as a tiled
(512 px), deflate-compressed, horizontally-predicted GeoTIFF, as Sentinel-2 COGs are.

    python benchmarks/make_scene.py SOURCE.tif OUT.tif --size 16384
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio


def build_scene(source: Path, out: Path, size: int, rows_per_write: int = 1024, compress: str = "deflate") -> Path:
    if out.exists():
        return out
    with rasterio.open(source) as src:
        data = src.read()
        profile = src.profile
        descriptions = src.descriptions
    top = np.concatenate([data, data[:, :, ::-1]], axis=2)
    tile = np.concatenate([top, top[:, ::-1, :]], axis=1)  # mirrored both ways: no seams when repeated
    _, th, tw = tile.shape
    profile.update(width=size, height=size, tiled=True, blockxsize=512, blockysize=512, compress=compress,
                   predictor=2, BIGTIFF="YES", NUM_THREADS="ALL_CPUS")
    reps_w = -(-size // tw)
    partial = out.with_name(out.name + ".partial")
    with rasterio.open(partial, "w", **profile) as dst:
        for row0 in range(0, size, rows_per_write):
            rows = np.arange(row0, min(row0 + rows_per_write, size)) % th
            strip = np.tile(tile[:, rows, :], (1, 1, reps_w))[:, :, :size]
            dst.write(strip, window=rasterio.windows.Window(0, row0, size, len(rows)))
        for i, d in enumerate(descriptions):
            if d:
                dst.set_band_description(i + 1, d)
    partial.rename(out)
    return out


def peak_rss_gib() -> float:
    """This process's own peak resident memory (VmHWM), in GiB.

    Not ``getrusage``'s ru_maxrss: Linux carries the parent's peak across fork + exec into it, so a
    child started by a large benchmark process would report the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB -> GiB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=16384)
    args = parser.parse_args()
    build_scene(args.source, args.out, args.size)


if __name__ == "__main__":
    main()
