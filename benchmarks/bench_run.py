"""End-to-end run benchmark: geoseg file-to-file against its floors, per scene size and model.

For each scene and model it measures, in this one process:
  * read floor: reading and decoding every 512-px block of every band with one thread per core;
  * model floor: the raw network over the same number of patches, batches already on the device,
    bf16 + channels_last on CUDA, no I/O, no blending;
  * write floor: encoding and writing the mask geoseg produced, in the same strips and threads;
  * geoseg: `geoseg run` in a child process (so its peak RSS is its own): wall time, MP/s, ratio
    to the largest floor, peak host RSS, peak GPU memory, mean GPU utilisation (nvidia-smi).
Scenes larger than the source are built from it with make_scene.py (mirror + repeat).

    python benchmarks/bench_run.py SOURCE.tif --sizes 16384 32768 --model MODEL_DIR \
        --more-models R34_DIR VGG16_DIR --device cuda

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
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.make_scene import build_scene
from geoseg.engine import plan_layout
from geoseg.models.card import ModelCard
from geoseg.resample import resolution_factor
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


def model_floor(card: ModelCard, patches: int, batch_size: int, device: str) -> float:
    """Raw model time for ``patches`` patches: batches already on the device, bf16, channels_last, no I/O."""
    import torch

    from geoseg.models.architectures import build_network

    dev = torch.device(device)
    net = build_network(card).eval().to(dev)
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    batch = torch.rand((batch_size, len(card.bands), card.tile_size, card.tile_size), device=dev)
    if dev.type == "cuda":
        batch = batch.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    batches = -(-patches // batch_size)
    with torch.inference_mode(), autocast:
        for _ in range(3):
            net(batch)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(batches):
            torch.softmax(net(batch).float(), dim=1)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - start


def write_floor(mask: Path, out: Path) -> float:
    """Time to encode and write ``mask`` again as geoseg writes it (strips of 256 rows; reads not timed)."""
    from rasterio.windows import Window

    with rasterio.open(mask) as src:
        profile = {**src.profile, "num_threads": "ALL_CPUS"}
        spent = 0.0
        with rasterio.open(out, "w", **profile) as dst:
            for row0 in range(0, src.height, 256):
                window = Window(0, row0, src.width, min(256, src.height - row0))
                strip = np.ascontiguousarray(src.read(1, window=window))
                start = time.perf_counter()
                dst.write(strip, 1, window=window)
                spent += time.perf_counter() - start
            start = time.perf_counter()
        spent += time.perf_counter() - start  # closing flushes the last tiles
    out.unlink()
    return spent


class GpuBusy:
    """Mean GPU utilisation (nvidia-smi samples every 100 ms) while the block runs; None without nvidia-smi."""

    def __enter__(self) -> GpuBusy:
        self.samples: list[float] = []
        try:
            self.proc: subprocess.Popen | None = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0",
                 "-lms", "100"], stdout=subprocess.PIPE, text=True)
        except OSError:
            self.proc = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            out, _ = self.proc.communicate()
            self.samples = [float(x) for x in out.split() if x.strip().isdigit()]

    @property
    def fraction(self) -> float | None:
        return sum(self.samples) / len(self.samples) / 100 if self.samples else None


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
    parser.add_argument("--model", type=Path, required=True, help="model folder timed on every scene")
    parser.add_argument("--more-models", type=Path, nargs="*", default=[],
                        help="model folders timed end to end on the first generated scene only")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-bench"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--extra", nargs="*", default=[], help="more `geoseg run` flags, e.g. --no-match-resolution")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    threads = os.cpu_count() or 1
    scenes = [args.source] + [build_scene(args.source, args.workdir / f"s2-{n}.tif", n) for n in args.sizes]
    runs = [(scene, args.model) for scene in scenes]
    runs += [(scenes[1 if len(scenes) > 1 else 0], m) for m in args.more_models]
    rows = []
    for scene, model in runs:
        ensure_weights(model)
        card = ModelCard.load(model / "config.json")
        info = open_scene(scene)
        factor = 1 if "--no-match-resolution" in args.extra else resolution_factor(info.pixel_size_m, card.resolution_m)
        layout = plan_layout(info.height, info.width, factor, card.tile_size, card.overlap)
        patches = layout.rows.count * layout.cols.count
        floors = {"read": read_floor(scene, 512, threads),
                  "model": model_floor(card, patches, args.batch_size, args.device)}
        out = args.workdir / "mask.tif"
        with GpuBusy() as busy:
            summary, wall, rss = run_geoseg(scene, out, model, ["--device", args.device, "--batch-size",
                                                                str(args.batch_size), *args.extra])
        floors["write"] = write_floor(out, args.workdir / "rewrite.tif")
        rows.append({"scene": scene.name, "size": f"{info.width}x{info.height}", "MP": info.megapixels,
                     "encoder": card.encoder, "f": factor, "patches": patches, **{f"{k} floor s": v for k, v in
                                                                                   floors.items()},
                     "geoseg s": summary["seconds"], "process s": wall, "rss": rss, "busy": busy.fraction,
                     "gpu_gib": summary.get("peak_device_memory_gib"), "largest": max(floors.values())})
        print(f"done {scene.name} {card.encoder}: {summary['seconds']:.1f} s", file=sys.stderr, flush=True)

    print(json.dumps(rows), file=sys.stderr)
    head = ("scene", "size", "encoder", "f", "patches", "read floor s", "model floor s", "write floor s", "geoseg s",
            "MP/s", "x largest floor", "model floor / geoseg", "peak RSS GiB", "peak GPU GiB", "GPU busy")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        busy = "-" if r["busy"] is None else f"{r['busy']:.0%}"
        gpu = "-" if r["gpu_gib"] is None else f"{r['gpu_gib']:.2f}"
        print(f"| {r['scene']} | {r['size']} | {r['encoder']} | {r['f']} | {r['patches']} | {r['read floor s']:.2f} | "
              f"{r['model floor s']:.2f} | {r['write floor s']:.2f} | {r['geoseg s']:.2f} | "
              f"{r['MP'] / r['geoseg s']:.1f} | {r['geoseg s'] / r['largest']:.2f} | "
              f"{r['model floor s'] / r['geoseg s']:.0%} | {r['rss']:.2f} | {gpu} | {busy} |")


if __name__ == "__main__":
    main()
