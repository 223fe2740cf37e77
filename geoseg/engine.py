"""The inference engine: a dask graph that predicts every patch once and stitches a seamless mask.

Work happens on the *model grid*: the scene's grid, or a coarser one when the model was trained at
a coarser resolution (:mod:`geoseg.resample`). The model grid is cut into square blocks. Each block
*owns* the patches whose anchor lies inside it (:meth:`geoseg.grid.AxisGrid.owned`) and one
``predict`` task runs them, reading what the patches cover (reflected at the scene edges) from the
scene's lazily read chunks. It returns the blend-weighted class probabilities of its patches as
fixed-point integers over the patches' footprint, which reaches into neighbouring blocks.

One ``finish`` task per block then adds up the footprints that meet the block (overlap-add),
divides by the summed blend weights, brings the probabilities back to the scene's grid, takes the
argmax and writes the output nodata value where the scene has no data.

Why fixed point: integer sums do not depend on their order, so a pixel gets bit-identical
probabilities whichever blocks its patches were grouped into. The mask is the same for every
block size, and the same as a plain sliding window over the whole scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from geoseg._blocks import Box, assemble, chunk_starts, chunks_in, paste
from geoseg.blend import WindowFn, get_window
from geoseg.grid import AxisGrid, check_tiling, reflect_index, split_axis
from geoseg.inference import Predictor
from geoseg.models.card import ModelCard
from geoseg.resample import bilinear_taps, coarsen

#: Blended probabilities are summed as integers in units of 2**-QUANTUM_BITS.
QUANTUM_BITS = 24
#: Model-grid blocks are multiples of this, so scene-grid blocks align with 256-px output tiles.
BLOCK_UNIT = 256
#: Output value for pixels without data.
NODATA = 255
_STRIP = 256  # scene rows upsampled at a time, to bound memory


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
    def acc_dtype(self) -> type[np.integer]:
        """int32 while the largest possible fixed-point sum fits, int64 beyond (heavy overlap)."""
        deepest = math.ceil(self.tile / self.rows.stride) ** 2 * float(self.window.max()) ** 2
        return np.int32 if deepest * 2**QUANTUM_BITS < 2**31 - 1 else np.int64

    @property
    def row_blocks(self) -> list[tuple[int, int]]:
        return split_axis(self.rows.size, self.block)

    @property
    def col_blocks(self) -> list[tuple[int, int]]:
        return split_axis(self.cols.size, self.block)

    def scene_span(self, start: int, stop: int, size: int) -> tuple[int, int]:
        """Scene-grid pixels of model-grid pixels ``[start, stop)`` on an axis of ``size`` scene pixels."""
        return start * self.factor, min(stop * self.factor, size)


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
class _Context:
    """What every task of a run shares (passed by reference; never copied per task)."""

    layout: Layout
    predictor: Predictor
    scale: float
    offset: float
    mean: np.ndarray  # (band, 1, 1) float32
    std: np.ndarray
    window2d: np.ndarray  # (tile, tile) float64, in fixed-point units (times 2**QUANTUM_BITS)
    num_classes: int


@dataclass(frozen=True)
class _PredictSpec:
    native: Box  # scene-grid region read for this block
    piece_boxes: list[Box]  # scene-grid boxes of the chunks handed to the task
    src_rows: np.ndarray  # model-grid rows (reflected) making up the footprint
    src_cols: np.ndarray
    patch_offsets: list[tuple[int, int]]  # patch origins relative to the footprint
    footprint: Box  # model-grid footprint (may extend outside the scene)


@dataclass(frozen=True)
class _FinishSpec:
    work: Box  # model-grid region summed (the block plus a 1-pixel halo when resampling)
    acc_boxes: list[Box]  # footprints of the contributing predict tasks
    native: Box  # scene-grid output block
    valid_boxes: list[Box]


def segment(values: da.Array, valid: da.Array, card: ModelCard, predictor: Predictor,
            layout: Layout) -> da.Array:
    """The mask as a lazy ``(row, col)`` uint8 dask array on the scene's grid.

    ``values`` is ``(band, row, col)`` in the card's band order, ``valid`` ``(row, col)`` bool;
    both on the scene's grid with any chunking.
    """
    scale, offset = card.scaling.factors(values.dtype)
    ctx = _Context(
        layout=layout, predictor=predictor, scale=scale, offset=offset,
        mean=np.asarray(card.mean, np.float32)[:, None, None],
        std=np.asarray(card.std, np.float32)[:, None, None],
        window2d=np.outer(layout.window, layout.window) * float(2**QUANTUM_BITS), num_classes=card.num_classes,
    )
    token = tokenize(values.name, valid.name, card, layout.block, layout.factor, layout.tile,
                     layout.rows.overlap, layout.window.tobytes(), id(predictor))
    predict_name, mask_name = f"geoseg-predict-{token}", f"geoseg-mask-{token}"
    row_starts, col_starts = chunk_starts(values.chunks[1]), chunk_starts(values.chunks[2])

    dsk: dict = {}
    footprints: dict[tuple[int, int], Box] = {}
    row_blocks, col_blocks = layout.row_blocks, layout.col_blocks
    for bi, (r0, r1) in enumerate(row_blocks):
        row_patches = layout.rows.owned(r0, r1, last=bi == len(row_blocks) - 1)
        for bj, (c0, c1) in enumerate(col_blocks):
            col_patches = layout.cols.owned(c0, c1, last=bj == len(col_blocks) - 1)
            if not row_patches or not col_patches:
                continue
            spec = _predict_spec(layout, row_patches, col_patches, row_starts, col_starts)
            footprints[bi, bj] = spec.footprint
            chunk_ids = _chunk_ids(spec.native, row_starts, col_starts)
            dsk[predict_name, bi, bj] = (
                _predict_block,
                [(values.name, 0, i, j) for i, j in chunk_ids],
                [(valid.name, i, j) for i, j in chunk_ids],
                spec, ctx,
            )

    for bi, (r0, r1) in enumerate(row_blocks):
        for bj, (c0, c1) in enumerate(col_blocks):
            halo = 1 if layout.factor > 1 else 0
            work = Box(max(r0 - halo, 0), min(r1 + halo, layout.rows.size),
                       max(c0 - halo, 0), min(c1 + halo, layout.cols.size))
            native = Box(*layout.scene_span(r0, r1, layout.height), *layout.scene_span(c0, c1, layout.width))
            contributors = [key for key, fp in footprints.items() if fp.intersects(work)]
            chunk_ids = _chunk_ids(native, row_starts, col_starts)
            spec = _FinishSpec(
                work=work, acc_boxes=[footprints[k] for k in contributors], native=native,
                valid_boxes=[_chunk_box(i, j, row_starts, col_starts) for i, j in chunk_ids],
            )
            dsk[mask_name, bi, bj] = (
                _finish_block,
                [(predict_name, *k) for k in contributors],
                [(valid.name, i, j) for i, j in chunk_ids],
                spec, ctx,
            )

    graph = HighLevelGraph.from_collections(mask_name, dsk, dependencies=[values, valid])
    chunks = (
        tuple(b - a for a, b in (layout.scene_span(r0, r1, layout.height) for r0, r1 in row_blocks)),
        tuple(b - a for a, b in (layout.scene_span(c0, c1, layout.width) for c0, c1 in col_blocks)),
    )
    return da.Array(graph, mask_name, chunks, dtype=np.uint8)


def _predict_spec(layout: Layout, row_patches: range, col_patches: range,
                  row_starts: np.ndarray, col_starts: np.ndarray) -> _PredictSpec:
    tile = layout.tile
    footprint = Box(layout.rows.origin(row_patches[0]), layout.rows.origin(row_patches[-1]) + tile,
                    layout.cols.origin(col_patches[0]), layout.cols.origin(col_patches[-1]) + tile)
    src_rows = reflect_index(np.arange(footprint.row0, footprint.row1), layout.rows.size)
    src_cols = reflect_index(np.arange(footprint.col0, footprint.col1), layout.cols.size)
    native = Box(*layout.scene_span(int(src_rows.min()), int(src_rows.max()) + 1, layout.height),
                 *layout.scene_span(int(src_cols.min()), int(src_cols.max()) + 1, layout.width))
    offsets = [(layout.rows.origin(k) - footprint.row0, layout.cols.origin(m) - footprint.col0)
               for k in row_patches for m in col_patches]
    return _PredictSpec(
        native=native,
        piece_boxes=[_chunk_box(i, j, row_starts, col_starts)
                     for i, j in _chunk_ids(native, row_starts, col_starts)],
        src_rows=src_rows, src_cols=src_cols, patch_offsets=offsets, footprint=footprint,
    )


def _chunk_ids(box: Box, row_starts: np.ndarray, col_starts: np.ndarray) -> list[tuple[int, int]]:
    return [(i, j) for i in chunks_in(row_starts, box.row0, box.row1)
            for j in chunks_in(col_starts, box.col0, box.col1)]


def _chunk_box(i: int, j: int, row_starts: np.ndarray, col_starts: np.ndarray) -> Box:
    return Box(int(row_starts[i]), int(row_starts[i + 1]), int(col_starts[j]), int(col_starts[j + 1]))


def _predict_block(value_pieces: list[np.ndarray], valid_pieces: list[np.ndarray],
                   spec: _PredictSpec, ctx: _Context) -> np.ndarray:
    """Blend-weighted, fixed-point class probabilities of one block's patches over their footprint."""
    layout = ctx.layout
    raw = assemble(value_pieces, spec.piece_boxes, spec.native)
    valid = assemble(valid_pieces, spec.piece_boxes, spec.native)
    x = raw.astype(np.float32)
    if ctx.scale != 1.0 or ctx.offset != 0.0:
        x = x * np.float32(ctx.scale) + np.float32(ctx.offset)
    x, valid = coarsen(x, valid, layout.factor)
    x = (x - ctx.mean) / ctx.std
    x[:, ~valid] = 0.0  # no-data pixels enter the model as the band means
    row0, col0 = spec.native.row0 // layout.factor, spec.native.col0 // layout.factor
    region = x[:, spec.src_rows - row0][:, :, spec.src_cols - col0]

    tile = layout.tile
    acc = np.zeros((ctx.num_classes, *spec.footprint.shape), dtype=layout.acc_dtype)
    batch_size = ctx.predictor.batch_size
    for start in range(0, len(spec.patch_offsets), batch_size):
        offsets = spec.patch_offsets[start : start + batch_size]
        batch = np.stack([region[:, r : r + tile, c : c + tile] for r, c in offsets])
        probs = ctx.predictor(np.ascontiguousarray(batch))
        for (r, c), p in zip(offsets, probs, strict=True):
            acc[:, r : r + tile, c : c + tile] += np.rint(p * ctx.window2d).astype(acc.dtype)
    return acc


