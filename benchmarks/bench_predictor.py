"""Undoing the TIFF predictors on decoded tiles: geoseg's scans in the samples' own integer width (horizontal
differencing) and in bytes (the floating-point predictor's byte planes) against the scans they replaced (before
2026-12-06: in a wider integer type, then cast back), on the same tiles, in one process.

    python benchmarks/bench_predictor.py [--device cuda] [--tiles 512] [--rounds 5]

Tiles are the benchmark scenes' (512 x 512 px, 6 pixel-interleaved samples) in each dtype; their bytes are random,
so every scan wraps. Prints a markdown table: milliseconds per batch of ``--tiles`` tiles (median of ``--rounds``),
GB/s of decoded bytes, and whether the two give the same bits.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.runbench.common import table
from geoseg.engine.inflate import undo_predictor
from geoseg.engine.input_rows import _TRANSFER
from geoseg.io.tiles import TileIndex


def before(tiles: torch.Tensor, index: TileIndex) -> torch.Tensor:
    """The code before 2026-12-06: a scan in int32 (int64 for 4-byte integer samples, int32 for the floating-point
    predictor's byte planes), cast back."""
    (rows, cols), spp = index.tile_shape, index.samples
    transfer = _TRANSFER[index.dtype.name]
    if index.predictor == 3:
        width, n = index.dtype.itemsize, tiles.shape[0]
        planes = tiles.view(n, rows, cols * width, spp)
        planes = torch.cumsum(planes, dim=2, dtype=torch.int32).to(torch.uint8)
        planes = planes.view(n, rows, width, cols * spp).flip(2)
        return planes.permute(0, 1, 3, 2).contiguous().view(transfer).view(n, rows, cols, spp)
    samples = tiles.view(transfer).view(tiles.shape[0], rows, cols, spp)
    wide = torch.int64 if index.dtype.itemsize >= 4 else torch.int32
    return torch.cumsum(samples, dim=2, dtype=wide).to(transfer)


def timed(fn, tiles: torch.Tensor, index: TileIndex, rounds: int) -> float:
    sync = torch.cuda.synchronize if tiles.is_cuda else (lambda: None)
    fn(tiles, index)
    sync()
    spent = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn(tiles, index)
        sync()
        spent.append(time.perf_counter() - start)
    return statistics.median(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiles", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for dtype, predictor in (("uint8", 2), ("uint16", 2), ("int32", 2), ("float32", 3)):
        itemsize = np.dtype(dtype).itemsize
        index = TileIndex(path=Path("bench"), tile_shape=(512, 512), grid=(1, 1), samples=6, separate=False,
                          dtype=np.dtype(dtype), codec="deflate", predictor=predictor, offsets=np.zeros(0, np.int64),
                          counts=np.zeros(0, np.int64))
        nbytes = 512 * 512 * 6 * itemsize
        gen = torch.Generator(device=args.device).manual_seed(0)
        tiles = torch.randint(0, 256, (args.tiles, nbytes), dtype=torch.uint8, device=args.device, generator=gen)
        old, new = timed(before, tiles, index, args.rounds), timed(undo_predictor, tiles, index, args.rounds)
        bits = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[np.dtype(dtype).itemsize]
        same = torch.equal(before(tiles, index).view(bits), undo_predictor(tiles, index).view(bits))  # NaNs too
        gb = tiles.numel() / 1e9
        rows.append([f"{dtype}, predictor {predictor}", f"{old * 1e3:.1f}", f"{gb / old:.1f}", f"{new * 1e3:.1f}",
                     f"{gb / new:.1f}", f"{old / new:.2f}", "yes" if same else "NO"])
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    table(f"predictors undone on {name}: {args.tiles} tiles of 512 x 512 x 6 a batch, median of {args.rounds}",
          ("tiles", "before: wider scan + cast ms", "GB/s", "now: scan in its own width ms", "GB/s", "speed-up",
           "same bits"), rows)


if __name__ == "__main__":
    main()
