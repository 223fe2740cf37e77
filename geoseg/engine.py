"""The inference engine: blocks read ahead on threads, inferred and stitched on the device, written behind.

Work happens on the *model grid*: the scene's grid, or a coarser one when the model was trained at
a coarser resolution (:mod:`geoseg.resample`). The model grid is cut into square blocks, taken
row by row. Each block *owns* the patches whose anchor lies inside it
(:meth:`geoseg.grid.AxisGrid.owned`), so every patch of the global grid is predicted exactly once.

Three stages overlap, each bounded, so host memory does not grow with the scene:

* **read** (a thread pool): the scene rows each row of blocks needs, in chunks made of whole
  internal blocks of the file (:func:`plan_reads`), so GDAL decodes every file block exactly once,
  with the GIL released, into a fixed pool of pinned staging buffers
  (:class:`geoseg.staging.StagingPool`); the reader thread then starts the copy to the device on
  a stream of its own. The readers work :data:`READ_AHEAD_STRIPS` strips of rows ahead of the device;
* **device** (the calling thread, :class:`geoseg.stitch.Stitcher`): raw pixels arrive in a
  rolling band of scene rows on the device as they are (uint16 stays 2 bytes a value); each row
  is developed there once (averaged to the model grid, scaled, normalised) and patches are cut
  from the developed rows; patches from consecutive blocks share batches; blend-weighted probabilities are summed into a
  rolling band of rows on the device; rows that no later patch can reach are normalised, brought
  back to the scene grid, turned into class labels and copied back as uint8;
* **write** (one thread): full-width strips of whole 256-px output tiles, at most
  :data:`WRITES_AHEAD` queued; each is copied back asynchronously and waited for there.

Why fixed point: blended probabilities are summed as integers (units of 2**-QUANTUM_BITS), and
integer sums do not depend on their order, so a pixel gets bit-identical probabilities whatever
the block size. The mask is the same for every block size, and the same as a plain sliding
window over the whole scene (tests/test_engine.py).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from geoseg._blocks import Box
from geoseg.blend import WindowFn, get_window
from geoseg.errors import Cancelled
from geoseg.grid import AxisGrid, check_tiling, reflect_index, split_axis
from geoseg.staging import StagingPool

if TYPE_CHECKING:
    from geoseg.stitch import InputStrip, Stitcher

#: Blended probabilities are summed as integers in units of 2**-QUANTUM_BITS.
QUANTUM_BITS = 24
#: Model-grid blocks are multiples of this.
BLOCK_UNIT = 64

#: Bytes of raw pixels in one read chunk, at most (unless one internal block of the file is larger).
#: With its validity, a chunk fits a 16 MiB page-locked block; 32 MiB chunks cost twice the
#: page-locking on a scene's first run (benchmarks/RESULTS.md).
CHUNK_BYTES = 16 * 2**20
#: Columns of one read chunk, rounded to whole internal blocks of the file.
CHUNK_COLS = 1024
#: Label strips queued for the writer, at most.
WRITES_AHEAD = 8
#: Strips of rows the readers work ahead of the device. With one, the readers ran out of work at the
#: end of every strip while its last chunks were decoded (benchmarks/RESULTS.md); each strip ahead
#: costs its raw pixels in device memory.
READ_AHEAD_STRIPS = 2
#: Staging buffers beyond one per reader thread (:class:`geoseg.staging.StagingPool`).
STAGING_SPARE = 4

#: Reads ``(row0, row1, col0, col1)`` of the scene grid into ``out`` (``(band, row, col)``, the file's
#: dtype) and returns the ``(row, col)`` validity, or None when every pixel is valid.
ReadFn = Callable[[int, int, int, int, np.ndarray], "np.ndarray | None"]
#: Writes a full-width strip of labels starting at a scene row.
WriteFn = Callable[[int, np.ndarray], None]
#: Called with (blocks done, all blocks).
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Layout:
    """The geometry of one run: scene and model grids, patch grid, blocks and blend weights."""

    height: int  # scene grid
    width: int
    factor: int  # scene pixels per model-grid pixel along each axis
    rows: AxisGrid  # patch grid on the model grid
    cols: AxisGrid
    block: int  # model-grid block edge
    window: np.ndarray  # 1-D blend window
    row_weight: np.ndarray  # summed window over all patches, per model-grid row
    col_weight: np.ndarray

    @property
    def tile(self) -> int:
        return self.rows.tile

    @property
    def deepest_sum(self) -> float:
        """The largest fixed-point sum a pixel can reach (decides int32 or int64 accumulators)."""
        return math.ceil(self.tile / self.rows.stride) ** 2 * float(self.window.max()) ** 2 * 2**QUANTUM_BITS

    def scene_span(self, start: int, stop: int, size: int) -> tuple[int, int]:
        """Scene-grid pixels of model-grid pixels ``[start, stop)`` on an axis of ``size`` scene pixels."""
        return start * self.factor, min(stop * self.factor, size)

    def final_rows(self, stop: int) -> int:
        """Model-grid rows below this are final once every patch anchored above ``stop`` has been added."""
        k = math.ceil(stop / self.rows.stride)
        return self.rows.size if k >= self.rows.count else min(self.rows.origin(k), self.rows.size)


def work_block(block_size: int, factor: int) -> int:
    """Model-grid block edge for ``block_size`` scene pixels: a multiple of :data:`BLOCK_UNIT`."""
    return max(BLOCK_UNIT, block_size // factor // BLOCK_UNIT * BLOCK_UNIT)


def plan_layout(height: int, width: int, factor: int, tile: int, overlap: int,
                blend: str | WindowFn = "cosine", block_size: int = 2048) -> Layout:
    """Lay out a run over a ``height x width`` scene; ``block_size`` is in scene pixels."""
    check_tiling(tile, overlap)
    work_h, work_w = math.ceil(height / factor), math.ceil(width / factor)
    block = work_block(block_size, factor)
    window = get_window(blend, tile, overlap)
    rows, cols = AxisGrid(work_h, tile, overlap), AxisGrid(work_w, tile, overlap)
    return Layout(height, width, factor, rows, cols, block, window,
                  rows.weight_sum(window), cols.weight_sum(window))


@dataclass(frozen=True)
class BlockPlan:
    """One block: its place, its patches, and the scene window to read for them."""

    core: Box  # model grid: the block itself
    native: Box  # scene grid: what is read (the reflected footprint, and the block's own pixels)
    origins: list[tuple[int, int]]  # model-grid origins of the patches it owns
    footprint: Box  # model grid: the union of its patches (may reach outside the scene)
    src_rows: np.ndarray  # model-grid rows (reflected) that make up the footprint
    src_cols: np.ndarray


@dataclass(frozen=True)
class BlockRow:
    """A row of blocks, processed together."""

    core_rows: tuple[int, int]  # model grid
    blocks: list[BlockPlan]
    final: int  # model-grid rows below this are final after this row
    last: bool


def plan_blocks(layout: Layout) -> list[BlockRow]:
    """Every block of the run, row by row."""
    row_blocks = split_axis(layout.rows.size, layout.block)
    col_blocks = split_axis(layout.cols.size, layout.block)
    plan = []
    for bi, (r0, r1) in enumerate(row_blocks):
        last_row = bi == len(row_blocks) - 1
        row_patches = layout.rows.owned(r0, r1, last=last_row)
        blocks = [_plan_block(layout, Box(r0, r1, c0, c1), row_patches,
                              layout.cols.owned(c0, c1, last=bj == len(col_blocks) - 1))
                  for bj, (c0, c1) in enumerate(col_blocks)]
        plan.append(BlockRow((r0, r1), blocks, layout.rows.size if last_row else layout.final_rows(r1), last_row))
    return plan


def _plan_block(layout: Layout, core: Box, row_patches: range, col_patches: range) -> BlockPlan:
    tile, rows, cols = layout.tile, layout.rows, layout.cols
    if not row_patches or not col_patches:  # a thin last block: read only for its validity
        empty = np.zeros(0, dtype=np.int64)
        native = Box(*layout.scene_span(core.row0, core.row1, layout.height),
                     *layout.scene_span(core.col0, core.col1, layout.width))
        return BlockPlan(core, native, [], Box(0, 0, 0, 0), empty, empty)
    footprint = Box(rows.origin(row_patches[0]), rows.origin(row_patches[-1]) + tile,
                    cols.origin(col_patches[0]), cols.origin(col_patches[-1]) + tile)
    src_rows = reflect_index(np.arange(footprint.row0, footprint.row1), rows.size)
    src_cols = reflect_index(np.arange(footprint.col0, footprint.col1), cols.size)
    native = Box(*layout.scene_span(min(int(src_rows.min()), core.row0), max(int(src_rows.max()) + 1, core.row1),
                                    layout.height),
                 *layout.scene_span(min(int(src_cols.min()), core.col0), max(int(src_cols.max()) + 1, core.col1),
                                    layout.width))
    origins = [(rows.origin(k), cols.origin(m)) for k in row_patches for m in col_patches]
    return BlockPlan(core, native, origins, footprint, src_rows, src_cols)


@dataclass(frozen=True)
class ReadStrip:
    """What is read for one row of blocks: the scene rows it needs that earlier rows did not read."""

    need: tuple[int, int]  # scene rows the row's blocks take their windows from
    rows: tuple[int, int]  # scene rows read for it (empty when earlier rows read them all)
    chunks: list[Box]  # the reads, scene grid, each a whole number of the file's internal blocks


def plan_reads(layout: Layout, plan: list[BlockRow], block_shape: tuple[int, int], pixel_bytes: int) -> list[ReadStrip]:
    """The reads for ``plan``, one strip per row of blocks, so that every internal block of the
    file (``block_shape``, rows x cols) is decoded exactly once.

    Strips end on file-block rows (or the scene's end); chunks are about :data:`CHUNK_COLS` wide
    and at most :data:`CHUNK_BYTES` of ``pixel_bytes``-byte pixels, both in whole file blocks.
    Striped files (blocks as wide as the scene) are cut into bands of rows instead.
    """
    height, width = layout.height, layout.width
    bh, bw = max(1, min(block_shape[0], height)), max(1, min(block_shape[1], width))
    cw = min(width, max(bw, CHUNK_COLS // bw * bw))
    ch = max(bh, CHUNK_BYTES // pixel_bytes // cw // bh * bh)
    strips, fetched = [], 0
    for row in plan:
        need = (min(b.native.row0 for b in row.blocks), max(b.native.row1 for b in row.blocks))
        end = max(fetched, min(height, -(-need[1] // bh) * bh))
        chunks = [Box(r, min(r + ch, end), c, min(c + cw, width))
                  for r in range(fetched, end, ch) for c in range(0, width, cw)]
        strips.append(ReadStrip(need, (fetched, end), chunks))
        fetched = end
    return strips


def default_workers() -> int:
    """Reader threads when none are asked for: one per CPU core but one, which the device thread needs."""
    return max(1, (os.cpu_count() or 1) - 1)


def run_engine(layout: Layout, stitcher: Stitcher, read: ReadFn, write: WriteFn, workers: int,
               progress: ProgressFn | None = None, cancel: threading.Event | None = None,
               block_shape: tuple[int, int] = (1, 1), timings: dict[str, float] | None = None) -> None:
    """Run every block through read -> device -> write, with bounded queues between the stages.

    ``block_shape`` is the file's internal block shape: reads are whole blocks of it. ``timings``,
    when given, receives the device thread's seconds per stage (waiting for reads, taking them in,
    blocks, labels, waiting for writes). Raises :class:`geoseg.errors.Cancelled` at the next block
    once ``cancel`` is set.
    """
    plan = plan_blocks(layout)
    strips = plan_reads(layout, plan, block_shape, stitcher.pixel_bytes)
    largest = max((c.shape[0] * c.shape[1] for strip in strips for c in strip.chunks), default=1)
    pool = StagingPool(stitcher.staged_bytes(largest), workers + STAGING_SPARE, stitcher.pin)
    total = sum(len(row.blocks) for row in plan)
    readers = ThreadPoolExecutor(max(1, workers), thread_name_prefix="geoseg-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="geoseg-write")
    loading: dict[int, tuple[InputStrip, list[Future]]] = {}
    writes: deque[Future] = deque()
    spent = dict.fromkeys(("wait for reads", "take in", "blocks", "labels", "wait for writes"), 0.0)
    clock = time.perf_counter()
    done = 0

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        spent[stage] += now - clock
        clock = now

    def start_reading(i: int) -> None:
        if i < len(strips) and i not in loading:
            strip = stitcher.open_strip(*strips[i].rows)
            loading[i] = strip, [readers.submit(stitcher.load, strip, box, read, pool) for box in strips[i].chunks]

    def check() -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("stopped on request")

    try:
        for i, row in enumerate(plan):
            check()
            for ahead in range(READ_AHEAD_STRIPS + 1):  # the readers go on while the device works on this one
                start_reading(i + ahead)
            strip, loads = loading.pop(i)
            for load in loads:
                check()
                load.result()
            lap("wait for reads")
            stitcher.take_strip(strip)
            del strip, loads
            lap("take in")
            stitcher.begin_row(row)
            for block in row.blocks:
                check()
                stitcher.add_block(block)
                done += 1
                if progress is not None:
                    progress(done, total)
            lap("blocks")
            for row0, labels in stitcher.end_row(row):
                lap("labels")
                writes.append(writer.submit(lambda r, s: write(r, s.numpy()), row0, labels))
                while len(writes) > WRITES_AHEAD:
                    writes.popleft().result()
                lap("wait for writes")
            lap("labels")
            stitcher.drop_input(strips[i + 1].need[0] if i + 1 < len(strips) else layout.height)
        while writes:
            writes.popleft().result()
        lap("wait for writes")
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True, cancel_futures=True)
        if timings is not None:
            timings.update({k: round(v, 3) for k, v in spent.items()})

