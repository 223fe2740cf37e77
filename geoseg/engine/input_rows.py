"""The input rows: raw scene rows on the device, developed into the model's input rows.

:class:`InputRows` keeps, on the model's device and as wide as the scene:

* ``raw``: raw pixels ``(band, row, col)`` of scene rows not yet developed, in the file's own width
  (uint16 stays 2 bytes a value; see :data:`_TRANSFER`), and ``raw_valid``: which of them hold data;
* ``model_rows``: *developed* rows on the model grid: widened to float32, averaged to the model's
  resolution over valid pixels (:func:`geoseg.engine.resample.coarsen`), scaled and normalised by the
  model card. Pixels without data enter as the band means (zero after normalising).

Reader threads fill :class:`InputStrip` s chunk by chunk through a pool of host staging buffers
(:class:`geoseg.engine.staging.StagingPool`); on a GPU each copy runs on a stream of its own, so it
never queues behind the model. The device thread appends finished strips (:meth:`InputRows.take_strip`),
develops every whole model-grid row once, cuts each block's patch region from the developed rows
(reflected at the scene's edges) and drops rows no later block reads. Device memory follows the
scene's width and the rows in flight, never its height.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from geoseg.engine.plan import BlockPlan, Box, Layout, ReadFn
from geoseg.engine.resample import coarsen
from geoseg.engine.staging import StagingPool, carve, upload
from geoseg.models.card import ModelCard

#: Scene rows developed at a time, to bound device memory.
DEVELOP_ROWS = 768
#: Scene rows widened to float at a time on the CPU (a buffer of 25 MB for a 6-band row of 10980 pixels).
WIDEN_ROWS = 96


class InputRows:
    """Scene rows in, developed model-grid rows and patch regions out (see module docstring)."""

    def __init__(self, layout: Layout, card: ModelCard, device: torch.device, dtype: np.dtype | str,
                 fused: bool = False, all_valid: bool = False):
        self.layout = layout
        #: Every pixel of the scene holds data (an integer scene without nodata or masks: its reads never return a
        #: validity mask, :meth:`geoseg.io.scene.SceneReader.read`): developing skips the no-data ``where``.
        self.all_valid = all_valid
        self.device = dev = device
        self.file_dtype = np.dtype(dtype)
        self.transfer_dtype = _TRANSFER[self.file_dtype.name]
        self.num_bands = len(card.bands)
        self.pin = dev.type == "cuda"  # page-locked staging buffers: asynchronous copies at full speed
        # Input copies run on their own stream, so they finish (and free their staging buffers) at
        # once instead of queueing behind the model; the model's stream waits for them per strip.
        self.copy_stream = torch.cuda.Stream(dev) if self.pin else None
        self.raw = torch.zeros((self.num_bands, 0, layout.width), dtype=self.transfer_dtype, device=dev)
        self.raw_base = 0  # scene row of raw[:, 0]; rows above it are developed
        self.raw_valid = torch.zeros((0, layout.width), dtype=torch.bool, device=dev)
        self.valid_base = 0  # scene row of raw_valid[0]
        self.model_rows = torch.zeros((self.num_bands, 0, layout.cols.size), dtype=torch.float32, device=dev)
        self.model_base = 0  # model-grid row of model_rows[:, 0]
        self.scale, self.offset = card.scaling.factors(dtype)
        self.mean = torch.tensor(card.mean, dtype=torch.float32, device=dev)[:, None, None]
        self.std = torch.tensor(card.std, dtype=torch.float32, device=dev)[:, None, None]
        self._zero = torch.zeros((), dtype=torch.float32, device=dev)  # no data, as ``torch.where(out=)`` takes it
        self._scale = torch.tensor(self.scale, dtype=torch.float32, device=dev)  # float32 whatever the default dtype
        # The steps of :meth:`developed` that change no value are left out (each is a pass over the rows): times 1,
        # minus 0 and over 1 leave every float as it is; plus 0 too, except that it turns -0 into +0, and integer
        # pixels scaled by a positive factor are never -0.
        self._steps = (self.scale != 1.0,
                       self.offset != 0.0 or self.file_dtype.kind == "f" or not self.scale > 0,
                       any(m != 0.0 for m in card.mean), any(s != 1.0 for s in card.std))
        # CPU, resampled scenes: widened pixels go through a small reused buffer, WIDEN_ROWS at a time. A fresh
        # one per slice would be mapped and faulted in each time; one reused for whole slices would hold more
        # memory at the peak.
        self._widened = torch.empty(0, dtype=torch.float32) if dev.type == "cpu" and layout.factor > 1 else None
        # ``fused``: at f = 1 on a GPU, one kernel develops the rows (:func:`fused_develop`), where it applies
        self._fused = (fused_develop(self.file_dtype, self.scale, self.offset)
                       if fused and dev.type == "cuda" and layout.factor == 1 else None)

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
            raw = torch.empty((self.num_bands, row1 - row0, self.layout.width), dtype=self.transfer_dtype,
                               device=self.device)
            valid = torch.ones((row1 - row0, self.layout.width), dtype=torch.bool, device=self.device)
        return InputStrip((row0, row1), raw, valid, [])

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
                strip.raw[:, r0:r1, box.col0 : box.col1].copy_(staged, non_blocking=True)
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
        """Append a strip whose every :meth:`load` has returned to the input rows."""
        assert strip.rows[0] == self.raw_base + self.raw.shape[1] == self.valid_base + self.raw_valid.shape[0]
        if self.copy_stream is not None:  # the model's stream waits for the copies, and keeps the strip alive
            compute = torch.cuda.current_stream(self.device)
            for copied in strip.copied:
                compute.wait_event(copied)
            strip.raw.record_stream(compute)
            strip.valid.record_stream(compute)
        self.raw = strip.raw if self.raw.shape[1] == 0 else torch.cat([self.raw, strip.raw], dim=1)
        self.raw_valid = strip.valid if self.raw_valid.shape[0] == 0 else torch.cat([self.raw_valid, strip.valid])

    def _on_copy_stream(self) -> torch.cuda.StreamContext | nullcontext:
        return torch.cuda.stream(self.copy_stream) if self.copy_stream is not None else nullcontext()

    def drop_before(self, before: int) -> None:
        """Forget input rows above scene row ``before`` (a model-grid row boundary): no later block reads them."""
        k = before - self.valid_base
        if k > 0:
            self.raw_valid, self.valid_base = self.raw_valid[k:], before
        k = before // self.layout.factor - self.model_base
        if k > 0:
            self.model_rows, self.model_base = self.model_rows[:, k:], before // self.layout.factor

    def develop(self) -> None:
        """Develop every whole model-grid row of the input rows (see module docstring), in slices
        of :data:`DEVELOP_ROWS` scene rows to bound temporaries."""
        layout, f = self.layout, self.layout.factor
        end = self.raw_base + self.raw.shape[1]
        stop = end if end >= layout.height else end // f * f
        if stop <= self.raw_base:
            return
        # The developed rows go straight into their place below the kept ones (``out``): appending them with
        # ``cat`` moved every developed row once more (6.4 GB of a 16384² scene at f = 1).
        step = max(f, DEVELOP_ROWS // f * f)
        kept = self.model_rows.shape[1]
        rows = torch.empty((self.num_bands, kept + -(-(stop - self.raw_base) // f), layout.cols.size),
                           dtype=torch.float32, device=self.device)
        rows[:, :kept].copy_(self.model_rows)
        at = kept
        for a in range(self.raw_base, stop, step):
            b = min(a + step, stop)
            n = -(-(b - a) // f)  # a partial last cell is a row too
            self.developed(self.raw[:, a - self.raw_base : b - self.raw_base],
                           self.raw_valid[a - self.valid_base : b - self.valid_base], out=rows[:, at : at + n])
            at += n
        self.model_rows = rows
        self.raw, self.raw_base = self.raw[:, stop - self.raw_base :], stop

    def developed(self, raw: torch.Tensor, valid: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Raw scene pixels ``(band, row, col)`` as they travelled (see :data:`_TRANSFER`), starting on a
        model-grid row and column, as developed model-grid pixels (written into ``out`` when given). The one
        place their arithmetic is written: the file engine and the region engine (:mod:`geoseg.engine.region`)
        share it."""
        # scaling is affine: it commutes with the mean, so it runs on fewer pixels
        f = self.layout.factor
        if self._fused is not None:
            fused = self._fused(raw, valid, self.mean, self.std)
            return fused if out is None else out.copy_(fused)
        scaled, offset, centred, spread = self._steps
        # (x * scale + offset - mean) / std, step by step
        if scaled and f == 1 and self.file_dtype.name in _FUSED_DTYPES:  # widened in the multiply's own pass
            developed, v = _widen_scaled(raw, self.file_dtype, self._scale), valid
        else:
            x, v = self._cells(raw, valid)
            developed = x * self.scale if scaled else x
        steps = [(op, arg) for op, arg, on in ((torch.add, self.offset, offset), (torch.sub, self.mean, centred),
                                               (torch.div, self.std, spread)) if on]
        into = out if self.all_valid else None  # without a ``where``, the last step writes into ``out``
        for i, (op, arg) in enumerate(steps):
            developed = op(developed, arg) if into is None or i < len(steps) - 1 else op(developed, arg, out=into)
        if self.all_valid:
            return developed if out is None or steps else out.copy_(developed)
        # no data enters as the band means
        return torch.where(v, developed, 0.0) if out is None else torch.where(v, developed, self._zero, out=out)

    def _cells(self, raw: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw pixels as float32 values, averaged over the model grid's cells (:func:`coarsen`), and their validity."""
        f = self.layout.factor
        if self._widened is None:
            return coarsen(_widen(raw, self.file_dtype), valid, f)
        # in slices of whole cells: each cell's mean is the same whichever slice holds it
        step = max(f, WIDEN_ROWS // f * f)
        xs, vs = [], []
        for a in range(0, raw.shape[1], step):
            part = raw[:, a : a + step]
            x, v = coarsen(_widen(part, self.file_dtype, self._scratch(part.shape)), valid[a : a + step], f)
            xs.append(x)
            vs.append(v)
        return (xs[0], vs[0]) if len(xs) == 1 else (torch.cat(xs, dim=1), torch.cat(vs))

    def _scratch(self, shape: torch.Size) -> torch.Tensor:
        """The reused CPU buffer, as a float32 tensor of ``shape``."""
        assert self._widened is not None
        if self._widened.numel() < shape.numel():
            self._widened = torch.empty(shape.numel(), dtype=torch.float32)
        return self._widened[: shape.numel()].view(shape)

    def transfer(self, pixels: np.ndarray) -> torch.Tensor:
        """Host pixels of the file's dtype on the device, as they travel (see :data:`_TRANSFER`)."""
        return torch.from_numpy(np.ascontiguousarray(pixels).view(self.file_dtype).view(
            _NUMPY_TRANSFER[self.file_dtype.name])).to(self.device)

    def validity(self, row0: int, row1: int) -> torch.Tensor:
        """``(row, col)`` validity of scene rows ``[row0, row1)``, a copy that outlives :meth:`drop_before`."""
        return self.raw_valid[row0 - self.valid_base : row1 - self.valid_base].clone()

    def patch_region(self, block: BlockPlan) -> torch.Tensor:
        """The developed ``(band, row, col)`` pixels of ``block``'s footprint, reflected at the scene's edges.

        The rows are cut to the footprint's span before any copy: a block at the scene's top or bottom edge
        otherwise copied its reflected rows as wide as the scene (9.4 GB over a 16384² scene at f = 1, against
        2.9 GB so; the same values, only fewer of them moved)."""
        rows, cols = block.src_rows - self.model_base, block.src_cols
        r0, c0 = int(rows.min()), int(cols.min())
        span = self.model_rows[:, r0 : int(rows.max()) + 1, c0 : int(cols.max()) + 1]
        return _gather(_gather(span, 1, rows - r0), 2, cols - c0)


@dataclass
class InputStrip:
    """Scene rows on their way to the device (:meth:`InputRows.open_strip`)."""

    rows: tuple[int, int]  # scene rows
    raw: torch.Tensor  # (band, row, col), as the values travel (see _TRANSFER)
    valid: torch.Tensor  # (row, col)
    copied: list[torch.cuda.Event]  # one per chunk copied to it (GPU)


#: How each file dtype travels to the device: in its own width; unsigned 16/32-bit as signed bits
#: (torch has few kernels for unsigned types; conversion is one of them), read back by :func:`_widen`.
_TRANSFER = {"uint8": torch.uint8, "int8": torch.int8, "uint16": torch.int16, "int16": torch.int16,
             "uint32": torch.int32, "int32": torch.int32, "float32": torch.float32, "float64": torch.float64}


_NUMPY_TRANSFER = {"uint8": np.uint8, "int8": np.int8, "uint16": np.int16, "int16": np.int16, "uint32": np.int32,
                   "int32": np.int32, "float32": np.float32, "float64": np.float64}

#: Unsigned types that travel as signed bits: (torch's unsigned type, a wider signed type, the bit mask).
_UNSIGNED = {np.dtype("uint16"): (torch.uint16, torch.int32, 0xFFFF),
             np.dtype("uint32"): (torch.uint32, torch.int64, 0xFFFFFFFF)}


def _widen(x: torch.Tensor, file_dtype: np.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """Raw values as they travelled (see :data:`_TRANSFER`) as float32 values of the file's dtype, in ``out``
    when given (float32, ``x``'s shape)."""
    return _on_file_values(x, file_dtype, lambda values: values.float() if out is None else out.copy_(values))


def _widen_scaled(x: torch.Tensor, file_dtype: np.dtype, scale: torch.Tensor) -> torch.Tensor:
    """``_widen(x, file_dtype) * scale`` in one pass for the file dtypes of :data:`_FUSED_DTYPES` (``scale`` a
    float32 scalar tensor): the multiply converts each integer to float32 as it loads it, exactly, as widening first
    did, and rounds the same float32 product; one float32 tensor written instead of two."""
    return _on_file_values(x, file_dtype, lambda values: torch.mul(values, scale))


def _on_file_values(x: torch.Tensor, file_dtype: np.dtype, op: Callable[[torch.Tensor], torch.Tensor]) \
        -> torch.Tensor:
    """``op`` applied to raw values as they travelled (see :data:`_TRANSFER`) read as the file's values: unsigned
    bits as torch's unsigned type, or widened and masked where this device has no kernel for it."""
    if file_dtype not in _UNSIGNED:
        return op(x)
    unsigned, wider, mask = _UNSIGNED[file_dtype]
    try:
        return op(x.view(unsigned))
    except (NotImplementedError, RuntimeError):  # a build without unsigned kernels on this device
        return op(x.to(wider) & mask)


#: One pixel developed at f = 1, as :meth:`InputRows.developed` computes it op by op: ``where(valid, (x * scale +
#: offset - mean) / std, 0)``, each step rounded to float32 on its own (``__f*_rn``: no fused multiply-add), so the
#: bits are the same. ``wrap`` (65536 for uint16, else 0) reads values that travelled as int16 bits as unsigned.
_DEVELOP_PIXEL = """
template <typename T> T develop_pixel(T x, T valid, T mean, T std, T scale, T offset, T wrap) {
  if (valid == T(0)) return T(0);
  T v = (wrap != T(0) && x < T(0)) ? x + wrap : x;
  return __fdiv_rn(__fsub_rn(__fadd_rn(__fmul_rn(v, scale), offset), mean), std);
}
"""
#: File dtypes whose values the kernel takes exactly as float32 (wider integers round, float64 is not float32).
_FUSED_DTYPES = {"uint8": 0.0, "int8": 0.0, "uint16": 65536.0, "int16": 0.0, "float32": 0.0}


def fused_develop(file_dtype: np.dtype, scale: float, offset: float) \
        -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """One CUDA kernel (PyTorch's jiterator, compiled on first use and cached on disk) that develops raw rows at
    f = 1 in one pass instead of six (widen, scale, offset, mean, std, no data), with the same bits; None where it
    does not apply (a file dtype not in :data:`_FUSED_DTYPES`, or a PyTorch without the jiterator).
    ``Tuning.fused_develop``: an A/B, off by default until measured on the GPUs."""
    wrap = _FUSED_DTYPES.get(np.dtype(file_dtype).name)
    if wrap is None:
        return None
    try:
        from torch.cuda.jiterator import _create_jit_fn
    except ImportError:
        return None
    kernel = _create_jit_fn(_DEVELOP_PIXEL, scale=0.0, offset=0.0, wrap=0.0)

    def develop(raw: torch.Tensor, valid: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        return kernel(raw, valid, mean, std, scale=float(scale), offset=float(offset), wrap=wrap)

    return develop


def _gather(x: torch.Tensor, dim: int, index: np.ndarray) -> torch.Tensor:
    """``x`` at positions ``index`` along ``dim``: a view when they are one run; at reflected edges, the
    runs (rising, and falling ones flipped) put together, which copies like ``cat`` (``index_select`` along
    the columns was 7x slower on the CPU); a gather where the runs are many (a scene smaller than a patch)."""
    runs = _runs(index)
    if runs is None:
        return x.index_select(dim, upload(index, x.device))
    parts = [x.narrow(dim, int(min(index[a], index[b - 1])), b - a) for a, b, _ in runs]
    parts = [part.flip(dim) if step < 0 else part for part, (_, _, step) in zip(parts, runs, strict=True)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def _runs(index: np.ndarray) -> list[tuple[int, int, int]] | None:
    """``index`` as runs ``(start, stop, step)`` of consecutive positions rising (step 1) or falling (-1),
    or None when there are more than :data:`MAX_RUNS`."""
    runs: list[tuple[int, int, int]] = []
    a, n = 0, len(index)
    while a < n:
        step = int(index[a + 1] - index[a]) if a + 1 < n else 1
        if abs(step) != 1:
            step, b = 1, a + 1
        else:
            off = np.flatnonzero(np.diff(index[a:]) != step)
            b = a + 1 + (int(off[0]) if len(off) else n - a - 1)
        runs.append((a, b, step))
        if len(runs) > MAX_RUNS:
            return None
        a = b
    return runs


#: Runs of positions :func:`_gather` puts together at most before it gathers instead.
MAX_RUNS = 8