def _finish_block(acc_pieces: list[np.ndarray], valid_pieces: list[np.ndarray],
                  spec: _FinishSpec, ctx: _Context) -> np.ndarray:
    """Sum the footprints over the block, normalise, return to the scene grid, argmax, mark no-data."""
    layout, work = ctx.layout, spec.work
    summed = np.zeros((ctx.num_classes, *work.shape), dtype=layout.acc_dtype)
    for acc, box in zip(acc_pieces, spec.acc_boxes, strict=True):
        paste(summed, work, acc, box, add=True)
    weight = np.outer(layout.row_weight[work.row0 : work.row1], layout.col_weight[work.col0 : work.col1])
    probs = (summed / (weight * float(2**QUANTUM_BITS))).astype(np.float32)
    valid = assemble(valid_pieces, spec.valid_boxes, spec.native)
    if layout.factor == 1:
        labels = np.argmax(probs, axis=0).astype(np.uint8)
    else:
        labels = _upsample_argmax(probs, work, spec.native, layout)
    labels[~valid] = NODATA
    return labels


def _upsample_argmax(probs: np.ndarray, work: Box, native: Box, layout: Layout) -> np.ndarray:
    """Argmax of the bilinearly upsampled probabilities on the scene pixels of ``native``."""
    c0, c1, ct = bilinear_taps(native.col0, native.col1, layout.factor, layout.cols.size)
    labels = np.empty(native.shape, dtype=np.uint8)
    for start in range(native.row0, native.row1, _STRIP):
        stop = min(start + _STRIP, native.row1)
        r0, r1, rt = bilinear_taps(start, stop, layout.factor, layout.rows.size)
        rows = probs[:, r0 - work.row0] * (1 - rt)[:, None] + probs[:, r1 - work.row0] * rt[:, None]
        both = rows[:, :, c0 - work.col0] * (1 - ct) + rows[:, :, c1 - work.col0] * ct
        labels[start - native.row0 : stop - native.row0] = np.argmax(both, axis=0)
    return labels
