"""The blender's own GPU work per batch and per strip at f = 1 (issue 35), kernel by kernel, in milliseconds.

Times what :class:`geoseg.engine.blender.Blender` runs besides the network on a batch of ``--batch`` patches of
``--tile``² with ``--classes`` classes over rolling rows as wide as a ``--width`` scene, and on each strip of
:data:`~geoseg.engine.blender.LABEL_ROWS` rows, each the median of CUDA-event timings after a warm-up. The votes'
running minimum is timed as geoseg keeps it (uint8) and in int32 (native atomics), and the label counts as
``torch.bincount`` (which waits for the device) and per value. A scene of ``--width``² at stride tile - overlap
has (width / stride)² patches: the table's last column scales each row to a whole scene.

    python benchmarks/blend_kernels.py --width 16384
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from geoseg.engine.blender import LABEL_ROWS, Blender, argmax_classes, counts_per_value


def timed(fn: Callable[[], object], repeats: int = 30) -> float:
    """Median milliseconds of ``fn`` on the current stream (events around each call, after three warm-ups)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=16384)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=3)
    args = parser.parse_args()
    dev = torch.device("cuda")
    n, k, t, w = args.batch, args.classes, args.tile, args.width
    stride = t - args.overlap
    rows = 2 * t + 128  # about the rolling window's height: one block and one patch
    gen = torch.Generator(device=dev).manual_seed(0)
    probs = torch.softmax(torch.randn((n, k, t, t), device=dev, generator=gen), dim=1)
    window = torch.rand((t, t), device=dev, generator=gen) * 2**12
    votes_here = window > 0.5
    origins = [(r * stride % (rows - t), c * stride % (w - t)) for r in range(2) for c in range(n // 2)]
    state = SimpleNamespace(layout=SimpleNamespace(patch=t, rows=SimpleNamespace(size=rows),
                                                   cols=SimpleNamespace(size=w)),
                            acc_base=0, device=dev, acc=torch.zeros((k, rows, w), dtype=torch.int32, device=dev),
                            votes=torch.full((2, rows, w), 255, dtype=torch.uint8, device=dev))
    wide = SimpleNamespace(**{**vars(state), "votes": state.votes.to(torch.int32)})
    weighted = torch.round(probs * window).to(torch.int32)
    chosen = argmax_classes(probs.transpose(0, 1))
    votes = torch.where(votes_here, torch.stack((chosen, 255 - chosen), dim=1), 255)
    labels = torch.randint(0, k, (LABEL_ROWS, w), dtype=torch.uint8, device=dev, generator=gen)
    per_batch = {
        "weighted sums (round, int32)": lambda: torch.round(probs * window).to(torch.int32),
        "each patch's class (argmax)": lambda: argmax_classes(probs.transpose(0, 1)),
        "votes (where, stack)": lambda: torch.where(votes_here, torch.stack((chosen, 255 - chosen), dim=1), 255),
        "blend: index_add + uint8 amin (geoseg)": lambda: Blender._blend_batch(state, weighted, votes, origins),
        "blend: index_add + int32 amin": lambda: Blender._blend_batch(wide, weighted, votes.to(torch.int32), origins),
    }
    per_strip = {
        "labels (argmax of the sums)": lambda: argmax_classes(state.acc[:, :LABEL_ROWS]),
        "counts: bincount (waits for the device)": lambda: torch.bincount(labels.reshape(-1), minlength=256),
        "counts: per value (geoseg)": lambda: counts_per_value(labels, k),
    }
    patches = (w // stride) ** 2
    strips = w // LABEL_ROWS
    print(f"| {torch.cuda.get_device_name()} | ms | x{patches // n} batches or x{strips} strips: s per {w}² scene |")
    print("|---|---|---|")
    for name, fn in per_batch.items():
        ms = timed(fn)
        print(f"| batch: {name} | {ms:.3f} | {ms * patches / n / 1000:.3f} |")
    for name, fn in per_strip.items():
        ms = timed(fn)
        print(f"| strip: {name} | {ms:.3f} | {ms * strips / 1000:.3f} |")


if __name__ == "__main__":
    main()
