"""The blender's own GPU work per batch and per strip at f = 1 (issue 35), kernel by kernel, in milliseconds.

Times what :class:`geoseg.engine.blender.Blender` runs besides the network on a batch of ``--batch`` patches of
``--tile``² with ``--classes`` classes over rolling rows as wide as a ``--width`` scene, and on each strip of
:data:`~geoseg.engine.blender.LABEL_ROWS` rows, each the median of CUDA-event timings after a warm-up. The votes'
running minimum is timed as geoseg keeps it (uint8) and in int32 (native atomics), and the label counts as
``torch.bincount`` (which waits for the device) and per value. The baselines, in the same process: the batch's
weighting and blending as geoseg did them before 2026-12-07 (patch-major, every batch masked at the scene's edges
and copied to class-major: :func:`blend_before`); the blend by indexed adds alone (``Blender._add_indexed``, the
whole batch's way until the strided runs, now the way of patches at the scene's edges); argmax a pass per class
(the CPU's way, the GPU's until ``torch.argmax``). The batch's patches come as a row of blocks gives them: runs of
``--run`` side by side. A scene of ``--width``² at stride tile - overlap has (width / stride)² patches: the table's
last column scales each row to a whole scene.

    python benchmarks/blend_kernels.py --width 16384
    python benchmarks/blend_kernels.py --width 4096 --device cpu   # wall-clock timings on the host instead
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from geoseg.engine.blender import LABEL_ROWS, Blender, weighted_sums
from geoseg.engine.labels import argmax_by_class, argmax_classes, counts_per_value


def timed(fn: Callable[[], object], dev: torch.device, repeats: int = 30) -> float:
    """Median milliseconds of ``fn``: on a GPU on the current stream (events around each call), on the CPU by the
    clock; after three warm-ups."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if dev.type != "cuda":
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) * 1000)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def blend_before(state: SimpleNamespace, weighted: torch.Tensor, votes: torch.Tensor,
                 origins: list[tuple[int, int]]) -> None:
    """``Blender._blend_batch`` as it was before 2026-12-07 (commit 3d388f5): patch-major ``(N, C, T, T)`` sums and
    ``(N, 2, T, T)`` votes, masked at the scene's edges whatever the batch, then copied to class-major."""
    patch, height, width = state.layout.patch, state.layout.rows.size, state.layout.cols.size
    at = torch.tensor(origins, dtype=torch.int64).to(state.device)
    steps = torch.arange(patch, device=state.device)
    rows, cols = at[:, :1] + steps, at[:, 1:] + steps
    inside = (((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :])
    flat = ((rows - state.acc_base)[:, :, None] * width + cols[:, None, :]).where(inside, 0).reshape(-1)
    classes = weighted.shape[1]
    added = weighted.where(inside[:, None], 0).transpose(0, 1).reshape(classes, -1)
    state.acc.view(classes, -1).index_add_(1, flat, added)
    kept = votes.where(inside[:, None], 255).transpose(0, 1).reshape(2, -1)
    state.votes.view(2, -1).scatter_reduce_(1, flat.expand(2, -1), kept, reduce="amin")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=16384)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--run", type=int, default=4,
                        help="patches side by side in a batch (a block's width in patches: 4 to 5 at f = 1)")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    dev = torch.device(args.device)
    n, k, t, w = args.batch, args.classes, args.tile, args.width
    stride = t - args.overlap
    rows = 2048 + t  # about the rolling window's height at f = 1: one block and one patch
    gen = torch.Generator(device=dev).manual_seed(0)
    probs = torch.softmax(torch.randn((n, k, t, t), device=dev, generator=gen), dim=1)
    window = torch.rand((t, t), device=dev, generator=gen) * 2**12
    votes_here = window > 0.5
    # as a batch of a row of blocks comes: runs of --run patches side by side (a block's width), row after row
    origins = [((k // args.run) % 4 * stride, min(k // args.run * args.run * stride, w - args.run * stride - t)
                + k % args.run * stride) for k in range(n)]
    state = Blender.__new__(Blender)  # the blender's rolling rows alone, no network
    state.layout = SimpleNamespace(patch=t, rows=SimpleNamespace(size=rows),
                                   cols=SimpleNamespace(size=w, stride=stride))
    state.acc_base, state.device = 0, dev
    state.acc = torch.zeros((k, rows, w), dtype=torch.int32, device=dev)
    state.votes = torch.full((2, rows, w), 255, dtype=torch.uint8, device=dev)
    wide = copy.copy(state)
    wide.votes = state.votes.to(torch.int32)
    weighted_before = torch.round(probs * window).to(torch.int32)
    weighted = weighted_sums(probs.transpose(0, 1), window, torch.int32)
    chosen = argmax_classes(probs.transpose(0, 1))
    votes_before = torch.where(votes_here, torch.stack((chosen, 255 - chosen), dim=1), 255)
    votes = torch.where(votes_here, torch.stack((chosen, 255 - chosen)), 255)
    labels = torch.randint(0, k, (LABEL_ROWS, w), dtype=torch.uint8, device=dev, generator=gen)
    per_batch = {
        "weighted sums, patch-major (before)": lambda: torch.round(probs * window).to(torch.int32),
        "weighted sums, class-major (geoseg)": lambda: weighted_sums(probs.transpose(0, 1), window, torch.int32),
        "each patch's class, a pass per class (before)": lambda: argmax_by_class(probs.transpose(0, 1)),
        "each patch's class (geoseg: torch.argmax on a GPU)": lambda: argmax_classes(probs.transpose(0, 1)),
        "votes, patch-major (before)": lambda: torch.where(votes_here, torch.stack((chosen, 255 - chosen), dim=1),
                                                           255),
        "votes, class-major (geoseg)": lambda: torch.where(votes_here, torch.stack((chosen, 255 - chosen)), 255),
        "blend: masked and copied (before)": lambda: blend_before(state, weighted_before, votes_before, origins),
        "blend: index_add + uint8 amin (before, the rest of a batch now)": lambda: state._add_indexed(
            weighted, votes, origins),
        "blend: index_add + int32 amin": lambda: wide._add_indexed(weighted, votes.to(torch.int32), origins),
        "blend: runs of strided adds, uint8 votes (geoseg)": lambda: state._blend_batch(weighted, votes, origins),
        "blend: runs of strided adds, int32 votes": lambda: wide._blend_batch(weighted, votes.to(torch.int32),
                                                                              origins),
    }
    # the two ways hold the same bits (tests/engine/test_blender.py checks the whole run)
    fresh = [copy.copy(state) for _ in range(3)]
    for f in fresh:
        f.acc, f.votes = torch.zeros_like(state.acc), torch.full_like(state.votes, 255)
    blend_before(fresh[0], weighted_before, votes_before, origins)
    fresh[1]._add_indexed(weighted, votes, origins)
    fresh[2]._blend_batch(weighted, votes, origins)
    if not all(torch.equal(fresh[0].acc, f.acc) and torch.equal(fresh[0].votes, f.votes) for f in fresh[1:]):
        raise SystemExit("the blends differ from the one before: a bug")
    per_strip = {
        "labels, a pass per class (before)": lambda: argmax_by_class(state.acc[:, :LABEL_ROWS]),
        "labels (geoseg: torch.argmax on a GPU)": lambda: argmax_classes(state.acc[:, :LABEL_ROWS]),
        "counts: bincount (waits for the device)": lambda: torch.bincount(labels.reshape(-1), minlength=256),
        "counts: per value (geoseg)": lambda: counts_per_value(labels, k),
    }
    patches = (w // stride) ** 2
    strips = w // LABEL_ROWS
    name = torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"| {name} | ms | x{patches // n} batches or x{strips} strips: s per {w}² scene |")
    print("|---|---|---|")
    for name, fn in per_batch.items():
        ms = timed(fn, dev)
        print(f"| batch: {name} | {ms:.3f} | {ms * patches / n / 1000:.3f} |")
    for name, fn in per_strip.items():
        ms = timed(fn, dev)
        print(f"| strip: {name} | {ms:.3f} | {ms * strips / 1000:.3f} |")


if __name__ == "__main__":
    main()
