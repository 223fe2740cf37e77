"""Moving between the scene's grid and the model's grid (its training resolution).

When a scene is finer than the model by a clear factor ``f`` (Sentinel-2's 10 m bands for a 30 m
model), geoseg averages ``f x f`` cells of valid pixels into one model-grid pixel, infers there,
and brings the blended probabilities back with bilinear interpolation between model-grid pixel
centres. Cells are aligned to the scene's origin, so a block's result never depends on how the
scene is cut into blocks.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: The scene must be at least this many times finer than the model before geoseg resamples.
MIN_FACTOR = 1.5


def resolution_factor(scene_m: float | None, model_m: float | None) -> int:
    """Integer factor between the model's and the scene's resolution, 1 where none is clear."""
    if not scene_m or not model_m:
        return 1
    ratio = model_m / scene_m
    return round(ratio) if ratio >= MIN_FACTOR else 1


def coarsen(values: torch.Tensor, valid: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the valid pixels of each ``factor x factor`` cell; cells with none are invalid.

    ``values`` is ``(band, row, col)`` float32 starting on a cell boundary and ``valid`` ``(row, col)``
    bool, on any device; the last cell of an axis may be partial (its mean is over the pixels it has).
    """
    if factor == 1:
        return values, valid
    import torch

    pool = partial(torch.nn.functional.avg_pool2d, kernel_size=factor, ceil_mode=True)
    if values.device.type == "cpu" and bool(valid.all()):  # a shortcut; on a GPU the check would wait for it
        means = pool(values[None])[0]
        return means, torch.ones(means.shape[1:], dtype=torch.bool, device=values.device)
    # A mean over valid pixels: the mean of zeroed values over the share of valid pixels (for a
    # whole valid cell the share is exactly 1.0, so both ways give the same bits).
    share = pool(valid[None, None].to(values.dtype))[0, 0]
    means = pool(torch.where(valid, values, 0.0)[None])[0] / share.clamp(min=torch.finfo(values.dtype).tiny)
    return means, share > 0


def bilinear_taps(start: int, stop: int, factor: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For scene pixels ``start..stop-1``: the two model-grid pixels around each and the weight of the second.

    Scene pixel ``r`` has its centre at model-grid coordinate ``(r + 0.5) / f - 0.5``; positions
    beyond the first or last model-grid centre take the edge value.
    """
    u = (np.arange(start, stop, dtype=np.float64) + 0.5) / factor - 0.5
    base = np.floor(u)
    t = (u - base).astype(np.float32)
    i0 = np.clip(base.astype(np.int64), 0, size - 1)
    i1 = np.clip(base.astype(np.int64) + 1, 0, size - 1)
    return i0, i1, t


class ColumnPhases:
    """The bilinear column taps of :func:`bilinear_taps` over a whole scene row, as ``f`` strided phases.

    Scene columns ``p, p + f, p + 2f, ...`` all share one weight and read consecutive model-grid
    columns, so each phase is two slices and two scalar multiplies instead of two gathers: about 5x
    faster on a CPU, where this step (the labels of a 10 m scene from a 30 m model) took 6 of 40 s.
    The arithmetic is the gathers' own (``a * (1 - t) + b * t`` in float32), so the bits are the same;
    :meth:`of` returns None where the taps are not periodic that way, and the caller gathers.
    """

    def __init__(self, factor: int, width: int, starts: list[int], weights: torch.Tensor):
        self.factor, self.width, self.starts, self.weights = factor, width, starts, weights

    @classmethod
    def of(cls, width: int, factor: int, size: int, device: torch.device | str = "cpu") -> ColumnPhases | None:
        import torch

        i0, i1, t = bilinear_taps(0, width, factor, size)
        starts = []
        for p in range(min(factor, width)):
            base = np.floor((np.arange(p, width, factor, dtype=np.float64) + 0.5) / factor - 0.5).astype(np.int64)
            n = base.size
            # In columns padded by one edge copy each side, the taps are base + 1 and base + 2 (the clip is the pad).
            if not (np.array_equal(base, base[0] + np.arange(n)) and (t[p::factor] == t[p]).all()
                    and base[0] >= -1 and base[-1] <= size - 1
                    and np.array_equal(i0[p::factor], np.clip(base, 0, size - 1))
                    and np.array_equal(i1[p::factor], np.clip(base + 1, 0, size - 1))):
                return None
            starts.append(int(base[0]) + 1)
        return cls(factor, width, starts, torch.from_numpy(t[:factor].copy()).to(device))

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        """``(..., model col)`` -> ``(..., scene col)``, bilinear between model-grid pixel centres."""
        import torch

        padded = torch.cat([values[..., :1], values, values[..., -1:]], dim=-1)
        out = values.new_empty((*values.shape[:-1], self.width))
        for p, start in enumerate(self.starts):
            n = len(range(p, self.width, self.factor))
            t = self.weights[p : p + 1]
            left, right = padded[..., start : start + n], padded[..., start + 1 : start + 1 + n]
            out[..., p :: self.factor] = left * (1 - t) + right * t
        return out
