"""The plan of a run: where every patch, block and read chunk lies, decided before any pixel is read.

Work happens on the *model grid*: the scene's grid, or a coarser one when the model was trained at
a coarser resolution (:mod:`geoseg.engine.resample`). The patch grid on it is global
(:mod:`geoseg.engine.grid`). The model grid is cut into square blocks, taken row by row; each
block *owns* the patches whose anchor lies inside it (:meth:`geoseg.engine.grid.AxisGrid.owned`),
so every patch of the global grid is predicted exactly once. Reads are planned per row of blocks
in chunks of whole internal blocks of the file (:func:`plan_reads`), so GDAL decodes every file
block exactly once.

Everything here is plain numbers (numpy for index arrays): no device, no file handle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from geoseg.engine.grid import AxisGrid, check_tiling, reflect_index, split_axis
from geoseg.engine.windows import WindowFn, get_window

#: Blended probabilities are summed as integers in units of 2**-QUANTUM_BITS
#: (:mod:`geoseg.engine.blender`: integer sums do not depend on their order).
QUANTUM_BITS = 24
#: Model-grid blocks are multiples of this.
BLOCK_UNIT = 64

#: Reads ``(row0, row1, col0, col1)`` of the scene grid into ``out`` (``(band, row, col)``, the file's
#: dtype) and returns the ``(row, col)`` validity, or None when every pixel is valid.
ReadFn = Callable[[int, int, int, int, np.ndarray], "np.ndarray | None"]


@dataclass(frozen=True)
class Box:
    """A half-open pixel rectangle ``[row0, row1) x [col0, col1)``."""

    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return self.row1 - self.row0, self.col1 - self.col0


@dataclass(frozen=True)
class ReadChunking:
    """How large one read is: at most ``max_bytes`` of raw pixels (unless one internal block of the
    file is larger), about ``cols`` columns wide, both rounded to whole internal blocks.

    With its validity, a default chunk fits a 16 MiB page-locked staging buffer; larger chunks cost
    more page-locking on a scene's first run (benchmarks/RESULTS.md)."""

    max_bytes: int = 16 * 2**20
    cols: int = 1024


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
    def patch(self) -> int:
        return self.rows.patch

    @property
    def deepest_sum(self) -> float:
        """The largest fixed-point sum a pixel can reach (decides int32 or int64 accumulators)."""
        return math.ceil(self.patch / self.rows.stride) ** 2 * float(self.window.max()) ** 2 * 2**QUANTUM_BITS

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


def plan_layout(height: int, width: int, factor: int, patch: int, overlap: int,
                blend: str | WindowFn = "cosine", block_size: int = 2048) -> Layout:
    """Lay out a run over a ``height x width`` scene; ``block_size`` is in scene pixels."""
    check_tiling(patch, overlap)
    work_h, work_w = math.ceil(height / factor), math.ceil(width / factor)
    block = work_block(block_size, factor)
    window = get_window(blend, patch, overlap)
    rows, cols = AxisGrid(work_h, patch, overlap), AxisGrid(work_w, patch, overlap)
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


#: Rows of patches in the first row of blocks of a scene taller than one block: the device starts on them while the
#: readers are still on the next rows, instead of waiting for a whole block's rows first (0.2 to 0.3 s of a 16384²
#: run at f = 1 on the H100 host, benchmarks/RESULTS.md section 14). The fewer, the fewer rows the first read takes
#: (``Tuning.first_row_patches``). The mask does not depend on how the rows are cut (tests/engine/test_exactness.py).
FIRST_ROW_PATCHES = 2
#: Rows of patches in the last row of blocks (0: the last row is what is left after whole blocks). The rows of the
#: last row are labelled and written after its last patch, while the GPU has nothing more to do; a thin last row
#: shortens that tail (``Tuning.last_row_patches``). Off: on the H100 it moved the run by less than the leases'
#: spread (benchmarks/RESULTS.md section 14, 2026-12-07).
LAST_ROW_PATCHES = 0
#: Whether the first strip's reads are cut to the reader threads (:func:`spread_cols`): the device waits for that
#: strip with nothing else to do (``Tuning.spread_first_strip``). Off: measured with it, the first strip came no
#: sooner (benchmarks/RESULTS.md section 14, 2026-12-07).
SPREAD_FIRST_STRIP = False
#: How much higher each row of blocks after the first is than the one before, until a whole block (1: the second row
#: is a whole block; ``Tuning.grow_rows``). Meant for a thin first row, so that the second strip's reads fit in the
#: device's time on the first. Measured on the H100 (benchmarks/RESULTS.md section 14, 2026-12-07): no gain beyond
#: the leases' spread, because the first strip's wait followed the reader threads' first opens, not its size.
GROW_ROWS = 1


