"""The region engine: the labels of one rectangle of a scene, equal to the file engine's there.

The file engine (:mod:`geoseg.engine.pipeline`) streams a whole scene from its first row to its
last. Dask chunks (:func:`geoseg.array.segment_array`) and the row strips a cluster shares out
(:mod:`geoseg.cluster.split`) need the labels of one rectangle on their own. :func:`label_region`
runs every patch of the *global* patch grid that reaches the rectangle (its neighbours' patches
included), reads the scene pixels those patches see (reflected at the scene's edges exactly as the
file engine reflects them), and blends them with the same fixed-point sums. Integer sums do not depend
on their order, and every pixel gets the same patches as in a whole-scene run, so the labels are
bit-identical to the file engine's for any cutting into regions (tests/engine/test_region.py).

The price: a patch that reaches two regions is predicted by both (about one patch row and column per
region edge; benchmarks/RESULTS.md section 10). Memory follows the region's size plus a patch of halo.
"""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from geoseg.engine.grid import AxisGrid, reflect_index
from geoseg.engine.input_rows import InputRows
from geoseg.engine.labels import argmax_classes, mode2x2, quantize, uncertainty_layer
from geoseg.engine.plan import QUANTUM_BITS, Box, Layout, ReadFn
from geoseg.engine.predictor import Predictor
from geoseg.engine.resample import bilinear_taps
from geoseg.io.writing import NODATA
from geoseg.models.card import ModelCard


@dataclass(frozen=True)
class RegionPlan:
    """What one region needs: its model-grid span, its patches, and the scene pixels they read."""

    region: Box  # scene grid: the labels wanted
    model: Box  # model grid: the pixels whose blended probabilities the labels are made from
    row_patches: range  # patch indices of the global grid that reach ``model``
    col_patches: range
    native: Box  # scene grid: what is read (model-grid cells whole)
    src_rows: np.ndarray  # model-grid rows (reflected) of the patches' footprint, in order
    src_cols: np.ndarray


def _model_span(start: int, stop: int, factor: int, size: int) -> tuple[int, int]:
    """Model-grid pixels that scene pixels ``[start, stop)`` take their probabilities from."""
    if factor == 1:
        return start, stop
    i0, i1, _ = bilinear_taps(start, stop, factor, size)
    return int(i0.min()), int(i1.max()) + 1


