"""The device stage of the engine: raw blocks in, blended class labels out, all on the model's device.

:class:`Stitcher` keeps two rolling bands of rows on the device, both as wide as the scene:

* ``acc``: the blend-weighted class probabilities, ``(class, row, col)`` on the model grid, as
  fixed-point integers (see :mod:`geoseg.engine`);
* ``valid``: which scene pixels hold data, ``(row, col)`` on the scene grid.

After each row of blocks, the rows that no later patch reaches are normalised by the summed blend
weights, brought back to the scene grid (bilinear, when the model grid is coarser), turned into
labels with argmax, marked 255 where the scene has no data, and handed out as uint8 strips of
whole output tiles. Then the bands drop them. Their heights are about one block plus one tile,
so device memory depends on the block size and the scene's width, never on its height.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from geoseg._blocks import Box
from geoseg.engine import QUANTUM_BITS, BlockPlan, BlockRow, Layout, ReadFn
from geoseg.inference import Predictor
from geoseg.models.card import ModelCard
from geoseg.resample import bilinear_taps, coarsen
from geoseg.staging import StagingPool, carve
from geoseg.writing import NODATA, OUTPUT_TILE

_STRIP = 256  # scene rows labelled at a time, to bound device memory
_DEVELOP_ROWS = 768  # scene rows developed at a time, to bound device memory


class Stitcher:
    """Turns the blocks of one run, in row order, into label strips (see module docstring)."""

    def __init__(self, layout: Layout, card: ModelCard, predictor: Predictor, dtype: np.dtype | str):
        self.layout = layout
        self.predictor = predictor
        self.device = dev = predictor.device
        self.num_classes = card.num_classes
        self.file_dtype = np.dtype(dtype)
        self.transfer_dtype = _TRANSFER[self.file_dtype.name]
        self.num_bands = len(card.bands)
        self.pin = dev.type == "cuda"  # page-locked staging buffers: asynchronous copies at full speed
        # Input copies run on their own stream, so they finish (and free their staging buffers) at
        # once instead of queueing behind the model; the model's stream waits for them per strip.
        self.copy_stream = torch.cuda.Stream(dev) if self.pin else None
        self.band = torch.zeros((self.num_bands, 0, layout.width), dtype=self.transfer_dtype, device=dev)
        self.band_base = 0  # scene row of band[:, 0]; rows above it are developed
        self.band_valid = torch.zeros((0, layout.width), dtype=torch.bool, device=dev)
        self.valid_base = 0  # scene row of band_valid[0]
        self.model_band = torch.zeros((self.num_bands, 0, layout.cols.size), dtype=torch.float32, device=dev)
        self.model_base = 0  # model-grid row of model_band[:, 0]
        self.scale, self.offset = card.scaling.factors(dtype)
        self.mean = torch.tensor(card.mean, dtype=torch.float32, device=dev)[:, None, None]
        self.std = torch.tensor(card.std, dtype=torch.float32, device=dev)[:, None, None]
        window2d = np.outer(layout.window, layout.window) * float(2**QUANTUM_BITS)
        self.window2d = torch.from_numpy(window2d.astype(np.float32)).to(dev)
        self.acc_dtype = torch.int32 if layout.deepest_sum < 2**31 - 1 else torch.int64
        # Weights that turn fixed-point sums back into probabilities, the quantum folded into rows.
        self.row_weight = torch.from_numpy(layout.row_weight * 2**QUANTUM_BITS).float().to(dev)
        self.col_weight = torch.from_numpy(layout.col_weight).float().to(dev)
        if layout.factor > 1:
            c0, c1, ct = bilinear_taps(0, layout.width, layout.factor, layout.cols.size)
            self.col_taps = (torch.from_numpy(c0).to(dev), torch.from_numpy(c1).to(dev), torch.from_numpy(ct).to(dev))
            # Every scene row's taps, uploaded once: a copy from the host mid-run would wait for the device.
            self.row_taps = tuple(torch.from_numpy(a).to(dev) for a in bilinear_taps(0, layout.height, layout.factor,
                                                                                     layout.rows.size))

        self.acc = torch.zeros((self.num_classes, 0, layout.cols.size), dtype=self.acc_dtype, device=dev)
        self.acc_base = 0  # model-grid row of acc[:, 0]
        self.valid = torch.zeros((0, layout.width), dtype=torch.bool, device=dev)
        self.emitted = 0  # scene rows handed out so far (valid[0] is this row)
        self._row_valid: torch.Tensor | None = None
        self._pending: list[tuple[torch.Tensor, int, int]] = []
        self._added = self._ran = 0  # patches queued and patches predicted so far
        self._settles: deque[tuple[int, int]] = deque()  # (patches that must have run, final model rows)
        #: Pixels per label value (classes and NODATA), on the device until the run ends.
        self.counts = torch.zeros(256, dtype=torch.int64, device=dev)
        self._counted = [c.value for c in card.classes] + [NODATA]
        #: Diagnostics (benchmarks/precision.py): called with (scene row, probabilities) of every strip.
        self.probe: Callable[[int, torch.Tensor], None] | None = None

    # -- input rows --------------------------------------------------------------------------------
    @property
    def pixel_bytes(self) -> int:
        """Bytes of one scene pixel, all bands, as read."""
        return self.num_bands * self.file_dtype.itemsize

    def staged_bytes(self, pixels: int) -> int:
        """Bytes of a staging buffer for a read of ``pixels`` pixels: the values, then their validity."""
        return pixels * (self.pixel_bytes + 1)

    def open_strip(self, row0: int, row1: int) -> InputStrip:
        """Room on the device for scene rows ``[row0, row1)``, which the readers fill with :meth:`load`.

        Allocated on the copy stream, so the copies into it never wait for the model's work."""
        with self._on_copy_stream():
            band = torch.empty((self.num_bands, row1 - row0, self.layout.width), dtype=self.transfer_dtype,
                               device=self.device)
            valid = torch.ones((row1 - row0, self.layout.width), dtype=torch.bool, device=self.device)
        return InputStrip((row0, row1), band, valid, [])

    def load(self, strip: InputStrip, box: Box, read: ReadFn, pool: StagingPool) -> None:
        """Read the scene pixels ``box`` into ``strip`` through a staging buffer of ``pool`` (called
        from the reader threads; on a GPU the copy is asynchronous, on its own stream)."""
        rows, cols = box.shape
        data_bytes = rows * cols * self.pixel_bytes
        buffer = pool.acquire(self.staged_bytes(rows * cols))
        copied = None
        try:
            staged = carve(buffer, (self.num_bands, rows, cols), self.transfer_dtype)
            valid = read(box.row0, box.row1, box.col0, box.col1, staged.numpy().view(self.file_dtype))
            r0, r1 = box.row0 - strip.rows[0], box.row1 - strip.rows[0]
            with self._on_copy_stream():
                strip.band[:, r0:r1, box.col0 : box.col1].copy_(staged, non_blocking=True)
                if valid is not None:
                    mask = carve(buffer, (rows, cols), torch.bool, data_bytes)
                    mask.numpy()[...] = valid
                    strip.valid[r0:r1, box.col0 : box.col1].copy_(mask, non_blocking=True)
                if self.copy_stream is not None:
                    copied = torch.cuda.Event()
                    copied.record(self.copy_stream)
                    strip.copied.append(copied)
        finally:
            pool.release(buffer, copied)

    def take_strip(self, strip: InputStrip) -> None:
        """Append a strip whose every :meth:`load` has returned to the input band."""
        assert strip.rows[0] == self.band_base + self.band.shape[1] == self.valid_base + self.band_valid.shape[0]
        if self.copy_stream is not None:  # the model's stream waits for the copies, and keeps the strip alive
            compute = torch.cuda.current_stream(self.device)
            for copied in strip.copied:
                compute.wait_event(copied)
            strip.band.record_stream(compute)
            strip.valid.record_stream(compute)
        self.band = strip.band if self.band.shape[1] == 0 else torch.cat([self.band, strip.band], dim=1)
        self.band_valid = strip.valid if self.band_valid.shape[0] == 0 else torch.cat([self.band_valid, strip.valid])

    def _on_copy_stream(self) -> torch.cuda.StreamContext | nullcontext:
        return torch.cuda.stream(self.copy_stream) if self.copy_stream is not None else nullcontext()

    def drop_input(self, before: int) -> None:
        """Forget input rows above scene row ``before`` (a model-grid row boundary): no later block reads them."""
        k = before - self.valid_base
        if k > 0:
            self.band_valid, self.valid_base = self.band_valid[k:], before
        k = before // self.layout.factor - self.model_base
        if k > 0:
            self.model_band, self.model_base = self.model_band[:, k:], before // self.layout.factor

    def _develop(self) -> None:
        """Develop every whole model-grid row of the input band (see module docstring), in slices
        of :data:`_DEVELOP_ROWS` scene rows to bound temporaries."""
        layout, f = self.layout, self.layout.factor
        end = self.band_base + self.band.shape[1]
        stop = end if end >= layout.height else end // f * f
        step = max(f, _DEVELOP_ROWS // f * f)
        parts = [self.model_band]
        for a in range(self.band_base, stop, step):
            b = min(a + step, stop)
            x = _widen(self.band[:, a - self.band_base : b - self.band_base], self.file_dtype)
            v = self.band_valid[a - self.valid_base : b - self.valid_base]
            x, v = coarsen(x, v, f)  # scaling is affine: it commutes with the mean, so it runs on fewer pixels
            parts.append(torch.where(v, (x * self.scale + self.offset - self.mean) / self.std, 0.0))  # no data
            # enters as the band means
        if len(parts) > 1:
            self.model_band = torch.cat(parts, dim=1)
            self.band, self.band_base = self.band[:, stop - self.band_base :], stop

    # -- a row of blocks -------------------------------------------------------------------------
    def begin_row(self, row: BlockRow) -> None:
        """Grow the accumulator to cover every patch of ``row``; take its validity from the input band."""
        reach = max((b.footprint.row1 for b in row.blocks if b.origins), default=0)
        need = min(reach, self.layout.rows.size) - self.acc_base
        if need > self.acc.shape[1]:
            more = torch.zeros((self.num_classes, need - self.acc.shape[1], self.layout.cols.size),
                               dtype=self.acc_dtype, device=self.device)
            self.acc = torch.cat([self.acc, more], dim=1)
        r0, r1 = self.layout.scene_span(*row.core_rows, self.layout.height)
        self._row_valid = self.band_valid[r0 - self.valid_base : r1 - self.valid_base].clone()
        self._develop()

    def add_block(self, block: BlockPlan) -> None:
        """Queue the patches of ``block``, cut from the developed rows; predict every full batch."""
        layout = self.layout
        if not block.origins:
            return
        region = _gather(_gather(self.model_band, 1, block.src_rows - self.model_base), 2, block.src_cols)
        tile, fp = layout.tile, block.footprint
        for r, c in block.origins:
            self._pending.append((region[:, r - fp.row0 : r - fp.row0 + tile, c - fp.col0 : c - fp.col0 + tile], r, c))
            self._added += 1
            if len(self._pending) >= self.predictor.batch_size:
                self._predict_pending()

    def end_row(self, row: BlockRow) -> Iterator[tuple[int, HostStrip]]:
        """Finish ``row``; yield ``(scene row, labels)`` strips for every row that is now final.

        Patches wait for a full batch across rows, so the rows a row of blocks settles are handed
        out once its last patch has actually run, usually after the next row.
        """
        assert self._row_valid is not None
        self.valid = torch.cat([self.valid, self._row_valid])
        self._row_valid = None
        self._settles.append((self._added, row.final))
        if row.last:
            self._predict_pending()
        limit = None
        while self._settles and self._settles[0][0] <= self._ran:
            limit = self._settles.popleft()[1]
        if limit is None:
            return
        layout = self.layout
        stop = self._final_scene_rows(limit, row.last)
        for start in range(self.emitted, stop, _STRIP):
            end = min(start + _STRIP, stop)
            labels = self._labels(start, end)
            labels = torch.where(self.valid[start - self.emitted : end - self.emitted], labels, NODATA)
            for value in self._counted:  # counted where the labels are: no pass over them on the host
                self.counts[value] += (labels == value).sum()
            yield start, HostStrip.of(labels)
        # Drop what no later strip needs.
        keep_from = stop if layout.factor == 1 else int(bilinear_taps(stop, stop + 1, layout.factor,
                                                                      layout.rows.size)[0][0])
        keep_from = min(keep_from, self.acc_base + self.acc.shape[1])
        self.acc = self.acc[:, keep_from - self.acc_base :]
        self.acc_base = keep_from
        self.valid = self.valid[stop - self.emitted :]
        self.emitted = stop

    # -- internals -------------------------------------------------------------------------------
    def _predict_pending(self) -> None:
        if not self._pending:
            return
        batch = torch.stack([p for p, _, _ in self._pending])
        if self.device.type == "cuda" and len(batch) < self.predictor.batch_size:  # one shape: tuned once
            batch = torch.cat([batch, batch.new_zeros((self.predictor.batch_size - len(batch), *batch.shape[1:]))])
        probs = self.predictor(batch)
        weighted = torch.round(probs * self.window2d).to(self.acc_dtype)
        tile, height, width = self.layout.tile, self.layout.rows.size, self.layout.cols.size
        for i, (_, r, c) in enumerate(self._pending):
            r0, r1, c0, c1 = max(r, 0), min(r + tile, height), max(c, 0), min(c + tile, width)
            self.acc[:, r0 - self.acc_base : r1 - self.acc_base, c0:c1] += weighted[i, :, r0 - r : r1 - r,
                                                                                     c0 - c : c1 - c]
        self._ran += len(self._pending)
        self._pending.clear()

    def _final_scene_rows(self, limit: int, last: bool) -> int:
        """Scene rows before this can be labelled once model-grid rows before ``limit`` are final:
        whole output tiles, unless at the end."""
        layout = self.layout
        if last:
            return layout.height
        have = self.emitted + self.valid.shape[0]  # scene rows whose validity is known
        if layout.factor == 1:
            stop = min(limit, have)
        else:  # a scene row needs both of its model-grid rows final
            candidates = np.arange(self.emitted, have)
            _, below, _ = bilinear_taps(self.emitted, have, layout.factor, layout.rows.size)
            stop = int(candidates[below < limit].max(initial=self.emitted - 1)) + 1
        return max(self.emitted, stop // OUTPUT_TILE * OUTPUT_TILE)

    def _labels(self, start: int, end: int) -> torch.Tensor:
        """Class labels ``(row, col)`` uint8 of scene rows ``[start, end)``."""
        probs = self.probabilities(start, end) if self.probe is not None or self.layout.factor > 1 else None
        if self.probe is not None:
            self.probe(start, probs)
        if probs is None or self.layout.factor == 1:  # one positive weight per pixel: argmax of the sums
            base = self.acc_base
            return _argmax(self.acc[:, start - base : end - base])
        return _argmax(probs)

    def probabilities(self, start: int, end: int) -> torch.Tensor:
        """Blended class probabilities ``(class, row, col)`` float32 of scene rows ``[start, end)``
        (of those not yet handed out)."""
        base = self.acc_base

        def normalised(rows: slice | torch.Tensor) -> torch.Tensor:  # model-grid rows of acc, as probabilities
            if isinstance(rows, slice):
                picked = self.acc[:, rows.start - base : rows.stop - base]
            else:
                picked = self.acc.index_select(1, rows - base)
            return picked.float() / (self.row_weight[rows][:, None] * self.col_weight)

        if self.layout.factor == 1:
            return normalised(slice(start, end))
        r0, r1, rt = (taps[start:end] for taps in self.row_taps)
        rows = normalised(r0) * (1 - rt)[:, None] + normalised(r1) * rt[:, None]
        c0, c1, ct = self.col_taps
        return rows.index_select(2, c0) * (1 - ct) + rows.index_select(2, c1) * ct


@dataclass
class InputStrip:
    """Scene rows on their way to the device (:meth:`Stitcher.open_strip`)."""

    rows: tuple[int, int]  # scene rows
    band: torch.Tensor  # (band, row, col), as the values travel (see _TRANSFER)
    valid: torch.Tensor  # (row, col)
    copied: list[torch.cuda.Event]  # one per chunk copied to it (GPU)


class HostStrip:
    """A strip of labels on its way to the host: copied asynchronously into pinned memory on a GPU,
    so the device thread never waits for it; :meth:`numpy` (on the writer thread) waits for the copy."""

    def __init__(self, host: torch.Tensor, copied: torch.cuda.Event | None):
        self.host, self.copied = host, copied

    @classmethod
    def of(cls, labels: torch.Tensor) -> HostStrip:
        if labels.device.type != "cuda":
            return cls(labels, None)
        host = torch.empty(labels.shape, dtype=labels.dtype, pin_memory=True)
        host.copy_(labels, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()
        return cls(host, copied)

    def numpy(self) -> np.ndarray:
        if self.copied is not None:
            self.copied.synchronize()
        return self.host.numpy()


#: How each file dtype travels to the device: in its own width; unsigned 16/32-bit as signed bits
#: (torch has few kernels for unsigned types; conversion is one of them), read back by :func:`_widen`.
_TRANSFER = {"uint8": torch.uint8, "int8": torch.int8, "uint16": torch.int16, "int16": torch.int16,
             "uint32": torch.int32, "int32": torch.int32, "float32": torch.float32, "float64": torch.float64}


#: Unsigned types that travel as signed bits: (torch's unsigned type, a wider signed type, the bit mask).
_UNSIGNED = {np.dtype("uint16"): (torch.uint16, torch.int32, 0xFFFF),
             np.dtype("uint32"): (torch.uint32, torch.int64, 0xFFFFFFFF)}


def _widen(x: torch.Tensor, file_dtype: np.dtype) -> torch.Tensor:
    """Raw values as they travelled (see :data:`_TRANSFER`) as float32 values of the file's dtype."""
    if file_dtype not in _UNSIGNED:
        return x.float()
    unsigned, wider, mask = _UNSIGNED[file_dtype]
    try:
        return x.view(unsigned).float()
    except (NotImplementedError, RuntimeError):  # a build without unsigned kernels on this device
        return (x.to(wider) & mask).float()


def _gather(x: torch.Tensor, dim: int, index: np.ndarray) -> torch.Tensor:
    """``x`` at positions ``index`` along ``dim``: a view when they are one run, a gather otherwise (edges)."""
    start = int(index[0])
    if np.array_equal(index, np.arange(start, start + len(index))):
        return x.narrow(dim, start, len(index))
    return x.index_select(dim, _upload(index, x.device))


def _upload(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A small host array on ``device`` without waiting for the device (pinned, asynchronous)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def _argmax(scores: torch.Tensor) -> torch.Tensor:
    """Index of the first largest of ``(class, row, col)`` scores as ``(row, col)`` uint8.

    A pass per class: much faster than ``argmax`` over a leading axis on the CPU, and the same result.
    """
    best, label = scores[0].clone(), torch.zeros(scores.shape[1:], dtype=torch.uint8, device=scores.device)
    for k in range(1, scores.shape[0]):
        better = scores[k] > best
        best = torch.where(better, scores[k], best)
        label.masked_fill_(better, k)
    return label
