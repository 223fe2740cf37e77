"""The batch acceptance run: 100 small real scenes (3 corrupted), a rerun, and a SIGKILL mid-scene.

Cuts ``--count`` windows from a real Sentinel-2 scene, corrupts three (a text file, a truncated
GeoTIFF, a damaged tile), then runs the real CLI with the built-in model:

1. `geoseg batch` over all of them: expect 97 done, 3 failed with reasons, exit 1;
2. the same again: expect 97 skipped, the same 3 failed, exit 1;
3. a fresh batch killed with SIGKILL while a scene is being written, then rerun: every mask must
   be byte-identical to an uninterrupted run's.

    python benchmarks/batch_demo.py ../shared/data/sentinel2-t33uuu/S2A_...10m.tif --workdir /tmp/geoseg-batch-demo
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window


def cut_scenes(source: Path, folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    with rasterio.open(source) as src:
        for i in range(count):
            row, col = int(rng.integers(0, src.height - size)), int(rng.integers(0, src.width - size))
            window = Window(col, row, size, size)
            profile = {**src.profile, "width": size, "height": size, "transform": src.window_transform(window),
                       "tiled": True, "blockxsize": 128, "blockysize": 128, "compress": "deflate"}
            path = folder / f"scene{i:03d}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(src.read(window=window))
                for b, d in enumerate(src.descriptions, 1):
                    if d:
                        dst.set_band_description(b, d)
            paths.append(path)
    return paths


def corrupt(paths: list[Path]) -> dict[str, str]:
    paths[10].write_text("not a raster\n")
    data = paths[50].read_bytes()
    paths[50].write_bytes(data[: len(data) // 3])
    with rasterio.open(paths[90]) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
    with paths[90].open("r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff\x00\xaa\x55" * 32)
    return {paths[10].name: "text file", paths[50].name: "truncated", paths[90].name: "damaged tile"}


def batch(inputs: Path, out: Path, *extra: str) -> tuple[int, dict, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "geoseg.cli", "batch", str(inputs), "-o", str(out), "--device",
                           "cpu", "--quiet", *extra], capture_output=True, text=True)
    summary = json.loads((out / "geoseg-batch-summary.json").read_text())
    return proc.returncode, summary, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-batch-demo"))
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--size", type=int, default=384)
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    inputs = args.workdir / "scenes"
    paths = cut_scenes(args.source, inputs, args.count, args.size)
    broken = corrupt(paths)

    rows = []
    code, first, secs = batch(inputs, args.workdir / "masks")
    rows.append(("first run", code, first["counts"], secs))
    for s in first["scenes"]:
        if s["status"] == "failed":
            print(f"failed ({broken.get(Path(s['input']).name, '?')}): {s['error']}")
    code, second, secs = batch(inputs, args.workdir / "masks")
    rows.append(("rerun", code, second["counts"], secs))

    # SIGKILL mid-scene, then rerun; compare with an uninterrupted run (a subset, to keep it short).
    subset = args.workdir / "subset"
    subset.mkdir()
    for p in paths[:12]:
        if p.name not in broken:
            shutil.copy(p, subset / p.name)
    code, _, secs = batch(subset, args.workdir / "reference")
    rows.append(("uninterrupted (subset)", code, None, secs))
    killed = args.workdir / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "geoseg.cli", "batch", str(subset), "-o", str(killed), "--device",
                             "cpu", "--quiet", "--parallel", "1"], stderr=subprocess.DEVNULL)
    while not (killed.is_dir() and len(list(killed.glob("*.mask.tif"))) >= 3 and list(killed.glob(".*partial*"))):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = sorted(p.name for p in killed.glob(".*partial*"))
    finished = len(list(killed.glob("*.mask.tif")))
    code, after, secs = batch(subset, killed)
    rows.append((f"rerun after SIGKILL ({finished} done, {len(left)} temp left)", code, after["counts"], secs))
    ref = {p.name: p.read_bytes() for p in (args.workdir / "reference").glob("*.mask.tif")}
    got = {p.name: p.read_bytes() for p in killed.glob("*.mask.tif")}
    identical = ref.keys() == got.keys() and all(ref[k] == got[k] for k in ref)
    leftovers = sorted(p.name for p in killed.glob(".*partial*"))

    print("| step | exit | done | skipped | failed | s |")
    print("|---|---|---|---|---|---|")
    for name, code, counts, secs in rows:
        c = counts or {}
        print(f"| {name} | {code} | {c.get('done', '-')} | {c.get('skipped', '-')} | {c.get('failed', '-')} | "
              f"{secs:.1f} |")
    print(f"temporary files left by SIGKILL: {left}; after the rerun: {leftovers}")
    print(f"masks byte-identical to the uninterrupted run: {identical} ({len(got)} masks)")


if __name__ == "__main__":
    main()
