"""GPU benchmark: nvCOMP's batched decoders on a real scene's tiles, by batch size and execution policy.

How many tiles one call of the decoder must hold to reach its throughput decides how far ahead of
the pipeline the device decoder (geoseg.engine.tile_decode) has to work. Every tile's compressed
bytes are on the device before timing; the baseline, measured in the same run, is GDAL decoding the
same file on the reader threads (benchmarks/bench_run.py's read floor).

    python benchmarks/bench_decode.py SOURCE.tif --size 16384 --codecs deflate zstd
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.make_scene import build_scene
from benchmarks.runbench.common import table
from benchmarks.runbench.floors import read_floor
from geoseg.engine.inflate import undo_predictor
from geoseg.io.scene import open_scene
from geoseg.io.threads import default_workers
from geoseg.io.tiles import tile_index
from geoseg.models.card import ModelCard


def sweep(scene: Path, batches: list[int]) -> list[list[str]]:
    from nvidia import nvcomp

    index = tile_index(open_scene(scene))
    assert not isinstance(index, str), index
    tiles = np.arange(len(index.counts))
    host = torch.empty(index.fetch_bytes(tiles), dtype=torch.uint8, pin_memory=True)
    fd = os.open(scene, os.O_RDONLY)
    where = index.fetch(tiles, host.numpy(), fd)
    os.close(fd)
    device = host.cuda()
    stream = torch.cuda.Stream()
    total = len(tiles) * index.tile_bytes
    rows = []
    for name in ("CONCURRENCY", "LATENCY"):
        codec = nvcomp.Codec(algorithm={"deflate": "Deflate", "zstd": "Zstd"}[index.codec],
                             bitstream_kind=nvcomp.BitstreamKind.RAW, cuda_stream=stream.cuda_stream,
                             execution_policy=getattr(nvcomp.ExecutionPolicy, name))
        for batch in batches:
            batch = min(batch, len(tiles))
            out = torch.empty(batch * index.tile_bytes, dtype=torch.uint8, device="cuda")
            for configured in (True, False):
                def run(codec=codec, batch=batch, out=out, configured=configured) -> None:
                    for i in range(0, len(tiles), batch):
                        w = where[i : i + batch]
                        srcs = nvcomp.as_arrays(device, w[:, 0].tolist(), w[:, 1].tolist(),
                                                cuda_stream=stream.cuda_stream)
                        outs = nvcomp.as_arrays(out, [k * index.tile_bytes for k in range(len(w))],
                                                [index.tile_bytes] * len(w), cuda_stream=stream.cuda_stream)
                        kw = {}
                        if configured:
                            kw["decompression_config"] = codec.decompression_config(
                                codec.compression_config([index.tile_bytes] * len(w)))
                        codec.decode(srcs, out=outs, **kw)

                try:
                    run()
                    stream.synchronize()
                    start = time.perf_counter()
                    run()
                    stream.synchronize()
                    seconds = time.perf_counter() - start
                    rows.append([scene.name, index.codec, name, str(batch), "sizes" if configured else "parsed",
                                 f"{seconds:.3f}", f"{total / seconds / 1e9:.1f}"])
                except Exception as exc:  # a combination nvCOMP refuses is a result too
                    rows.append([scene.name, index.codec, name, str(batch), "sizes" if configured else "parsed",
                                 f"failed: {type(exc).__name__}: {str(exc)[:80]}", "-"])
                print(rows[-1], file=sys.stderr, flush=True)
    # the predictor, undone over every tile in batches of 512
    decoded = torch.empty((512, index.tile_bytes), dtype=torch.uint8, device="cuda")
    undo_predictor(decoded, index)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(0, len(tiles), 512):
        undo_predictor(decoded, index)
    torch.cuda.synchronize()
    rows.append([scene.name, index.codec, f"predictor {index.predictor} undone (torch)", "512", "-",
                 f"{time.perf_counter() - start:.3f}", f"{total / (time.perf_counter() - start) / 1e9:.1f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--codecs", nargs="*", default=["deflate", "zstd"])
    parser.add_argument("--batches", type=int, nargs="*", default=[128, 512, 1536, 100000])
    parser.add_argument("--model", type=Path, required=True, help="a model folder (its card sets the read plan)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-bench"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    card = ModelCard.load(args.model / "config.json")
    rows = []
    for codec in args.codecs:
        name = f"s2-{args.size}.tif" if codec == "deflate" else f"s2-{args.size}-{codec}.tif"
        scene = build_scene(args.source, args.workdir / name, args.size, compress=codec)
        info = open_scene(scene)
        floor = read_floor(scene, 3, card, default_workers())["read own s"]
        decoded = info.width * info.height * info.count * np.dtype(info.dtype).itemsize
        rows.append([scene.name, codec, f"GDAL, {default_workers()} reader threads (baseline)", "-", "-",
                     f"{floor:.3f}", f"{decoded / floor / 1e9:.1f}"])
        rows += sweep(scene, args.batches)
    table("nvCOMP batched decoding of every tile (compressed bytes already on the device)",
          ("scene", "codec", "decoder / policy", "tiles per call", "config", "seconds", "GB/s decoded"), rows)


if __name__ == "__main__":
    main()
