"""End-to-end run benchmark: geoseg file-to-file against the read floor, per scene size.

For each scene it measures, in this one process:
  * read floor: reading and decoding every block of the bands geoseg uses, with the same thread
    count and chunking (the baseline: geoseg cannot be faster than reading its input);
  * geoseg: `geoseg run` in a child process (so its peak RSS is its own), wall time, MP/s, and
    the ratio to the read floor.
Scenes larger than the source are built from it with make_scene.py (mirror + repeat).

    python benchmarks/bench_run.py SOURCE.tif --sizes 16384 32768 --model MODEL_DIR --device cuda

MODEL_DIR is a model folder; if it has a config.json but no weights, random weights are written
(speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.make_scene import build_scene
from geoseg.engine import work_block
from geoseg.models.card import ModelCard
from geoseg.resample import resolution_factor
from geoseg.run import RunConfig
from geoseg.scene import open_scene, read_dask


def ensure_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    if weights.exists():
        return
    from safetensors.torch import save_file

    from geoseg.models.architectures import build_network

    net = build_network(ModelCard.load(folder / "config.json"))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))


def read_floor(path: Path, block: int, threads: int) -> float:
    info = open_scene(path)
    values = read_dask(info, tuple(range(1, info.count + 1)), target_chunk=block)
    touched = values.map_blocks(lambda b: np.zeros((1, 1, 1), np.uint8), chunks=(1, 1, 1), dtype=np.uint8)
    start = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=threads):
        touched.compute()
    return time.perf_counter() - start


def run_geoseg(scene: Path, out: Path, model: Path, extra: list[str]) -> tuple[dict, float, float]:
    cmd = [sys.executable, "-m", "geoseg.cli", "run", str(scene), "-o", str(out), "--model", str(model),
           "--overwrite", "--json", *extra]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of this child alone: its own peak RSS
        wall = time.perf_counter() - start
        out_f.seek(0), err_f.seek(0)
        stdout, stderr = out_f.read(), err_f.read()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"geoseg failed: {stderr.strip()[-2000:]}")
    return json.loads(stdout), wall, usage.ru_maxrss / 2**20  # KiB -> GiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("--sizes", type=int, nargs="*", default=[16384])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-bench"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--extra", nargs="*", default=[], help="more `geoseg run` flags, e.g. --no-match-resolution")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    ensure_weights(args.model)
    card = ModelCard.load(args.model / "config.json")
    threads = os.cpu_count() or 1
    scenes = [args.source] + [build_scene(args.source, args.workdir / f"s2-{n}.tif", n) for n in args.sizes]
    rows = []
    for scene in scenes:
        info = open_scene(scene)
        factor = 1 if "--no-match-resolution" in args.extra else resolution_factor(info.pixel_size_m, card.resolution_m)
        block = work_block(RunConfig().block_size, factor) * factor  # the chunks geoseg reads
        floor = read_floor(scene, block, threads)
        summary, wall, rss = run_geoseg(scene, args.workdir / "mask.tif", args.model,
                                        ["--device", args.device, "--batch-size", str(args.batch_size), *args.extra])
        rows.append((scene.name, f"{info.width}x{info.height}", info.megapixels, floor, summary["seconds"], wall, rss,
                     summary["device"], summary["precision"], factor))
        print(f"done {scene.name}: {summary['seconds']:.1f} s", file=sys.stderr, flush=True)

    head = ("scene", "size", "MP", "read floor s", "geoseg s", "process s", "MP/s", "x floor", "peak RSS GiB",
            "device", "prec", "f")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, size, mp, floor, secs, wall, rss, dev, prec, f in rows:
        print(f"| {name} | {size} | {mp:.0f} | {floor:.2f} | {secs:.2f} | {wall:.2f} | {mp / secs:.1f} | "
              f"{secs / floor:.2f} | {rss:.2f} | {dev} | {prec} | {f} |")


if __name__ == "__main__":
    main()
