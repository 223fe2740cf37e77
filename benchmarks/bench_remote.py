"""Per-band remote COGs (issue 31): bytes fetched and time of ``geoseg run ITEM.json`` against the same scene as
one local file, in one process's run of the benchmark.

A ``--size``² scene is mirrored from the real one by ``make_scene.py`` (real texture and compression), split into
one Cloud-Optimized GeoTIFF per band (512-px tiles, deflate, overviews) and described by a STAC Item written with
pystac whose assets are served over HTTP on 127.0.0.1 by the tests' range server (single-range GETs, as object
storage serves them; it counts the body bytes it sends). Each row is a fresh ``geoseg run`` process; the local
file's row is the baseline. ``--env KEY=VALUE`` adds GDAL options to every remote row, to try settings against
geoseg's own.

    python benchmarks/bench_remote.py S2.tif --size 4096 --device cpu --workdir /tmp/remote
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import rasterio
import rasterio.shutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.make_scene import build_scene
from benchmarks.runbench.common import ensure_weights, table
from tests.helpers import RangeServer

BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
COMMON = ("blue", "green", "red", "nir", "swir16", "swir22")


def band_cogs(scene: Path, folder: Path) -> list[Path]:
    """One COG per band of ``scene`` (512-px tiles, deflate, overviews), as Earth Search serves Sentinel-2 L2A."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with rasterio.open(scene) as src:
        for i, band in enumerate(BANDS, start=1):
            path = folder / f"S2_BENCH_{band}.tif"
            if not path.exists():
                plain = folder / f"plain_{band}.tif"
                profile = {**src.profile, "count": 1, "tiled": True, "blockxsize": 512, "blockysize": 512,
                           "compress": "deflate", "BIGTIFF": "IF_SAFER"}
                with rasterio.open(plain, "w", **profile) as dst:
                    for _, window in src.block_windows(i):
                        dst.write(src.read(i, window=window), 1, window=window)
                rasterio.shutil.copy(plain, path, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=512,
                                     OVERVIEW_RESAMPLING="AVERAGE", NUM_THREADS="ALL_CPUS", BIGTIFF="IF_SAFER")
                plain.unlink()
            paths.append(path)
    return paths


def full_resolution_bytes(path: Path) -> int:
    """The bytes of a COG's full-resolution tiles (its overviews and headers left out)."""
    with rasterio.open(path) as ds:
        return sum(ds.block_size(1, j, i) for (j, i), _ in ds.block_windows(1))


def item_for(files: list[Path], server: RangeServer, path: Path) -> Path:
    import datetime as dt

    import pystac

    item = pystac.Item(id="S2_BENCH", geometry=None, bbox=None, datetime=dt.datetime(2017, 2, 16, 10, 10, 21),
                       properties={"platform": "sentinel-2a"})
    for band, common, file in zip(BANDS, COMMON, files, strict=True):
        item.add_asset(band, pystac.Asset(href=server.url(file.name), media_type=pystac.MediaType.COG, roles=["data"],
                                          extra_fields={"eo:bands": [{"name": band, "common_name": common}]}))
    path.write_text(json.dumps(item.to_dict(include_self_link=False, transform_hrefs=False)))
    return path


def geoseg_run(source: Path, out: Path, args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "geoseg.cli", "run", str(source), "-o", str(out), "--overwrite",
                           "--quiet", *args], env={**os.environ, **env}, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"geoseg run {source} failed:\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scene", type=Path, help="the real scene to mirror (6 bands, Sentinel-2 order)")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="csmask-6b-l1c", help="a built-in name or a model folder")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE: a GDAL option for a tuned row")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-remote"))
    opts = parser.parse_args()

    work = opts.workdir
    work.mkdir(parents=True, exist_ok=True)
    scene = work / f"scene-{opts.size}.tif"
    if not scene.exists():
        build_scene(opts.scene, scene, opts.size)
    started = time.perf_counter()
    files = band_cogs(scene, work / f"bands-{opts.size}")
    print(f"scene and band COGs ready in {time.perf_counter() - started:.0f} s", flush=True)
    size = sum(f.stat().st_size for f in files)
    tiles = sum(full_resolution_bytes(f) for f in files)
    if Path(opts.model).is_dir():  # a model folder of the benchmarks (.bench/efb4): random weights made once
        ensure_weights(Path(opts.model))
    args = ["--model", opts.model, "--device", opts.device]
    tuned = dict(kv.split("=", 1) for kv in opts.env)
    rows = []
    with RangeServer(files[0].parent) as server:
        item = item_for(files, server, work / "item.json")
        geoseg_run(scene, work / "warm.tif", args, {})  # caches (model export, page cache) warm for every row
        for round_ in range(1, opts.rounds + 1):
            local = geoseg_run(scene, work / "local.tif", args, {})
            rows.append([str(round_), "local stacked file (baseline)", f"{local:.2f}", "-", "-", "1.00x"])
            print(rows[-1], flush=True)
            for label, env in (("Item, geoseg's settings", {}), *((f"Item, + {' '.join(opts.env)}", tuned),)
                               * bool(tuned)):
                before, asked, missed = server.sent, server.requests, server.misses
                seconds = geoseg_run(item, work / "remote.tif", args, env)
                fetched = server.sent - before
                label += f" ({server.requests - asked} requests, {server.misses - missed} for missing files)"
                rows.append([str(round_), label, f"{seconds:.2f}", f"{fetched / size:.3f}x", f"{fetched / tiles:.3f}x",
                             f"{seconds / local:.2f}x"])
                print(rows[-1], flush=True)
    with rasterio.open(work / "local.tif") as a, rasterio.open(work / "remote.tif") as b:
        same = bool((a.read(1) == b.read(1)).all())
    table(f"{opts.size}² scene, 6 per-band COGs ({size / 2**20:.1f} MiB) over HTTP on 127.0.0.1, device {opts.device}, "
          f"model {opts.model}; masks equal: {same}",
          ("round", "input", "seconds", "bytes fetched / the assets' size", "/ their full-resolution tiles",
           "time / local"), rows)


if __name__ == "__main__":
    main()
