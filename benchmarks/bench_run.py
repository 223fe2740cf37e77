"""GPU benchmark: geoseg file to file against its floors and against pytorch-toolbelt, one table per part.

Scenes larger than the real source are built from it by make_scene.py (mirror + repeat). Parts
(``--parts``, default all three), each printing a table whose figures come from this one run:

* ``main``: for each scene and model, the floors and geoseg end to end:
  - read floor: decode every internal block of the file once, with geoseg's reader thread count, both in
    geoseg's own read chunks and as dask 512-px chunks; the faster counts;
  - model floor: the raw network over as many patches as the run has, batch already on the GPU,
    bf16 + channels_last, eager and replayed from a CUDA graph; the faster counts;
  - write floor: encode and write the mask geoseg produced, in its strips and threads;
  - geoseg: ``geoseg run`` as a fresh process (cold: Python, CUDA, model, cuDNN tuning included)
    and ``segment_scene`` in a process that has already run one small scene with the same model
    (warm: how ``geoseg batch`` runs every scene after its first), then the same scene again in that
    process (steady: every later scene of a series of same-size tiles, whose staging buffers and
    device memory are already there), with that process's peak RSS,
    peak GPU memory, GPU busy share (nvidia-smi, 100 ms) and its model stage throughput.
* ``options`` (every generated scene, first model): the settings ``--options`` names against the
  default run, e.g. ``--no-cuda-graphs``, ``--compile`` (and the compiled model floor), fp32 (the share
  of pixels bf16 flips against it), the automatic batch, out-of-memory back-off, the mask's deflate
  level and the reader thread count.
* ``decode`` (every generated scene, deflate, and the first also as zstd; first model): who decodes the
  compressed tiles (``--decode cpu|gpu|hybrid``). Floors: the I/O floor (every tile's compressed bytes
  read once, page cache warm, as the device decoder reads them), and the decode floors of the CPU
  readers, of the GPU (nvCOMP) and of both together, each reading every chunk of the run's plan into
  device strips; the model and write floors; then geoseg warm with each ``--decode``, its ratio to
  max(model, I/O, hybrid decode, write floors), GPU busy, the device's share of the chunks, and the
  pixels that differ from the CPU readers' mask (``--reproducible`` runs: cuDNN's choice fixed).
* ``peers`` (first generated scene, every model, at the scene's own resolution so that every
  tool runs the same patches; issue 35): pytorch-toolbelt's ImageSlicer + TileMerger as a user's script
  (rasterio in, same model / tile / overlap / bf16 / batch, rasterio out) against geoseg.

    python benchmarks/bench_run.py SOURCE.tif --sizes 16384 32768 --model MODEL_DIR \\
        --more-models R34_DIR VGG16_DIR --device cuda

MODEL_DIR is a model folder; with a config.json and no weights, random weights are written
(speed does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.make_scene import build_scene, peak_rss_gib
from benchmarks.runbench.children import child_geoseg, child_toolbelt
from benchmarks.runbench.common import describe_device, ensure_weights
from benchmarks.runbench.decode import part_decode, part_decode_floors
from benchmarks.runbench.main import part_main
from benchmarks.runbench.options import OPTIONS, part_options
from benchmarks.runbench.peers import part_peers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("--sizes", type=int, nargs="*", default=[16384])
    parser.add_argument("--model", type=Path, required=True, help="model folder timed on every scene")
    parser.add_argument("--more-models", type=Path, nargs="*", default=[],
                        help="model folders timed on the first generated scene only")
    parser.add_argument("--parts", nargs="*", default=["main", "options", "peers"],
                        choices=["main", "options", "peers", "decode", "decode-floors"])
    parser.add_argument("--reader-threads", type=int, nargs="*", default=[],
                        help="--parts decode-floors: reader thread counts to try (default: geoseg's, one per core "
                             "but one)")
    parser.add_argument("--hybrid-shares", type=float, nargs="*", default=[],
                        help="--parts decode-floors: more hybrid floors, the device decoder taking at most this share "
                             "of a strip's chunks a batch (the default share is always measured)")
    parser.add_argument("--switch-interval", type=float,
                        help="--parts decode-floors: sys.setswitchinterval for the floors (Python's default: 0.005 s), "
                             "to see whether the GIL's hand-overs slow the decoder's thread among the readers")
    parser.add_argument("--options", nargs="*", default=["eager", "compile", "fp32", "auto", "oom"],
                        choices=list(OPTIONS), help="settings compared by --parts options (default: %(default)s)")
    parser.add_argument("--overview-ab", action="store_true",
                        help="--parts decode: also run --decode gpu with only the first COG overview level halved on "
                             "the device (Tuning.device_overview_levels 1)")
    parser.add_argument("--priority-ab", action="store_true",
                        help="--parts decode: also run --decode gpu with the network's stream at the "
                             "decoder's priority")
    parser.add_argument("--hybrid-variants", nargs="*", default=[], metavar="SHARE:READERS",
                        help="--parts decode: also run --decode hybrid with the device decoder taking at most SHARE of "
                             "a strip's chunks a batch, beside READERS reader threads (e.g. 0.25:8)")
    parser.add_argument("--stream-variants", type=int, nargs="*", default=[],
                        help="--parts decode: also run --decode gpu and hybrid with the device decoder's batches "
                             "taking turns on this many CUDA streams (and as many host buffers)")
    parser.add_argument("--profile-gpu", action="store_true",
                        help="--parts decode, peers: run each measured scene a third time under torch's "
                             "profiler (GPU activity only) and print what the GPU did: busy time, time by kind of "
                             "kernel, busy share by tenth, the largest idle gaps; peers also profiles the graph "
                             "floor and lists the kernels the run spent more time in than the floor did")
    parser.add_argument("--no-toolbelt", action="store_true",
                        help="--parts peers: leave out the pytorch-toolbelt script (geoseg against the floors only)")
    parser.add_argument("--device-stages", action="store_true",
                        help="--parts peers: run each model's scene once more with the engine's device-side steps "
                             "timed by CUDA events (benchmarks/runbench/stages.py): seconds by step")
    parser.add_argument("--steady-runs", type=int, default=1, metavar="N",
                        help="--parts peers: time N steady runs in each geoseg process; the table's steady "
                             "seconds are their median, the details list them all (settles A/Bs of a few "
                             "tens of ms, less than one run's spread)")
    parser.add_argument("--variants", nargs="*", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="--parts peers: also run geoseg with these pipeline settings (Tuning: first_row_patches, "
                             "last_row_patches, spread_first_strip, ...) or run settings (RunConfig: compile, "
                             "cuda_graphs, ...), one run per variant, e.g. first_row_patches=1 "
                             "first_row_patches=1,last_row_patches=1,spread_first_strip=true compile=true (a "
                             "compile variant runs for the first model only, and adds its compiled network floor; "
                             "profile=true and device_stages=true profile a variant as --profile-gpu and "
                             "--device-stages do the default run)")
    parser.add_argument("--decode-codecs", nargs="*", default=["deflate", "zstd"], choices=["deflate", "zstd"],
                        help="--parts decode: zstd adds a zstd copy of the first size's scene")
    parser.add_argument("--tuned", action="store_true",
                        help="--parts decode: let cuDNN time its algorithms (masks may then differ by a few pixels "
                             "between processes) instead of --reproducible")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-bench"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--format", default="cog", choices=["cog", "gtiff"],
                        help="mask format of the geoseg runs in --parts main and peers (gtiff: no COG pass)")
    parser.add_argument("--child", choices=["geoseg", "toolbelt"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:  # a measured run in a fresh process: one JSON line, with its own peak RSS
        if args.child == "geoseg":
            result = child_geoseg(args.source, args.out, args.model, args.warmup, json.loads(args.settings))
        else:
            result = child_toolbelt(args.source, args.out, args.model, args.warmup,
                                    json.loads(args.settings).get("device", "cuda"))
        result["rss"] = peak_rss_gib()
        print(json.dumps(result))
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    for folder in [args.model, *args.more_models]:
        ensure_weights(folder)
    built = [build_scene(args.source, args.workdir / f"s2-{n}.tif", n) for n in args.sizes]
    print(f"device: {describe_device()}; {os.cpu_count()} CPU cores; {time.strftime('%Y-%m-%d')}")
    if "main" in args.parts:
        part_main([args.source, *built], [args.model], args.more_models, args)
    first = built[0] if built else args.source
    if "options" in args.parts:
        part_options(built or [args.source], args.model, args)
    if "peers" in args.parts:
        part_peers(first, [args.model, *args.more_models], args)
    if "decode-floors" in args.parts:
        if args.switch_interval:
            sys.setswitchinterval(args.switch_interval)
        part_decode_floors(built or [args.source], args.model, args)
    if "decode" in args.parts:
        zstd = [build_scene(args.source, args.workdir / f"s2-{args.sizes[0]}-zstd.tif", args.sizes[0],
                            compress="zstd")] if args.sizes and "zstd" in args.decode_codecs else []
        part_decode([*built, *zstd], args.model, args)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
