"""The blender: patches in, blended class probabilities and labels out, on the model's device.

:class:`Blender` queues each block's patches (cut by :class:`geoseg.engine.input_rows.InputRows`),
runs them through the :class:`geoseg.engine.predictor.Predictor` in full batches across blocks, and
keeps two rolling windows of rows on the device, both as wide as the scene:

* ``acc``: the blend-weighted class probabilities, ``(class, row, col)`` on the model grid, summed
  as fixed-point integers in units of 2**-:data:`geoseg.engine.plan.QUANTUM_BITS`. Integer sums do
  not depend on their order, so a pixel gets bit-identical probabilities whatever the block size,
  and the mask equals a plain sliding window over the whole scene (tests/engine/test_exactness.py);
* ``valid``: which scene pixels hold data, ``(row, col)`` on the scene grid;
* ``votes``: the smallest class, and 255 minus the largest, that any single patch chose at each model-grid
  pixel (where its blend weight is positive), so that :attr:`Blender.seam_pixels` counts the valid pixels
  where overlapping patches disagree: a map's seam figure, order-free like the sums.

After each row of blocks, the rows that no later patch reaches are normalised by the summed blend
weights, brought back to the scene grid (bilinear, when the model grid is coarser), turned into
labels, marked :data:`geoseg.io.writing.NODATA` where the scene has no data, counted, and handed
out as uint8 strips of whole output tiles (:class:`HostStrip`). Then the windows drop them. Their
heights are about one block plus one patch, so device memory depends on the block size and the
scene's width, never on its height.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

import numpy as np
import torch

from geoseg.engine.labels import argmax_classes, label_counts, mode2x2, quantize, uncertainty_layer
from geoseg.engine.plan import QUANTUM_BITS, BlockPlan, BlockRow, Layout
from geoseg.engine.predictor import Predictor
from geoseg.engine.resample import ColumnPhases, bilinear_taps
from geoseg.engine.staging import upload
from geoseg.errors import ConfigError
from geoseg.io.overviews import level_key
from geoseg.io.writing import NODATA, OUTPUT_TILE
from geoseg.models.card import ModelCard

#: Scene rows labelled at a time, to bound device memory.
LABEL_ROWS = 256
#: Overview levels of the labels the blender computes on the device at most (:func:`mode2x2`, level after
#: level); the writer's pyramid (:class:`geoseg.io.overviews.OverviewPyramid`) makes the rest, each 4^k times
#: smaller; the first levels, the large ones, are the ones worth taking off the writer's thread.
#: Every strip but a scene's last has LABEL_ROWS rows from a multiple of them, so each level's rows pair up
#: as they would over the whole mask (an odd last strip is padded with nodata, as the pyramid pads its end).
DEVICE_OVERVIEW_LEVELS = 4
#: Blend whole batches with indexed adds (:meth:`Blender._blend_batch`): None on a GPU only (there the per-patch
#: slices' launches cost more than the network's spare time; on a CPU the slice adds are faster). Tests set it.
BATCHED_BLEND: bool | None = None
#: Keep the votes' running minima in int32 (native atomic minimum on a GPU) rather than uint8 (a GPU emulates a byte's
#: atomic minimum with compare-and-swap loops on the word that holds four neighbours). Same bits either way; int32
#: takes 4x the votes' device memory. ``Tuning.wide_votes`` chooses per run (benchmarks/blend_kernels.py times both).
#: Off: on the H100 int32 was no faster, in the kernels' timing or the run (benchmarks/RESULTS.md section 14).
WIDE_VOTES = False
#: What the blender can hand out beside the labels: nothing, the top class's probability, every class's.
PROBABILITY_BANDS = (None, "top", "all")


class Blender:
    """Turns the patches of one run, block row by block row, into label strips (see module docstring)."""

    def __init__(self, layout: Layout, card: ModelCard, predictor: Predictor, probabilities: str | None = None,
                 overview_levels: int = 0, uncertainty: str | None = None, wide_votes: bool = WIDE_VOTES):
        if probabilities not in PROBABILITY_BANDS:
            raise ConfigError(f"probabilities {probabilities!r} is not one of top, all (or none)")
        self.layout = layout
        #: Also hand out probabilities as uint8 (see :func:`quantize`): the top class's, or one band per class.
        self.probability_bands = probabilities
        #: Also hand out an uncertainty layer (:func:`uncertainty_layer`): margin or entropy.
        self.uncertainty = uncertainty
        #: Also hand out the labels' first overview levels (:func:`mode2x2`), computed here on the device:
        #: ``overview_levels`` of them (the pipeline asks for at most ``Tuning.device_overview_levels``).
        self.overview_levels = overview_levels
        self.predictor = predictor
        #: Called with the number of patches each model call blended (the progress bar's steps).
        self.on_predicted: Callable[[int], None] | None = None
        self.device = dev = predictor.device
        self.num_classes = card.num_classes
        window2d = np.outer(layout.window, layout.window) * float(2**QUANTUM_BITS)
        self.window2d = torch.from_numpy(window2d.astype(np.float32)).to(dev)
        self.votes_here = self.window2d > 0  # where a patch's class counts as its vote
        #: Blend a batch's patches in a few kernels (:meth:`_blend_batch`) instead of a slice per patch.
        self.batched = dev.type == "cuda" if BATCHED_BLEND is None else BATCHED_BLEND
        self.acc_dtype = torch.int32 if layout.deepest_sum < 2**31 - 1 else torch.int64
        # Weights that turn fixed-point sums back into probabilities, the quantum folded into rows.
        self.row_weight = torch.from_numpy(layout.row_weight * 2**QUANTUM_BITS).float().to(dev)
        self.col_weight = torch.from_numpy(layout.col_weight).float().to(dev)
        if layout.factor > 1:
            c0, c1, ct = bilinear_taps(0, layout.width, layout.factor, layout.cols.size)
            self.col_taps = (torch.from_numpy(c0).to(dev), torch.from_numpy(c1).to(dev), torch.from_numpy(ct).to(dev))
            self.col_phases = ColumnPhases.of(layout.width, layout.factor, layout.cols.size, dev)
            # Every scene row's taps, uploaded once: a copy from the host mid-run would wait for the device.
            self.row_taps = tuple(torch.from_numpy(a).to(dev) for a in bilinear_taps(0, layout.height, layout.factor,
                                                                                     layout.rows.size))
            # the model-grid pixel nearest each scene row and column: whose votes it shows
            self.nearest_rows = torch.where(self.row_taps[2] < 0.5, self.row_taps[0], self.row_taps[1])
            self.nearest_cols = torch.from_numpy(np.where(ct < 0.5, c0, c1)).to(dev)

        self.acc = torch.zeros((self.num_classes, 0, layout.cols.size), dtype=self.acc_dtype, device=dev)
        self.acc_base = 0  # model-grid row of acc[:, 0] (and of votes[:, 0])
        self.votes_dtype = torch.int32 if wide_votes else torch.uint8
        self.votes = torch.zeros((2, 0, layout.cols.size), dtype=self.votes_dtype, device=dev)
        #: Valid scene pixels where overlapping patches chose different classes, on the device.
        self.seam_pixels = torch.zeros((), dtype=torch.int64, device=dev)
        self.valid = torch.zeros((0, layout.width), dtype=torch.bool, device=dev)
        self.emitted = 0  # scene rows handed out so far (valid[0] is this row)
        self._row_valid: torch.Tensor | None = None
        self._pending: list[tuple[torch.Tensor, int, int]] = []
        self._added = self._ran = 0  # patches queued and patches predicted so far
        self._settles: deque[tuple[int, int]] = deque()  # (patches that must have run, final model rows)
        #: Pixels per label value (classes and NODATA), on the device until the run ends.
        self.counts = torch.zeros(256, dtype=torch.int64, device=dev)
        #: Diagnostics (benchmarks/precision.py): called with (scene row, probabilities) of every strip.
        self.probe: Callable[[int, torch.Tensor], None] | None = None

    # -- a row of blocks -------------------------------------------------------------------------
    def begin_row(self, row: BlockRow, valid: torch.Tensor) -> None:
        """Grow the accumulator to cover every patch of ``row``; ``valid`` is the ``(row, col)``
        validity of its scene rows."""
        reach = max((b.footprint.row1 for b in row.blocks if b.origins), default=0)
        need = min(reach, self.layout.rows.size) - self.acc_base
        have = self.acc.shape[1]
        if need > have:  # the kept rows copied over, the new ones set in place (no zeros made, then copied again)
            acc = torch.empty((self.num_classes, need, self.layout.cols.size), dtype=self.acc_dtype,
                              device=self.device)
            acc[:, :have].copy_(self.acc)
            acc[:, have:].zero_()
            votes = torch.empty((2, need, self.layout.cols.size), dtype=self.votes_dtype, device=self.device)
            votes[:, :have].copy_(self.votes)
            votes[:, have:].fill_(255)  # no vote yet
            self.acc, self.votes = acc, votes
        self._row_valid = valid

    def add_block(self, block: BlockPlan, region: torch.Tensor | None) -> None:
        """Queue the patches of ``block``, cut from ``region`` (its developed footprint, None for a
        block without patches); predict every full batch."""
        if not block.origins or region is None:
            return
        patch, fp = self.layout.patch, block.footprint
        for r, c in block.origins:
            rows, cols = slice(r - fp.row0, r - fp.row0 + patch), slice(c - fp.col0, c - fp.col0 + patch)
            self._pending.append((region[:, rows, cols], r, c))
            self._added += 1
            if len(self._pending) >= self.predictor.batch_size:
                self._predict_pending()

    def end_row(self, row: BlockRow) -> Iterator[tuple[int, dict[str, HostStrip]]]:
        """Finish ``row``; yield ``(scene row, strips)`` for every run of rows that is now final:
        ``labels``, and ``probabilities`` and the overview levels (:func:`geoseg.io.overviews.level_key`)
        where asked for.

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
        for start in range(self.emitted, stop, LABEL_ROWS):
            end = min(start + LABEL_ROWS, stop)
            labels, probs = self._labels(start, end)
            valid = self.valid[start - self.emitted : end - self.emitted]
            labels = torch.where(valid, labels, NODATA)
            self.counts += label_counts(labels, self.num_classes)  # where the labels are: no host pass
            self.seam_pixels += (self._disagree(start, end) & valid).sum()
            strips = {"labels": HostStrip.of(labels)}
            if self.probability_bands is not None:
                assert probs is not None
                strips["probabilities"] = HostStrip.of(quantize(probs, valid, self.probability_bands == "top"))
            if self.uncertainty is not None:
                assert probs is not None
                strips["uncertainty"] = HostStrip.of(uncertainty_layer(probs, valid, self.uncertainty))
            level = labels  # strips start on multiples of LABEL_ROWS: each level's halving is exact
            for k in range(1, self.overview_levels + 1):
                level = mode2x2(level, NODATA)
                strips[level_key(k)] = HostStrip.of(level)
            yield start, strips
        # Drop what no later strip needs.
        keep_from = stop if layout.factor == 1 else int(bilinear_taps(stop, stop + 1, layout.factor,
                                                                      layout.rows.size)[0][0])
        keep_from = min(keep_from, self.acc_base + self.acc.shape[1])
        self.acc = self.acc[:, keep_from - self.acc_base :]
        self.votes = self.votes[:, keep_from - self.acc_base :]
        self.acc_base = keep_from
        self.valid = self.valid[stop - self.emitted :]
        self.emitted = stop

    # -- internals -------------------------------------------------------------------------------
    def _predict_pending(self) -> None:
        if not self._pending:
            return
        probs = self.predictor.predict_patches([p for p, _, _ in self._pending])
        if self.on_predicted is not None:
            self.on_predicted(len(self._pending))
        by_class = probs.transpose(0, 1)  # (C, N, T, T)
        chosen = argmax_classes(by_class).to(self.votes_dtype)  # (N, T, T): each patch's own class
        weighted = weighted_sums(by_class, self.window2d, self.acc_dtype)
        # (2, N, T, T): the class and 255 minus it where the patch votes, 255 elsewhere: one running minimum keeps
        # the smallest class and 255 minus the largest
        votes = torch.where(self.votes_here, torch.stack((chosen, 255 - chosen)), 255)
        origins = [(r, c) for _, r, c in self._pending]
        (self._blend_batch if self.batched else self._blend_each)(weighted, votes, origins)
        self._ran += len(self._pending)
        self._pending.clear()

    def _blend_each(self, weighted: torch.Tensor, votes: torch.Tensor, origins: list[tuple[int, int]]) -> None:
        """Add each patch's weighted probabilities and votes (class-major, ``(C, N, T, T)`` and ``(2, N, T, T)``)
        into the rolling rows, a slice at a time (the CPU's way: its slice adds run on every core)."""
        patch, height, width = self.layout.patch, self.layout.rows.size, self.layout.cols.size
        base = self.acc_base
        for i, (r, c) in enumerate(origins):
            r0, r1, c0, c1 = max(r, 0), min(r + patch, height), max(c, 0), min(c + patch, width)
            inside = (slice(r0 - r, r1 - r), slice(c0 - c, c1 - c))
            self.acc[:, r0 - base : r1 - base, c0:c1] += weighted[:, i, inside[0], inside[1]]
            here = self.votes[:, r0 - base : r1 - base, c0:c1]
            torch.minimum(here, votes[:, i, inside[0], inside[1]], out=here)

    def _blend_batch(self, weighted: torch.Tensor, votes: torch.Tensor, origins: list[tuple[int, int]]) -> None:
        """The same as :meth:`_blend_each` for a whole batch in a few kernels (a GPU's way: one launch per patch
        and slice kept the device thread busier than the network). ``weighted`` and ``votes`` are class-major,
        ``(C, N, T, T)`` and ``(2, N, T, T)``. Integer sums and minima do not depend on the order in which they are
        taken, so the rows hold the same bits whichever way a patch is added.

        Runs of patches side by side in one patch row, inside the scene (most of a batch), are added as strided
        views (:meth:`_add_run`): no atomics, no index arrays. The rest (patches reaching outside the scene) go
        through :meth:`_add_indexed`."""
        stride = self.layout.cols.stride
        rest: list[int] = []
        i = 0
        while i < len(origins):
            if not self._inside(*origins[i]):
                rest.append(i)
                i += 1
                continue
            (r, c), j = origins[i], i + 1
            while j < len(origins) and origins[j] == (r, c + (j - i) * stride) and self._inside(*origins[j]):
                j += 1
            self._add_run(weighted, votes, i, j, r, c)
            i = j
        if len(rest) == len(origins):
            self._add_indexed(weighted, votes, origins)
        elif rest:
            picked = upload(np.array(rest, dtype=np.int64), self.device)
            self._add_indexed(weighted.index_select(1, picked), votes.index_select(1, picked),
                              [origins[k] for k in rest])

    def _inside(self, r: int, c: int) -> bool:
        """Whether the patch at model-grid row ``r``, column ``c`` lies wholly inside the scene."""
        patch = self.layout.patch
        return r >= 0 and c >= 0 and r + patch <= self.layout.rows.size and c + patch <= self.layout.cols.size

    def _add_run(self, weighted: torch.Tensor, votes: torch.Tensor, i: int, j: int, r: int, c: int) -> None:
        """Add patches ``i`` to ``j - 1`` of the batch, side by side from model-grid row ``r``, column ``c``, one
        patch stride apart, inside the scene. Patches ``phases`` apart do not overlap, so each phase is one
        in-place add (and one minimum) on a strided view of the rolling rows."""
        patch, stride = self.layout.patch, self.layout.cols.stride
        phases = -(-patch // stride)
        for p in range(min(phases, j - i)):
            count = len(range(i + p, j, phases))
            column = c + p * stride
            self._patches_view(self.acc, r, column, count, phases * stride).add_(
                weighted[:, i + p : j : phases].transpose(1, 2))
            here = self._patches_view(self.votes, r, column, count, phases * stride)
            torch.minimum(here, votes[:, i + p : j : phases].transpose(1, 2), out=here)

    def _patches_view(self, rows: torch.Tensor, r: int, c: int, count: int, step: int) -> torch.Tensor:
        """``(K, T, count, T)`` view of rolling ``rows`` (``(K, row, col)``, from model-grid row ``acc_base``):
        ``count`` patch footprints from row ``r``, columns ``c``, ``c + step``, ... (``step`` of at least a patch:
        the footprints do not overlap)."""
        patch = self.layout.patch
        s0, s1, s2 = rows.stride()
        return rows.as_strided((rows.shape[0], patch, count, patch), (s0, s1, step * s2, s2),
                               rows.storage_offset() + (r - self.acc_base) * s1 + c * s2)

    def _add_indexed(self, weighted: torch.Tensor, votes: torch.Tensor, origins: list[tuple[int, int]]) -> None:
        """Add patches anywhere (reaching outside the scene too) with indexed adds and minima over the flattened
        rows: atomic updates, order-free for integers. A batch reaching outside first zeroes what lies outside."""
        patch, height, width = self.layout.patch, self.layout.rows.size, self.layout.cols.size
        dev = self.device
        at = upload(np.array(origins, dtype=np.int64), dev)
        steps = torch.arange(patch, device=dev)
        rows, cols = at[:, :1] + steps, at[:, 1:] + steps  # (N, T) each: model-grid row and column of each pixel
        flat = (rows - self.acc_base)[:, :, None] * width + cols[:, None, :]  # (N, T, T)
        if not all(self._inside(r, c) for r, c in origins):
            inside = (((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :])
            flat, weighted, votes = flat.where(inside, 0), weighted.where(inside, 0), votes.where(inside, 255)
        classes, flat = weighted.shape[0], flat.reshape(-1)
        self.acc.view(classes, -1).index_add_(1, flat, weighted.reshape(classes, -1))
        self.votes.view(2, -1).scatter_reduce_(1, flat.expand(2, -1), votes.reshape(2, -1), reduce="amin")

    def _disagree(self, start: int, end: int) -> torch.Tensor:
        """``(row, col)`` bool of scene rows ``[start, end)``: patches that reach the pixel chose different classes
        (at the nearest model-grid pixel when the model grid is coarser)."""
        base = self.acc_base
        if self.layout.factor == 1:
            lo, not_hi = self.votes[0, start - base : end - base], self.votes[1, start - base : end - base]
        else:
            picked = self.votes.index_select(1, self.nearest_rows[start:end] - base).index_select(2, self.nearest_cols)
            lo, not_hi = picked[0], picked[1]
        return lo < 255 - not_hi  # the smallest class below the largest

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

    def _labels(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Class labels ``(row, col)`` uint8 of scene rows ``[start, end)``, and their probabilities
        where they were needed."""
        needed = (self.probe is not None or self.layout.factor > 1 or self.probability_bands is not None
                  or self.uncertainty is not None)
        probs = self.probabilities(start, end) if needed else None
        if self.probe is not None:
            self.probe(start, probs)
        if probs is None or self.layout.factor == 1:  # one positive weight per pixel: argmax of the sums
            base = self.acc_base
            return argmax_classes(self.acc[:, start - base : end - base]), probs
        return argmax_classes(probs), probs

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
        if self.col_phases is not None:
            return self.col_phases(rows)
        c0, c1, ct = self.col_taps
        return rows.index_select(2, c0) * (1 - ct) + rows.index_select(2, c1) * ct


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


def weighted_sums(by_class: torch.Tensor, window2d: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(C, N, T, T)`` probabilities (a view) times the fixed-point blend window, rounded to ``dtype``, written
    class-major once: the layout the batched indexed adds take without a copy."""
    out = torch.empty(by_class.shape, dtype=torch.result_type(by_class, window2d), device=by_class.device)
    return torch.mul(by_class, window2d, out=out).round_().to(dtype)
