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