def _patches(grid: AxisGrid, start: int, stop: int) -> range:
    """Patches of ``grid`` that cover any of the pixels ``[start, stop)``."""
    first = max(0, (start + grid.overlap - grid.patch) // grid.stride + 1)
    last = min(grid.count, (stop - 1 + grid.overlap) // grid.stride + 1)
    return range(first, max(first, last))


def plan_region(layout: Layout, region: Box) -> RegionPlan:
    """The patches and reads of the labels of ``region`` (scene grid)."""
    f, rows, cols = layout.factor, layout.rows, layout.cols
    model = Box(*_model_span(region.row0, region.row1, f, rows.size), *_model_span(region.col0, region.col1, f,
                                                                                     cols.size))
    row_patches, col_patches = _patches(rows, model.row0, model.row1), _patches(cols, model.col0, model.col1)
    src_rows = reflect_index(np.arange(rows.origin(row_patches[0]), rows.origin(row_patches[-1]) + rows.patch),
                             rows.size)
    src_cols = reflect_index(np.arange(cols.origin(col_patches[0]), cols.origin(col_patches[-1]) + cols.patch),
                             cols.size)
    # Whole model-grid cells, and the region's own pixels (their validity) too.
    native = Box(min(int(src_rows.min()), region.row0 // f) * f,
                 min(max(int(src_rows.max()) + 1, -(-region.row1 // f)) * f, layout.height),
                 min(int(src_cols.min()), region.col0 // f) * f,
                 min(max(int(src_cols.max()) + 1, -(-region.col1 // f)) * f, layout.width))
    return RegionPlan(region, model, row_patches, col_patches, native, src_rows, src_cols)


@dataclass
class RegionLabels:
    """The product of one region: ``labels`` ``(row, col)`` uint8 and, when asked, ``probabilities``
    ``(band, row, col)`` uint8 (see :func:`geoseg.engine.labels.quantize`)."""

    labels: np.ndarray
    probabilities: np.ndarray | None
    patches: int  # patches predicted for it (its halo's included)
    overview: np.ndarray | None = None  # the labels halved (the COG's first overview level), when asked for
    uncertainty: np.ndarray | None = None  # (1, row, col) uint8 (geoseg.engine.labels.uncertainty_layer)


def label_region(layout: Layout, card: ModelCard, predictor: Predictor, region: Box, read: ReadFn,
                 dtype: np.dtype | str, probabilities: str | None = None,
                 lock: threading.Lock | None = None, readers: int = 1,
                 block_shape: tuple[int, int] = (512, 512), overview: bool = False,
                 uncertainty: str | None = None) -> RegionLabels:
    """The labels of ``region`` (scene grid; see module docstring); ``read`` reads scene pixels as the
    file engine's readers do (:data:`geoseg.engine.plan.ReadFn`); ``lock``, when given, is held around
    each batch's model call and blending (a predictor shared by threads runs one batch at a time);
    ``readers`` threads read the pixels in chunks of whole ``block_shape`` file blocks; ``overview`` also
    halves the labels on the device (:func:`geoseg.engine.labels.mode2x2`; a region starting on an even row
    and column gives the rows of the scene's first overview level)."""
    plan = plan_region(layout, region)
    device, patch = predictor.device, layout.patch
    inputs = InputRows(layout, card, device, dtype)
    native = plan.native
    raw = np.empty((len(card.bands), *native.shape), dtype=np.dtype(dtype))
    read_valid = _read(read, native, raw, readers, block_shape)
    valid = (torch.ones(native.shape, dtype=torch.bool, device=device) if read_valid is None
             else torch.from_numpy(read_valid).to(device))
    developed = inputs.developed(inputs.transfer(raw), valid)  # model grid from native.row0 // f, col0 // f
    del raw
    f = layout.factor
    region_in = developed.index_select(1, torch.from_numpy(plan.src_rows - native.row0 // f).to(device))
    region_in = region_in.index_select(2, torch.from_numpy(plan.src_cols - native.col0 // f).to(device))
    del developed

    rows, cols, model = layout.rows, layout.cols, plan.model
    window2d = torch.from_numpy((np.outer(layout.window, layout.window) * float(2**QUANTUM_BITS))
                                .astype(np.float32)).to(device)
    acc_dtype = torch.int32 if layout.deepest_sum < 2**31 - 1 else torch.int64
    acc = torch.zeros((card.num_classes, *model.shape), dtype=acc_dtype, device=device)
    fp_row0, fp_col0 = rows.origin(plan.row_patches[0]), cols.origin(plan.col_patches[0])
    origins = [(rows.origin(k), cols.origin(m)) for k in plan.row_patches for m in plan.col_patches]
    for start in range(0, len(origins), predictor.batch_size):
        batch = origins[start : start + predictor.batch_size]
        patches = torch.stack([region_in[:, r - fp_row0 : r - fp_row0 + patch, c - fp_col0 : c - fp_col0 + patch]
                               for r, c in batch])
        with lock or nullcontext():  # a captured graph's output buffer is reused by the next call
            weighted = torch.round(predictor(patches) * window2d).to(acc_dtype)
        for i, (r, c) in enumerate(batch):  # each patch's part inside the model-grid span, as the blender adds it
            r0, r1 = max(r, model.row0), min(r + patch, model.row1)
            c0, c1 = max(c, model.col0), min(c + patch, model.col1)
            if r1 > r0 and c1 > c0:
                acc[:, r0 - model.row0 : r1 - model.row0, c0 - model.col0 : c1 - model.col0] += \
                    weighted[i, :, r0 - r : r1 - r, c0 - c : c1 - c]
    del region_in

    probs = None
    if f > 1 or probabilities is not None or uncertainty is not None:
        probs = _probabilities(layout, plan, acc)
    labels = argmax_classes(acc if f == 1 else probs)
    region = plan.region
    here = valid[region.row0 - native.row0 : region.row1 - native.row0,
                 region.col0 - native.col0 : region.col1 - native.col0]
    labels = torch.where(here, labels, NODATA)
    quantized = None if probabilities is None else quantize(probs, here, probabilities == "top").cpu().numpy()
    halved = mode2x2(labels, NODATA).cpu().numpy() if overview else None
    unsure = None if uncertainty is None else uncertainty_layer(probs, here, uncertainty).cpu().numpy()
    return RegionLabels(labels.cpu().numpy(), quantized, len(origins), halved, unsure)


#: A read chunk of the region engine: about this many rows and columns, in whole file blocks.
READ_CHUNK = 1024


def _read(read: ReadFn, native: Box, raw: np.ndarray, readers: int,
          block_shape: tuple[int, int]) -> np.ndarray | None:
    """Read ``native`` into ``raw`` on ``readers`` threads, chunk by chunk; the validity, or None where every
    pixel is valid by construction."""
    if readers <= 1:
        valid = read(native.row0, native.row1, native.col0, native.col1, raw)
        return None if valid is None else np.ascontiguousarray(valid)
    bh, bw = max(1, block_shape[0]), max(1, block_shape[1])
    step_r, step_c = max(bh, READ_CHUNK // bh * bh), max(bw, READ_CHUNK // bw * bw)
    edges_r = sorted({native.row0, native.row1, *range(-(-native.row0 // step_r) * step_r, native.row1, step_r)})
    edges_c = sorted({native.col0, native.col1, *range(-(-native.col0 // step_c) * step_c, native.col1, step_c)})
    boxes = [Box(r0, r1, c0, c1) for r0, r1 in itertools.pairwise(edges_r) for c0, c1 in itertools.pairwise(edges_c)]
    valid = np.ones(native.shape, dtype=bool)
    masked = [False]

    def one(box: Box) -> None:
        out = np.empty((raw.shape[0], *box.shape), dtype=raw.dtype)
        got = read(box.row0, box.row1, box.col0, box.col1, out)
        rows = slice(box.row0 - native.row0, box.row1 - native.row0)
        cols = slice(box.col0 - native.col0, box.col1 - native.col0)
        raw[:, rows, cols] = out
        if got is not None:
            valid[rows, cols] = got
            masked[0] = True

    with ThreadPoolExecutor(readers, thread_name_prefix="geoseg-region-read") as pool:
        list(pool.map(one, boxes))
    return valid if masked[0] else None


def _probabilities(layout: Layout, plan: RegionPlan, acc: torch.Tensor) -> torch.Tensor:
    """Blended probabilities ``(class, row, col)`` float32 of the region's scene pixels, computed as
    :meth:`geoseg.engine.blender.Blender.probabilities` computes them (same operations, same bits)."""
    dev, model, region = acc.device, plan.model, plan.region
    row_weight = torch.from_numpy(layout.row_weight * 2**QUANTUM_BITS).float().to(dev)[model.row0 : model.row1]
    col_weight = torch.from_numpy(layout.col_weight).float().to(dev)[model.col0 : model.col1]

    def normalised(rows: slice | torch.Tensor) -> torch.Tensor:  # span-local model-grid rows of acc
        picked = acc[:, rows] if isinstance(rows, slice) else acc.index_select(1, rows)
        return picked.float() / (row_weight[rows][:, None] * col_weight)

    if layout.factor == 1:
        return normalised(slice(0, model.shape[0]))
    r0, r1, rt = (torch.from_numpy(a).to(dev) for a in bilinear_taps(region.row0, region.row1, layout.factor,
                                                                      layout.rows.size))
    c0, c1, ct = (torch.from_numpy(a).to(dev) for a in bilinear_taps(region.col0, region.col1, layout.factor,
                                                                      layout.cols.size))
    rows = normalised(r0 - model.row0) * (1 - rt)[:, None] + normalised(r1 - model.row0) * rt[:, None]
    return rows.index_select(2, c0 - model.col0) * (1 - ct) + rows.index_select(2, c1 - model.col0) * ct