def plan_blocks(layout: Layout, first_row_patches: int = FIRST_ROW_PATCHES,
                last_row_patches: int = LAST_ROW_PATCHES, grow_rows: int = GROW_ROWS) -> list[BlockRow]:
    """Every block of the run, row by row (the first row shorter, see :data:`FIRST_ROW_PATCHES`, the rows after
    it growing ``grow_rows`` times as high up to a block, see :data:`GROW_ROWS`, and the last one shorter too with
    ``last_row_patches``, see :data:`LAST_ROW_PATCHES`)."""
    row_blocks = _row_blocks(layout.rows.size, layout.block, layout.rows.stride, first_row_patches, last_row_patches,
                             grow_rows)
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


def _row_blocks(size: int, block: int, stride: int, first_patches: int, last_patches: int,
                grow: int = 1) -> list[tuple[int, int]]:
    """``[start, stop)`` of the rows of blocks over ``size`` model-grid rows: a thin first row (and last row) of
    whole patch rows when the scene is taller than one block, rows ``grow`` times as high as the one before up to a
    block after the first, whole blocks between them."""
    if size <= block:
        return split_axis(size, block)
    first = max(1, min(block, first_patches * stride))
    last = min(block, last_patches * stride) if last_patches > 0 else 0
    if first + last >= size:
        last = 0
    rows, start, height = [(0, first)], first, first
    while grow > 1 and height < block and start < size - last:
        height = min(block, height * grow)
        rows.append((start, min(start + height, size - last)))
        start = rows[-1][1]
    rows += [(a + start, b + start) for a, b in split_axis(size - start - last, block)]
    return [*rows, *([(size - last, size)] if last else [])]


def _plan_block(layout: Layout, core: Box, row_patches: range, col_patches: range) -> BlockPlan:
    patch, rows, cols = layout.patch, layout.rows, layout.cols
    if not row_patches or not col_patches:  # a thin last block: read only for its validity
        empty = np.zeros(0, dtype=np.int64)
        native = Box(*layout.scene_span(core.row0, core.row1, layout.height),
                     *layout.scene_span(core.col0, core.col1, layout.width))
        return BlockPlan(core, native, [], Box(0, 0, 0, 0), empty, empty)
    footprint = Box(rows.origin(row_patches[0]), rows.origin(row_patches[-1]) + patch,
                    cols.origin(col_patches[0]), cols.origin(col_patches[-1]) + patch)
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


def plan_reads(layout: Layout, plan: list[BlockRow], block_shape: tuple[int, int], pixel_bytes: int,
               chunking: ReadChunking = ReadChunking(), workers: int = 0) -> list[ReadStrip]:
    """The reads for ``plan``, one strip per row of blocks, so that every internal block of the
    file (``block_shape``, rows x cols) is decoded exactly once.

    Strips end on file-block rows (or the scene's end); chunks are about ``chunking.cols`` wide and
    at most ``chunking.max_bytes`` of ``pixel_bytes``-byte pixels, both in whole file blocks.
    Striped files (blocks as wide as the scene) are cut into runs of rows instead. With ``workers``
    (reader threads), the first strip, which the device waits for with nothing else to do, and the
    growing strips after it (:data:`GROW_ROWS`) are cut into chunks of the width that lets that many
    threads finish each soonest (:func:`spread_cols`).
    """
    height, width = layout.height, layout.width
    bh, bw = max(1, min(block_shape[0], height)), max(1, min(block_shape[1], width))
    cw = min(width, max(bw, chunking.cols // bw * bw))
    ch = max(bh, chunking.max_bytes // pixel_bytes // cw // bh * bh)
    strips, fetched = [], 0
    for i, row in enumerate(plan):
        need = (min(b.native.row0 for b in row.blocks), max(b.native.row1 for b in row.blocks))
        end = max(fetched, min(height, -(-need[1] // bh) * bh))
        ramp = i == 0 or (row.core_rows[1] - row.core_rows[0] < layout.block and not row.last)
        w = spread_cols(width, bw, cw, -(-(end - fetched) // ch), workers) if ramp and workers > 0 else cw
        chunks = [Box(r, min(r + ch, end), c, min(c + w, width))
                  for r in range(fetched, end, ch) for c in range(0, width, w)]
        strips.append(ReadStrip(need, (fetched, end), chunks))
        fetched = end
    return strips


def spread_cols(width: int, block_cols: int, cols: int, row_runs: int, workers: int) -> int:
    """The chunk width, in whole file blocks of ``block_cols`` and at most ``cols``, with which ``workers`` threads
    read ``row_runs`` runs of rows across ``width`` columns soonest: the fewest columns a thread decodes in all
    (rounds of chunks times their width); the widest of equals, for fewer reads. E.g. 16384 columns of 512-px
    tiles, 1024 at most, 15 threads: 512 (32 chunks, 3 rounds: 1536 columns a thread) rather than 1024 (16
    chunks, 2 rounds: 2048)."""
    def columns(w: int) -> int:
        return -(-row_runs * -(-width // w) // workers) * min(w, width)

    options = range(block_cols, max(block_cols, cols) + 1, block_cols)
    return min(options, key=lambda w: (columns(w), -w))
